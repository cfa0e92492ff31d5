//! The network actor: the one task that owns the libp2p `Swarm`.
//!
//! It `select!`s over four sources: commands from [`crate::NetClient`]s,
//! swarm events, answers from the tasks serving inbound requests, and a
//! timer tick (heartbeats, health, bootstrap retries, ban expiry). A map from
//! request / query id to the waiting caller's `oneshot` links answers back.
//! Every queue and map here is bounded (see [`crate::Tuning`]).
//!
//! StreamRequest requests never run on the actor: each is served on its own task
//! (CID verification, then the node's [`crate::Handler`]), at most
//! `max_inbound_requests` at once, and the answer comes back as a message.
//! A PUT body the handler takes through a [`crate::BodySink`] is streamed
//! into it by the codec as it arrives (sink calls on blocking threads, at
//! most `max_inbound_requests` bodies at once); the actor only sends the
//! settled answer and strikes a sender whose bytes did not match.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, GetProvidersOk, QueryId, QueryResult, RecordKey};
use libp2p::request_response::{self, Message, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, identify, identity, mdns, noise,
    ping, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Handler;
use crate::bootstrap::{self, Bootstrap};
use crate::config::{NetConfig, Tuning};
use crate::error::NetError;
use crate::health::{PeerInfo, PeerTable};
use crate::kad_store::{self, Journal, PersistentStore, Persister};
use crate::protocol::{
    BodyKind, Heartbeat, InboundBudget, PROTOCOL, Request, Response, ShardCodec, StreamRequest, StreamResponse,
};

mod events;
mod inbound;
mod peers;

pub(crate) use self::inbound::verify;
use self::inbound::{into_response, serve};

/// The Kademlia protocol id: our own DHT, apart from the public IPFS one.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/datamesh/kad/1.0.0");
/// The `protocol_version` this node announces in identify; peers announcing
/// another are not DataMesh nodes and are not added to the DHT.
pub const ID_PROTOCOL_VERSION: &str = "/datamesh/id/1.0.0";
/// Kademlia replication factor (k).
pub const K: usize = 20;
/// How often a node whose routing table holds fewer than [`K`] peers
/// bootstraps again (see `rejoin_if_small`).
const REJOIN_EVERY: Duration = Duration::from_secs(30);
/// Kademlia lookup parallelism (α).
pub const ALPHA: usize = 3;
/// Capacity of the command channel.
pub(crate) const COMMAND_QUEUE: usize = 256;
/// Largest DHT value record (the store refuses larger ones).
pub const MAX_DHT_VALUE: usize = 64 * 1024;
/// Largest Kademlia message: a value record plus room for k peers' addresses.
const KAD_MAX_PACKET: usize = MAX_DHT_VALUE + 32 * 1024;
/// Longest `start` waits for its listeners to come up.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    block: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<PersistentStore>,
    shard: request_response::Behaviour<ShardCodec>,
    mdns: Toggle<mdns::tokio::Behaviour>,
}

type Reply<T> = oneshot::Sender<Result<T, NetError>>;

/// The outcome of a provider lookup, with what it cost.
#[derive(Debug, Clone)]
pub struct ProviderLookup {
    /// The providers found (this node included if it provides the key).
    pub providers: Vec<PeerId>,
    /// Peers the lookup sent a request to.
    pub peers_contacted: u32,
    /// Of those, the peers that answered.
    pub peers_answered: u32,
}

/// What a [`crate::NetClient`] asks of the actor.
pub(crate) enum Command {
    ListenAddrs(oneshot::Sender<Vec<Multiaddr>>),
    Request { peer: PeerId, req: Request, reply: Reply<Response> },
    Strike { peer: PeerId, why: String },
    ClosestPeers { key: Vec<u8>, reply: Reply<Vec<PeerId>> },
    Provide { key: Vec<u8>, reply: Reply<()> },
    FindProviders { key: Vec<u8>, reply: Reply<ProviderLookup> },
    LocalProviders { key: Vec<u8>, reply: oneshot::Sender<Vec<PeerId>> },
    Peers(oneshot::Sender<Vec<PeerInfo>>),
    RoutingTable(oneshot::Sender<Vec<(u32, usize)>>),
    Shutdown(oneshot::Sender<()>),
}

enum Pending {
    Heartbeat(PeerId),
    User(Reply<Response>),
}

enum QueryWait {
    Closest(Reply<Vec<PeerId>>),
    Provide(Reply<()>),
    Providers { found: HashSet<PeerId>, reply: Reply<ProviderLookup> },
}

/// An inbound request served: the answer and, if the peer cheated, why.
struct Served {
    peer: PeerId,
    channel: ResponseChannel<StreamResponse>,
    response: StreamResponse,
    strike: Option<String>,
}

pub(crate) struct Actor {
    swarm: Swarm<Behaviour>,
    local: PeerId,
    commands: mpsc::Receiver<Command>,
    served_tx: mpsc::Sender<Served>,
    served_rx: mpsc::Receiver<Served>,
    handler: Arc<dyn Handler>,
    local_heartbeat: watch::Receiver<Heartbeat>,
    pending: HashMap<OutboundRequestId, Pending>,
    queries: HashMap<QueryId, QueryWait>,
    peers: PeerTable,
    boot: Bootstrap,
    inbound_in_flight: usize,
    /// The operator named the external addresses (`NetConfig::announce`).
    announce_fixed: bool,
    max_inbound: usize,
    tuning: Tuning,
    store_path: Option<PathBuf>,
    /// Provider changes since the last save, appended by the store.
    journal: Arc<std::sync::Mutex<Journal>>,
    /// The copy the DHT store is saved from, on a blocking thread.
    persister: Arc<std::sync::Mutex<Persister>>,
    persist_task: Option<tokio::task::JoinHandle<()>>,
    /// When this node last started a Kademlia bootstrap itself (None: no
    /// bootstrap peer reached since start).
    last_join: Option<Instant>,
}

/// Builds the swarm, restores the DHT store, binds the listeners and waits
/// until each has an address. The returned actor is ready to [`Actor::run`].
pub(crate) async fn build(
    cfg: NetConfig,
    tuning: Tuning,
    handler: Arc<dyn Handler>,
    commands: mpsc::Receiver<Command>,
    local_heartbeat: watch::Receiver<Heartbeat>,
) -> Result<Actor, NetError> {
    let mut seed = cfg.identity_seed;
    let keypair = identity::Keypair::ed25519_from_bytes(&mut seed)
        .map_err(|e| NetError::Config(format!("identity seed: {e}")))?;
    let local = keypair.public().to_peer_id();

    let mut store = PersistentStore::new(local, kad_store::store_config(&tuning), tuning.max_providers_per_peer);
    let journal = store.journal();
    let store_path = cfg.state_dir.as_deref().map(kad_store::store_path);
    if let Some(path) = &store_path {
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || kad_store::load(&p))
            .await
            .map_err(|e| NetError::Config(format!("loading the DHT store: {e}")))?
            .map_err(|e| NetError::Config(format!("reading {}: {e}", path.display())))?;
        if let Some(file) = loaded {
            let providers = store.restore(file);
            tracing::info!(providers, "restored the DHT store");
        }
    }

    let mut kc = kad::Config::new(KAD_PROTOCOL);
    kc.set_replication_factor(NonZeroUsize::new(K).expect("K > 0"))
        .set_parallelism(NonZeroUsize::new(ALPHA).expect("ALPHA > 0"))
        // No value records (the store refuses them): nothing to republish.
        .set_publication_interval(None)
        .set_replication_interval(None)
        .set_provider_record_ttl(Some(tuning.provider_ttl))
        .set_provider_publication_interval(Some(tuning.provider_republish))
        .set_periodic_bootstrap_interval(Some(tuning.bucket_refresh))
        .set_query_timeout(tuning.query_timeout)
        .set_max_packet_size(KAD_MAX_PACKET);

    let idle = tuning.idle_connection_timeout.max(cfg.timers.heartbeat_interval * 3);
    let limits = connection_limits::ConnectionLimits::default()
        .with_max_established(Some(tuning.max_connections))
        .with_max_established_per_peer(Some(tuning.max_connections_per_peer))
        .with_max_pending_incoming(Some(tuning.max_pending_incoming));
    let rr_config = request_response::Config::default()
        .with_request_timeout(cfg.request_timeout)
        .with_max_concurrent_streams(tuning.max_streams_per_connection);
    let ping_every = cfg.timers.heartbeat_interval.max(Duration::from_secs(15));
    let use_mdns = cfg.mdns;
    let max_inbound_bytes = tuning.max_inbound_bytes;
    let max_bodies = cfg.max_inbound_requests;
    let codec_handler = handler.clone();

    let swarm = libp2p::SwarmBuilder::with_existing_identity(keypair)
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
        .map_err(|e| NetError::Config(format!("TCP transport: {e}")))?
        .with_quic()
        // In-process `/memory/N` addresses: many nodes in one process
        // without a socket each (the DHT-at-scale benchmark); never
        // reachable from outside the process.
        .with_other_transport(|key| {
            use libp2p::core::transport::Transport as _;
            use libp2p::core::upgrade::Version;
            Ok(libp2p::core::transport::MemoryTransport::default()
                .upgrade(Version::V1)
                .authenticate(noise::Config::new(key)?)
                .multiplex(yamux::Config::default()))
        })
        .map_err(|e| NetError::Config(format!("memory transport: {e}")))?
        .with_dns()
        .map_err(|e| NetError::Config(format!("DNS resolver (reading the system DNS configuration): {e}")))?
        .with_behaviour(|key| {
            let mut kad = kad::Behaviour::with_config(local, store, kc);
            // Server mode always: automatic mode keeps loopback-only and
            // LAN nodes as clients that nobody can route to.
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if use_mdns { Some(mdns::tokio::Behaviour::new(mdns::Config::default(), local)?) } else { None };
            Ok(Behaviour {
                block: Default::default(),
                limits: connection_limits::Behaviour::new(limits),
                identify: identify::Behaviour::new(
                    identify::Config::new(ID_PROTOCOL_VERSION.to_string(), key.public())
                        .with_agent_version(format!("datamesh/{}", env!("CARGO_PKG_VERSION"))),
                ),
                // Ping no more often than we heartbeat (nor than libp2p's
                // 15 s): either proves the peer alive, and pinging twice per
                // heartbeat doubled the wake-ups of every idle connection.
                ping: ping::Behaviour::new(ping::Config::new().with_interval(ping_every)),
                kad,
                shard: request_response::Behaviour::with_codec(
                    ShardCodec::new(InboundBudget::new(max_inbound_bytes), codec_handler, max_bodies),
                    [(PROTOCOL, ProtocolSupport::Full)],
                    rr_config,
                ),
                mdns: Toggle::from(mdns),
            })
        })
        .map_err(|e| NetError::Config(format!("network behaviour (mDNS socket?): {e}")))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();

    let now = Instant::now();
    let boot = Bootstrap::new(&cfg.bootstrap, local, tuning.bootstrap_backoff_start, tuning.bootstrap_backoff_max, now);
    let max_inbound = cfg.max_inbound_requests.max(1);
    let (served_tx, served_rx) = mpsc::channel(max_inbound);
    let mut actor = Actor {
        swarm,
        local,
        commands,
        served_tx,
        served_rx,
        handler,
        local_heartbeat,
        pending: HashMap::new(),
        queries: HashMap::new(),
        peers: PeerTable::new(tuning.max_peers, cfg.timers),
        boot,
        inbound_in_flight: 0,
        announce_fixed: !cfg.announce.is_empty(),
        max_inbound,
        tuning,
        store_path,
        journal,
        persister: Arc::default(),
        persist_task: None,
        last_join: None,
    };
    for a in &cfg.announce {
        actor.swarm.add_external_address(a.clone());
    }
    actor.listen(&cfg.listen).await?;
    // Addresses of bootstrap peers with a known id go into Kademlia now.
    for e in &actor.boot.entries {
        if let (Some(p), false) = (e.peer, e.phase == bootstrap::Phase::Disabled) {
            actor.swarm.behaviour_mut().kad.add_address(&p, e.addr.clone());
        }
    }
    Ok(actor)
}

impl Actor {
    pub(crate) fn local_peer_id(&self) -> PeerId {
        self.local
    }

    async fn listen(&mut self, addrs: &[Multiaddr]) -> Result<(), NetError> {
        let mut waiting: HashSet<ListenerId> = HashSet::new();
        for a in addrs {
            let id =
                self.swarm.listen_on(a.clone()).map_err(|e| NetError::Config(format!("cannot listen on {a}: {e}")))?;
            waiting.insert(id);
        }
        let deadline = tokio::time::Instant::now() + LISTEN_TIMEOUT;
        while !waiting.is_empty() {
            let ev = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NetError::Config("listeners did not come up within 10 s".into()))?;
            match ev {
                SwarmEvent::NewListenAddr { listener_id, address } => {
                    self.on_new_listen_addr(address);
                    waiting.remove(&listener_id);
                }
                SwarmEvent::ListenerError { listener_id, error } if waiting.contains(&listener_id) => {
                    return Err(NetError::Config(format!("listener failed: {error}")));
                }
                SwarmEvent::ListenerClosed { listener_id, reason, .. } if waiting.contains(&listener_id) => {
                    return Err(NetError::Config(format!("listener closed: {reason:?}")));
                }
                other => self.on_swarm_event(other),
            }
        }
        Ok(())
    }

    /// The event loop. Returns when a client asks for shutdown or every
    /// client is dropped; the DHT store is saved on the way out.
    pub(crate) async fn run(mut self) {
        let tick_every = (self.peers.timers.heartbeat_interval / 2).max(Duration::from_millis(100));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut persist = tokio::time::interval_at(
            tokio::time::Instant::now() + self.tuning.persist_interval,
            self.tuning.persist_interval,
        );
        persist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = self.commands.recv() => match cmd {
                    Some(Command::Shutdown(done)) => {
                        self.persist_now().await;
                        let _ = done.send(());
                        break;
                    }
                    Some(cmd) => self.on_command(cmd),
                    None => {
                        self.persist_now().await;
                        break;
                    }
                },
                ev = self.swarm.select_next_some() => self.on_swarm_event(ev),
                Some(served) = self.served_rx.recv() => self.on_served(served),
                _ = tick.tick() => self.on_tick(),
                _ = persist.tick() => self.persist_in_background(),
            }
        }
        tracing::debug!(peer = %self.local, "network actor stopped");
    }

    // -- commands ----------------------------------------------------------

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::ListenAddrs(tx) => {
                let _ = tx.send(self.swarm.listeners().cloned().collect());
            }
            Command::Request { peer, req, reply } => self.send_request(peer, req, reply),
            Command::Strike { peer, why } => self.strike(peer, &why),
            Command::ClosestPeers { key, reply } => {
                if let Some(reply) = self.query_room(reply) {
                    let id = self.swarm.behaviour_mut().kad.get_closest_peers(key);
                    self.queries.insert(id, QueryWait::Closest(reply));
                }
            }
            Command::Provide { key, reply } => {
                if let Some(reply) = self.query_room(reply) {
                    match self.swarm.behaviour_mut().kad.start_providing(RecordKey::from(key)) {
                        Ok(id) => {
                            self.queries.insert(id, QueryWait::Provide(reply));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(NetError::Refused(format!("local provider store: {e:?}"))));
                        }
                    }
                }
            }
            Command::FindProviders { key, reply } => {
                if let Some(reply) = self.query_room(reply) {
                    let id = self.swarm.behaviour_mut().kad.get_providers(RecordKey::from(key));
                    self.queries.insert(id, QueryWait::Providers { found: HashSet::new(), reply });
                }
            }
            Command::LocalProviders { key, reply } => {
                use libp2p::kad::store::RecordStore;
                let now = Instant::now();
                let ps = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .providers(&RecordKey::from(key))
                    .into_iter()
                    .filter(|p| !p.is_expired(now))
                    .map(|p| p.provider)
                    .collect();
                let _ = reply.send(ps);
            }
            Command::Peers(tx) => {
                let _ = tx.send(self.peers.info(Instant::now()));
            }
            Command::RoutingTable(tx) => {
                let rows = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| (b.range().1.ilog2().unwrap_or(0), b.num_entries()))
                    .collect();
                let _ = tx.send(rows);
            }
            Command::Shutdown(_) => unreachable!("handled in run"),
        }
    }

    /// The reply back if another query fits; otherwise answers `Busy`.
    fn query_room<T>(&self, reply: Reply<T>) -> Option<Reply<T>> {
        if self.queries.len() < self.tuning.max_pending {
            Some(reply)
        } else {
            let _ = reply.send(Err(NetError::Busy));
            None
        }
    }

    fn send_request(&mut self, peer: PeerId, req: Request, reply: Reply<Response>) {
        if let Err(why) = req.check_bounds() {
            let _ = reply.send(Err(NetError::Protocol(why)));
            return;
        }
        if peer == self.local {
            // Placement may pick this node: serve it locally, same checks.
            let handler = self.handler.clone();
            let hb = *self.local_heartbeat.borrow();
            tokio::spawn(async move {
                let (resp, _) = serve(handler, peer, req, hb, false).await;
                let _ = reply.send(Ok(into_response(resp).await));
            });
            return;
        }
        if self.pending.len() >= self.tuning.max_pending {
            let _ = reply.send(Err(NetError::Busy));
            return;
        }
        let id = self.swarm.behaviour_mut().shard.send_request(&peer, StreamRequest::Request(req, None));
        self.pending.insert(id, Pending::User(reply));
    }

    // -- persistence ---------------------------------------------------------

    /// Saves the DHT store on a blocking thread from the journal of
    /// changes; the loop copies the store only after the journal overflowed.
    fn persist_in_background(&mut self) {
        let Some(path) = self.store_path.clone() else {
            return;
        };
        if self.persist_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let full =
            kad_store::take_overflow(&self.journal).then(|| self.swarm.behaviour_mut().kad.store_mut().snapshot());
        let (journal, persister) = (self.journal.clone(), self.persister.clone());
        self.persist_task = Some(tokio::task::spawn_blocking(move || {
            let mut p = persister.lock().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = p.save(&journal, full, &path) {
                tracing::warn!(path = %path.display(), %e, "saving the DHT store failed");
            }
        }));
    }

    async fn persist_now(&mut self) {
        if let Some(t) = self.persist_task.take() {
            let _ = t.await;
        }
        self.persist_in_background();
        if let Some(t) = self.persist_task.take() {
            let _ = t.await;
        }
    }
}
