//! Put and get, once for every client: the CLI (over HTTP), the gateway's
//! S3 and REST paths (in process), and later the web UI, gRPC and the ML
//! loader.
//!
//! The orchestration lives here, over a small [`Transport`] (open an upload
//! session, send a sealed chunk, complete with the manifest, abort; fetch a
//! manifest, fetch a chunk's stored form):
//!
//! - **Put** ([`Client::begin_put`], [`Upload`]): the caller pushes
//!   plaintext chunks in file order (cut by a [`Chunker`] or a
//!   [`Rechunker`]); each is sealed (compressed, encrypted) on the blocking
//!   pool and sent by its own task, at most `concurrency` in flight, so
//!   memory is bounded by `(concurrency + 1) × chunk size` whatever the file
//!   size. [`Upload::finish`] builds the manifest, completes the session and
//!   checks the CID the node acknowledged. A failed or dropped upload aborts
//!   its session: nothing of it is pinned and the node's GC reclaims it.
//! - **Get** ([`Client::read`], [`read_ahead`]): the chunks covering a byte
//!   range (and no others) are fetched up to `concurrency` at once, in
//!   order, each verified against its CID, decrypted and decompressed on
//!   the blocking pool, and sliced to the range.
//!
//! What stays with the caller: where the bytes come from and go to, which
//! key seals a file ([`datamesh_pipeline::seal::ChunkSealer`]) and who may
//! unwrap it, digests a protocol needs (S3's MD5 and checksums), progress
//! display, resuming a partial download.
//!
//! **Architecture invariant:** this crate depends on `core`, `pipeline` and
//! `api` only (plus generic crates): never on the node, the gateway, the
//! network or an S3 library, so any client can embed it.
//!
//! [`Chunker`]: datamesh_pipeline::chunker::Chunker

pub mod get;
pub mod http;
pub mod put;
pub mod transport;

pub use get::{GetError, OpenFile, read_ahead};
pub use put::{PutError, PutOptions, Rechunker, Stored, Upload};
pub use transport::{Session, Transport};

/// How a client runs the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    /// Chunks sealed and sent, or fetched and opened, at once per transfer.
    pub concurrency: usize,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self { concurrency: 4 }
    }
}

/// Put and get over one transport. Cheap to clone.
#[derive(Clone)]
pub struct Client<T> {
    transport: T,
    cfg: ClientConfig,
}

impl<T: Transport> Client<T> {
    /// A client speaking `transport`.
    pub fn new(transport: T, cfg: ClientConfig) -> Self {
        Self { transport, cfg }
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The configuration.
    pub fn config(&self) -> ClientConfig {
        self.cfg
    }
}
