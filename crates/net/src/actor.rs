//! The network actor: the one task that owns the libp2p `Swarm`.
//!
//! It `select!`s over four sources: commands from [`crate::NetClient`]s,
//! swarm events, answers from the tasks serving inbound requests, and a
//! timer tick (heartbeats, health, bootstrap retries, ban expiry). A map from
//! request / query id to the waiting caller's `oneshot` links answers back.
//! Every queue and map here is bounded (see [`crate::Tuning`]).
//!
//! Inbound requests never run on the actor: each is served on its own task
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
use libp2p::kad::{self, GetProvidersOk, GetRecordOk, QueryId, QueryResult, Quorum, RecordKey};
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
use crate::kad_store::{self, PersistentStore};
use crate::protocol::{BodyKind, Heartbeat, Inbound, InboundBudget, Outbound, PROTOCOL, Request, Response, ShardCodec};

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
    PutDhtRecord { key: Vec<u8>, value: Vec<u8>, reply: Reply<()> },
    GetDhtRecord { key: Vec<u8>, reply: Reply<Option<Vec<u8>>> },
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
    PutRecord(Reply<()>),
    GetRecord(Reply<Option<Vec<u8>>>),
}

/// An inbound request served: the answer and, if the peer cheated, why.
struct Served {
    peer: PeerId,
    channel: ResponseChannel<Outbound>,
    response: Outbound,
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

    let mut store = PersistentStore::new(local, kad_store::store_config(&tuning));
    let store_path = cfg.state_dir.as_deref().map(kad_store::store_path);
    if let Some(path) = &store_path {
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || kad_store::load(&p))
            .await
            .map_err(|e| NetError::Config(format!("loading the DHT store: {e}")))?
            .map_err(|e| NetError::Config(format!("reading {}: {e}", path.display())))?;
        if let Some(file) = loaded {
            let (records, providers) = store.restore(file);
            tracing::info!(records, providers, "restored the DHT store");
        }
    }

    let mut kc = kad::Config::new(KAD_PROTOCOL);
    kc.set_replication_factor(NonZeroUsize::new(K).expect("K > 0"))
        .set_parallelism(NonZeroUsize::new(ALPHA).expect("ALPHA > 0"))
        .set_record_ttl(Some(tuning.record_ttl))
        .set_publication_interval(Some(tuning.record_republish))
        .set_replication_interval(Some(tuning.record_replication))
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
            Command::PutDhtRecord { key, value, reply } => {
                if value.len() > MAX_DHT_VALUE {
                    let why = format!("DHT value of {} bytes; the limit is {MAX_DHT_VALUE}", value.len());
                    let _ = reply.send(Err(NetError::Protocol(why)));
                } else if let Some(reply) = self.query_room(reply) {
                    let mut rec = kad::Record::new(key, value);
                    rec.publisher = Some(self.local);
                    match self.swarm.behaviour_mut().kad.put_record(rec, Quorum::One) {
                        Ok(id) => {
                            self.queries.insert(id, QueryWait::PutRecord(reply));
                        }
                        Err(e) => {
                            let _ = reply.send(Err(NetError::Refused(format!("local record store: {e:?}"))));
                        }
                    }
                }
            }
            Command::GetDhtRecord { key, reply } => {
                if let Some(reply) = self.query_room(reply) {
                    let id = self.swarm.behaviour_mut().kad.get_record(RecordKey::from(key));
                    self.queries.insert(id, QueryWait::GetRecord(reply));
                }
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
        let id = self.swarm.behaviour_mut().shard.send_request(&peer, Inbound::Request(req, None));
        self.pending.insert(id, Pending::User(reply));
    }

    // -- strikes, bans, health ----------------------------------------------

    fn strike(&mut self, peer: PeerId, why: &str) {
        let now = Instant::now();
        let max = self.tuning.max_strikes;
        let ban = self.tuning.ban_duration;
        let e = self.peers.entry(peer, now);
        e.strikes = e.strikes.saturating_add(1);
        tracing::warn!(%peer, strikes = e.strikes, %why, "strike against peer");
        if e.strikes >= max && e.banned_until.is_none() {
            e.banned_until = Some(now + ban);
            tracing::warn!(%peer, ban_secs = ban.as_secs(), "peer banned: disconnected and refused");
            let b = self.swarm.behaviour_mut();
            b.block.block_peer(peer);
            b.kad.remove_peer(&peer);
        }
        self.drain_evicted();
    }

    fn drain_evicted(&mut self) {
        for p in self.peers.take_evicted() {
            self.swarm.behaviour_mut().block.unblock_peer(p);
        }
    }

    fn send_heartbeat(&mut self, peer: PeerId) {
        if self.pending.len() >= self.tuning.max_pending {
            return;
        }
        let hb = *self.local_heartbeat.borrow();
        let next = Instant::now() + self.peers.timers.heartbeat_interval;
        if let Some(e) = self.peers.get_mut(&peer) {
            e.heartbeat_in_flight = true;
            e.next_heartbeat = next;
        }
        let id = self.swarm.behaviour_mut().shard.send_request(&peer, Inbound::Request(Request::Heartbeat(hb), None));
        self.pending.insert(id, Pending::Heartbeat(peer));
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let mut unban = Vec::new();
        let mut due = Vec::new();
        for (p, e) in self.peers.iter_mut() {
            if e.banned_until.is_some_and(|t| t <= now) {
                e.banned_until = None;
                e.strikes = 0;
                unban.push(*p);
            }
            if e.connections > 0 && e.banned_until.is_none() && !e.heartbeat_in_flight && e.next_heartbeat <= now {
                due.push(*p);
            }
        }
        for p in unban {
            tracing::info!(peer = %p, "ban over");
            self.swarm.behaviour_mut().block.unblock_peer(p);
        }
        for p in due {
            self.send_heartbeat(p);
        }
        for i in self.boot.due(now) {
            self.dial_bootstrap(i, now);
        }
        self.prune_connections(now);
        self.rejoin_if_small(now);
    }

    /// Bootstraps again while the routing table holds fewer than k peers.
    /// Kademlia does so by itself only when a peer enters the table: a
    /// first bootstrap whose answers could not be dialed (a busy network
    /// refusing connections) left a joining node knowing just its
    /// bootstrap peers until the bucket refresh, minutes later.
    fn rejoin_if_small(&mut self, now: Instant) {
        let Some(last) = self.last_join else { return };
        if now.saturating_duration_since(last) < REJOIN_EVERY {
            return;
        }
        let known: usize = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
        if known > 0 && known < K {
            tracing::debug!(known, "routing table still small; bootstrapping again");
            self.last_join = Some(now);
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Above [`crate::Tuning::keep_connections`] connected peers,
    /// disconnects and forgets the least recently used ones that nothing
    /// needs (see the tuning's doc for what is kept).
    fn prune_connections(&mut self, now: Instant) {
        let keep = self.tuning.keep_connections;
        let recent = self.tuning.idle_connection_timeout;
        let boot: HashSet<PeerId> = self.boot.entries.iter().filter_map(|e| e.peer).collect();
        let mut connected = 0;
        let mut candidates: Vec<(PeerId, Instant)> = Vec::new();
        for (p, e) in self.peers.iter_mut() {
            if e.connections == 0 {
                continue;
            }
            connected += 1;
            // A new connection counts as in use: a node joining through
            // this one needs it for its first lookups (pruned at once, joins
            // stalled at 500 nodes), and a pruned peer that comes back is
            // not pruned again for a while (no handshake churn).
            let last = e.last_used.unwrap_or(e.first_seen);
            let busy = now.saturating_duration_since(last) < recent;
            if !busy && e.strikes == 0 && e.banned_until.is_none() && !boot.contains(p) {
                candidates.push((*p, last));
            }
        }
        if connected <= keep {
            return;
        }
        let table: HashSet<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        // Outside the routing table first, then the least recently used.
        candidates.sort_by_key(|&(p, t)| (table.contains(&p), t));
        let excess = connected - keep;
        for (p, _) in candidates.into_iter().take(excess) {
            tracing::debug!(peer = %p, "pruning an idle connection");
            self.peers.forget(&p);
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    fn dial_bootstrap(&mut self, i: usize, now: Instant) {
        let e = &self.boot.entries[i];
        let opts = match e.peer {
            Some(p) if self.swarm.is_connected(&p) => {
                let id = libp2p::swarm::ConnectionId::new_unchecked(usize::MAX);
                self.boot.dialing(i, id);
                self.boot.connected(id, p);
                return;
            }
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![e.addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(e.addr.clone()).build(),
        };
        let id = opts.connection_id();
        tracing::debug!(addr = %e.addr, "dialing bootstrap peer");
        self.boot.dialing(i, id);
        if let Err(err) = self.swarm.dial(opts) {
            tracing::debug!(%err, "bootstrap dial not started");
            self.boot.dial_failed(id, now, matches!(err, DialError::LocalPeerId { .. }));
        }
    }

    // -- served inbound requests -----------------------------------------------

    fn on_served(&mut self, s: Served) {
        self.inbound_in_flight = self.inbound_in_flight.saturating_sub(1);
        // Err: the stream timed out or closed meanwhile; nothing to do.
        let _ = self.swarm.behaviour_mut().shard.send_response(s.channel, s.response);
        // The strike after the answer: a ban closes the connection, which
        // may still cut the answer short.
        if let Some(why) = &s.strike {
            self.strike(s.peer, why);
        }
    }

    fn on_inbound(&mut self, peer: PeerId, request: Inbound, channel: ResponseChannel<Outbound>) {
        let now = Instant::now();
        let (req, permit) = match request {
            Inbound::Violation(why) => {
                // Dropping the channel closes the stream unanswered.
                drop(channel);
                self.strike(peer, &why);
                return;
            }
            Inbound::Answered(response, strike) => {
                // A streamed body, settled by the handler's sink as it was read.
                self.peers.seen(&peer, now);
                let _ = self.swarm.behaviour_mut().shard.send_response(channel, Outbound::Response(response));
                if let Some(why) = strike {
                    self.strike(peer, &why);
                }
                return;
            }
            Inbound::Request(r, permit) => (r, permit),
        };
        self.peers.seen(&peer, now);
        if let Request::Heartbeat(hb) = req {
            if let Some(e) = self.peers.get_mut(&peer) {
                e.last_heartbeat = Some(hb);
            }
            let mine = *self.local_heartbeat.borrow();
            let _ =
                self.swarm.behaviour_mut().shard.send_response(channel, Outbound::Response(Response::Heartbeat(mine)));
            return;
        }
        self.peers.used(&peer, now);
        if self.inbound_in_flight >= self.max_inbound {
            let busy = Outbound::Response(Response::Refused("busy".into()));
            let _ = self.swarm.behaviour_mut().shard.send_response(channel, busy);
            return;
        }
        self.inbound_in_flight += 1;
        let handler = self.handler.clone();
        let tx = self.served_tx.clone();
        let hb = *self.local_heartbeat.borrow();
        tokio::spawn(async move {
            let (response, strike) = serve(handler, peer, req, hb, true).await;
            // The request's bytes are gone: give them back to the budget.
            drop(permit);
            // The actor holds the receiver until it stops; if it has, the
            // answer has nowhere to go.
            let _ = tx.send(Served { peer, channel, response, strike }).await;
        });
    }

    // -- swarm events ----------------------------------------------------------

    fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Shard(ev)) => self.on_shard_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                if info.protocol_version != ID_PROTOCOL_VERSION {
                    tracing::debug!(peer = %peer_id, version = %info.protocol_version, "not a DataMesh peer");
                    return;
                }
                let e = self.peers.entry(peer_id, now);
                e.last_seen = Some(now);
                e.addrs.clear();
                for a in info.listen_addrs.iter().take(16) {
                    e.add_addr(a.clone());
                }
                self.drain_evicted();
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for a in info.listen_addrs.into_iter().take(16) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(_), .. })) => {
                self.peers.seen(&peer, now);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found.into_iter().take(64) {
                    if peer == self.local {
                        continue;
                    }
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                established_in,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?established_in, dialer = endpoint.is_dialer(), "connection established");
                let e = self.peers.entry(peer_id, now);
                e.connections = num_established.get() as usize;
                if endpoint.is_dialer() {
                    e.add_addr(endpoint.get_remote_address().clone());
                }
                self.drain_evicted();
                let hits = self.boot.connected(connection_id, peer_id);
                for &i in &hits {
                    let addr = self.boot.entries[i].addr.clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                if !hits.is_empty() {
                    tracing::info!(peer = %peer_id, "connected to a bootstrap peer");
                    // Join at once on the first one; afterwards Kademlia
                    // bootstraps by itself while its table is small, and
                    // refreshes buckets on its timer.
                    if self.last_join.is_none() {
                        self.last_join = Some(Instant::now());
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                if num_established.get() == 1 {
                    self.send_heartbeat(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                if let Some(e) = self.peers.get_mut(&peer_id) {
                    e.connections = num_established as usize;
                }
                if num_established == 0 {
                    self.boot.disconnected(peer_id, now);
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                self.boot.dial_failed(connection_id, now, matches!(error, DialError::LocalPeerId { .. }));
            }
            SwarmEvent::NewListenAddr { address, .. } => self.on_new_listen_addr(address),
            SwarmEvent::ExpiredListenAddr { address, .. } if !self.announce_fixed => {
                self.swarm.remove_external_address(&address);
            }
            _ => {}
        }
    }

    /// Provider records carry the provider's external addresses; a record
    /// without any is only useful to nodes that already have the provider
    /// in their routing table, so lookups fail in large networks (measured:
    /// half of them at 300 nodes). Listen addresses are announced unless
    /// the operator named the addresses to announce.
    fn on_new_listen_addr(&mut self, address: Multiaddr) {
        tracing::info!(%address, "listening");
        if !self.announce_fixed {
            self.swarm.add_external_address(address);
        }
    }

    fn on_shard_event(&mut self, ev: request_response::Event<Inbound, Outbound>) {
        let now = Instant::now();
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request { request, channel, .. } => self.on_inbound(peer, request, channel),
                Message::Response { request_id, response } => {
                    self.peers.seen(&peer, now);
                    let Outbound::Response(response) = response else {
                        // `read_response` only ever yields responses.
                        return;
                    };
                    match self.pending.remove(&request_id) {
                        Some(Pending::Heartbeat(p)) => {
                            if let Some(e) = self.peers.get_mut(&p) {
                                e.heartbeat_in_flight = false;
                                if let Response::Heartbeat(hb) = response {
                                    e.last_heartbeat = Some(hb);
                                }
                            }
                        }
                        Some(Pending::User(reply)) => {
                            self.peers.used(&peer, now);
                            let _ = reply.send(Ok(response));
                        }
                        None => {}
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let violation = matches!(&error, OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData);
                let err = match error {
                    OutboundFailure::DialFailure | OutboundFailure::ConnectionClosed => NetError::PeerUnreachable,
                    OutboundFailure::Timeout => NetError::Timeout,
                    OutboundFailure::UnsupportedProtocols => {
                        NetError::Protocol(format!("the peer does not speak {PROTOCOL}"))
                    }
                    OutboundFailure::Io(e) if e.to_string().contains("max sub-streams") => NetError::Busy,
                    OutboundFailure::Io(e) => NetError::Protocol(e.to_string()),
                };
                if violation {
                    self.strike(peer, &format!("bad response: {err}"));
                }
                match self.pending.remove(&request_id) {
                    Some(Pending::Heartbeat(p)) => {
                        if let Some(e) = self.peers.get_mut(&p) {
                            e.heartbeat_in_flight = false;
                        }
                    }
                    Some(Pending::User(reply)) => {
                        let _ = reply.send(Err(err));
                    }
                    None => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_kad_event(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed { id, result, step, stats } = ev else {
            return;
        };
        if step.last {
            tracing::debug!(
                ?id,
                requests = stats.num_requests(),
                ok = stats.num_successes(),
                failed = stats.num_failures(),
                took = ?stats.duration(),
                "kad query finished"
            );
        }
        match result {
            QueryResult::GetClosestPeers(r) => {
                if let Some(QueryWait::Closest(reply)) = self.queries.remove(&id) {
                    let peers = match r {
                        Ok(ok) => Ok(ok.peers),
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => Ok(peers),
                        Err(_) => Err(NetError::Timeout),
                    };
                    // Kademlia forgets the addresses a lookup learnt once it
                    // ends (peers outside the k-buckets); hand them to the
                    // swarm so a request to one of these peers can dial it.
                    let out = peers.map(|peers| {
                        peers
                            .into_iter()
                            .map(|p| {
                                for a in p.addrs {
                                    self.swarm.add_peer_address(p.peer_id, a);
                                }
                                p.peer_id
                            })
                            .collect()
                    });
                    let _ = reply.send(out);
                }
            }
            QueryResult::GetProviders(r) => {
                let Some(QueryWait::Providers { found, .. }) = self.queries.get_mut(&id) else {
                    return;
                };
                let timed_out = match r {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                        found.extend(providers);
                        false
                    }
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => false,
                    Err(_) => true,
                };
                if step.last || found.len() >= K || timed_out {
                    if !step.last
                        && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
                    {
                        q.finish();
                    }
                    if let Some(QueryWait::Providers { found, reply }) = self.queries.remove(&id) {
                        let out = if found.is_empty() && timed_out {
                            Err(NetError::Timeout)
                        } else {
                            Ok(ProviderLookup {
                                providers: found.into_iter().collect(),
                                peers_contacted: stats.num_requests(),
                                peers_answered: stats.num_successes(),
                            })
                        };
                        let _ = reply.send(out);
                    }
                }
            }
            QueryResult::StartProviding(r) => {
                if let Some(QueryWait::Provide(reply)) = self.queries.remove(&id) {
                    // The record is stored locally and republished either
                    // way; a timeout means too few peers took it yet.
                    let _ = reply.send(r.map(|_| ()).map_err(|_| NetError::Timeout));
                }
            }
            QueryResult::PutRecord(r) => {
                if let Some(QueryWait::PutRecord(reply)) = self.queries.remove(&id) {
                    let out = match r {
                        Ok(_) => Ok(()),
                        Err(kad::PutRecordError::QuorumFailed { .. }) => {
                            Err(NetError::Refused("no peer stored the record (quorum failed)".into()))
                        }
                        Err(_) => Err(NetError::Timeout),
                    };
                    let _ = reply.send(out);
                }
            }
            QueryResult::GetRecord(r) => {
                let out = match r {
                    Ok(GetRecordOk::FoundRecord(rec)) => {
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                        Some(Ok(Some(rec.record.value)))
                    }
                    Ok(GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => Some(Ok(None)),
                    Err(kad::GetRecordError::NotFound { .. }) => Some(Ok(None)),
                    Err(_) => Some(Err(NetError::Timeout)),
                };
                if let (Some(out), Some(QueryWait::GetRecord(reply))) = (out, self.queries.remove(&id)) {
                    let _ = reply.send(out);
                }
            }
            _ => {}
        }
    }

    // -- persistence ---------------------------------------------------------

    fn persist_in_background(&mut self) {
        let Some(path) = self.store_path.clone() else {
            return;
        };
        if self.persist_task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let snap = self.swarm.behaviour_mut().kad.store_mut().snapshot();
        self.persist_task = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = kad_store::save(&path, &snap) {
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

/// Serves one inbound (or self-addressed) request: verify content against its
/// CID, then ask the node's handler. Returns the answer and, when the peer
/// sent data that does not match its CID, the strike reason. With `stream`,
/// a `GetShard`/`GetManifest` is answered from the handler's
/// [`crate::Handler::body_source`] when it has one.
async fn serve(
    handler: Arc<dyn Handler>,
    peer: PeerId,
    req: Request,
    local: Heartbeat,
    stream: bool,
) -> (Outbound, Option<String>) {
    let req = match req {
        Request::Heartbeat(_) => return (Outbound::Response(Response::Heartbeat(local)), None),
        Request::PutShard { cid, data } => match verify(cid, data).await {
            Ok(data) => Request::PutShard { cid, data },
            Err(why) => return (Outbound::Response(Response::Refused(why.clone())), Some(why)),
        },
        Request::PutManifest { cid, data } => match verify(cid, data).await {
            Ok(data) => Request::PutManifest { cid, data },
            Err(why) => return (Outbound::Response(Response::Refused(why.clone())), Some(why)),
        },
        r => r,
    };
    let body = match &req {
        Request::GetShard { cid } if stream => Some((BodyKind::Shard, *cid)),
        Request::GetManifest { cid } if stream => Some((BodyKind::Manifest, *cid)),
        _ => None,
    };
    if let Some((kind, cid)) = body {
        let h = handler.clone();
        match tokio::task::spawn_blocking(move || h.body_source(kind, cid)).await {
            Ok(Some(Ok(src))) => return (Outbound::Source(src), None),
            Ok(Some(Err(resp))) => return (Outbound::Response(resp), None),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%peer, %e, "opening a body source failed");
                return (Outbound::Response(Response::Refused("internal error".into())), None);
            }
        }
    }
    // The handler runs on its own task so that a panic in it becomes an
    // answer instead of a lost slot.
    match tokio::spawn(async move { handler.handle(peer, req).await }).await {
        Ok(resp) => (Outbound::Response(resp), None),
        Err(e) => {
            tracing::error!(%peer, %e, "request handler failed");
            (Outbound::Response(Response::Refused("internal error".into())), None)
        }
    }
}

/// The answer as a [`Response`]: a body source is read whole (on a blocking
/// thread), for requests this node serves itself.
async fn into_response(o: Outbound) -> Response {
    match o {
        Outbound::Response(r) => r,
        Outbound::Source(src) => {
            let read = tokio::task::spawn_blocking(move || {
                let mut v = Vec::with_capacity(usize::try_from(src.len).unwrap_or(0));
                std::io::Read::read_to_end(&mut std::io::Read::take(src.reader, src.len), &mut v).map(|_| v)
            })
            .await;
            match read {
                Ok(Ok(v)) => Response::Data(v),
                Ok(Err(e)) => Response::Refused(e.to_string()),
                Err(e) => Response::Refused(e.to_string()),
            }
        }
    }
}

/// Hashes `data` off the async threads and checks it against `cid`.
pub(crate) async fn verify(cid: datamesh_core::Cid, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let checked = if data.len() <= 64 * 1024 {
        let ok = cid.verifies(&data);
        Ok((ok, data))
    } else {
        tokio::task::spawn_blocking(move || (cid.verifies(&data), data)).await.map_err(|e| e.to_string())
    };
    match checked {
        Ok((true, data)) => Ok(data),
        Ok((false, _)) => Err(format!("data does not match {cid}")),
        Err(e) => Err(format!("verifying {cid}: {e}")),
    }
}
