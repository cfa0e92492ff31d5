//! Uploads: sessions, chunk intake (erasure coding and durable shard
//! writes, local or on the placed holders) and completion.
//!
//! **Architecture invariant:** a put is acknowledged (its CID returned by
//! [`Node::complete_upload`]) only after every shard, its index entry, the
//! manifest and the pin are durable. Shards written by an unfinished upload
//! are protected from GC by the session's guard and become garbage when the
//! session is aborted or expires.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datamesh_core::clock::unix_secs;
use datamesh_core::{Cid, Erasure, HolderId, LocationRecord, Manifest, limits};
use datamesh_pipeline::erasure;
use datamesh_store::{PinInfo, ShardMeta};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::context::{Node, blocking};
use crate::error::{InvalidRequest, NetworkError, NodeError, StorageError};
use crate::holder::holder_id;
use crate::observe::{self, Timing};
use crate::placement::Holder;
pub use crate::state::UploadId;
use crate::state::{Placed, Session};

/// What a node tells the client about a stored chunk.
#[derive(Debug, Clone, Serialize)]
pub struct ChunkReceipt {
    /// CID of the chunk's stored form.
    pub cid: Cid,
    /// CIDs of its k+m shards.
    pub shards: Vec<Cid>,
}

impl Node {
    /// Opens an upload session for a file coded with `erasure` (the node's
    /// default when None).
    pub fn begin_upload(&self, erasure: Option<Erasure>) -> Result<UploadId, NodeError> {
        self.begin_upload_for(erasure, None)
    }

    /// Opens an upload session for `owner` (the gateway's name for a user),
    /// who may hold at most `max_uploads_per_owner` open sessions within
    /// the node's `max_uploads`, so one user's stalled uploads cannot take
    /// another's slots. None: counted against the node's cap only.
    pub fn begin_upload_for(&self, erasure: Option<Erasure>, owner: Option<&str>) -> Result<UploadId, NodeError> {
        if self.draining() {
            return Err(NodeError::Draining(
                "this node is draining (leaving the network) and takes no new uploads; put the file through another node"
                    .into(),
            ));
        }
        let erasure = erasure.unwrap_or(self.inner.cfg.erasure());
        if erasure.k == 0 || erasure.total() > limits::MAX_TOTAL_SHARDS {
            return Err(InvalidRequest::UnsupportedErasure(erasure).into());
        }
        let mut uploads = self.uploads();
        if let Some(owner) = owner {
            let mine = uploads.values().filter(|s| s.owner.as_deref() == Some(owner)).count();
            if mine >= self.inner.cfg.max_uploads_per_owner {
                return Err(NodeError::TooManyUploadsForOwner(mine));
            }
        }
        if uploads.len() >= self.inner.cfg.max_uploads {
            return Err(NodeError::TooManyUploads(uploads.len()));
        }
        let id = hex::encode(rand::random::<[u8; 16]>());
        uploads.insert(
            id.clone(),
            Session {
                erasure,
                guard: Arc::new(self.inner.store.protect()),
                last_active: Instant::now(),
                owner: owner.map(str::to_owned),
                chunks: HashMap::new(),
            },
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
            return Err(InvalidRequest::ChunkTooLarge(stored.as_ref().len()).into());
        }
        let (erasure, guard) = {
            let mut uploads = self.uploads();
            let s = uploads.get_mut(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
            s.last_active = Instant::now();
            (s.erasure, s.guard.clone())
        };
        let guard = guard.clone();
        let store = self.inner.store.clone();
        let observer = self.observer();
        let (cid, shards) = blocking(move || {
            let stored = stored.as_ref();
            let cid = Cid::raw_blake3(stored);
            let started = Instant::now();
            let shards = erasure::encode(erasure, stored)?;
            observe::report(&observer, Timing::ErasureEncode, started.elapsed());
            Ok((cid, shards))
        })
        .await?;
        let cids = erasure::shard_cids(&shards);
        let holders = self.place(&cid, shards.len(), shards.first().map(|s| s.len() as u64).unwrap_or(0)).await?;
        // Local shards in one batch (one index commit); remote ones in parallel.
        let mut local = Vec::new();
        let mut remote = FuturesUnordered::new();
        for (i, (bytes, h)) in shards.into_iter().zip(&holders).enumerate() {
            match h {
                Holder::Local => local.push((cids[i], bytes, ShardMeta { chunk: cid, index: i as u16 })),
                Holder::Peer(p) => {
                    let net = self.net().cloned().ok_or_else(NodeError::network_down)?;
                    let (p, c) = (*p, cids[i]);
                    remote.push(async move { net.put_shard(p, c, bytes).await.map_err(|e| (p, e)) });
                }
            }
        }
        let local_write = blocking(move || {
            let batch: Vec<(Cid, &[u8], ShardMeta)> = local.iter().map(|(c, b, m)| (*c, b.as_slice(), *m)).collect();
            if !batch.is_empty() {
                store.put_shards(&batch, Some(&guard))?;
            }
            Ok(())
        });
        let remote_writes = async {
            while let Some(r) = remote.next().await {
                if let Err((p, e)) = r {
                    return Err(NodeError::from(NetworkError::PutShard { peer: p, source: e }));
                }
            }
            Ok(())
        };
        let (a, b) = tokio::join!(local_write, remote_writes);
        a?;
        b?;
        let me = self.net().map(|n| holder_id(&n.local_peer_id()));
        let holder_ids: Vec<HolderId> = match &me {
            Some(me) if holders.iter().any(|h| *h != Holder::Local) => holders
                .iter()
                .map(|h| match h {
                    Holder::Local => me.clone(),
                    Holder::Peer(p) => holder_id(p),
                })
                .collect(),
            _ => Vec::new(),
        };
        let receipt = ChunkReceipt { cid, shards: cids };
        let mut uploads = self.uploads();
        let s = uploads.get_mut(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
        s.chunks.insert(receipt.cid, Placed { shards: receipt.shards.clone(), holders: holder_ids });
        Ok(receipt)
    }

    /// The key a manifest names as its `writer` to be placed by this node
    /// (its identity's public key): peers take the file's first location
    /// record only from it.
    pub fn writer_key(&self) -> [u8; 32] {
        self.inner.signing.verifying_key().to_bytes()
    }

    /// Finishes an upload: checks the manifest against what was stored,
    /// writes it durably and pins it. Returns the file's CID.
    pub async fn complete_upload(
        &self,
        upload: &str,
        manifest_bytes: Vec<u8>,
        name: Option<String>,
    ) -> Result<Cid, NodeError> {
        let manifest = Manifest::decode(&manifest_bytes)?;
        let cid = Cid::dag_cbor_blake3(&manifest_bytes);
        let session = self.uploads().remove(upload).ok_or_else(|| NodeError::UploadNotFound(upload.into()))?;
        if manifest.erasure != session.erasure {
            return Err(InvalidRequest::ErasureMismatch { manifest: manifest.erasure, upload: session.erasure }.into());
        }
        // Peers take the file's first record only from the writer its
        // manifest names (`admit.rs`): a manifest naming another node could
        // never be placed from here.
        let me = self.writer_key();
        if manifest.writer.as_ref().is_some_and(|w| w.as_slice() != me) {
            return Err(InvalidRequest::ForeignWriter(hex::encode(me)).into());
        }
        // Every shard the manifest names must be durable, and must be the
        // shards this node computed for that chunk: a client cannot make the
        // node vouch for data it never received.
        let mut holders: Vec<Vec<HolderId>> = Vec::with_capacity(manifest.chunks.len());
        let mut check_local = Vec::new();
        for (i, c) in manifest.chunks.iter().enumerate() {
            match session.chunks.get(&c.cid) {
                Some(p) if p.shards != c.shards => {
                    return Err(InvalidRequest::ShardListDiffers(i).into());
                }
                Some(p) => holders.push(p.holders.clone()),
                None => {
                    check_local.push(i);
                    holders.push(Vec::new());
                }
            }
        }
        let mut networked = holders.iter().any(|h| !h.is_empty());
        // A file with no chunks (an empty file) has no shard holders, but with
        // peers its manifest must still be replicated and announced, or it
        // lives on this node alone and no other node can serve it.
        if manifest.chunks.is_empty()
            && let Some(net) = self.net()
        {
            networked = !net.peers().await.is_empty();
        }
        let store = self.inner.store.clone();
        let m = manifest.clone();
        let bytes = manifest_bytes.clone();
        let name2 = name.clone();
        // A re-upload of a file deleted before: the deletion covered the
        // old upload, not this one.
        let uploaded_at = unix_secs();
        if self.inner.tombstones.get(&cid).is_some_and(|t| !t.covers(uploaded_at)) {
            self.inner.tombstones.remove(&cid);
        }
        blocking(move || {
            for &i in &check_local {
                let c = &m.chunks[i];
                for s in &c.shards {
                    if !store.has_shard(s)? {
                        return Err(InvalidRequest::ChunkNotUploaded { index: i, chunk: c.cid }.into());
                    }
                }
            }
            store.put_manifest(&cid, &bytes)?;
            if let Some(u) = m.unixfs {
                store.set_alias(&u, &cid)?;
            }
            store.pin(&cid, PinInfo { name: name2, size: m.size, created_at: unix_secs(), replica: false })?;
            Ok(())
        })
        .await?;
        if networked {
            // Chunks found already stored here (deduplicated) are held locally.
            let me = self.net().map(|n| holder_id(&n.local_peer_id())).unwrap_or_default();
            for (i, h) in holders.iter_mut().enumerate() {
                if h.is_empty() {
                    *h = vec![me.clone(); manifest.chunks[i].shards.len()];
                }
            }
            let record = LocationRecord::sign_upload(cid, 1, &holders, uploaded_at, &self.inner.signing);
            let locations = self.inner.locations.clone();
            let r2 = record.clone();
            blocking(move || locations.put(&r2).map(|_| ()).map_err(|e| StorageError::Store(e).into())).await?;
            self.replicate(&manifest, cid, &manifest_bytes, &record).await?;
        }
        drop(session);
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
}
