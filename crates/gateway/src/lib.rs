//! The node's gateway: everything that speaks HTTP.
//!
//! - [`rest`]: the JSON API v1 on the node's API port (bearer token): the
//!   router, with [`files`] (one-request upload, metadata) and [`shares`]
//!   (share links), both serving plaintext through [`download`]. Every
//!   body is a type of `datamesh-api`; [`error`] maps its error codes to
//!   HTTP statuses, and [`state`] is what the handlers share. Modules point
//!   one way: `rest` -> `files`, `shares` -> `download` -> `error`, `state`.
//! - [`events`]: the WebSocket event stream (`/v1/events`) and its bus.
//! - [`s3`]: the S3-compatible API on its own port (SigV4 access keys).
//! - [`objects`]: the content pipeline run server-side for clients that
//!   cannot encrypt (S3, plain HTTP): `datamesh-client`'s put/get over the
//!   [`in_process`] transport; [`index`]: the gateway's SQLite
//!   database of buckets, objects, uploads, file metadata and shares;
//!   [`keys`]: access keys and the REST key.
//!
//! [`Gateway`] composes them over one [`Node`]; the `datamesh node` daemon
//! opens it and serves both ports.

mod bodies;
pub mod download;
pub mod error;
pub mod events;
pub mod files;
pub mod in_process;
pub mod index;
pub mod keys;
pub mod metrics;
pub mod objects;
pub mod rest;
pub mod s3;
pub mod shares;
pub(crate) mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use datamesh_node::Node;
pub use error::ApiError;
pub use rest::{PUBLIC_ROUTES, router};

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Where the database lives (`<node data dir>/gateway`).
    pub dir: PathBuf,
    /// The S3 region reported and expected in signatures.
    pub region: String,
    /// Domain for virtual-host style buckets (`BUCKET.<domain>`).
    pub domain: String,
    /// Multipart uploads idle this long are aborted and their parts released.
    pub multipart_idle_timeout: Duration,
    /// Pipeline settings.
    pub pipeline: objects::PipelineConfig,
    /// Largest file `POST /v1/files` takes (413 above it); None: no limit
    /// but the store's.
    pub max_file_size: Option<u64>,
    /// Base URL share links are given under (`https://files.example.com`);
    /// None: `http://` and the Host the share was created through.
    pub public_url: Option<String>,
    /// The event stream.
    pub events: events::EventsConfig,
}

impl GatewayConfig {
    /// Defaults for a node whose data dir is `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("gateway"),
            region: "us-east-1".into(),
            domain: "localhost".into(),
            multipart_idle_timeout: Duration::from_secs(24 * 3600),
            pipeline: objects::PipelineConfig::default(),
            max_file_size: None,
            public_url: None,
            events: events::EventsConfig::default(),
        }
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The database failed.
    #[error(transparent)]
    Index(#[from] index::IndexError),
    /// The access keys could not be loaded.
    #[error(transparent)]
    Keys(#[from] keys::KeyStoreError),
    /// Files or sockets.
    #[error("{0}")]
    Io(String),
}

/// The gateway over one node. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    node: Node,
    cfg: GatewayConfig,
    index: index::Index,
    keys: keys::AccessKeys,
    s3: s3::S3Gateway,
    metrics: metrics::Metrics,
    events: events::EventBus,
    pipeline: objects::Pipeline,
    /// Argon2 share-password checks at once (each takes ~19 MiB and tens of ms).
    password_checks: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Gateway {
    /// Opens the gateway's database in `cfg.dir`; access keys are unsealed
    /// with the node's identity.
    pub fn open(node: Node, cfg: GatewayConfig) -> Result<Gateway, GatewayError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| GatewayError::Io(format!("cannot create {}: {e}", cfg.dir.display())))?;
        let index = index::Index::open(&cfg.dir.join("gateway.db"))?;
        let identity = datamesh_node::NodeIdentity::load_or_create(&node.config().data_dir)
            .map_err(|e| GatewayError::Io(format!("cannot read the node identity: {e}")))?;
        let keys = keys::AccessKeys::load(index.clone(), &identity.secret_seed())?;
        let pipeline = objects::Pipeline::new(node.clone(), cfg.pipeline);
        let metrics = metrics::Metrics::new();
        let events = events::EventBus::new(cfg.events, metrics.clone());
        {
            let m = metrics.clone();
            node.set_observer(std::sync::Arc::new(move |what, elapsed| m.timing(what, elapsed)));
        }
        let s3 = s3::S3Gateway {
            index: index.clone(),
            keys: keys.clone(),
            pipeline: pipeline.clone(),
            events: events.clone(),
        };
        Ok(Gateway {
            node,
            cfg,
            index,
            keys,
            s3,
            metrics,
            events,
            pipeline,
            password_checks: std::sync::Arc::new(tokio::sync::Semaphore::new(2)),
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The configuration.
    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// The event bus.
    pub fn events(&self) -> &events::EventBus {
        &self.events
    }

    /// The server-side pipeline.
    pub fn pipeline(&self) -> &objects::Pipeline {
        &self.pipeline
    }

    pub(crate) fn password_checks(&self) -> &tokio::sync::Semaphore {
        &self.password_checks
    }

    /// The access keys.
    pub fn keys(&self) -> &keys::AccessKeys {
        &self.keys
    }

    /// The index.
    pub fn index(&self) -> &index::Index {
        &self.index
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// The REST API router, guarded by `token`.
    pub fn rest_router(&self, token: String) -> axum::Router {
        rest::router(self.node.clone(), token, Some(self.clone()))
    }

    /// Serves the REST API (and the web of routes under it) on `api` and,
    /// when given, S3 on `s3`, until `shutdown` resolves; starts the
    /// gateway's workers (the event stream's peer watcher and metrics
    /// ticker, and with S3 the expiry of idle multipart uploads) in the
    /// node's registry, where [`Node::shutdown`] stops them. At shutdown
    /// event-stream clients get a close frame, both servers stop accepting,
    /// and in-flight requests get a grace period.
    pub async fn serve(
        &self,
        api: tokio::net::TcpListener,
        s3: Option<tokio::net::TcpListener>,
        token: String,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let workers = self.node.workers();
        workers.spawn(events::PeerWatcher { node: self.node.clone(), bus: self.events.clone() });
        workers.spawn(events::MetricsTicker { node: self.node.clone(), bus: self.events.clone() });
        // One shutdown signal for both servers.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        {
            let events = self.events.clone();
            tokio::spawn(async move {
                shutdown.await;
                // Event-stream clients get a close frame; their connections
                // do not hold up the shutdown.
                events.shutdown();
                let _ = stop_tx.send(true);
            });
        }
        let s3 = s3.map(|l| {
            workers.spawn(s3::UploadExpiry { s3: self.s3.clone(), idle: self.cfg.multipart_idle_timeout });
            let g = self.clone();
            let rx = stop_rx.clone();
            tokio::spawn(async move { g.serve_s3(l, stopped(rx)).await })
        });
        let app = self.rest_router(token);
        axum::serve(api, app)
            .with_graceful_shutdown(stopped(stop_rx))
            .await
            .map_err(|e| GatewayError::Io(format!("the API server failed: {e}")))?;
        if let Some(s3) = s3 {
            s3.await.map_err(|e| GatewayError::Io(format!("the S3 server task failed: {e}")))??;
        }
        Ok(())
    }
}

/// Whether the node can take a file now: its store answers and has room,
/// and it can place a file with its default code — standalone (no network,
/// or no peer known: it keeps every shard itself), or with k+m distinct
/// ONLINE nodes with free space, itself included. Ok names the mode; Err
/// says why not.
pub async fn readiness(node: &Node) -> Result<String, String> {
    let st = node.status().await.map_err(|e| format!("the store does not answer: {e}"))?;
    if st.draining {
        return Err(
            "draining: this node is moving its shards to other nodes before it leaves and takes no new files".into()
        );
    }
    let free = st.store.capacity_bytes.saturating_sub(st.store.used_bytes);
    if free == 0 {
        return Err(format!(
            "the store is full ({} of {} bytes used): raise --capacity or free space",
            st.store.used_bytes, st.store.capacity_bytes
        ));
    }
    let e = node.config().erasure();
    let peers = node.peers().await;
    if peers.is_empty() {
        return Ok("standalone: this node keeps every shard itself".into());
    }
    let usable = peers
        .iter()
        .filter(|p| {
            p.connected
                && datamesh_node::network::can_receive(p.state)
                && p.last_heartbeat.as_ref().is_none_or(|h| h.free_bytes > 0)
        })
        .count();
    let found = usable + 1;
    let need = e.total();
    if found < need {
        return Err(format!(
            "placing a file with the default code {}+{} needs {need} distinct ONLINE nodes with free space; {found} are available (this node included)",
            e.k, e.m
        ));
    }
    Ok(format!("networked: {found} nodes can take shards ({need} needed)"))
}

/// Binds the S3 address with an error that says what to do.
pub async fn bind_s3(addr: SocketAddr) -> Result<tokio::net::TcpListener, GatewayError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        GatewayError::Io(format!(
            "cannot listen for S3 on {addr}: {e}; choose another address with --s3 127.0.0.1:PORT"
        ))
    })
}
