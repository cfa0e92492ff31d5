//! The node: upload sessions, chunk intake (erasure coding and durable
//! shard writes), verified chunk reads, pins, deletion and GC.
//!
//! **Architecture invariant:** a put is acknowledged (its CID returned by
//! [`Node::complete_upload`]) only after every shard, its index entry, the
//! manifest and the pin are durable. Shards written by an unfinished upload
//! are protected from GC by the session's guard and become garbage when the
//! session is aborted or expires.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use datamesh_core::{ChunkEntry, Cid, Codec, Erasure, LocationRecord, Manifest, ManifestError, limits};
use datamesh_net::{NetClient, NetError, PeerId, PeerInfo, Request, Response};
use datamesh_pipeline::erasure::{self, ErasureError};
use datamesh_store::{GcReport, PinInfo, ShardMeta, Store, StoreConfig, StoreError, StoreStats, UploadGuard};
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use sha2::Digest;

use crate::config::NodeConfig;
use crate::identity::NodeIdentity;
use crate::network::{self, LocationStore, NodeHandler};
use crate::placement::{self, Candidate};

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
    pub repair: crate::repair::RepairTotals,
    /// Audit totals since start.
    pub audit: crate::audit::AuditTotals,
    /// Whether the node is draining (`datamesh drain`).
    pub draining: bool,
    /// The background workers and what each is doing.
    pub workers: Vec<crate::workers::WorkerInfo>,
}

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its owner deleted it.
    #[error("{0} was deleted by its owner")]
    Deleted(Cid),
    /// No such file, manifest or shard here.
    #[error("{0} is not stored on this node nor announced by any peer it can reach")]
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
    /// Not enough nodes, or peers failed.
    #[error("{0}")]
    Network(String),
    /// The node is draining (leaving the network) and takes no new files.
    #[error("{0}")]
    Draining(String),
}

impl From<NetError> for NodeError {
    fn from(e: NetError) -> Self {
        NodeError::Network(e.to_string())
    }
}

impl From<placement::PlacementError> for NodeError {
    fn from(e: placement::PlacementError) -> Self {
        NodeError::Network(e.to_string())
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { cid } => NodeError::NotFound(cid),
            e @ (StoreError::CapacityExceeded { .. } | StoreError::DiskFull { .. }) => {
                NodeError::NoSpace(e.to_string())
            }
            e => NodeError::Storage(e.to_string()),
        }
    }
}

impl From<ErasureError> for NodeError {
    fn from(e: ErasureError) -> Self {
        NodeError::Unavailable(e.to_string())
    }
}

/// Where a chunk's shards went.
#[derive(Clone)]
struct Placed {
    shards: Vec<Cid>,
    /// Holder of each shard (peer id bytes); empty when kept locally.
    holders: Vec<Vec<u8>>,
}

struct Session {
    erasure: Erasure,
    guard: Arc<UploadGuard>,
    last_active: Instant,
    chunks: HashMap<Cid, Placed>,
}

pub(crate) struct Inner {
    pub(crate) cfg: NodeConfig,
    pub(crate) store: Store,
    identity: NodeIdentity,
    pub(crate) signing: SigningKey,
    uploads: Mutex<HashMap<UploadId, Session>>,
    pub(crate) manifests: Arc<quick_cache::sync::Cache<Cid, Arc<Manifest>>>,
    pub(crate) locations: LocationStore,
    net: Arc<OnceLock<NetClient>>,
    started: Instant,
    pub(crate) repair: crate::repair::RepairState,
    pub(crate) audit: crate::audit::AuditState,
    pub(crate) tombstones: crate::deletion::TombstoneStore,
    pub(crate) leases: crate::deletion::LeaseState,
    pub(crate) observer: OnceLock<crate::observe::Observer>,
    pub(crate) drain: crate::drain::DrainState,
    /// The node's (and its gateway's) background workers.
    pub(crate) workers: crate::workers::Workers,
    /// When peer discovery for a wide placement last ran; held for a whole
    /// run, so chunks placed at once wait for one discovery instead of
    /// failing on its cooldown.
    discovered: tokio::sync::Mutex<Option<Instant>>,
}

/// The recorded holder of each of chunk `index`'s `n` shards.
pub(crate) fn holders_of(loc: &LocationRecord, index: usize, n: usize) -> Vec<Option<Vec<u8>>> {
    (0..n).map(|i| loc.holder(index, i).map(<[u8]>::to_vec)).collect()
}

/// Who holds a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    Local,
    Peer(PeerId),
}

/// A running node. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

/// How long a read waits before asking live holders that failed once again.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// Holders asked at once whether they still hold their shards (`stat`).
const HOLDER_ASKS_IN_FLIGHT: usize = 32;
/// How long a provider lookup may take before the file counts as unknown.
const PROVIDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Peer discovery for wide placements: random-key lookups, at most this
/// many, for at most this long, at most once per cooldown.
const DISCOVERY_LOOKUPS: usize = 32;
const DISCOVERY_TIME: Duration = Duration::from_secs(10);
const DISCOVERY_COOLDOWN: Duration = Duration::from_secs(30);
/// Longest a placement waits for connected peers to turn ONLINE (see
/// `Node::settle_peers`): five seconds left two of 80 nodes short on a
/// loaded machine.
const DISCOVERY_SETTLE: Duration = Duration::from_secs(15);

/// Connected peers that are ONLINE (can take new shards).
fn online(peers: &[PeerInfo]) -> usize {
    peers.iter().filter(|p| p.connected && network::can_receive(p.state)).count()
}

/// How far a delete request's timestamp may be from the node's clock.
const DELETE_CLOCK_SKEW: u64 = 300;

pub use datamesh_core::tombstone::delete_message;

pub(crate) fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, NodeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| NodeError::Storage(format!("worker failed: {e}")))?
}

impl Node {
    /// Opens the data dir (creating it), the identity and the store.
    pub fn open(cfg: NodeConfig) -> Result<Node, NodeError> {
        cfg.validate().map_err(|e| NodeError::BadRequest(e.to_string()))?;
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(|e| NodeError::Storage(format!("cannot create data dir {}: {e}", cfg.data_dir.display())))?;
        let identity = NodeIdentity::load_or_create(&cfg.data_dir).map_err(|e| NodeError::Storage(e.to_string()))?;
        let (store, report) = Store::open(
            &cfg.data_dir.join("store"),
            StoreConfig { capacity_bytes: cfg.capacity.as_u64(), cache_bytes: cfg.cache.as_u64() as usize },
        )?;
        tracing::info!(?report, node_id = %identity.id(), "store opened");
        // The node's own state lives in the store; older builds kept it in
        // files of the data dir, which these move in.
        let locations = LocationStore::open(&store, &cfg.data_dir.join("locations"))
            .map_err(|e| NodeError::Storage(format!("cannot open the location records: {e}")))?;
        let signing = SigningKey::from_bytes(&identity.secret_seed());
        let tombstones = crate::deletion::TombstoneStore::open(&store, &cfg.data_dir.join("tombstones"))
            .map_err(|e| NodeError::Storage(format!("cannot open the tombstones: {e}")))?;
        let audit = crate::audit::AuditState::open(&store, &cfg.data_dir)
            .map_err(|e| NodeError::Storage(format!("cannot open the reputations: {e}")))?;
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
                workers: Default::default(),
            }),
        })
    }

    /// The handler that serves peers from this node's store.
    pub fn handler(&self) -> Arc<NodeHandler> {
        let net = self.inner.net.clone();
        Arc::new(NodeHandler {
            node: Arc::downgrade(&self.inner),
            rebuilds: Arc::new(tokio::sync::Semaphore::new(crate::repair::REBUILDS_IN_FLIGHT)),
            store: self.inner.store.clone(),
            locations: self.inner.locations.clone(),
            tombstones: self.inner.tombstones.clone(),
            manifests: self.inner.manifests.clone(),
            pending: Mutex::new((Arc::new(self.inner.store.protect()), Instant::now())),
            on_manifest: Arc::new(move |cid: Cid| {
                // A replica announces itself as a provider of the file.
                if let Some(n) = net.get() {
                    let n = n.clone();
                    tokio::spawn(async move {
                        if let Err(e) = n.provide(&network::dht_key(&cid)).await {
                            tracing::debug!(%cid, error = %e, "could not announce a replica");
                        }
                    });
                }
            }),
        })
    }

    /// Starts the peer-to-peer network this node's config describes
    /// (listen, bootstrap and announce addresses, mDNS, health timers) with
    /// the node's own identity, attaches it, and keeps what its heartbeats
    /// say (free space, shard count, draining) current for as long as it
    /// runs. The daemon and in-process test networks both come up this way.
    pub async fn start_network(&self) -> Result<NetClient, NodeError> {
        let cfg = &self.inner.cfg;
        let parse = |list: &[String], what: &str| -> Result<Vec<datamesh_net::Multiaddr>, NodeError> {
            list.iter()
                .map(|a| {
                    a.parse().map_err(|_| {
                        NodeError::BadRequest(format!(
                            "{what} address `{a}` is not a multiaddr (e.g. /ip4/127.0.0.1/tcp/7781)"
                        ))
                    })
                })
                .collect()
        };
        let seed = self.inner.identity.secret_seed();
        let net_cfg = datamesh_net::NetConfig {
            identity_seed: seed,
            listen: parse(&cfg.listen, "listen")?,
            bootstrap: parse(&cfg.bootstrap, "bootstrap")?,
            announce: parse(&cfg.announce, "announce")?,
            mdns: cfg.mdns,
            timers: datamesh_net::HealthTimers {
                heartbeat_interval: cfg.heartbeat_interval,
                warning_after: cfg.warning_after,
                offline_after: cfg.offline_after,
            },
            state_dir: Some(cfg.data_dir.join("net")),
            // Peers place shards by the free space in our heartbeats: say it
            // from the first exchange, not after the first refresh.
            heartbeat: self.heartbeat().await,
            ..datamesh_net::NetConfig::new(seed)
        };
        let net = datamesh_net::start(net_cfg, self.handler())
            .await
            .map_err(|e| NodeError::Network(format!("cannot start the peer-to-peer network: {e}")))?;
        self.attach_net(net.clone());
        self.workers().spawn(crate::workers::HeartbeatWorker {
            node: self.clone(),
            net: net.clone(),
            every: (cfg.heartbeat_interval / 2).max(Duration::from_millis(100)),
        });
        Ok(net)
    }

    /// Connects the node to the network (once).
    pub fn attach_net(&self, net: NetClient) {
        let _ = self.inner.net.set(net);
    }

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

    /// The numbers this node reports in its heartbeats.
    pub async fn heartbeat(&self) -> datamesh_net::Heartbeat {
        let store = self.inner.store.clone();
        let stats = blocking(move || Ok(store.stats()?)).await.ok();
        let draining = self.draining();
        datamesh_net::Heartbeat {
            // A draining node has room for nothing new: nodes that do not
            // know the draining flag skip it for that alone.
            free_bytes: match draining {
                true => 0,
                false => stats.as_ref().map(|s| s.capacity_bytes.saturating_sub(s.used_bytes)).unwrap_or(0),
            },
            shards: stats.map(|s| s.shards).unwrap_or(0),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            draining,
        }
    }

    /// Chooses holders for the k+m shards of a chunk. Without peers the node
    /// keeps them all; with peers, k+m distinct ONLINE nodes are required.
    async fn place(&self, chunk: &Cid, n: usize, shard_bytes: u64) -> Result<Vec<Holder>, NodeError> {
        let Some(net) = self.net() else { return Ok(vec![Holder::Local; n]) };
        let peers = net.peers().await;
        if peers.is_empty() {
            return Ok(vec![Holder::Local; n]);
        }
        self.place_among(chunk, n, shard_bytes, &HashSet::new(), peers).await
    }

    /// `n` distinct holders among this node and the connected ONLINE
    /// `peers` with room, closest to the chunk's key, none of them in
    /// `avoid` (peer id bytes; repair passes the chunk's live holders).
    pub(crate) async fn place_among(
        &self,
        chunk: &Cid,
        n: usize,
        shard_bytes: u64,
        avoid: &HashSet<Vec<u8>>,
        peers: Vec<PeerInfo>,
    ) -> Result<Vec<Holder>, NodeError> {
        let mut cands = self.candidates(avoid, peers).await?;
        if cands.len() < n {
            // Whether or not this call ran the discovery (another chunk's
            // may just have), the peers may have changed meanwhile.
            self.discover_peers(n).await;
            let peers = self.peers().await;
            cands = self.candidates(avoid, peers).await?;
        }
        Ok(placement::place(&kad_key(&chunk.to_bytes()), &cands, n, shard_bytes)?)
    }

    /// This node (unless avoided or draining) and the `peers` that may take
    /// new shards: connected, ONLINE, not draining, not avoided, above the
    /// reputation floor.
    pub(crate) async fn candidates(
        &self,
        avoid: &HashSet<Vec<u8>>,
        peers: Vec<PeerInfo>,
    ) -> Result<Vec<Candidate<Holder>>, NodeError> {
        let me = self.net().ok_or_else(|| NodeError::Network("network is down".into()))?.local_peer_id();
        let mut cands = Vec::new();
        // A draining node keeps nothing new itself.
        if !avoid.contains(&me.to_bytes()) && !self.draining() {
            let own_free = self.heartbeat().await.free_bytes;
            cands.push(Candidate { id: Holder::Local, key: kad_key(&me.to_bytes()), free_bytes: own_free });
        }
        for p in peers {
            // A peer below the reputation floor keeps what it has but gets
            // nothing new.
            if p.connected
                && network::can_receive(p.state)
                && !network::is_draining(&p)
                && !avoid.contains(&p.peer.to_bytes())
                && self.inner.audit.eligible(&p.peer)
            {
                cands.push(Candidate {
                    id: Holder::Peer(p.peer),
                    key: kad_key(&p.peer.to_bytes()),
                    free_bytes: p.last_heartbeat.as_ref().map(|h| h.free_bytes).unwrap_or(u64::MAX),
                });
            }
        }
        Ok(cands)
    }

    /// Widens this node's view of the network when a placement needs more
    /// nodes than it is connected to (a wide code such as 29+51): Kademlia
    /// lookups of random keys find the nodes closest to each (a node keeps
    /// connections only to its routing table's neighbours and to whom it
    /// talked), each one found is dialed, and every new connection is
    /// identified and heartbeated into the health table; then waits for
    /// connected peers to turn ONLINE (`settle_peers`). Lookups at most once per `DISCOVERY_COOLDOWN`, so a network that really is too
    /// small fails its puts fast.
    async fn discover_peers(&self, want: usize) {
        let Some(net) = self.net().cloned() else { return };
        let mut last = self.inner.discovered.lock().await;
        if last.is_some_and(|t| t.elapsed() < DISCOVERY_COOLDOWN) {
            // Another placement just looked; the peers it found may still
            // be turning ONLINE.
            drop(last);
            self.settle_peers(&net, want).await;
            return;
        }
        *last = Some(Instant::now());
        let before = online(&net.peers().await);
        let deadline = Instant::now() + DISCOVERY_TIME;
        // Rounds of four lookups at once (Kademlia's α is per lookup).
        for _ in 0..DISCOVERY_LOOKUPS / 4 {
            if Instant::now() > deadline || online(&net.peers().await) + 1 >= want {
                break;
            }
            let round: FuturesUnordered<_> = (0..4)
                .map(|_| {
                    let (net, key) = (net.clone(), rand::random::<[u8; 32]>());
                    async move { tokio::time::timeout(Duration::from_secs(5), net.closest_peers(&key)).await }
                })
                .collect();
            let found: HashSet<PeerId> = round
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .filter_map(|r| r.ok().and_then(Result::ok))
                .flatten()
                .collect();
            // A lookup connects to the peers it queries, not to every peer
            // it learns of: ask each one not yet connected an empty
            // SHARD_EXISTS, which dials it (its address came with the
            // lookup), and it is then identified and heartbeated like any
            // other. Under load, lookups alone left a few nodes of an
            // 80-node network unseen.
            let connected: HashSet<PeerId> =
                net.peers().await.into_iter().filter(|p| p.connected).map(|p| p.peer).collect();
            let me = net.local_peer_id();
            let dials: FuturesUnordered<_> = found
                .into_iter()
                .filter(|p| *p != me && !connected.contains(p))
                .map(|p| {
                    let net = net.clone();
                    async move { tokio::time::timeout(Duration::from_secs(5), net.shard_exists(p, Vec::new())).await }
                })
                .collect();
            dials.collect::<Vec<_>>().await;
        }
        drop(last);
        let after = self.settle_peers(&net, want).await;
        tracing::info!(want, before, after, "looked for more peers to place shards on");
    }

    /// Waits, up to `DISCOVERY_SETTLE`, while fewer than `want` nodes can
    /// take shards and some connected peer is not ONLINE yet: connections
    /// opened by discovery (or by peers still joining) turn ONLINE once
    /// identified and heartbeated, which a loaded node may take seconds to
    /// do. Returns the ONLINE peers. With nobody on the way, it returns at
    /// once: a network that is too small fails its puts fast.
    async fn settle_peers(&self, net: &NetClient, want: usize) -> usize {
        let settle = Instant::now() + DISCOVERY_SETTLE;
        loop {
            let peers = net.peers().await;
            let online = online(&peers);
            let coming = peers.iter().any(|p| p.connected && !network::can_receive(p.state));
            if online + 1 >= want || !coming || Instant::now() >= settle {
                return online;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
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
        if self.draining() {
            return Err(NodeError::Draining(
                "this node is draining (leaving the network) and takes no new uploads; put the file through another node"
                    .into(),
            ));
        }
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
            Session {
                erasure,
                guard: Arc::new(self.inner.store.protect()),
                last_active: Instant::now(),
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
        let guard = guard.clone();
        let store = self.inner.store.clone();
        let observer = self.observer();
        let (cid, shards) = blocking(move || {
            let stored = stored.as_ref();
            let cid = Cid::raw_blake3(stored);
            let started = Instant::now();
            let shards = erasure::encode(erasure, stored)?;
            crate::observe::report(&observer, crate::observe::Timing::ErasureEncode, started.elapsed());
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
                    let net = self.net().cloned().ok_or_else(|| NodeError::Network("network is down".into()))?;
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
                    return Err(NodeError::Network(format!("storing a shard on {p} failed: {e}")));
                }
            }
            Ok(())
        };
        let (a, b) = tokio::join!(local_write, remote_writes);
        a?;
        b?;
        let me = self.net().map(|n| n.local_peer_id().to_bytes());
        let holder_ids: Vec<Vec<u8>> = match &me {
            Some(me) if holders.iter().any(|h| *h != Holder::Local) => holders
                .iter()
                .map(|h| match h {
                    Holder::Local => me.clone(),
                    Holder::Peer(p) => p.to_bytes(),
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
            return Err(NodeError::BadRequest(format!(
                "manifest says erasure {}+{} but the upload was opened with {}+{}",
                manifest.erasure.k, manifest.erasure.m, session.erasure.k, session.erasure.m
            )));
        }
        // Every shard the manifest names must be durable, and must be the
        // shards this node computed for that chunk: a client cannot make the
        // node vouch for data it never received.
        let mut holders: Vec<Vec<Vec<u8>>> = Vec::with_capacity(manifest.chunks.len());
        let mut check_local = Vec::new();
        for (i, c) in manifest.chunks.iter().enumerate() {
            match session.chunks.get(&c.cid) {
                Some(p) if p.shards != c.shards => {
                    return Err(NodeError::BadRequest(format!(
                        "chunk {i}: shard list differs from what the node computed"
                    )));
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
        blocking(move || {
            for &i in &check_local {
                let c = &m.chunks[i];
                for s in &c.shards {
                    if !store.has_shard(s)? {
                        return Err(NodeError::BadRequest(format!("chunk {i} ({}) was never uploaded", c.cid)));
                    }
                }
            }
            store.put_manifest(&cid, &bytes)?;
            if let Some(u) = m.unixfs {
                store.set_alias(&u, &cid)?;
            }
            store.pin(&cid, PinInfo { name: name2, size: m.size, created_at: now_secs(), replica: false })?;
            Ok(())
        })
        .await?;
        if networked {
            // Chunks found already stored here (deduplicated) are held locally.
            let me = self.net().map(|n| n.local_peer_id().to_bytes()).unwrap_or_default();
            for (i, h) in holders.iter_mut().enumerate() {
                if h.is_empty() {
                    *h = vec![me.clone(); manifest.chunks[i].shards.len()];
                }
            }
            let record = LocationRecord::sign(cid, 1, &holders, &self.inner.signing);
            let locations = self.inner.locations.clone();
            let r2 = record.clone();
            blocking(move || locations.put(&r2).map(|_| ()).map_err(|e| NodeError::Storage(e.to_string()))).await?;
            self.replicate(&manifest, cid, &manifest_bytes, &record).await?;
        }
        drop(session);
        self.inner.manifests.insert(cid, Arc::new(manifest));
        Ok(cid)
    }

    /// Stores the manifest and location record on the max(m+1, 3) nodes
    /// closest to the manifest's CID (this node counts as one, unless it is
    /// draining) and on every shard holder (whose replica pin keeps its
    /// shards from GC), then announces the file in the DHT. Returns how many
    /// other nodes took both.
    pub(crate) async fn replicate(
        &self,
        m: &Manifest,
        cid: Cid,
        bytes: &[u8],
        record: &LocationRecord,
    ) -> Result<usize, NodeError> {
        let Some(net) = self.net().cloned() else { return Ok(0) };
        let targets = self.replica_targets(m, cid, record).await;
        let rec = record.encode();
        let mut jobs = FuturesUnordered::new();
        for p in targets {
            let net = net.clone();
            let (bytes, rec) = (bytes.to_vec(), rec.clone());
            jobs.push(async move {
                match net.request(p, Request::PutManifest { cid, data: bytes }).await? {
                    Response::Ok => {}
                    other => return Err(NodeError::Network(format!("{p} refused the manifest: {other:?}"))),
                }
                match net.request(p, Request::PutRecord { key: network::location_key(&cid), value: rec }).await? {
                    Response::Ok => Ok(()),
                    other => Err(NodeError::Network(format!("{p} refused the location record: {other:?}"))),
                }
            });
        }
        let took = jobs.len();
        while let Some(r) = jobs.next().await {
            r?;
        }
        net.provide(&network::dht_key(&cid)).await?;
        if let Some(u) = m.unixfs {
            net.provide(&network::dht_key(&u)).await?;
        }
        Ok(took)
    }

    /// Who keeps a file's manifest and location record besides this node:
    /// the max(m+1, 3) − 1 ONLINE nodes closest to the manifest CID (all
    /// max(m+1, 3) of them when this node is draining: it will not be one),
    /// none of them draining, and every shard holder.
    pub(crate) async fn replica_targets(&self, m: &Manifest, cid: Cid, record: &LocationRecord) -> Vec<PeerId> {
        let Some(net) = self.net().cloned() else { return Vec::new() };
        let me = net.local_peer_id();
        let want = replica_count(m) - usize::from(!self.draining());
        let online: std::collections::HashSet<PeerId> = net
            .peers()
            .await
            .into_iter()
            .filter(|p| p.connected && network::can_receive(p.state) && !network::is_draining(p))
            .map(|p| p.peer)
            .collect();
        let mut targets: Vec<PeerId> = match net.closest_peers(&network::dht_key(&cid)).await {
            Ok(c) => c.into_iter().filter(|p| *p != me && online.contains(p)).take(want).collect(),
            Err(_) => Vec::new(),
        };
        if targets.len() < want {
            // The DHT may not have converged yet: fill from connected peers,
            // nearest first.
            let mut rest: Vec<PeerId> = online.iter().copied().filter(|p| !targets.contains(p)).collect();
            let key = kad_key(&cid.to_bytes());
            rest.sort_by_key(|p| placement::distance(&key, &kad_key(&p.to_bytes())));
            targets.extend(rest.into_iter().take(want - targets.len()));
        }
        for h in &record.holders {
            if let Ok(p) = PeerId::from_bytes(h)
                && p != me
                && !targets.contains(&p)
            {
                targets.push(p);
            }
        }
        targets
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
    /// a public file) to the manifest CID, asking the network if needed.
    pub async fn resolve(&self, cid: Cid) -> Result<Cid, NodeError> {
        let store = self.inner.store.clone();
        let local = blocking(move || {
            if store.has_manifest(&cid)? {
                return Ok(Some(cid));
            }
            Ok(store.resolve_alias(&cid)?)
        })
        .await?;
        if let Some(m) = local {
            return Ok(m);
        }
        if cid.codec() == Codec::DagCbor {
            return Ok(cid);
        }
        let Some(net) = self.net() else { return Err(NodeError::NotFound(cid)) };
        for p in self.providers(&cid).await? {
            if let Ok(Response::Record(Some(b))) =
                net.request(p, Request::GetRecord { key: network::alias_key(&cid) }).await
                && let Ok(m) = Cid::from_bytes(&b)
            {
                return Ok(m);
            }
        }
        Err(NodeError::NotFound(cid))
    }

    /// Nodes that announced `cid`, found within a bounded time.
    async fn providers(&self, cid: &Cid) -> Result<Vec<PeerId>, NodeError> {
        let Some(net) = self.net() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let found = tokio::time::timeout(PROVIDER_LOOKUP_TIMEOUT, net.find_providers(&network::dht_key(cid))).await;
        crate::observe::report(&self.observer(), crate::observe::Timing::DhtLookup, started.elapsed());
        match found {
            Ok(Ok(mut v)) => {
                let me = net.local_peer_id();
                v.retain(|p| *p != me);
                Ok(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(%cid, error = %e, "provider lookup failed");
                Ok(Vec::new())
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The manifest's CID and encoded bytes, from this node or the network.
    pub async fn manifest_bytes(&self, cid: Cid) -> Result<(Cid, Vec<u8>), NodeError> {
        let cid = self.resolve(cid).await?;
        let store = self.inner.store.clone();
        match blocking(move || Ok(store.get_manifest(&cid)?)).await {
            Ok(bytes) if cid.verifies(&bytes) => return Ok((cid, bytes)),
            Ok(_) => tracing::warn!(%cid, "local manifest copy is corrupt; asking the network"),
            Err(NodeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(net) = self.net().cloned() {
            for p in self.providers(&cid).await? {
                match net.get_manifest(p, cid).await {
                    Ok(bytes) => {
                        // Keep a copy (unpinned: GC may drop it) so the next
                        // read of this file is local.
                        let store = self.inner.store.clone();
                        let b = bytes.clone();
                        let _ = blocking(move || Ok(store.put_manifest(&cid, &b)?)).await;
                        return Ok((cid, bytes));
                    }
                    Err(e) => tracing::debug!(%cid, peer = %p, error = %e, "manifest fetch failed"),
                }
            }
        }
        Err(NodeError::NotFound(cid))
    }

    /// The decoded manifest (cached).
    pub async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), NodeError> {
        if let Some(m) = self.inner.manifests.get(&cid) {
            return Ok((cid, m));
        }
        let (cid, bytes) = self.manifest_bytes(cid).await?;
        if self.inner.tombstones.get(&cid).is_some() {
            return Err(NodeError::Deleted(cid));
        }
        let m = Arc::new(Manifest::decode_verified(&cid, &bytes)?);
        self.inner.manifests.insert(cid, m.clone());
        Ok((cid, m))
    }

    /// The file's location record: this node's copy, else the highest valid
    /// one its replicas hold. None for files kept whole on one node.
    pub async fn location(&self, manifest: Cid) -> Result<Option<LocationRecord>, NodeError> {
        let locations = self.inner.locations.clone();
        if let Some(r) = blocking(move || Ok(locations.get(&manifest))).await? {
            return Ok(Some(r));
        }
        let Some(net) = self.net().cloned() else { return Ok(None) };
        let mut best: Option<LocationRecord> = None;
        for p in self.providers(&manifest).await? {
            if let Ok(Response::Record(Some(b))) =
                net.request(p, Request::GetRecord { key: network::location_key(&manifest) }).await
                && let Ok(r) = LocationRecord::decode(&b)
                && r.manifest == manifest
                && best.as_ref().is_none_or(|x| r.seq > x.seq)
            {
                best = Some(r);
            }
        }
        if let Some(r) = &best {
            let locations = self.inner.locations.clone();
            let r = r.clone();
            let _ = blocking(move || locations.put(&r).map_err(|e| NodeError::Storage(e.to_string()))).await;
        }
        Ok(best)
    }

    /// Brings this node's copy of a file's location record up to date by
    /// asking the file's replicas and holders for theirs.
    ///
    /// A node that was down or cut off while a repair re-signed the record
    /// keeps its old one: nobody may send it the new one in time, and when
    /// one does, [`network::may_replace`] refuses a record signed by a
    /// repairer that its old record does not name (after two repairs the
    /// chain of signers is broken). A record that a peer we already trust
    /// with the file — a holder named in our record, or its signer, any of
    /// whom could sign a rewrite itself — holds as current is taken over,
    /// and the walk goes on from there with the new record's holders. Taking
    /// over the newest record is what keeps a stale node from repairing from
    /// its old view and forking the record with its own line of `seq`s;
    /// when a fork happened anyway, this is where the node gives up its line
    /// for the one more of the file's replicas hold (the choice is
    /// [`network::newest_vouched`]).
    ///
    /// Returns the record now held (`rec` when nothing else was vouched
    /// for).
    pub(crate) async fn refresh_location(&self, m: &Manifest, rec: LocationRecord) -> LocationRecord {
        let Some(net) = self.net().cloned() else { return rec };
        let manifest = rec.manifest;
        let ask = self.replica_targets(m, manifest, &rec).await;
        let answers: Vec<(Vec<u8>, LocationRecord)> = ask
            .into_iter()
            .map(|p| {
                let net = net.clone();
                async move {
                    let got = tokio::time::timeout(
                        Duration::from_secs(5),
                        net.get_record(p, network::location_key(&manifest)),
                    )
                    .await;
                    match got {
                        Ok(Ok(Some(b))) => LocationRecord::decode(&b)
                            .ok()
                            .filter(|r| r.manifest == manifest)
                            .map(|r| (p.to_bytes(), r)),
                        _ => None,
                    }
                }
            })
            .collect::<FuturesUnordered<_>>()
            .filter_map(std::future::ready)
            .collect()
            .await;
        let current = network::newest_vouched(&rec, &answers);
        if current.signature != rec.signature {
            tracing::info!(file = %manifest, from = rec.seq, to = current.seq, "took over a newer location record");
            let locations = self.inner.locations.clone();
            let r = current.clone();
            let _ = blocking(move || locations.take_over(&r).map_err(|e| NodeError::Storage(e.to_string()))).await;
        }
        current
    }

    /// The stored form of chunk `index` of a file, rebuilt from any k
    /// verified shards.
    pub async fn chunk(&self, file: Cid, index: usize) -> Result<bytes::Bytes, NodeError> {
        let (mcid, m) = self.manifest(file).await?;
        let entry = m.chunks.get(index).cloned().ok_or_else(|| {
            NodeError::BadRequest(format!("file {file} has {} chunks; there is no chunk {index}", m.chunks.len()))
        })?;
        if let Some(hit) = self.inner.store.cache_get(&entry.cid) {
            return Ok(hit);
        }
        let data = match self.location(mcid).await? {
            Some(loc) => match self.read_chunk_networked(m.erasure, &entry, index, &loc).await {
                // Too few shards where our record says: the record may be
                // stale (repairs moved them while this node was away).
                Err(NodeError::Unavailable(why)) => {
                    let fresh = self.refresh_location(&m, loc.clone()).await;
                    if fresh.signature == loc.signature {
                        return Err(NodeError::Unavailable(why));
                    }
                    self.read_chunk_networked(m.erasure, &entry, index, &fresh).await?
                }
                other => other?,
            },
            None => {
                let store = self.inner.store.clone();
                let erasure = m.erasure;
                let e = entry.clone();
                let observer = self.observer();
                blocking(move || read_chunk(&store, erasure, &e, &observer)).await?
            }
        };
        // `Bytes::from(Vec)` takes the buffer over: no copy of the chunk.
        let bytes = bytes::Bytes::from(data);
        self.inner.store.cache_put(entry.cid, bytes.clone());
        Ok(bytes)
    }

    /// Fetches k shards of a chunk from their holders: data shards and this
    /// node's own shards first, several at once; a holder that fails or is
    /// offline is replaced by the next shard's holder.
    async fn read_chunk_networked(
        &self,
        e: Erasure,
        entry: &ChunkEntry,
        index: usize,
        loc: &LocationRecord,
    ) -> Result<Vec<u8>, NodeError> {
        let k = e.k as usize;
        let total = entry.shards.len();
        let me = self.net().map(|n| n.local_peer_id().to_bytes()).unwrap_or_default();
        let offline: std::collections::HashSet<Vec<u8>> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| !p.connected || !network::can_receive(p.state))
            .map(|p| p.peer.to_bytes())
            .collect();
        // Local first, then healthy holders, then the rest; data shards
        // before parity within each group (no decode needed if all k data
        // shards arrive).
        let mut order: Vec<usize> = (0..total).collect();
        order.sort_by_key(|&i| {
            let h = loc.holder(index, i).unwrap_or_default();
            let rank = if h == me.as_slice() {
                0
            } else if offline.contains(h) {
                2
            } else {
                1
            };
            (rank, i)
        });
        let holders = holders_of(loc, index, total);
        let (mut slots, mut got, mut failures) =
            self.fetch_k_shards(k, &entry.cid, &entry.shards, &holders, &order, &me, true).await;
        if got < k {
            // Every holder was tried. Those still connected and ONLINE get
            // one more try after a pause: a timeout or a busy answer from a
            // loaded node is not a lost shard, and a chunk with exactly k
            // live shards needs every one of them.
            let alive: std::collections::HashSet<Vec<u8>> = self
                .peers()
                .await
                .into_iter()
                .filter(|p| p.connected && network::can_receive(p.state))
                .map(|p| p.peer.to_bytes())
                .collect();
            let again: Vec<usize> = (0..total)
                .filter(|&i| slots[i].is_none() && holders[i].as_ref().is_some_and(|h| *h == me || alive.contains(h)))
                .collect();
            if again.len() >= k - got {
                tracing::debug!(chunk = %entry.cid, got, retrying = again.len(), "too few shards arrived; asking the live holders again");
                tokio::time::sleep(READ_RETRY_PAUSE).await;
                let (more, n, f) =
                    self.fetch_k_shards(k - got, &entry.cid, &entry.shards, &holders, &again, &me, false).await;
                for (slot, m) in slots.iter_mut().zip(more) {
                    if m.is_some() {
                        *slot = m;
                    }
                }
                got += n;
                failures.extend(f);
            }
        }
        if got < k {
            return Err(NodeError::Unavailable(format!(
                "chunk {} has only {got} reachable shards of the {k} needed ({}); more nodes must come back before it can be read",
                entry.cid,
                failures.join("; ")
            )));
        }
        let e2 = entry.clone();
        let observer = self.observer();
        blocking(move || {
            let started = Instant::now();
            let chunk = erasure::decode_chunk(e, &e2, slots)?;
            crate::observe::report(&observer, crate::observe::Timing::ErasureDecode, started.elapsed());
            Ok(chunk)
        })
        .await
    }

    /// Fetches shards of `chunk` (`cids`, held by `holders`), trying them in
    /// `order`, until `k` have arrived (each verified against its CID). A failed holder is
    /// replaced by the next; a slow one gets a spare request to the next
    /// (hedging) after `hedge_after`, or, when `adaptive`, after four times
    /// the first remote answer's time if that is shorter. Returns the shard
    /// slots, how many arrived, and the failures.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch_k_shards(
        &self,
        k: usize,
        chunk: &Cid,
        cids: &[Cid],
        holders: &[Option<Vec<u8>>],
        order: &[usize],
        me: &[u8],
        adaptive: bool,
    ) -> (Vec<Option<Vec<u8>>>, usize, Vec<String>) {
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut next = 0;
        let mut got = 0;
        let mut inflight = FuturesUnordered::new();
        let mut failures = Vec::new();
        // Hedging: `spares` extra requests are in flight beyond the k - got
        // needed, one more each time the hedge timer fires without an
        // answer; a failure or an answer re-arms the timer.
        let started = tokio::time::Instant::now();
        let hedging = !self.inner.cfg.hedge_after.is_zero();
        let mut hedge_wait = self.inner.cfg.hedge_after.max(Duration::from_millis(1));
        let mut spares = 0;
        // The wait is tuned by the first *remote* answer: a shard read from
        // this node's own disk arrives at once and would shrink it to the
        // 20 ms floor, so under load every chunk would fetch a spare it
        // does not need (measured: a fifth shard per repaired chunk).
        let mut tuned = false;
        while got < k {
            while inflight.len() < k - got + spares && next < order.len() {
                let i = order[next];
                next += 1;
                let fut = self.fetch_shard(cids[i], holders[i].clone(), me.to_vec());
                inflight.push(async move { (i, fut.await) });
            }
            let timer = tokio::time::sleep(hedge_wait);
            let (i, r) = tokio::select! {
                done = inflight.next() => match done {
                    Some(done) => done,
                    None => break,
                },
                () = timer, if hedging && next < order.len() => {
                    spares += 1;
                    tracing::debug!(%chunk, spares, "slow shard holders; hedging with another");
                    continue;
                }
            };
            match r {
                Ok(b) => {
                    if adaptive && !tuned && holders[i].as_deref() != Some(me) {
                        tuned = true;
                        let first = started.elapsed();
                        hedge_wait = hedge_wait.min((first * 4).max(Duration::from_millis(20)));
                    }
                    slots[i] = Some(b);
                    got += 1;
                }
                Err(err) => failures.push(format!("shard {i}: {err}")),
            }
        }
        (slots, got, failures)
    }

    pub(crate) async fn fetch_shard(
        &self,
        cid: Cid,
        holder: Option<Vec<u8>>,
        me: Vec<u8>,
    ) -> Result<Vec<u8>, NodeError> {
        let holder = holder.ok_or_else(|| NodeError::Unavailable("no holder recorded".into()))?;
        if holder == me {
            let store = self.inner.store.clone();
            return blocking(move || Ok(store.get_shard(&cid)?)).await;
        }
        let peer = PeerId::from_bytes(&holder).map_err(|_| NodeError::Unavailable("bad holder id".into()))?;
        let net = self.net().ok_or_else(|| NodeError::Network("network is down".into()))?;
        Ok(net.get_shard(peer, cid).await?)
    }

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
            let me = net.local_peer_id().to_bytes();
            // All holders at once (a bounded number in flight): one after
            // another, a 29+51 file's stat took 79 round trips, over a
            // minute on a loaded node.
            let asks = positions_by_holder(m, loc).into_iter().filter(|(h, _)| *h != me).filter_map(|(h, slots)| {
                let peer = PeerId::from_bytes(&h).ok()?;
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
                    store.pin(&cid, PinInfo { name, size: m.size, created_at: now_secs(), replica: false })?;
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
            let (ts, sig) = signed
                .clone()
                .ok_or_else(|| NodeError::Forbidden(format!("deleting {cid} needs a signature by its owner's key")))?;
            if now_secs().abs_diff(ts) > DELETE_CLOCK_SKEW {
                return Err(NodeError::Forbidden("delete request timestamp is too far from the node's clock".into()));
            }
            let key = <[u8; 32]>::try_from(owner.as_slice())
                .ok()
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .ok_or_else(|| NodeError::Forbidden("the manifest's owner key is invalid".into()))?;
            let sig = Signature::from_slice(&sig).map_err(|_| NodeError::Forbidden("malformed signature".into()))?;
            key.verify(&delete_message(&cid, ts), &sig).map_err(|_| {
                NodeError::Forbidden(format!(
                    "the signature is not by the owner of {cid}; only the owner's key can delete it"
                ))
            })?;
        }
        // With an owner signature, the deletion is the network's: the
        // signature is the tombstone every holder checks for itself.
        if let (Some(_), Some((ts, sig))) = (&m.owner, signed) {
            let signature =
                <[u8; 64]>::try_from(sig.as_slice()).map_err(|_| NodeError::Forbidden("malformed signature".into()))?;
            let t = datamesh_core::tombstone::Tombstone { manifest: cid, deleted_at: ts, signature };
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

/// How many nodes keep a file's manifest and location record: max(m+1, 3).
pub(crate) fn replica_count(m: &Manifest) -> usize {
    (m.erasure.m as usize + 1).max(3)
}

/// Shard positions `(chunk, shard)` per holder named in `loc`.
pub(crate) fn positions_by_holder(m: &Manifest, loc: &LocationRecord) -> HashMap<Vec<u8>, Vec<(usize, usize)>> {
    let mut by_holder: HashMap<Vec<u8>, Vec<(usize, usize)>> = HashMap::new();
    for (ci, c) in m.chunks.iter().enumerate() {
        for si in 0..c.shards.len() {
            if let Some(h) = loc.holder(ci, si) {
                by_holder.entry(h.to_vec()).or_default().push((ci, si));
            }
        }
    }
    by_holder
}

/// Asks `peer` which of `cids` it holds (`SHARD_EXISTS`, in batches a frame
/// can carry). `None` where it gave no clear answer.
pub(crate) async fn shards_held(net: &NetClient, peer: PeerId, cids: &[Cid]) -> Vec<Option<bool>> {
    let mut out = Vec::with_capacity(cids.len());
    for batch in cids.chunks(1024) {
        match net.request(peer, Request::ShardExists { cids: batch.to_vec() }).await {
            Ok(Response::Exists(v)) if v.len() == batch.len() => out.extend(v.into_iter().map(Some)),
            _ => out.extend(std::iter::repeat_n(None, batch.len())),
        }
    }
    out
}

/// Reads a chunk's data shards (and parity ones only when needed), verifies
/// them and decodes.
fn read_chunk(
    store: &Store,
    e: Erasure,
    entry: &ChunkEntry,
    observer: &Option<crate::observe::Observer>,
) -> Result<Vec<u8>, NodeError> {
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
    let started = Instant::now();
    let chunk = erasure::decode_chunk(e, entry, shards)?;
    crate::observe::report(observer, crate::observe::Timing::ErasureDecode, started.elapsed());
    Ok(chunk)
}

/// A key in Kademlia's keyspace: SHA-256 of the bytes (as libp2p-kad hashes
/// peer ids and record keys), so placement agrees with DHT lookups.
pub(crate) fn kad_key(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}
