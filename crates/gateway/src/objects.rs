//! The content pipeline run inside the gateway, for clients that cannot run
//! it themselves (S3, plain HTTP).
//!
//! The orchestration is `datamesh-client`'s, the CLI's too, over the
//! [`InProcess`] transport (calls on the node, no HTTP round trip).
//!
//! Writing: the request body is cut into fixed-size chunks as it arrives
//! ([`Rechunker`]); each chunk goes in order through the caller's
//! [`BodyDigest`] (for S3: MD5 for the ETag plus whatever `x-amz-checksum-*`
//! the client asked for), then is compressed, sealed with a fresh data key
//! and handed to the node (erasure coding, durable shards) by up to
//! `concurrency` tasks ([`Upload`]). Memory is bounded by
//! `(concurrency + 1) × chunk size` (plus the shards of chunks in flight),
//! whatever the object size. The manifest is written, and so the file
//! pinned, only after the whole body arrived and every digest the client
//! sent matched: a body that fails its payload hash or checksum aborts the
//! node's upload session, whose shards then belong to GC.
//!
//! Reading: a producer task fetches the chunks covering the requested range
//! (up to `concurrency` at once, in order: [`Client::read`]), verifies and
//! opens them, and feeds a channel of two slots; the response body drains
//! it. A slow reader therefore holds at most a few chunks.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
pub use datamesh_client::OpenFile;
use datamesh_client::{Client, ClientConfig, PutError, PutOptions, Rechunker, Upload};
use datamesh_core::{Chunking, Cid, Cipher, Compression, Encryption, Erasure, Manifest};
use datamesh_node::{Node, NodeError};
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::keys::{self, UserKey, WrapKind};
use datamesh_pipeline::seal::ChunkSealer;
use futures::{Stream, StreamExt};

use crate::in_process::InProcess;
use crate::index::Segment;

/// How the gateway runs the object pipeline.
#[derive(Debug, Clone, Copy)]
pub struct ObjectPipelineConfig {
    /// Fixed chunk size in bytes (4 MiB, the CLI's default).
    pub chunk_size: usize,
    /// Chunks sealed, stored or fetched at once per request.
    pub concurrency: usize,
}

impl Default for ObjectPipelineConfig {
    fn default() -> Self {
        Self { chunk_size: datamesh_pipeline::chunker::DEFAULT_CHUNK_SIZE as usize, concurrency: 4 }
    }
}

/// Why a request body failed, as its stream says.
pub type BodyError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a write failed. Nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client's body stream failed (disconnect, bad chunk signature,
    /// payload hash mismatch).
    #[error("the request body failed: {0}")]
    Body(BodyError),
    /// A digest the client sent does not match the bytes received.
    #[error("{0}")]
    Digest(String),
    /// The node refused or failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// A worker died.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<PutError<NodeError>> for WriteError {
    fn from(e: PutError<NodeError>) -> Self {
        match e {
            PutError::Transport(n) => WriteError::Node(n),
            other => WriteError::Internal(other.to_string()),
        }
    }
}

/// Digests of a body computed in order over its bytes before anything is
/// made durable (S3's MD5 and `x-amz-checksum-*`); `()` computes none.
pub trait BodyDigest: Send + 'static {
    /// Whether [`BodyDigest::update`] does any work (else it is skipped).
    const ACTIVE: bool = true;
    /// Takes the next bytes of the body.
    fn update(&mut self, data: &[u8]);
}

impl BodyDigest for () {
    const ACTIVE: bool = false;
    fn update(&mut self, _: &[u8]) {}
}

/// How a write is stored.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Name recorded with the pin.
    pub name: Option<String>,
    /// Erasure code; the node's default when None.
    pub erasure: Option<Erasure>,
    /// Make a (chunkless) file of an empty body too. S3 keeps empty
    /// objects as index rows only; the REST API needs a CID for every file.
    pub keep_empty: bool,
    /// Whose upload this is: its node session counts against that owner's
    /// upload slots (see [`Node::begin_upload_for`]); None: the node's cap
    /// only (the administrator).
    pub owner: Option<String>,
}

/// Why a file cannot be read through the gateway.
#[derive(Debug, thiserror::Error)]
pub enum OpenFileError {
    /// The node cannot find or serve it.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// It is encrypted for keys the gateway does not hold.
    #[error(
        "{0} is encrypted for its owner's key (e.g. the CLI's user key), which the gateway does not hold; download it with `datamesh get`, or upload it through the gateway (POST /v1/files) or as --public"
    )]
    NotOurs(Cid),
}

/// What a write produced.
pub struct Written<D = ()> {
    /// The file's manifest; None for an empty body (no file is made).
    pub manifest: Option<Cid>,
    /// Plaintext bytes.
    pub size: u64,
    /// What the write's `verify` made of the body's digests.
    pub digest: D,
}

impl<D> Written<D> {
    /// The object's segment list.
    pub fn segments(&self, key_id: &str) -> Vec<Segment> {
        self.manifest
            .map(|m| Segment { manifest: m.to_string(), size: self.size, key_id: key_id.to_string() })
            .into_iter()
            .collect()
    }
}

/// The object pipeline: the content pipeline run server-side, over one
/// node, for clients that cannot encrypt (S3, plain-HTTP uploads). Named
/// apart from the `datamesh-pipeline` crate, whose pure stages it drives
/// through `crates/client`. Cheap to clone.
#[derive(Clone)]
pub struct ObjectPipeline {
    node: Node,
    client: Client<InProcess>,
    cfg: ObjectPipelineConfig,
    metrics: Option<crate::metrics::Metrics>,
}

impl ObjectPipeline {
    /// A pipeline writing to and reading from `node`.
    pub fn new(node: Node, cfg: ObjectPipelineConfig) -> Self {
        let client = Client::new(InProcess::new(node.clone()), ClientConfig { concurrency: cfg.concurrency });
        Self { node, client, cfg, metrics: None }
    }

    /// The same pipeline, counting uploads refused for want of a slot in
    /// `metrics`.
    pub fn counting(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Streams `body` into a new encrypted file owned by `user`, with every
    /// option. `digest` sees the body's bytes in order; `verify` gets it
    /// once the whole body arrived, before anything is made durable, and may
    /// refuse it (nothing is kept then).
    pub async fn write_with<S, E, D, T>(
        &self,
        user: &UserKey,
        mut body: S,
        digest: D,
        opts: WriteOptions,
        verify: impl FnOnce(D) -> Result<T, WriteError>,
    ) -> Result<Written<T>, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<BodyError>,
        D: BodyDigest,
    {
        let chunk_size = self.cfg.chunk_size;
        let erasure = opts.erasure.unwrap_or_else(|| self.node.config().erasure());
        let key = DataKey::random();
        let sealer = ChunkSealer::encrypted(Compression::Zstd, Cipher::Aes256Gcm, key.clone(), false);
        let put = PutOptions {
            chunking: Chunking::Fixed { size: chunk_size as u32 },
            erasure: Some(erasure),
            name: opts.name,
        };
        // A client of its own: the session counts against the owner's slots.
        let transport = InProcess::for_owner(self.node.clone(), opts.owner.clone(), self.metrics.clone());
        let client = Client::new(transport, ClientConfig { concurrency: self.cfg.concurrency });
        let mut up = client.begin_put(sealer, put).await?;
        let mut digest = Some(digest);
        if let Err(e) = feed(&mut up, &mut body, &mut digest, chunk_size).await {
            up.abort().await;
            return Err(e);
        }
        up.flush().await?;
        let Some(digest) = digest else {
            up.abort().await;
            return Err(WriteError::Internal("hash state lost".into()));
        };
        let digest = match verify(digest) {
            Ok(d) => d,
            Err(e) => {
                up.abort().await;
                return Err(e);
            }
        };
        let size = up.size();
        if size == 0 && !opts.keep_empty {
            // An empty object is a row in the index, not a file.
            up.abort().await;
            return Ok(Written { manifest: None, size: 0, digest });
        }
        let wrapped = match keys::try_wrap_for(&key, &user.public(), WrapKind::X25519) {
            Ok(w) => w,
            Err(e) => {
                up.abort().await;
                return Err(WriteError::Internal(format!("cannot wrap the data key: {e}")));
            }
        };
        let enc = Encryption { cipher: Cipher::Aes256Gcm, convergent: false, wrapped_keys: vec![wrapped] };
        let stored = up.finish(Some(enc), None, Some(user.public().ed25519)).await?;
        Ok(Written { manifest: Some(stored.manifest), size, digest })
    }

    /// Streams `range` of the object made of `segments`, each opened with
    /// the user key `users` gives for its `key_id`.
    pub fn read(
        &self,
        segments: Vec<Segment>,
        users: impl Fn(&str) -> Option<Arc<crate::keys::KeyOwner>> + Send + 'static,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.produce(segments, users, range, &tx).await {
                tracing::warn!(error = %e, "object read failed mid-stream");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }

    async fn produce(
        &self,
        segments: Vec<Segment>,
        users: impl Fn(&str) -> Option<Arc<crate::keys::KeyOwner>>,
        range: Range<u64>,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<(), String> {
        let mut seg_start = 0u64;
        for seg in segments {
            let seg_end = seg_start + seg.size;
            let (lo, hi) = (range.start.max(seg_start), range.end.min(seg_end));
            if lo < hi {
                let cid: Cid = seg.manifest.parse().map_err(|e| format!("bad manifest CID in the index: {e}"))?;
                let user = users(&seg.key_id)
                    .ok_or_else(|| format!("access key {} that encrypted this object is gone", seg.key_id))?;
                let (mcid, manifest) = self.node.manifest(cid).await.map_err(|e| e.to_string())?;
                let key = data_key(&manifest, &user.user)?;
                let file = OpenFile::new(mcid, manifest, key);
                let mut chunks = self.client.read(&file, lo - seg_start..hi - seg_start);
                while let Some(piece) = chunks.next().await {
                    if tx.send(Ok(piece.map_err(|e| e.to_string())?)).await.is_err() {
                        return Ok(()); // the client went away
                    }
                }
            }
            seg_start = seg_end;
            if seg_start >= range.end {
                break;
            }
        }
        Ok(())
    }

    /// Opens one file for reading: fetches its manifest and unwraps its
    /// data key with the first of `users` that can (none needed for a
    /// public file).
    pub async fn open_file(&self, cid: Cid, users: &[Arc<crate::keys::KeyOwner>]) -> Result<OpenFile, OpenFileError> {
        let (mcid, manifest) = self.node.manifest(cid).await?;
        let key = match &manifest.encryption {
            None => None,
            Some(enc) => {
                let users: Vec<_> = users.to_vec();
                let wrapped = enc.wrapped_keys.clone();
                let found = tokio::task::spawn_blocking(move || {
                    users.iter().find_map(|u| keys::unwrap_for(&wrapped, &u.user).ok())
                })
                .await
                .map_err(NodeError::from)?;
                Some(found.ok_or(OpenFileError::NotOurs(mcid))?)
            }
        };
        Ok(OpenFile::new(mcid, manifest, key))
    }

    /// Streams `range` of an opened file. Memory: the chunks in flight
    /// (`concurrency`) and a channel of two, whatever the file's size.
    pub fn read_file(
        &self,
        file: OpenFile,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        datamesh_client::read_ahead(self.client.read(&file, range), 2)
    }
}

/// Feeds `body` to the upload in fixed-size chunks, each through `digest`
/// first, in order.
async fn feed<S, E, D>(
    up: &mut Upload<InProcess>,
    body: &mut S,
    digest: &mut Option<D>,
    chunk_size: usize,
) -> Result<(), WriteError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Into<BodyError>,
    D: BodyDigest,
{
    let mut chunks = Rechunker::new(chunk_size);
    while let Some(item) = body.next().await {
        let data = item.map_err(|e| WriteError::Body(e.into()))?;
        for chunk in chunks.push(data) {
            hash(digest, &chunk).await?;
            up.push(chunk).await?;
        }
    }
    if let Some(chunk) = chunks.finish() {
        hash(digest, &chunk).await?;
        up.push(chunk).await?;
    }
    Ok(())
}

/// Runs one chunk through the digest on the blocking pool (MD5 and SHA are
/// hundreds of MB/s: too slow for a runtime thread).
async fn hash<D: BodyDigest>(digest: &mut Option<D>, chunk: &Bytes) -> Result<(), WriteError> {
    if !D::ACTIVE {
        return Ok(());
    }
    let mut d = digest.take().ok_or_else(|| WriteError::Internal("hash state lost".into()))?;
    let c = chunk.clone();
    *digest = Some(
        tokio::task::spawn_blocking(move || {
            d.update(&c);
            d
        })
        .await
        .map_err(|e| WriteError::Internal(e.to_string()))?,
    );
    Ok(())
}

fn data_key(m: &Manifest, user: &UserKey) -> Result<Option<DataKey>, String> {
    match &m.encryption {
        None => Ok(None),
        Some(enc) => {
            keys::unwrap_for(&enc.wrapped_keys, user).map(Some).map_err(|e| format!("cannot open the data key: {e}"))
        }
    }
}
