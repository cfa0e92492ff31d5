//! The node's errors: what went wrong, in terms a client can act on.
//!
//! [`NodeError`] sorts a failure by what the caller can do about it (fix the
//! request, sign it, wait for nodes, free space); each kind keeps its cause
//! as a typed source ([`InvalidRequest`], [`AuthError`], [`Unavailable`],
//! [`StorageError`], [`NetworkError`]) rather than as text. The gateway maps
//! each kind to an HTTP status and an API error code in one place
//! (`gateway/src/error.rs`); nothing here speaks HTTP.
//!
//! The larger causes are boxed, so a `Result<_, NodeError>` stays small on
//! the hot paths that return one.

use std::fmt;
use std::path::PathBuf;

use datamesh_core::tombstone::TombstoneError;
use datamesh_core::{Cid, Erasure, ManifestError, limits};
use datamesh_net::{NetError, PeerId, Response};
use datamesh_pipeline::erasure::ErasureError;
use datamesh_store::StoreError;

use crate::config::ConfigError;

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its owner deleted it.
    #[error("{0} was deleted by its owner")]
    Deleted(Cid),
    /// No such file, manifest or shard here.
    #[error("{0} is not stored on this node nor announced by any peer it can reach")]
    NotFound(Cid),
    /// The upload session does not exist (finished, aborted or expired).
    #[error("upload {0} does not exist: it finished, was aborted or expired; start a new put")]
    UploadNotFound(String),
    /// Too many uploads open.
    #[error("too many uploads in progress ({0}); retry when one finishes")]
    TooManyUploads(usize),
    /// Too many uploads open by one owner.
    #[error(
        "you have {0} uploads in progress, the most one user may have at once on this node; retry when one finishes"
    )]
    TooManyUploadsForOwner(usize),
    /// The request is malformed or asks for what cannot be: the caller must
    /// change it.
    #[error(transparent)]
    InvalidRequest(Box<InvalidRequest>),
    /// The node's configuration is invalid.
    #[error(transparent)]
    InvalidConfig(Box<ConfigError>),
    /// The manifest does not describe the uploaded data.
    #[error("manifest rejected: {0}")]
    Manifest(#[from] ManifestError),
    /// A destructive request is not signed by the file's owner.
    #[error(transparent)]
    NotAuthorized(Box<AuthError>),
    /// Out of budget or disk.
    #[error(transparent)]
    NoSpace(Box<StoreError>),
    /// Stored data cannot be read or rebuilt from the shards at hand.
    #[error(transparent)]
    Unavailable(Box<Unavailable>),
    /// The node's own disk (or the task doing its IO) failed.
    #[error("node storage error: {0}")]
    Storage(Box<StorageError>),
    /// Not enough nodes, or peers failed.
    #[error(transparent)]
    Network(Box<NetworkError>),
    /// The node is draining (leaving the network) and takes no new files.
    #[error("{0}")]
    Draining(String),
}

/// A request the node will not carry out as asked.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    /// An erasure code the node does not support.
    #[error(
        "erasure {}+{} is not supported: k must be ≥ 1 and k+m ≤ {}",
        .0.k, .0.m, limits::MAX_TOTAL_SHARDS
    )]
    UnsupportedErasure(Erasure),
    /// A chunk over the size limit.
    #[error("chunk of {0} bytes exceeds the {max} byte limit", max = limits::MAX_STORED_CHUNK_SIZE)]
    ChunkTooLarge(usize),
    /// The manifest's code is not the one the upload was opened with.
    #[error(
        "manifest says erasure {}+{} but the upload was opened with {}+{}",
        .manifest.k, .manifest.m, .upload.k, .upload.m
    )]
    ErasureMismatch {
        /// The manifest's.
        manifest: Erasure,
        /// The upload session's.
        upload: Erasure,
    },
    /// The manifest names another node as the one that places the file.
    #[error("the manifest names another node as its writer; upload through that node, or name this one ({0})")]
    ForeignWriter(String),
    /// The manifest lists other shards for a chunk than the node computed.
    #[error("chunk {0}: shard list differs from what the node computed")]
    ShardListDiffers(usize),
    /// The manifest names a chunk this node never received.
    #[error("chunk {index} ({chunk}) was never uploaded")]
    ChunkNotUploaded {
        /// Its position in the manifest.
        index: usize,
        /// Its CID.
        chunk: Cid,
    },
    /// A chunk index past the file's end.
    #[error("file {file} has {chunks} chunks; there is no chunk {index}")]
    NoSuchChunk {
        /// The file asked for.
        file: Cid,
        /// How many chunks it has.
        chunks: usize,
        /// The index asked for.
        index: usize,
    },
    /// Unpinning a file that is not pinned.
    #[error("{0} is not pinned")]
    NotPinned(Cid),
    /// Draining a node that runs without the network.
    #[error("this node runs without the network (--offline): there is no other node to drain to")]
    DrainOffline,
    /// A configured address that is not a multiaddr.
    #[error("{what} address `{address}` is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/7781)")]
    BadAddress {
        /// Which list it is in (`listen`, `bootstrap`, `announce`).
        what: &'static str,
        /// The address as written.
        address: String,
    },
    /// A peer's `REBUILD_SHARD` with an invalid erasure code.
    #[error("REBUILD_SHARD with a bad code: {0}")]
    BadCode(#[source] ErasureError),
    /// A peer's `REBUILD_SHARD` listed shards of different chunks.
    #[error(
        "the rebuilt shard {index} does not match the CID {cid} it was asked for: \
         the listed shards are not one chunk's"
    )]
    RebuiltShardMismatch {
        /// The shard asked for.
        index: usize,
        /// Its CID, as asked.
        cid: Cid,
    },
}

/// Why a delete is refused: only the file owner's key may delete it.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file has an owner and the request carries no signature.
    #[error("deleting {0} needs a signature by its owner's key")]
    SignatureRequired(Cid),
    /// The signed timestamp is too far from this node's clock.
    #[error("delete request timestamp is too far from the node's clock")]
    ClockSkew,
    /// The manifest's owner key is not an Ed25519 public key.
    #[error("the manifest's owner key is invalid")]
    InvalidOwnerKey,
    /// The signature is not an Ed25519 signature.
    #[error("malformed signature")]
    MalformedSignature,
    /// The signature is not the owner's.
    #[error("the signature is not by the owner of {0}; only the owner's key can delete it")]
    NotOwner(Cid),
    /// A tombstone that does not verify against the file's owner.
    #[error(transparent)]
    Tombstone(#[from] TombstoneError),
    /// The tombstone is older than the upload this node keeps: the file was
    /// uploaded again after it was deleted.
    #[error(
        "the deletion of {file} (signed at {deleted_at}) predates its upload at {uploaded_at};          sign a new deletion with a current time"
    )]
    BeforeUpload {
        /// The file.
        file: Cid,
        /// The tombstone's time.
        deleted_at: u64,
        /// The upload's time.
        uploaded_at: u64,
    },
}

/// Why stored data cannot be read or rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    /// Too few shards decode (or they fail verification).
    #[error(transparent)]
    Erasure(#[from] ErasureError),
    /// A read got fewer than k shards from the holders.
    #[error(
        "chunk {chunk} has only {got} reachable shards of the {k} needed ({failures}); \
         more nodes must come back before it can be read"
    )]
    TooFewReachable {
        /// The chunk.
        chunk: Cid,
        /// Shards that arrived.
        got: usize,
        /// Shards needed.
        k: usize,
        /// Why the others did not.
        failures: ShardFailures,
    },
    /// A local read found fewer than k readable shards.
    #[error("chunk {chunk} has only {have} readable shards of the {k} needed; the data cannot be rebuilt on this node")]
    TooFewReadable {
        /// The chunk.
        chunk: Cid,
        /// Shards read.
        have: usize,
        /// Shards needed.
        k: usize,
    },
    /// A peer's rebuild got fewer than k shards.
    #[error(
        "only {got} of the {k} shards needed to rebuild shard {want} of chunk {chunk} could be fetched ({failures})"
    )]
    TooFewToRebuild {
        /// The chunk.
        chunk: Cid,
        /// The shard to rebuild.
        want: usize,
        /// Shards that arrived.
        got: usize,
        /// Shards needed.
        k: usize,
        /// Why the others did not.
        failures: ShardFailures,
    },
    /// A repair got fewer than k shards.
    #[error("only {got} of the {k} shards needed could be fetched")]
    TooFewToRepair {
        /// Shards that arrived.
        got: usize,
        /// Shards needed.
        k: usize,
    },
    /// The location record names no holder for the shard.
    #[error("no holder recorded")]
    NoHolder,
    /// The location record's holder is not a peer id.
    #[error("bad holder id")]
    BadHolderId,
}

/// Why shards of a chunk could not be fetched, one per shard.
#[derive(Debug, Default)]
pub struct ShardFailures(pub Vec<(usize, NodeError)>);

impl fmt::Display for ShardFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, (shard, e)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "shard {shard}: {e}")?;
        }
        Ok(())
    }
}

/// A failure of the node's own disk, or of what it keeps there.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data dir cannot be created.
    #[error("cannot create data dir {}: {source}", .path.display())]
    DataDir {
        /// The data dir.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The identity key cannot be read or written.
    #[error("{0}")]
    Identity(#[source] std::io::Error),
    /// One of the node's record sets cannot be opened.
    #[error("cannot open the {what}: {source}")]
    Open {
        /// `location records`, `tombstones`, `reputations`.
        what: &'static str,
        /// Why.
        source: StoreError,
    },
    /// A tombstone cannot be saved.
    #[error("saving the tombstone of {cid}: {source}")]
    SaveTombstone {
        /// The deleted file.
        cid: Cid,
        /// Why.
        source: StoreError,
    },
    /// A location record cannot be saved.
    #[error("saving the location record: {0}")]
    SaveRecord(#[source] StoreError),
    /// A location record kept here cannot be rewritten: it does not fit
    /// its manifest, or its `seq` is at the ceiling.
    #[error(
        "the location record of {file} cannot be rewritten: {why}; it is replaced when the file's replicas send a valid one"
    )]
    BadRecord {
        /// The file.
        file: Cid,
        /// Why.
        why: String,
    },
    /// A manifest stored here does not decode.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The task doing the IO failed (panicked or was cancelled).
    #[error("worker failed: {0}")]
    Worker(#[from] tokio::task::JoinError),
    /// Reed-Solomon did not give back the shard asked for.
    #[error("shard {0} was not rebuilt")]
    NotRebuilt(usize),
    /// A rebuilt shard does not hash to the CID its manifest names.
    #[error("rebuilt shard {index} does not match its CID {cid}: the manifest or the fetched shards are inconsistent")]
    RebuiltMismatch {
        /// The shard.
        index: usize,
        /// Its CID, per the manifest.
        cid: Cid,
    },
    /// The repair pass stopped while a chunk waited for a slot.
    #[error("repair stopped")]
    RepairStopped,
}

/// Why the network could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A request to a peer, or a DHT operation, failed.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Too few nodes to place the shards on.
    #[error(transparent)]
    Placement(#[from] PlacementError),
    /// The node runs without the network.
    #[error("network is down")]
    Down,
    /// The network could not be started.
    #[error("cannot start the peer-to-peer network: {0}")]
    Start(#[source] NetError),
    /// A peer refused a replica of the manifest.
    #[error("{peer} refused the manifest: {answer:?}")]
    ManifestRefused {
        /// The peer.
        peer: PeerId,
        /// What it answered.
        answer: Response,
    },
    /// A peer refused the location record.
    #[error("{peer} refused the location record: {answer:?}")]
    RecordRefused {
        /// The peer.
        peer: PeerId,
        /// What it answered.
        answer: Response,
    },
    /// A shard could not be stored on its holder.
    #[error("storing a shard on {peer} failed: {source}")]
    PutShard {
        /// The holder.
        peer: PeerId,
        /// Why.
        source: NetError,
    },
    /// A rewritten location record could not be sent out.
    #[error("sending the new location record: {0}")]
    SendRecord(#[source] NodeError),
}

/// Not enough nodes to spread a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "placing a chunk needs {needed} distinct online nodes with {shard_bytes} bytes free each, but only {found} were found; \
     start more nodes, wait for peers to come online, or use a smaller code (-k/-m)"
)]
pub struct PlacementError {
    /// k+m.
    pub needed: usize,
    /// Suitable nodes found.
    pub found: usize,
    /// Size of one shard.
    pub shard_bytes: u64,
}

/// Boxes each cause into its kind.
macro_rules! boxed_from {
    ($($cause:ty => $kind:ident),* $(,)?) => {$(
        impl From<$cause> for NodeError {
            fn from(e: $cause) -> Self {
                NodeError::$kind(Box::new(e))
            }
        }
    )*};
}

boxed_from! {
    InvalidRequest => InvalidRequest,
    ConfigError => InvalidConfig,
    AuthError => NotAuthorized,
    Unavailable => Unavailable,
    StorageError => Storage,
    NetworkError => Network,
}

impl From<NetError> for NodeError {
    fn from(e: NetError) -> Self {
        NetworkError::Net(e).into()
    }
}

impl From<PlacementError> for NodeError {
    fn from(e: PlacementError) -> Self {
        NetworkError::Placement(e).into()
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { cid } => NodeError::NotFound(cid),
            e @ (StoreError::CapacityExceeded { .. } | StoreError::DiskFull { .. }) => NodeError::NoSpace(Box::new(e)),
            e => StorageError::Store(e).into(),
        }
    }
}

impl From<ErasureError> for NodeError {
    fn from(e: ErasureError) -> Self {
        Unavailable::Erasure(e).into()
    }
}

impl From<TombstoneError> for NodeError {
    fn from(e: TombstoneError) -> Self {
        AuthError::Tombstone(e).into()
    }
}

impl From<tokio::task::JoinError> for NodeError {
    fn from(e: tokio::task::JoinError) -> Self {
        StorageError::Worker(e).into()
    }
}

impl NodeError {
    /// The node runs without the network.
    pub(crate) fn network_down() -> Self {
        NetworkError::Down.into()
    }
}
