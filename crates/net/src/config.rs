//! Settings of the network layer: [`NetConfig`] (what a node sets), the
//! [`HealthTimers`] inside it, and [`Tuning`] (bounds and protocol intervals,
//! defaults that rarely need changing).

use std::path::PathBuf;
use std::time::Duration;

use libp2p::Multiaddr;

/// How often peers heartbeat and when silence changes a peer's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthTimers {
    /// Every connected peer gets a heartbeat this often (default 30 s).
    pub heartbeat_interval: Duration,
    /// A peer silent this long is `Warning` and gets no new shards (default 60 s).
    pub warning_after: Duration,
    /// A peer silent this long is `Offline` (default 5 min).
    pub offline_after: Duration,
}

impl Default for HealthTimers {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            warning_after: Duration::from_secs(60),
            offline_after: Duration::from_secs(300),
        }
    }
}

/// What a node sets to start its network layer.
///
/// `Debug` prints everything but the identity seed.
#[derive(Clone)]
pub struct NetConfig {
    /// The node's Ed25519 secret seed; the libp2p identity (and so the
    /// `PeerId`) is derived from it.
    pub identity_seed: [u8; 32],
    /// Addresses to listen on, e.g. `/ip4/0.0.0.0/tcp/4001` and
    /// `/ip4/0.0.0.0/udp/4001/quic-v1` (port 0 picks a free port).
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers in priority order, with or without `/p2p/<id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Discover peers on the local network with mDNS.
    pub mdns: bool,
    /// Addresses other nodes should dial to reach this one, announced in
    /// DHT provider records. Empty: every listen address is announced as it
    /// comes up (right for a node reachable where it listens; a node behind
    /// NAT names its public address here).
    pub announce: Vec<Multiaddr>,
    /// Heartbeat and health timers.
    pub timers: HealthTimers,
    /// Where the Kademlia record and provider store is persisted
    /// (`kad-store.cbor`); `None` keeps it in memory only.
    pub state_dir: Option<PathBuf>,
    /// Longest a single request may take, both ways (default 30 s).
    pub request_timeout: Duration,
    /// StreamRequest requests handled at once; beyond it peers get
    /// `Refused("busy")` (default 32).
    pub max_inbound_requests: usize,
    /// The numbers this node sends in its first heartbeats, until
    /// [`crate::NetClient::set_local_heartbeat`] replaces them. Peers judge
    /// free space by them, so a node that has a store says so from the
    /// first exchange (the default reports no room).
    pub heartbeat: crate::protocol::Heartbeat,
}

impl NetConfig {
    /// Defaults around an identity: listen on TCP and QUIC on every interface
    /// with OS-chosen ports, no bootstrap peers, no mDNS, default timers,
    /// memory-only DHT store.
    pub fn new(identity_seed: [u8; 32]) -> Self {
        Self {
            identity_seed,
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().expect("valid multiaddr"),
            ],
            bootstrap: Vec::new(),
            mdns: false,
            announce: Vec::new(),
            timers: HealthTimers::default(),
            state_dir: None,
            request_timeout: Duration::from_secs(30),
            max_inbound_requests: 32,
            heartbeat: crate::protocol::Heartbeat::default(),
        }
    }
}

impl std::fmt::Debug for NetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetConfig")
            .field("identity_seed", &"<secret>")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("mdns", &self.mdns)
            .field("timers", &self.timers)
            .field("state_dir", &self.state_dir)
            .field("request_timeout", &self.request_timeout)
            .field("max_inbound_requests", &self.max_inbound_requests)
            .field("heartbeat", &self.heartbeat)
            .finish()
    }
}

/// Bounds and protocol intervals. [`crate::start`] uses the defaults;
/// [`crate::start_with`] takes them explicitly.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Strikes (protocol violations, corrupt data) that get a peer banned (3).
    pub max_strikes: u32,
    /// How long a banned peer stays disconnected and refused (10 min).
    pub ban_duration: Duration,
    /// Peers tracked in the health table; the longest-silent disconnected
    /// ones are forgotten beyond it (4096).
    pub max_peers: usize,
    /// StreamResponse requests and DHT queries waiting for an answer; beyond it
    /// calls fail with `NetError::Busy` (1024).
    pub max_pending: usize,
    /// Memory all inbound request frames (being read or served) may hold at
    /// once, across every connection (256 MiB; never less than one largest
    /// frame).
    pub max_inbound_bytes: usize,
    /// Streams (in + out) per connection for the shard protocol (64).
    pub max_streams_per_connection: usize,
    /// Established connections in total (512).
    pub max_connections: u32,
    /// Connected peers kept (128). Heartbeats keep every connection alive,
    /// so without a bound a node in a large network would keep every peer
    /// its lookups ever reached: memory and heartbeat work per node would
    /// grow with the network. Above this many, on each health tick the
    /// peers least recently used are disconnected and forgotten (outside
    /// the routing table first). Kept regardless: bootstrap peers, banned
    /// or struck peers (their record must stay), and peers that connected
    /// or exchanged a request other than a heartbeat within
    /// `idle_connection_timeout` (new peers still joining; the holders and
    /// placement candidates the node is working with). A forgotten peer is
    /// dialed again through the DHT when needed.
    pub keep_connections: usize,
    /// Established connections per peer (4).
    pub max_connections_per_peer: u32,
    /// Connections being set up inbound (64).
    pub max_pending_incoming: u32,
    /// A connection with no streams is closed after this long; never less
    /// than three heartbeat intervals (2 min).
    pub idle_connection_timeout: Duration,
    /// First retry delay for a bootstrap peer (1 s); doubles per failure.
    pub bootstrap_backoff_start: Duration,
    /// Largest retry delay for a bootstrap peer (60 s).
    pub bootstrap_backoff_max: Duration,
    /// Provider record time to live (48 h).
    pub provider_ttl: Duration,
    /// How often a provider re-announces (12 h, well inside the TTL).
    pub provider_republish: Duration,
    /// Bucket refresh: a periodic Kademlia bootstrap (5 min).
    pub bucket_refresh: Duration,
    /// Longest a DHT query may run (60 s).
    pub query_timeout: Duration,
    /// How often the DHT store is saved to `state_dir` (60 s).
    pub persist_interval: Duration,
    /// Keys with provider records kept (262 144).
    pub max_provider_keys: usize,
    /// Keys one other peer may hold provider records for here (32 768, an
    /// eighth of the table): one peer cannot fill it for everyone.
    pub max_providers_per_peer: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        const H: u64 = 3600;
        Self {
            max_strikes: 3,
            ban_duration: Duration::from_secs(600),
            max_peers: 4096,
            max_pending: 1024,
            max_inbound_bytes: 256 * 1024 * 1024,
            max_streams_per_connection: 64,
            max_connections: 512,
            keep_connections: 128,
            max_connections_per_peer: 4,
            max_pending_incoming: 64,
            idle_connection_timeout: Duration::from_secs(120),
            bootstrap_backoff_start: Duration::from_secs(1),
            bootstrap_backoff_max: Duration::from_secs(60),
            provider_ttl: Duration::from_secs(48 * H),
            provider_republish: Duration::from_secs(12 * H),
            bucket_refresh: Duration::from_secs(300),
            query_timeout: Duration::from_secs(60),
            persist_interval: Duration::from_secs(60),
            max_provider_keys: 262_144,
            max_providers_per_peer: 32_768,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_hides_the_identity_seed() {
        let shown = format!("{:?}", super::NetConfig::new([0xab; 32]));
        assert!(shown.contains("<secret>"));
        assert!(!shown.contains("171"), "no seed bytes: {shown}");
    }
}
