//! The content pipeline run inside the gateway, for clients that cannot run
//! it themselves (S3, plain HTTP).
//!
//! Writing: the request body is cut into fixed-size chunks as it arrives;
//! each chunk is hashed in order (MD5 for the ETag plus whatever
//! `x-amz-checksum-*` the client asked for), then compressed, sealed with a
//! fresh data key and handed to the node (erasure coding, durable shards) by
//! up to `concurrency` spawned tasks. Memory is bounded by
//! `(concurrency + 1) × chunk size` (plus the shards of chunks in flight),
//! whatever the object size. The manifest is written, and so the file
//! pinned, only after the whole body arrived and every digest the client
//! sent matched: a body that fails its payload hash or checksum aborts the
//! node's upload session, whose shards then belong to GC.
//!
//! Reading: a producer task fetches the chunks covering the requested range
//! (up to `concurrency` at once, in order), verifies and opens them, and
//! feeds a channel of two slots; the response body drains it. A slow reader
//! therefore holds at most a few chunks.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use datamesh_core::{Chunking, Cid, Cipher, Compression, Encryption, Erasure, Manifest};
use datamesh_node::{Node, NodeError};
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::keys::{self, UserKey, WrapKind};
use datamesh_pipeline::seal::{ChunkSealer, ManifestBuilder, open_chunk};
use futures::{Stream, StreamExt};
use md5::Digest;
use s3s::checksum::ChecksumHasher;
use tokio::task::JoinHandle;

use crate::index::Segment;

/// How the gateway runs the pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Fixed chunk size in bytes (4 MiB, the CLI's default).
    pub chunk_size: usize,
    /// Chunks sealed, stored or fetched at once per request.
    pub concurrency: usize,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self { chunk_size: datamesh_pipeline::chunker::DEFAULT_CHUNK_SIZE as usize, concurrency: 4 }
    }
}

/// Why a write failed. Nothing of it is kept.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The client's body stream failed (disconnect, bad chunk signature,
    /// payload hash mismatch).
    #[error("the request body failed: {0}")]
    Body(s3s::StdError),
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
}

/// A file opened for reading: its manifest and the data key, unwrapped.
#[derive(Clone)]
pub struct OpenFile {
    /// The manifest CID.
    pub cid: Cid,
    /// Plaintext bytes.
    pub size: u64,
    manifest: Arc<Manifest>,
    key: OpenKey,
}

/// Why a file cannot be read through the gateway.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
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
pub struct Written {
    /// The file's manifest; None for an empty body (no file is made).
    pub manifest: Option<Cid>,
    /// Plaintext bytes.
    pub size: u64,
    /// MD5 of the plaintext.
    pub md5: [u8; 16],
    /// Checksums computed for the algorithms asked for.
    pub checksums: s3s::dto::Checksum,
}

impl Written {
    /// The object's segment list.
    pub fn segments(&self, key_id: &str) -> Vec<Segment> {
        self.manifest
            .map(|m| Segment { manifest: m.to_string(), size: self.size, key_id: key_id.to_string() })
            .into_iter()
            .collect()
    }
}

/// Aborts the node's upload session (and the chunk tasks) unless the write
/// completed, including when the request future is dropped mid-body.
struct SessionGuard {
    node: Node,
    id: Option<String>,
    tasks: VecDeque<JoinHandle<Result<datamesh_core::ChunkEntry, WriteError>>>,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(id) = self.id.take() {
            let _ = self.node.abort_upload(&id);
        }
    }
}

/// The gateway's pipeline over one node. Cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    node: Node,
    cfg: PipelineConfig,
}

fn md5_hasher() -> md5::Md5 {
    md5::Md5::new()
}

impl Pipeline {
    /// A pipeline writing to and reading from `node`.
    pub fn new(node: Node, cfg: PipelineConfig) -> Self {
        Self { node, cfg }
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Streams `body` into a new encrypted file owned by `user`. `verify`
    /// sees the MD5 and checksums before anything is made durable and may
    /// refuse them.
    pub async fn write<S, E>(
        &self,
        user: &UserKey,
        body: S,
        hasher: ChecksumHasher,
        name: Option<String>,
        verify: impl FnOnce(&[u8; 16], &s3s::dto::Checksum) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<s3s::StdError>,
    {
        self.write_with(user, body, hasher, WriteOptions { name, ..Default::default() }, verify).await
    }

    /// [`Pipeline::write`] with every option.
    pub async fn write_with<S, E>(
        &self,
        user: &UserKey,
        mut body: S,
        hasher: ChecksumHasher,
        opts: WriteOptions,
        verify: impl FnOnce(&[u8; 16], &s3s::dto::Checksum) -> Result<(), WriteError>,
    ) -> Result<Written, WriteError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: Into<s3s::StdError>,
    {
        let chunk_size = self.cfg.chunk_size;
        let erasure = opts.erasure.unwrap_or_else(|| self.node.config().erasure());
        let name = opts.name;
        let session = self.node.begin_upload(Some(erasure))?;
        let mut guard = SessionGuard { node: self.node.clone(), id: Some(session.clone()), tasks: VecDeque::new() };
        let key = DataKey::random();
        let sealer = Arc::new(ChunkSealer::encrypted(Compression::Zstd, Cipher::Aes256Gcm, key.clone(), false));
        let mut hashes = Some((md5_hasher(), hasher));
        let mut buf = BytesMut::with_capacity(chunk_size);
        let mut entries = Vec::new();
        let mut index = 0u64;
        let mut size = 0u64;

        loop {
            let next = body.next().await;
            let last = next.is_none();
            if let Some(item) = next {
                let mut data = item.map_err(|e| WriteError::Body(e.into()))?;
                size += data.len() as u64;
                while !data.is_empty() {
                    let take = (chunk_size - buf.len()).min(data.len());
                    buf.extend_from_slice(&data.split_to(take));
                    if buf.len() == chunk_size {
                        let chunk = buf.split().freeze();
                        buf.reserve(chunk_size);
                        self.dispatch(&mut guard, &mut hashes, &sealer, &session, index, chunk, &mut entries).await?;
                        index += 1;
                    }
                }
            }
            if last {
                if !buf.is_empty() {
                    let chunk = std::mem::take(&mut buf).freeze();
                    self.dispatch(&mut guard, &mut hashes, &sealer, &session, index, chunk, &mut entries).await?;
                }
                break;
            }
        }
        while let Some(t) = guard.tasks.pop_front() {
            entries.push(join(t).await?);
        }
        let (md5, hasher) = hashes.ok_or_else(|| WriteError::Internal("hash state lost".into()))?;
        let md5: [u8; 16] = md5.finalize().into();
        let checksums = hasher.finalize();
        verify(&md5, &checksums)?;
        if entries.is_empty() && !opts.keep_empty {
            // An empty object is a row in the index, not a file.
            return Ok(Written { manifest: None, size: 0, md5, checksums });
        }
        let mut b = ManifestBuilder::new(Chunking::Fixed { size: chunk_size as u32 }, erasure);
        for e in entries {
            b.push(e);
        }
        let wrapped = keys::try_wrap_for(&key, &user.public(), WrapKind::X25519)
            .map_err(|e| WriteError::Internal(format!("cannot wrap the data key: {e}")))?;
        let enc = Encryption { cipher: Cipher::Aes256Gcm, convergent: false, wrapped_keys: vec![wrapped] };
        let manifest = b.finish(Some(enc), None, Some(user.public().ed25519));
        let cid = self.node.complete_upload(&session, manifest.encode(), name).await?;
        guard.id = None; // complete_upload consumed the session
        Ok(Written { manifest: Some(cid), size, md5, checksums })
    }

    /// Hashes one chunk in order, then seals and stores it in a task, keeping
    /// at most `concurrency` in flight.
    #[allow(clippy::too_many_arguments)]
    async fn dispatch(
        &self,
        guard: &mut SessionGuard,
        hashes: &mut Option<(md5::Md5, ChecksumHasher)>,
        sealer: &Arc<ChunkSealer>,
        session: &str,
        index: u64,
        chunk: Bytes,
        entries: &mut Vec<datamesh_core::ChunkEntry>,
    ) -> Result<(), WriteError> {
        let (mut m, mut h) = hashes.take().ok_or_else(|| WriteError::Internal("hash state lost".into()))?;
        let c = chunk.clone();
        *hashes = Some(
            tokio::task::spawn_blocking(move || {
                m.update(&c);
                h.update(&c);
                (m, h)
            })
            .await
            .map_err(|e| WriteError::Internal(e.to_string()))?,
        );
        while guard.tasks.len() >= self.cfg.concurrency.max(1) {
            if let Some(t) = guard.tasks.pop_front() {
                entries.push(join(t).await?);
            }
        }
        let (node, sealer, session) = (self.node.clone(), sealer.clone(), session.to_string());
        guard.tasks.push_back(tokio::spawn(async move {
            let mut sealed = tokio::task::spawn_blocking(move || sealer.seal(index, &chunk))
                .await
                .map_err(|e| WriteError::Internal(e.to_string()))?;
            let stored = Bytes::from(std::mem::take(&mut sealed.stored));
            let stored_size = stored.len() as u32;
            let receipt = node.put_chunk(&session, stored).await?;
            if receipt.cid != sealed.cid {
                return Err(WriteError::Internal(format!("node stored chunk {index} under another CID")));
            }
            Ok(datamesh_core::ChunkEntry {
                plain_size: sealed.plain_size,
                stored_size,
                compression: sealed.compression,
                cid: sealed.cid,
                shards: receipt.shards,
            })
        }));
        Ok(())
    }

    /// Streams `range` of the object made of `segments`, each opened with
    /// the user key `users` gives for its `key_id`.
    pub fn read(
        &self,
        segments: Vec<Segment>,
        users: impl Fn(&str) -> Option<Arc<crate::keys::Principal>> + Send + 'static,
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
        users: impl Fn(&str) -> Option<Arc<crate::keys::Principal>>,
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
                let file = OpenFile { cid: mcid, size: manifest.size, manifest, key };
                if !self.send_range(&file, lo - seg_start..hi - seg_start, tx).await? {
                    return Ok(()); // the client went away
                }
            }
            seg_start = seg_end;
            if seg_start >= range.end {
                break;
            }
        }
        Ok(())
    }

    /// Fetches, opens and sends the chunks of `file` covering `range` (and
    /// no others), up to `concurrency` at once, in order. Returns false if
    /// the receiver went away.
    async fn send_range(
        &self,
        file: &OpenFile,
        range: Range<u64>,
        tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) -> Result<bool, String> {
        let (lo, hi) = (range.start, range.end.min(file.size));
        if lo >= hi {
            return Ok(true);
        }
        let mcid = file.cid;
        let offsets = file.manifest.chunk_offsets();
        let first = offsets.partition_point(|&o| o <= lo).saturating_sub(1);
        let last = offsets.partition_point(|&o| o < hi).saturating_sub(1);
        let mut chunks = futures::stream::iter(first..=last)
            .map(|i| {
                let node = self.node.clone();
                let manifest = file.manifest.clone();
                let key = file.key.clone();
                async move {
                    let stored = node.chunk(mcid, i).await.map_err(|e| e.to_string())?;
                    tokio::task::spawn_blocking(move || {
                        open_chunk(&manifest.chunks[i], i as u64, &stored, key.as_ref().map(|k| (k.0, &k.1)))
                            .map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                }
            })
            .buffered(self.cfg.concurrency.max(1));
        let mut i = first;
        while let Some(plain) = chunks.next().await {
            let plain = Bytes::from(plain?);
            let (c0, c1) = (offsets[i], offsets[i + 1]);
            let from = (lo.max(c0) - c0) as usize;
            let to = (hi.min(c1) - c0) as usize;
            if tx.send(Ok(plain.slice(from..to))).await.is_err() {
                return Ok(false);
            }
            i += 1;
        }
        Ok(true)
    }

    /// Opens one file for reading: fetches its manifest and unwraps its
    /// data key with the first of `users` that can (none needed for a
    /// public file).
    pub async fn open_file(&self, cid: Cid, users: &[Arc<crate::keys::Principal>]) -> Result<OpenFile, OpenError> {
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
                Some(Arc::new((enc.cipher, found.ok_or(OpenError::NotOurs(mcid))?)))
            }
        };
        Ok(OpenFile { cid: mcid, size: manifest.size, manifest, key })
    }

    /// Streams `range` of an opened file. Memory: the chunks in flight
    /// (`concurrency`) and a channel of two, whatever the file's size.
    pub fn read_file(
        &self,
        file: OpenFile,
        range: Range<u64>,
    ) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.send_range(&file, range, &tx).await {
                tracing::warn!(error = %e, "file read failed mid-stream");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
            }
        });
        tokio_stream::wrappers::ReceiverStream::new(rx)
    }
}

type OpenKey = Option<Arc<(Cipher, DataKey)>>;

fn data_key(m: &Manifest, user: &UserKey) -> Result<OpenKey, String> {
    match &m.encryption {
        None => Ok(None),
        Some(enc) => {
            let k = keys::unwrap_for(&enc.wrapped_keys, user).map_err(|e| format!("cannot open the data key: {e}"))?;
            Ok(Some(Arc::new((enc.cipher, k))))
        }
    }
}

async fn join(
    t: JoinHandle<Result<datamesh_core::ChunkEntry, WriteError>>,
) -> Result<datamesh_core::ChunkEntry, WriteError> {
    t.await.map_err(|e| WriteError::Internal(format!("chunk task failed: {e}")))?
}
