//! The node's life: opening it (data dir, identity, store and the state
//! kept in it), starting its background workers, and shutting it down.
//! The network is started in `network.rs` ([`Node::start_network`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use datamesh_store::{Store, StoreConfig};
use ed25519_dalek::SigningKey;

use crate::config::NodeConfig;
use crate::context::{Inner, Node, blocking};
use crate::error::{NodeError, StorageError};
use crate::identity::NodeIdentity;
use crate::records::{LocationStore, TombstoneStore};
use crate::reputation::AuditState;
use crate::workers::{SHUTDOWN_GRACE, Worker, WorkerCtx};

impl Node {
    /// Opens the data dir (creating it), the identity and the store.
    pub fn open(cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|source| StorageError::DataDir { path: cfg.data_dir.clone(), source })?;
        let identity = NodeIdentity::load_or_create(&cfg.data_dir).map_err(StorageError::Identity)?;
        let (store, report) = Store::open(
            &cfg.data_dir.join("store"),
            StoreConfig { capacity_bytes: cfg.capacity.as_u64(), cache_bytes: cfg.cache.as_u64() as usize },
        )?;
        tracing::info!(?report, node_id = %identity.id(), "store opened");
        // The node's own state lives in the store; older builds kept it in
        // files of the data dir, which these move in.
        let locations = LocationStore::open(&store, &cfg.data_dir.join("locations"))
            .map_err(|source| StorageError::Open { what: "location records", source })?;
        let signing = SigningKey::from_bytes(&identity.secret_seed());
        let tombstones = TombstoneStore::open(&store, &cfg.data_dir.join("tombstones"))
            .map_err(|source| StorageError::Open { what: "tombstones", source })?;
        let audit = AuditState::open(&store, &cfg.data_dir)
            .map_err(|source| StorageError::Open { what: "reputations", source })?;
        Ok(Node {
            inner: Arc::new(Inner {
                cfg,
                store,
                identity,
                signing,
                uploads: Mutex::new(HashMap::new()),
                manifests: Arc::new(quick_cache::sync::Cache::new(64)),
                locations,
                net: Arc::new(OnceLock::new()),
                started: Instant::now(),
                repair: Default::default(),
                audit,
                tombstones,
                leases: Default::default(),
                observer: OnceLock::new(),
                discovered: tokio::sync::Mutex::new(None),
                drain: Default::default(),
                adoptions: Default::default(),
                workers: Default::default(),
            }),
        })
    }

    /// Starts the node's background work, as its configuration says:
    /// upload expiry, GC and scrub always; with a network, repair, audits (unless
    /// `audit_interval` is zero), lease sweeps and the drain worker. The
    /// heartbeat worker is started by [`Node::start_network`]. Stop them with
    /// [`Node::shutdown`].
    pub fn spawn_workers(&self) {
        let cfg = &self.inner.cfg;
        let ws = self.workers();
        ws.spawn(UploadExpiryWorker { node: self.clone() });
        ws.spawn(crate::deletion::GcWorker { node: self.clone(), every: crate::deletion::GC_INTERVAL });
        ws.spawn(crate::repair::ScrubWorker {
            node: self.clone(),
            interval: cfg.scrub_interval.max(Duration::from_millis(100)),
            rate: cfg.scrub_rate.as_u64(),
        });
        if self.net().is_none() {
            return;
        }
        let poll = |lo: u64| (cfg.heartbeat_interval / 2).clamp(Duration::from_millis(lo), Duration::from_secs(1));
        // Repair: periodic passes, and one as soon as a peer turns OFFLINE.
        ws.spawn(crate::repair::RepairWorker { node: self.clone(), interval: cfg.repair_interval, poll: poll(100) });
        // Audits: the maintainer of each file challenges its holders.
        if !cfg.audit_interval.is_zero() {
            ws.spawn(crate::audit::AuditWorker {
                node: self.clone(),
                interval: cfg.audit_interval,
                samples: cfg.audit_samples,
            });
        }
        // Replicas whose lease nobody renews are dropped.
        ws.spawn(crate::deletion::LeaseWorker { node: self.clone() });
        // Draining (`datamesh drain`): idle until asked.
        ws.spawn(crate::drain::DrainWorker { node: self.clone(), poll: poll(200) });
    }

    /// Stops every worker (the last started first, each finishing its
    /// step), then the network, then writes the store's pending access
    /// times. The node answers nothing afterwards; drop it to close the
    /// store.
    pub async fn shutdown(&self) {
        self.workers().shutdown(SHUTDOWN_GRACE).await;
        if let Some(net) = self.net() {
            net.shutdown().await;
        }
        let store = self.inner.store.clone();
        if let Err(e) = blocking(move || Ok(store.flush()?)).await {
            tracing::warn!(error = %e, "could not write pending access times at shutdown");
        }
    }
}

/// Drops upload sessions idle past `upload_idle_timeout_secs`, so their
/// shards fall to GC.
pub struct UploadExpiryWorker {
    /// The node whose sessions it expires.
    pub node: Node,
}

#[async_trait::async_trait]
impl Worker for UploadExpiryWorker {
    fn name(&self) -> &'static str {
        "upload-expiry"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        while ctx.idle(Duration::from_secs(60)).await {
            let n = self.node.expire_uploads();
            if n > 0 {
                tracing::info!(expired = n, "dropped idle upload sessions");
            }
        }
    }
}
