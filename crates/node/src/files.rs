//! File operations: stat, list, pin, unpin, remove (owner-signed), GC,
//! and the node's status.

use std::path::PathBuf;
use std::sync::Arc;

use datamesh_core::clock::unix_secs;
use datamesh_core::tombstone::{Tombstone, delete_message};
use datamesh_core::{Cid, LocationRecord, Manifest};
use datamesh_store::{GcReport, PinInfo, StoreStats};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use futures::StreamExt;
use serde::Serialize;

use crate::context::{Node, blocking};
use crate::error::{AuthError, InvalidRequest, NodeError};
use crate::holder::{holder_id, peer_of};
use crate::locate::{positions_by_holder, shards_held};

/// Holders asked at once whether they still hold their shards (`stat`).
const HOLDER_ASKS_IN_FLIGHT: usize = 32;
/// How far a delete request's timestamp may be from the node's clock.
const DELETE_CLOCK_SKEW: u64 = 300;

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
    /// Distinct nodes holding shards of the file.
    pub holders: usize,
}

/// Node health and usage.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    /// The node's public key (hex).
    pub node_id: String,
    /// The node's libp2p peer id (as other nodes' `peers` lists show it);
    /// absent without a network.
    pub peer_id: Option<String>,
    /// DataMesh version.
    pub version: &'static str,
    /// Data dir.
    pub data_dir: PathBuf,
    /// Store usage.
    pub store: StoreStats,
    /// Connected peers.
    pub peers: usize,
    /// Open upload sessions.
    pub uploads: usize,
    /// Whether files survive the loss of this node.
    pub protection: &'static str,
    /// What the repair worker has done since start.
    pub repair: crate::state::RepairTotals,
    /// Audit totals since start.
    pub audit: crate::reputation::AuditTotals,
    /// Whether the node is draining (`datamesh drain`).
    pub draining: bool,
    /// The background workers and what each is doing.
    pub workers: Vec<crate::workers::WorkerInfo>,
}

impl Node {
    /// What the node knows of a file, with live shards per chunk (asking
    /// holders when the file is spread over the network).
    pub async fn stat(&self, cid: Cid) -> Result<FileStat, NodeError> {
        let (cid, m) = self.manifest(cid).await?;
        let mut loc = self.location(cid).await?;
        let mut live = self.live_per_chunk(&m, loc.as_ref()).await?;
        if let Some(old) = &loc
            && live.iter().flatten().any(|held| !held)
        {
            // Our record may be stale: a repair elsewhere may have moved the
            // missing shards.
            let fresh = self.refresh_location(&m, old.clone()).await;
            if fresh.signature != old.signature {
                live = self.live_per_chunk(&m, Some(&fresh)).await?;
                loc = Some(fresh);
            }
        }
        let store = self.inner.store.clone();
        let pin = blocking(move || Ok(store.pin_info(&cid)?)).await?;
        Ok(FileStat {
            cid,
            unixfs: m.unixfs,
            size: m.size,
            encrypted: m.encryption.is_some(),
            k: m.erasure.k,
            m: m.erasure.m,
            pinned: pin.is_some(),
            name: pin.and_then(|p| p.name),
            live_shards: live.iter().map(|c| c.iter().filter(|&&b| b).count() as u16).collect(),
            holders: loc.map(|l| l.holders.len()).unwrap_or(1),
        })
    }

    /// Which shards of each chunk are held: locally from the store, and by
    /// asking each remote holder `loc` names once about all its shards.
    async fn live_per_chunk(
        &self,
        m: &Arc<Manifest>,
        loc: Option<&LocationRecord>,
    ) -> Result<Vec<Vec<bool>>, NodeError> {
        let store = self.inner.store.clone();
        let m2 = m.clone();
        let mut live = blocking(move || {
            m2.chunks
                .iter()
                .map(|c| -> Result<Vec<bool>, NodeError> { c.shards.iter().map(|s| Ok(store.has_shard(s)?)).collect() })
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
        if let (Some(loc), Some(net)) = (loc, self.net().cloned()) {
            let me = holder_id(&net.local_peer_id());
            // All holders at once (a bounded number in flight): one after
            // another, a 29+51 file's stat took 79 round trips, over a
            // minute on a loaded node.
            let asks = positions_by_holder(m, loc).into_iter().filter(|(h, _)| *h != me).filter_map(|(h, slots)| {
                let peer = peer_of(&h)?;
                let cids: Vec<Cid> = slots.iter().map(|&(ci, si)| m.chunks[ci].shards[si]).collect();
                let net = net.clone();
                Some(async move { (slots, shards_held(&net, peer, &cids).await) })
            });
            let mut answers = futures::stream::iter(asks).buffer_unordered(HOLDER_ASKS_IN_FLIGHT);
            while let Some((slots, held)) = answers.next().await {
                for ((ci, si), held) in slots.into_iter().zip(held) {
                    live[ci][si] = held.unwrap_or(false);
                }
            }
        }
        Ok(live)
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
            // A replica pin becomes the user's: it no longer lapses with the
            // network's lease.
            match store.pin_info(&cid)? {
                Some(p) if !p.replica => {}
                other => {
                    let name = other.and_then(|p| p.name);
                    store.pin(&cid, PinInfo { name, size: m.size, created_at: unix_secs(), replica: false })?;
                }
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
                return Err(InvalidRequest::NotPinned(cid).into());
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
            let (ts, sig) = signed.clone().ok_or(AuthError::SignatureRequired(cid))?;
            if unix_secs().abs_diff(ts) > DELETE_CLOCK_SKEW {
                return Err(AuthError::ClockSkew.into());
            }
            let key = <[u8; 32]>::try_from(owner.as_slice())
                .ok()
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .ok_or(AuthError::InvalidOwnerKey)?;
            let sig = Signature::from_slice(&sig).map_err(|_| AuthError::MalformedSignature)?;
            key.verify(&delete_message(&cid, ts), &sig).map_err(|_| AuthError::NotOwner(cid))?;
        }
        // With an owner signature, the deletion is the network's: the
        // signature is the tombstone every holder checks for itself.
        if let (Some(_), Some((ts, sig))) = (&m.owner, signed) {
            let signature = <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| AuthError::MalformedSignature)?;
            let t = Tombstone { manifest: cid, deleted_at: ts, signature };
            let rec = self.inner.locations.get(&cid);
            self.apply_tombstone(t.clone(), true).await?;
            if let Some(rec) = rec {
                let told = self.broadcast_tombstone(&m, &rec, &t).await;
                tracing::info!(file = %cid, holders_told = told, "deleted; tombstone sent to the holders");
            }
            return self.gc().await;
        }
        self.inner.manifests.remove(&cid);
        self.inner.locations.remove(&cid);
        let store = self.inner.store.clone();
        blocking(move || Ok(store.unpin(&cid)?)).await?;
        self.gc().await
    }

    /// Collects unpinned data.
    pub async fn gc(&self) -> Result<GcReport, NodeError> {
        let store = self.inner.store.clone();
        let report = blocking(move || Ok(store.gc()?)).await?;
        // A manifest GC removed must not keep opening from the cache: a
        // read of it would answer 200 and then find no shards mid-stream.
        if report.manifests_removed > 0 {
            self.inner.manifests.clear();
        }
        Ok(report)
    }

    /// Health and usage.
    pub async fn status(&self) -> Result<NodeStatus, NodeError> {
        let store = self.inner.store.clone();
        let stats = blocking(move || Ok(store.stats()?)).await?;
        let peers: Vec<_> = self.peers().await.into_iter().filter(|p| p.connected).collect();
        Ok(NodeStatus {
            node_id: self.inner.identity.id(),
            peer_id: self.net().map(|n| n.local_peer_id().to_string()),
            version: env!("CARGO_PKG_VERSION"),
            data_dir: self.inner.cfg.data_dir.clone(),
            store: stats,
            peers: peers.len(),
            uploads: self.uploads().len(),
            protection: if peers.is_empty() {
                "none against node loss: with no peers this node keeps all k+m shards of every chunk itself; erasure coding protects against corrupt shards only"
            } else {
                "new files are spread over k+m distinct nodes: any m of them may fail"
            },
            repair: self.repair_totals(),
            audit: self.audit_totals(),
            draining: self.draining(),
            workers: self.workers().list(),
        })
    }
}
