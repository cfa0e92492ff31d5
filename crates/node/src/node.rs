//! The node: upload sessions, chunk intake (erasure coding and durable
//! shard writes), verified chunk reads, pins, deletion and GC.
//!
//! **Architecture invariant:** a put is acknowledged (its CID returned by
//! [`Node::complete_upload`]) only after every shard, its index entry, the
//! manifest and the pin are durable. Shards written by an unfinished upload
//! are protected from GC by the session's guard and become garbage when the
//! session is aborted or expires.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datamesh_core::{ChunkEntry, Cid, Erasure, Manifest, ManifestError, limits};
use datamesh_pipeline::erasure::{self, ErasureError};
use datamesh_store::{GcReport, PinInfo, ShardMeta, Store, StoreConfig, StoreError, StoreStats, UploadGuard};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Serialize;

use crate::config::NodeConfig;
use crate::identity::NodeIdentity;

/// An upload session id: 128 random bits, hex. Unguessable, so one client
/// cannot append to another's upload.
pub type UploadId = String;

/// What a node tells the client about a stored chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkReceipt {
    /// CID of the chunk's stored form.
    pub cid: Cid,
    /// CIDs of its k+m shards.
    pub shards: Vec<Cid>,
}

/// A file as the node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct FileStat {
    /// The manifest CID.
    pub cid: Cid,
    /// The UnixFS CID of a public file.
    pub unixfs: Option<Cid>,
    /// Plaintext size.
    pub size: u64,
    /// Whether the chunks are encrypted.
    pub encrypted: bool,
    /// Erasure code.
    pub k: u16,
    /// Erasure code.
    pub m: u16,
    /// Whether it is pinned (kept by GC).
    pub pinned: bool,
    /// The name given at put.
    pub name: Option<String>,
    /// Live (present) shards of each chunk, out of k+m.
    pub live_shards: Vec<u16>,
}

/// Node health and usage.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node's public key (hex).
    pub node_id: String,
    /// DataMesh version.
    pub version: &'static str,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Store usage.
    pub store: StoreStats,
    /// Connected peers (0 until the network layer exists).
    pub peers: usize,
    /// Open upload sessions.
    pub uploads: usize,
    /// Whether files survive the loss of this node.
    pub protection: &'static str,
}

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No such file, manifest or shard here.
    #[error("{0} is not stored on this node")]
    NotFound(Cid),
    /// The upload session does not exist (finished, aborted or expired).
    #[error("upload {0} does not exist: it finished, was aborted or expired; start a new put")]
    UploadNotFound(String),
    /// Too many uploads open.
    #[error("too many uploads in progress ({0}); retry when one finishes")]
    TooManyUploads(usize),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The manifest does not describe the uploaded data.
    #[error("manifest rejected: {0}")]
    Manifest(#[from] ManifestError),
    /// The signature on a destructive request is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// Out of budget or disk.
    #[error("{0}")]
    NoSpace(String),
    /// Stored data failed verification beyond what erasure coding can mend.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: an IO error of the node's own disk.
    #[error("node storage error: {0}")]
    Storage(String),
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { cid } => NodeError::NotFound(cid),
            e @ (StoreError::CapacityExceeded { .. } | StoreError::DiskFull { .. }) => NodeError::NoSpace(e.to_string()),
            e => NodeError::Storage(e.to_string()),
        }
    }
}

impl From<ErasureError> for NodeError {
    fn from(e: ErasureError) -> Self {
        NodeError::Unavailable(e.to_string())
    }
}

struct Session {
    erasure: Erasure,
    guard: Arc<UploadGuard>,
    last_active: Instant,
    chunks: HashMap<Cid, Vec<Cid>>,
}

struct Inner {
    cfg: NodeConfig,
    store: Store,
    identity: NodeIdentity,
    uploads: Mutex<HashMap<UploadId, Session>>,
    manifests: quick_cache::sync::Cache<Cid, Arc<Manifest>>,
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

/// How far a delete request's timestamp may be from the node's clock.
const DELETE_CLOCK_SKEW: u64 = 300;

/// The message an owner signs to delete `cid` at `unix_secs`.
pub fn delete_message(cid: &Cid, unix_secs: u64) -> Vec<u8> {
    format!("datamesh-delete-v1\n{cid}\n{unix_secs}").into_bytes()
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, NodeError> + Send + 'static) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NodeError::Storage(format!("worker failed: {e}")))?
}

impl Node {
    /// Opens the data dir (creating it), the identity and the store.
    pub fn open(cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate().map_err(|e| NodeError::BadRequest(e.to_string()))?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
            NodeError::Storage(format!("cannot create data dir {}: {e}", cfg.data_dir.display()))
        })?;
        let identity = NodeIdentity::load_or_create(&cfg.data_dir).map_err(|e| NodeError::Storage(e.to_string()))?;
        let (store, report) = Store::open(
            &cfg.data_dir.join("store"),
            StoreConfig { capacity_bytes: cfg.capacity.as_u64(), cache_bytes: cfg.cache.as_u64() as usize },
        )?;
        tracing::info!(?report, node_id = %identity.id(), "store opened");
        Ok(Node {
            inner: Arc::new(Inner {
                cfg,
                store,
                identity,
                uploads: Mutex::new(HashMap::new()),
                manifests: quick_cache::sync::Cache::new(64),
            }),
        })
    }

    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    fn uploads(&self) -> std::sync::MutexGuard<'_, HashMap<UploadId, Session>> {
        // A panic while holding this lock leaves the map usable; recover it.
        self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens an upload session for a file coded with `erasure` (the node's
    /// default when None).
    pub fn begin_upload(&self, erasure: Option<Erasure>) -> Result<UploadId, NodeError> {
        let erasure = erasure.unwrap_or(self.inner.cfg.erasure());
        if erasure.k == 0 || erasure.total() > limits::MAX_TOTAL_SHARDS {
            return Err(NodeError::BadRequest(format!(
                "erasure {}+{} is not supported: k must be ≥ 1 and k+m ≤ {}",
                erasure.k,
                erasure.m,
                limits::MAX_TOTAL_SHARDS
            )));
        }
        let mut uploads = self.uploads();
        if uploads.len() >= self.inner.cfg.max_uploads {
            return Err(NodeError::TooManyUploads(uploads.len()));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        uploads.insert(
            id.clone(),
            Session { erasure, guard: Arc::new(self.inner.store.protect()), last_active: Instant::now(), chunks: HashMap::new() },
        );
        Ok(id)
    }

    /// Takes one chunk's stored form: erasure-codes it and writes its shards
    /// durably. Idempotent: re-sending a chunk rewrites nothing.
    pub async fn put_chunk<B>(&self, upload: &str, stored: B) -> Result<ChunkReceipt, NodeError>
    where
        B: AsRef<[u8]> + Send + 'static,
    {
        if stored.as_ref().len() > limits::MAX_STORED_CHUNK_SIZE {
            return Err(NodeError::BadRequest(format!(
                "chunk of {} bytes exceeds the {} byte limit",
                stored.as_ref().len(),
                limits::MAX_STORED_CHUNK_SIZE
            )));
        }
        let (erasure, guard) = {
            let mut uploads = self.uploads();
            let s = uploads.get_mut(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
            s.last_active = Instant::now();
            (s.erasure, s.guard.clone())
        };
        let store = self.inner.store.clone();
        let receipt = blocking(move || {
            let stored = stored.as_ref();
            let cid = Cid::raw_blake3(stored);
            let shards = erasure::encode(erasure, stored)?;
            let cids = erasure::shard_cids(&shards);
            let batch: Vec<(Cid, &[u8], ShardMeta)> = shards
                .iter()
                .zip(&cids)
                .enumerate()
                .map(|(i, (bytes, c))| (*c, bytes.as_slice(), ShardMeta { chunk: cid, index: i as u16 }))
                .collect();
            store.put_shards(&batch, Some(&guard))?;
            Ok(ChunkReceipt { cid, shards: cids })
        })
        .await?;
        let mut uploads = self.uploads();
        let s = uploads.get_mut(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
        s.chunks.insert(receipt.cid, receipt.shards.clone());
        Ok(receipt)
    }

    /// Finishes an upload: checks the manifest against what was stored,
    /// writes it durably and pins it. Returns the file's CID.
    pub async fn complete_upload(&self, upload: &str, manifest_bytes: Vec<u8>, name: Option<String>) -> Result<Cid, NodeError> {
        let manifest = Manifest::decode(&manifest_bytes)?;
        let cid = Cid::dag_cbor_blake3(&manifest_bytes);
        let session = self.uploads().remove(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
        if manifest.erasure != session.erasure {
            return Err(NodeError::BadRequest(format!(
                "manifest says erasure {}+{} but the upload was opened with {}+{}",
                manifest.erasure.k, manifest.erasure.m, session.erasure.k, session.erasure.m
            )));
        }
        let store = self.inner.store.clone();
        let m = manifest.clone();
        let res = blocking(move || {
            // Every shard the manifest names must be durable here, and must be
            // the shards this node computed for that chunk: a client cannot
            // make the node vouch for data it never received.
            for (i, c) in m.chunks.iter().enumerate() {
                let known = session.chunks.get(&c.cid);
                if known.is_some_and(|s| *s != c.shards) {
                    return Err(NodeError::BadRequest(format!("chunk {i}: shard list differs from what the node computed")));
                }
                if known.is_none() {
                    for s in &c.shards {
                        if !store.has_shard(s)? {
                            return Err(NodeError::BadRequest(format!("chunk {i} ({}) was never uploaded", c.cid)));
                        }
                    }
                }
            }
            store.put_manifest(&cid, &manifest_bytes)?;
            if let Some(u) = m.unixfs {
                store.set_alias(&u, &cid)?;
            }
            store.pin(&cid, PinInfo { name, size: m.size, created_at: now_secs() })?;
            drop(session);
            Ok(())
        })
        .await;
        res?;
        self.inner.manifests.insert(cid, Arc::new(manifest));
        Ok(cid)
    }

    /// Aborts an upload; its shards become garbage.
    pub fn abort_upload(&self, upload: &str) -> Result<(), NodeError> {
        self.uploads().remove(upload).map(|_| ()).ok_or_else(|| NodeError::UploadNotFound(upload.into()))
    }

    /// Drops sessions idle longer than the configured timeout; returns how many.
    pub fn expire_uploads(&self) -> usize {
        let timeout = Duration::from_secs(self.inner.cfg.upload_idle_timeout_secs);
        let mut uploads = self.uploads();
        let before = uploads.len();
        uploads.retain(|_, s| s.last_active.elapsed() < timeout);
        before - uploads.len()
    }

    /// Resolves a CID given by a user (a manifest CID, or the UnixFS CID of
    /// a public file) to the manifest CID.
    pub async fn resolve(&self, cid: Cid) -> Result<Cid, NodeError> {
        let store = self.inner.store.clone();
        blocking(move || {
            if store.has_manifest(&cid)? {
                return Ok(cid);
            }
            match store.resolve_alias(&cid)? {
                Some(m) => Ok(m),
                None => Err(NodeError::NotFound(cid)),
            }
        })
        .await
    }

    /// The manifest's CID and encoded bytes.
    pub async fn manifest_bytes(&self, cid: Cid) -> Result<(Cid, Vec<u8>), NodeError> {
        let cid = self.resolve(cid).await?;
        let store = self.inner.store.clone();
        let bytes = blocking(move || Ok(store.get_manifest(&cid)?)).await?;
        if !cid.verifies(&bytes) {
            return Err(NodeError::Unavailable(format!("the manifest of {cid} is corrupt on this node")));
        }
        Ok((cid, bytes))
    }

    /// The decoded manifest (cached).
    pub async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), NodeError> {
        if let Some(m) = self.inner.manifests.get(&cid) {
            return Ok((cid, m));
        }
        let (cid, bytes) = self.manifest_bytes(cid).await?;
        let m = Arc::new(Manifest::decode_verified(&cid, &bytes)?);
        self.inner.manifests.insert(cid, m.clone());
        Ok((cid, m))
    }

    /// The stored form of chunk `index` of a file, rebuilt from any k
    /// verified shards.
    pub async fn chunk(&self, file: Cid, index: usize) -> Result<Arc<[u8]>, NodeError> {
        let (_, m) = self.manifest(file).await?;
        let entry = m
            .chunks
            .get(index)
            .cloned()
            .ok_or_else(|| NodeError::BadRequest(format!("file {file} has {} chunks; there is no chunk {index}", m.chunks.len())))?;
        if let Some(hit) = self.inner.store.cache_get(&entry.cid) {
            return Ok(hit);
        }
        let store = self.inner.store.clone();
        let erasure = m.erasure;
        let data = blocking(move || read_chunk(&store, erasure, &entry).map(|d| (entry.cid, d))).await?;
        let bytes: Arc<[u8]> = data.1.into();
        self.inner.store.cache_put(data.0, bytes.clone());
        Ok(bytes)
    }

    /// What the node knows of a file, with live shards per chunk.
    pub async fn stat(&self, cid: Cid) -> Result<FileStat, NodeError> {
        let (cid, m) = self.manifest(cid).await?;
        let store = self.inner.store.clone();
        blocking(move || {
            let live = m
                .chunks
                .iter()
                .map(|c| -> Result<u16, NodeError> {
                    let mut n = 0;
                    for s in &c.shards {
                        n += store.has_shard(s)? as u16;
                    }
                    Ok(n)
                })
                .collect::<Result<Vec<_>, _>>()?;
            let pin = store.pin_info(&cid)?;
            Ok(FileStat {
                cid,
                unixfs: m.unixfs,
                size: m.size,
                encrypted: m.encryption.is_some(),
                k: m.erasure.k,
                m: m.erasure.m,
                pinned: pin.is_some(),
                name: pin.and_then(|p| p.name),
                live_shards: live,
            })
        })
        .await
    }

    /// Pinned files, with the UnixFS CID of public ones.
    pub async fn list(&self) -> Result<Vec<(Cid, PinInfo, Option<Cid>)>, NodeError> {
        let store = self.inner.store.clone();
        let pins = blocking(move || Ok(store.pins()?)).await?;
        let mut out = Vec::with_capacity(pins.len());
        for (cid, info) in pins {
            let unixfs = self.manifest(cid).await.ok().and_then(|(_, m)| m.unixfs);
            out.push((cid, info, unixfs));
        }
        Ok(out)
    }

    /// Pins a stored file so GC keeps it.
    pub async fn pin(&self, cid: Cid) -> Result<Cid, NodeError> {
        let (cid, m) = self.manifest(cid).await?;
        let store = self.inner.store.clone();
        blocking(move || {
            if store.pin_info(&cid)?.is_none() {
                store.pin(&cid, PinInfo { name: None, size: m.size, created_at: now_secs() })?;
            }
            Ok(cid)
        })
        .await
    }

    /// Unpins a file; GC may then reclaim it.
    pub async fn unpin(&self, cid: Cid) -> Result<Cid, NodeError> {
        let cid = self.resolve(cid).await?;
        let store = self.inner.store.clone();
        blocking(move || {
            if !store.unpin(&cid)? {
                return Err(NodeError::BadRequest(format!("{cid} is not pinned")));
            }
            Ok(cid)
        })
        .await
    }

    /// Deletes a file: checks the owner's signature over
    /// [`delete_message`], unpins it and reclaims its space. Files put
    /// without an owner key can be deleted by any API client.
    pub async fn remove(&self, cid: Cid, signed: Option<(u64, Vec<u8>)>) -> Result<GcReport, NodeError> {
        let (cid, m) = self.manifest(cid).await?;
        if let Some(owner) = &m.owner {
            let (ts, sig) = signed.ok_or_else(|| {
                NodeError::Forbidden(format!("deleting {cid} needs a signature by its owner's key"))
            })?;
            if now_secs().abs_diff(ts) > DELETE_CLOCK_SKEW {
                return Err(NodeError::Forbidden("delete request timestamp is too far from the node's clock".into()));
            }
            let key = <[u8; 32]>::try_from(owner.as_slice())
                .ok()
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .ok_or_else(|| NodeError::Forbidden("the manifest's owner key is invalid".into()))?;
            let sig = Signature::from_slice(&sig).map_err(|_| NodeError::Forbidden("malformed signature".into()))?;
            key.verify(&delete_message(&cid, ts), &sig)
                .map_err(|_| NodeError::Forbidden(format!("the signature is not by the owner of {cid}; only the owner's key can delete it")))?;
        }
        self.inner.manifests.remove(&cid);
        let store = self.inner.store.clone();
        blocking(move || {
            store.unpin(&cid)?;
            Ok(store.gc()?)
        })
        .await
    }

    /// Collects unpinned data.
    pub async fn gc(&self) -> Result<GcReport, NodeError> {
        let store = self.inner.store.clone();
        blocking(move || Ok(store.gc()?)).await
    }

    /// Health and usage.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let store = self.inner.store.clone();
        let stats = blocking(move || Ok(store.stats()?)).await?;
        Ok(NodeStatus {
            node_id: self.inner.identity.id(),
            version: env!("CARGO_PKG_VERSION"),
            data_dir: self.inner.cfg.data_dir.clone(),
            store: stats,
            peers: 0,
            uploads: self.uploads().len(),
            protection: "none against node loss: with no peers this node keeps all k+m shards of every chunk itself; erasure coding protects against corrupt shards only",
        })
    }
}

/// Reads a chunk's data shards (and parity ones only when needed), verifies
/// them and decodes.
fn read_chunk(store: &Store, e: Erasure, entry: &ChunkEntry) -> Result<Vec<u8>, NodeError> {
    let k = e.k as usize;
    let mut shards: Vec<Option<Vec<u8>>> = vec![None; entry.shards.len()];
    let mut have = 0;
    for (i, cid) in entry.shards.iter().enumerate() {
        if have == k {
            break;
        }
        match store.get_shard(cid) {
            Ok(b) => {
                shards[i] = Some(b);
                have += 1;
            }
            Err(StoreError::NotFound { .. }) | Err(StoreError::Corrupt { .. }) => {
                tracing::warn!(shard = %cid, chunk = %entry.cid, "shard missing or corrupt; decoding from parity");
            }
            Err(e) => return Err(e.into()),
        }
    }
    if have < k {
        return Err(NodeError::Unavailable(format!(
            "chunk {} has only {have} readable shards of the {k} needed; the data cannot be rebuilt on this node",
            entry.cid
        )));
    }
    Ok(erasure::decode_chunk(e, entry, shards)?)
}
