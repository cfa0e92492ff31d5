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
//!   [`keys`]: the user keys S3 objects and REST files are encrypted for
//!   (who an access key is, and its secret, live in the accounts database).
//!
//! [`Gateway`] composes them over one [`Node`]; the `datamesh node` daemon
//! opens it and serves both ports through [`listen`] (TLS, connection caps,
//! timeouts: the edge both ports share).

mod accounts;
mod admin;
pub mod auth;
mod bodies;
pub mod download;
pub mod error;
pub mod events;
pub mod files;
pub mod in_process;
pub mod index;
mod key_routes;
pub mod keys;
pub mod listen;
pub mod metrics;
pub mod objects;
mod ownership;
mod quota_alerts;
pub mod rest;
pub mod s3;
pub mod shares;
mod sharing;
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
    /// The object pipeline's settings.
    pub pipeline: objects::ObjectPipelineConfig,
    /// Largest file `POST /v1/files` takes (413 above it); None: no limit
    /// but the store's.
    pub max_file_size: Option<u64>,
    /// Base URL share links are given under (`https://files.example.com`);
    /// None: `http://` and the Host the share was created through.
    pub public_url: Option<String>,
    /// The event stream.
    pub events: events::EventsConfig,
    /// The accounts database: `sqlite://PATH` or `postgres://...`; None:
    /// SQLite at `<dir>/services.db`.
    pub database: Option<String>,
    /// The file holding the key that seals S3 secrets in the accounts
    /// database; None: `<dir>/sealing.key`, created at first start.
    /// Gateways sharing one PostgreSQL database must share this key.
    pub sealing_key: Option<PathBuf>,
    /// How both ports take connections: TLS, caps, timeouts.
    pub edge: listen::EdgeConfig,
}

impl GatewayConfig {
    /// Defaults for a node whose data dir is `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            dir: data_dir.join("gateway"),
            region: "us-east-1".into(),
            domain: "localhost".into(),
            multipart_idle_timeout: Duration::from_secs(24 * 3600),
            pipeline: objects::ObjectPipelineConfig::default(),
            max_file_size: None,
            public_url: None,
            events: events::EventsConfig::default(),
            database: None,
            sealing_key: None,
            edge: listen::EdgeConfig::default(),
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
    /// The accounts database could not be opened.
    #[error("cannot open the accounts database: {0}")]
    Services(#[from] datamesh_services::DbOpenError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] listen::TlsError),
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
    pipeline: objects::ObjectPipeline,
    services: datamesh_services::Services,
    /// Argon2 share-password checks at once (each takes ~19 MiB and tens of ms).
    password_checks: std::sync::Arc<tokio::sync::Semaphore>,
    /// How both ports take connections.
    edge: std::sync::Arc<listen::Edge>,
}

impl Gateway {
    /// Opens the gateway: its index in `cfg.dir` (access keys unsealed with
    /// the node's identity) and the accounts database
    /// ([`GatewayConfig::database`], migrated at open).
    pub async fn open(node: Node, cfg: GatewayConfig) -> Result<Gateway, GatewayError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| GatewayError::Io(format!("cannot create {}: {e}", cfg.dir.display())))?;
        let services = open_services(&cfg).await?;
        let admin = services
            .bootstrap_admin(auth::ADMIN_NAME)
            .await
            .map_err(|e| GatewayError::Io(format!("cannot set up the administrator account: {e}")))?;
        let gw = tokio::task::spawn_blocking(move || Gateway::open_index(node, cfg, services, admin))
            .await
            .map_err(|e| GatewayError::Io(format!("opening the gateway failed: {e}")))??;
        gw.adopt_pre_accounts_data().await?;
        Ok(gw)
    }

    /// Data from before accounts gets an owner, once: access keys kept in
    /// the gateway's index become S3 keys of the administrator (same id
    /// and secret, their copy here erased), and buckets without an owner
    /// are adopted for the administrator. Idempotent: a later start finds
    /// nothing left to do.
    async fn adopt_pre_accounts_data(&self) -> Result<(), GatewayError> {
        let admin = &self.s3.admin;
        let fail = |what: &str, e: &dyn std::fmt::Display| GatewayError::Io(format!("cannot {what}: {e}"));
        let keys = self.keys.clone();
        let legacy = tokio::task::spawn_blocking(move || keys.legacy())
            .await
            .map_err(|e| fail("read the access keys", &e))??;
        for (id, secret) in legacy {
            let new = datamesh_services::keys::NewKey {
                name: "pre-accounts key",
                scope: datamesh_services::keys::Scope::full(),
                expires_at: None,
            };
            match self.services.import_s3_key(admin, admin.user(), &id, &secret, new).await {
                Ok(_) => {}
                Err(e) => return Err(fail("move an access key into the accounts database", &e)),
            }
            self.keys.forget_secret(&id)?;
            tracing::info!(access_key = %id, "moved a pre-accounts access key to the administrator");
        }
        for (bucket, _) in self.index.run(|ix| ix.buckets()).await? {
            let Ok(res) = datamesh_services::perms::ResourceRef::bucket(&bucket) else { continue };
            match self.services.adopt_resource(admin, &res, admin.user()).await {
                Ok(true) => tracing::info!(%bucket, "a pre-accounts bucket is now the administrator's"),
                Ok(false) => {}
                Err(e) => return Err(fail("give a pre-accounts bucket an owner", &e)),
            }
        }
        Ok(())
    }

    fn open_index(
        node: Node,
        cfg: GatewayConfig,
        services: datamesh_services::Services,
        admin: datamesh_services::Principal,
    ) -> Result<Gateway, GatewayError> {
        let index = index::Index::open(&cfg.dir.join("gateway.db"))?;
        let identity = datamesh_node::NodeIdentity::load_or_create(&node.config().data_dir)
            .map_err(|e| GatewayError::Io(format!("cannot read the node identity: {e}")))?;
        let keys = keys::AccessKeys::load(index.clone(), &identity.secret_seed())?;
        let metrics = metrics::Metrics::new();
        let pipeline = objects::ObjectPipeline::new(node.clone(), cfg.pipeline).counting(metrics.clone());
        let edge = std::sync::Arc::new(listen::Edge::new(cfg.edge.clone(), metrics.clone())?);
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
            services: services.clone(),
            admin,
            reservations: s3::Reservations::default(),
            recent: s3::RecentKeys::default(),
            metrics: metrics.clone(),
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
            services,
            // Share-password hashing takes at most half the cores, so
            // guessers never take the CPU from downloads.
            password_checks: std::sync::Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1)),
            )),
            edge,
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

    /// Whether both ports serve TLS (`https://` URLs).
    pub fn tls(&self) -> bool {
        self.edge.tls()
    }

    /// The event bus.
    pub fn events(&self) -> &events::EventBus {
        &self.events
    }

    /// The server-side pipeline.
    pub fn pipeline(&self) -> &objects::ObjectPipeline {
        &self.pipeline
    }

    pub(crate) fn password_checks(&self) -> &std::sync::Arc<tokio::sync::Semaphore> {
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

    /// The accounts, keys, permissions and quotas.
    pub fn services(&self) -> &datamesh_services::Services {
        &self.services
    }

    /// The REST API router; `token` is the node token (the bootstrap
    /// administrator's credential).
    pub fn rest_router(&self, token: String) -> axum::Router {
        rest::router(self.clone(), token)
    }

    /// Serves the REST API (and the web of routes under it) on `api` and,
    /// when given, S3 on `s3`, until `shutdown` resolves; starts the
    /// gateway's workers (the event stream's peer watcher and metrics
    /// ticker, and with S3 the expiry of idle multipart uploads) in the
    /// node's registry, where [`Node::shutdown`] stops them. Both ports
    /// take connections through the [`listen`] edge (TLS, caps, timeouts).
    /// At shutdown event-stream clients get a close frame, both servers stop
    /// accepting, and in-flight requests get a grace period.
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
        workers.spawn(accounts::Housekeeping {
            services: self.services.clone(),
            every: std::time::Duration::from_secs(5 * 60),
        });
        // Files stored before accounts get their owner before any request.
        ownership::adopt_existing(self).await;
        let app = listen::axum_handler(self.rest_router(token));
        self.edge.clone().serve("API", api, app, stopped(stop_rx)).await;
        if let Some(s3) = s3 {
            s3.await.map_err(|e| GatewayError::Io(format!("the S3 server task failed: {e}")))??;
        }
        Ok(())
    }
}

/// Opens the accounts database named by the configuration (SQLite in the
/// gateway's dir by default) with the sealing key from its file, creating
/// both on first start.
async fn open_services(cfg: &GatewayConfig) -> Result<datamesh_services::Services, GatewayError> {
    let url = match &cfg.database {
        Some(u) => u.clone(),
        None => format!("sqlite://{}", cfg.dir.join("services.db").display()),
    };
    let key_path = cfg.sealing_key.clone().unwrap_or_else(|| cfg.dir.join("sealing.key"));
    let sealing = load_or_create_sealing_key(&key_path)?;
    let scfg = datamesh_services::Config::default();
    Ok(datamesh_services::Services::open(&url, sealing, scfg).await?)
}

/// The sealing key file: 32 random bytes, hex, mode 0600. Created when
/// missing; refused when readable by others or malformed, since every S3
/// secret depends on it.
fn load_or_create_sealing_key(path: &std::path::Path) -> Result<datamesh_services::SealingKey, GatewayError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |what: &str, e: std::io::Error| GatewayError::Io(format!("cannot {what} {}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path).map_err(|e| io("read", e))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(GatewayError::Io(format!(
                    "{} is readable by other users (mode {:o}): run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                )));
            }
            let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                GatewayError::Io(format!("{} is not a sealing key (64 hex digits expected)", path.display()))
            })?;
            Ok(datamesh_services::SealingKey::new("v1", bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = datamesh_services::SealingKey::generate("v1");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| io("create", e))?;
            f.write_all(hex::encode(key.secret_bytes()).as_bytes()).map_err(|e| io("write", e))?;
            f.sync_all().map_err(|e| io("write", e))?;
            Ok(key)
        }
        Err(e) => Err(io("read", e)),
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
