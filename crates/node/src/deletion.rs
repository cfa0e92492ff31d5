//! Deletion and garbage collection across the network: owner-signed
//! tombstones and the leases under which holders keep other nodes' files.
//!
//! **Tombstones.** `rm` carries the owner's signature of
//! `core::tombstone::delete_message`; the node that takes it keeps that as a
//! [`Tombstone`] and sends it (`PutRecord tomb/<cid>`) to every holder and
//! replica of the file. Each checks it against the owner key in the manifest
//! it already has, drops its replica pin and location record, and collects
//! garbage. `DELETE_SHARD` takes a tombstone as its authorization and does
//! the same; without one, or with anyone else's signature, it is refused:
//! no peer can wipe another's data. A holder keeps the tombstone and answers
//! renewals and `GetRecord tomb/<cid>` with it, so a maintainer that missed
//! the deletion learns of it before it rebuilds anything. A tombstone is
//! tied to the uploads it deletes: it applies to a location record whose
//! `uploaded_at` is not later than its `deleted_at`. A `PutManifest` of a
//! deleted CID leaves the tombstone in place (the manifest is kept
//! unpinned); only a location record of a later upload (a fresh upload of
//! identical bytes) clears it, and an old tombstone sent afterwards is
//! refused.
//!
//! **Leases.** A holder keeps another node's file (a *replica* pin) only
//! while the file's maintainer renews its lease: the maintainer re-sends the
//! location record to every holder and replica every quarter `lease`, which
//! writes the stored record again (its `written_at` in the store is the
//! lease clock). A record not renewed for a whole `lease` has
//! lapsed: its replica pin and the record go, and GC reclaims the shards.
//! Nothing lapses on the node whose user pinned the file. So data outlives
//! its owner's node (repair keeps a maintainer), but not the network's
//! interest in it.
//!
//! **GC never races a put or repair.** Collection runs in the store, which
//! spares everything a live upload guard protects; shards that arrive ahead
//! of their manifest are guarded for a grace period (`network.rs`).

// Store calls return `StoreError`, which carries CIDs inline.
#![allow(clippy::result_large_err)]

use std::time::{Duration, Instant};

use datamesh_core::tombstone::Tombstone;
use datamesh_core::{HolderId, LocationRecord, Manifest};
use datamesh_net::{NetClient, PeerId, Request, Response};
use datamesh_store::{Store, StoreError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::context::{Node, blocking};
use crate::error::{AuthError, NodeError, StorageError};
use crate::holder::{holder_id, peer_of};
use crate::records::{LocationStore, TombstoneStore, location_key, tombstone_key};
use crate::workers::{Worker, WorkerCtx};

/// What a holder answers to a lease renewal of a deleted file.
pub(crate) const DELETED: &str = "deleted by its owner";

/// Checks `t` against the owner in the locally stored manifest, then deletes
/// the file here: tombstone kept, location record dropped, the replica pin
/// (and the user's pin too when `drop_user_pin`) removed, garbage collected.
/// Blocking: call off the async threads.
pub(crate) fn apply_tombstone(
    store: &Store,
    locations: &LocationStore,
    tombstones: &TombstoneStore,
    t: &Tombstone,
    drop_user_pin: bool,
) -> Result<(), NodeError> {
    let cid = t.manifest;
    let bytes = match store.get_manifest(&cid) {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            return Err(NodeError::NotFound(cid));
        }
        Err(e) => return Err(e.into()),
    };
    let m = Manifest::decode_verified(&cid, &bytes).map_err(StorageError::Manifest)?;
    t.verify(m.owner.as_deref())?;
    // A tombstone deletes the uploads before it, not a later re-upload of
    // the same bytes.
    if let Some(rec) = locations.get(&cid)
        && !t.covers(rec.uploaded_at)
    {
        return Err(
            AuthError::BeforeUpload { file: cid, deleted_at: t.deleted_at, uploaded_at: rec.uploaded_at }.into()
        );
    }
    tombstones.put(t).map_err(|source| StorageError::SaveTombstone { cid, source })?;
    locations.remove(&cid);
    if let Some(pin) = store.pin_info(&cid)?
        && (pin.replica || drop_user_pin)
    {
        store.unpin(&cid)?;
    }
    store.gc()?;
    Ok(())
}

impl Node {
    /// Sends the owner's tombstone of `m` (`rec` says who holds it) to every
    /// holder and replica. Best effort: a holder that misses it learns of it
    /// from the others, or lets the lease lapse.
    pub(crate) async fn broadcast_tombstone(&self, m: &Manifest, rec: &LocationRecord, t: &Tombstone) -> usize {
        let Some(net) = self.net().cloned() else { return 0 };
        let targets = self.replica_targets(m, t.manifest, rec).await;
        let value = t.encode();
        let mut jobs: FuturesUnordered<_> = targets
            .into_iter()
            .map(|p| {
                let (net, value) = (net.clone(), value.clone());
                let key = tombstone_key(&t.manifest);
                async move { net.put_record(p, key, value).await }
            })
            .collect();
        let mut told = 0;
        while let Some(r) = jobs.next().await {
            told += usize::from(r.is_ok());
        }
        told
    }

    /// Asks up to three ONLINE holders of `rec`'s file for its tombstone;
    /// applies it and returns true if one is valid.
    pub(crate) async fn find_tombstone(&self, rec: &LocationRecord, peers: &[PeerId]) -> bool {
        let Some(net) = self.net().cloned() else { return false };
        let me = holder_id(&net.local_peer_id());
        let online: std::collections::HashSet<HolderId> = peers.iter().map(holder_id).collect();
        let ask: Vec<PeerId> =
            rec.holders.iter().filter(|h| **h != me && online.contains(*h)).filter_map(peer_of).take(3).collect();
        self.tombstone_from(&net, rec, &ask).await
    }

    /// [`apply_tombstone`] on this node's store.
    pub(crate) async fn apply_tombstone(&self, t: Tombstone, drop_user_pin: bool) -> Result<(), NodeError> {
        self.inner.manifests.remove(&t.manifest);
        let (store, locations, tombstones) =
            (self.inner.store.clone(), self.inner.locations.clone(), self.inner.tombstones.clone());
        blocking(move || apply_tombstone(&store, &locations, &tombstones, &t, drop_user_pin)).await?;
        // Its GC may have collected other unpinned manifests too.
        self.inner.manifests.clear();
        Ok(())
    }

    /// Renews the lease of a file this node maintains, if a quarter of the
    /// lease has passed since the last renewal: the location record goes to
    /// every holder and replica again. A holder that answers that the file
    /// is deleted is asked for the tombstone, which is then applied here.
    /// Returns whether the file turned out to be deleted.
    pub(crate) async fn renew_lease(&self, m: &Manifest, rec: &LocationRecord) -> bool {
        let lease = self.inner.cfg.lease;
        let due = {
            let r = self.inner.leases.renewed.lock().unwrap_or_else(|p| p.into_inner());
            r.get(&rec.manifest).is_none_or(|t| t.elapsed() >= lease / 4)
        };
        if !due {
            return false;
        }
        let Some(net) = self.net().cloned() else { return false };
        self.inner.locations.touch(&rec.manifest);
        let targets = self.replica_targets(m, rec.manifest, rec).await;
        let value = rec.encode();
        let mut jobs: FuturesUnordered<_> = targets
            .into_iter()
            .map(|p| {
                let (net, value) = (net.clone(), value.clone());
                let key = location_key(&rec.manifest);
                async move { (p, net.request(p, Request::PutRecord { key, value }).await) }
            })
            .collect();
        let mut deleted_at = Vec::new();
        while let Some((p, r)) = jobs.next().await {
            if let Ok(Response::Refused(why)) = r
                && why.contains(DELETED)
            {
                deleted_at.push(p);
            }
        }
        if !deleted_at.is_empty() && self.tombstone_from(&net, rec, &deleted_at).await {
            return true;
        }
        self.inner.leases.renewed.lock().unwrap_or_else(|p| p.into_inner()).insert(rec.manifest, Instant::now());
        false
    }

    /// Asks `peers` in turn for the file's tombstone; applies the first
    /// valid one.
    async fn tombstone_from(&self, net: &NetClient, rec: &LocationRecord, peers: &[PeerId]) -> bool {
        for p in peers {
            let Ok(Some(v)) = net.get_record(*p, tombstone_key(&rec.manifest)).await else { continue };
            let Ok(t) = Tombstone::decode(&v) else { continue };
            if t.manifest == rec.manifest && self.apply_tombstone(t, false).await.is_ok() {
                tracing::info!(file = %rec.manifest, "learned of the owner's deletion; stopped maintaining the file");
                return true;
            }
        }
        false
    }

    /// Drops the files whose lease has lapsed: location records untouched
    /// for a whole `lease`, on files this node keeps only as a replica, and
    /// replica pins older than a lease that no location record backs.
    /// Returns how many lapsed.
    pub async fn sweep_leases(&self) -> Result<usize, NodeError> {
        let lease = self.inner.cfg.lease;
        let (store, locations) = (self.inner.store.clone(), self.inner.locations.clone());
        let lapsed = blocking(move || {
            let mut n = 0;
            for rec in locations.list() {
                let Some(age) = locations.age(&rec.manifest) else { continue };
                if age < lease {
                    continue;
                }
                // Never on the node whose user pinned it.
                if store.pin_info(&rec.manifest)?.is_some_and(|p| !p.replica) {
                    continue;
                }
                locations.remove(&rec.manifest);
                if store.pin_info(&rec.manifest)?.is_some() {
                    store.unpin(&rec.manifest)?;
                }
                n += 1;
            }
            // A replica pin with no location record (a manifest a peer sent
            // and no record followed, or whose record was dropped) has no
            // lease to renew: it lapses a lease after it was made, or a
            // peer could pin manifests here forever.
            let now = datamesh_core::clock::unix_secs();
            for (cid, pin) in store.pins()? {
                if pin.replica && now.saturating_sub(pin.created_at) >= lease.as_secs() && locations.get(&cid).is_none()
                {
                    store.unpin(&cid)?;
                    n += 1;
                }
            }
            if n > 0 {
                store.gc()?;
            }
            Ok(n)
        })
        .await?;
        if lapsed > 0 {
            self.inner.manifests.clear();
            tracing::info!(lapsed, "leases lapsed: replicas dropped and their space reclaimed");
        }
        Ok(lapsed)
    }
}

/// Sweeps lapsed leases every quarter lease.
pub struct LeaseWorker {
    /// The node whose replicas' leases it sweeps.
    pub node: Node,
}

#[async_trait::async_trait]
impl Worker for LeaseWorker {
    fn name(&self) -> &'static str {
        "leases"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        let every = (self.node.inner.cfg.lease / 4).max(Duration::from_millis(100));
        while ctx.idle(every).await {
            ctx.set("renewing leases and dropping lapsed replicas");
            if let Err(e) = self.node.sweep_leases().await {
                tracing::warn!(error = %e, "lease sweep failed");
            }
        }
    }
}

/// How often the GC worker collects garbage.
pub const GC_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// Collects garbage every [`GC_INTERVAL`]: shards peers pushed whose
/// manifest never came (once their grace ends), unpinned manifests, and
/// what an aborted or expired upload left. Without it they stayed until
/// an operator ran `datamesh gc`.
pub struct GcWorker {
    /// The node whose store it collects.
    pub node: Node,
    /// Time between collections.
    pub every: Duration,
}

#[async_trait::async_trait]
impl Worker for GcWorker {
    fn name(&self) -> &'static str {
        "gc"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        while ctx.idle(self.every).await {
            ctx.set("collecting garbage");
            match self.node.gc().await {
                Ok(r) => tracing::debug!(report = ?r, "garbage collected"),
                Err(e) => tracing::warn!(error = %e, "garbage collection failed"),
            }
        }
    }
}
