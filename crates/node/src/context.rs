//! The node's shared context: [`Node`], the cheap handle every operation
//! is a method of, and [`Inner`], the state those methods share.
//!
//! Each concern keeps its own piece of that state in a field of `Inner`
//! (the types are in [`crate::state`], [`crate::records`] and
//! [`crate::reputation`]) and its operations in its own module: uploads in
//! `intake`, reads in `read`, manifests and records in `locate`, file
//! operations in `files`, placement in `placement`, serving peers in
//! `network`, and the workers in `repair`, `audit`, `deletion` and `drain`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use datamesh_core::{Cid, Manifest};
use datamesh_net::{NetClient, PeerInfo};
use datamesh_store::Store;
use ed25519_dalek::SigningKey;

use crate::config::NodeConfig;
use crate::error::NodeError;
use crate::identity::NodeIdentity;
use crate::observe::Observer;
use crate::records::{LocationStore, TombstoneStore};
use crate::reputation::AuditState;
use crate::state::{AdoptionBudget, DrainState, LeaseState, RepairState, Session, UploadId};
use crate::workers::Workers;

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone of a [`Node`] shares.
pub(crate) struct Inner {
    /// The configuration the node was opened with.
    pub(crate) cfg: NodeConfig,
    /// Shards, manifests, pins and the node's state records on disk.
    pub(crate) store: Store,
    /// The node's long-term key pair (its node id and peer id).
    pub(crate) identity: NodeIdentity,
    /// The identity's key, for signing location records.
    pub(crate) signing: SigningKey,
    /// Open upload sessions, by id.
    pub(crate) uploads: Mutex<HashMap<UploadId, Session>>,
    /// Decoded manifests recently used, by manifest CID; shared with the
    /// network handler, which forgets deleted files.
    pub(crate) manifests: Arc<quick_cache::sync::Cache<Cid, Arc<Manifest>>>,
    /// The location records this node keeps (the files it holds shards
    /// of, replicates or put).
    pub(crate) locations: LocationStore,
    /// The peer-to-peer network, once attached; shared with the network
    /// handler, which announces replicas through it.
    pub(crate) net: Arc<OnceLock<NetClient>>,
    /// When the node was opened (its heartbeats' uptime).
    pub(crate) started: Instant,
    /// The repair worker's totals and pass lock.
    pub(crate) repair: RepairState,
    /// Peers' reputations and the audits' results.
    pub(crate) audit: AuditState,
    /// Owners' tombstones of deleted files.
    pub(crate) tombstones: TombstoneStore,
    /// When this node last renewed each maintained file's lease.
    pub(crate) leases: LeaseState,
    /// Who receives the node's timings (the gateway's metrics), once set.
    pub(crate) observer: OnceLock<Observer>,
    /// Whether the node is draining, and how far it got.
    pub(crate) drain: DrainState,
    /// Per peer, the replicas its location records made this node keep.
    pub(crate) adoptions: AdoptionBudget,
    /// The node's (and its gateway's) background workers.
    pub(crate) workers: Workers,
    /// When peer discovery for a wide placement last ran; held for a whole
    /// run, so chunks placed at once wait for one discovery instead of
    /// failing on its cooldown.
    pub(crate) discovered: tokio::sync::Mutex<Option<Instant>>,
}

/// Runs `f` (store IO, erasure coding) on tokio's blocking pool and waits
/// for it, so the async threads never block on disk or CPU work.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await?
}

impl Node {
    /// The configuration the node runs with.
    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    /// The underlying store.
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Connects the node to the network (once).
    pub fn attach_net(&self, net: NetClient) {
        let _ = self.inner.net.set(net);
    }

    /// The network, if attached.
    pub(crate) fn net(&self) -> Option<&NetClient> {
        self.inner.net.get()
    }

    /// The network's view of peers (empty without a network).
    pub async fn peers(&self) -> Vec<PeerInfo> {
        match self.net() {
            Some(n) => n.peers().await,
            None => Vec::new(),
        }
    }

    /// Non-empty k-buckets: (bucket index, entries).
    pub async fn routing_table(&self) -> Vec<(u32, usize)> {
        match self.net() {
            Some(n) => n.routing_table().await,
            None => Vec::new(),
        }
    }

    /// The open upload sessions.
    pub(crate) fn uploads(&self) -> MutexGuard<'_, HashMap<UploadId, Session>> {
        // A panic while holding this lock leaves the map usable; recover it.
        self.inner.uploads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether this node is draining.
    pub fn draining(&self) -> bool {
        self.inner.drain.active.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The registry of this node's workers (the gateway adds its own).
    pub fn workers(&self) -> &Workers {
        &self.inner.workers
    }

    /// Sets the observer that receives this node's timings. Only the first
    /// call has an effect; returns whether this one did.
    pub fn set_observer(&self, observer: Observer) -> bool {
        self.inner.observer.set(observer).is_ok()
    }

    /// The observer, if one is set.
    pub(crate) fn observer(&self) -> Option<Observer> {
        self.inner.observer.get().cloned()
    }
}
