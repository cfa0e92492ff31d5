//! The node's own routes: health, readiness, status, peers, GC, drain, S3
//! keys and the event stream's query.

use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// `GET /v1/health`: `{"status": "ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
}

/// `GET /v1/ready` when the node can take a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Ready {
    /// Always `ready`.
    pub status: String,
    /// How it would place a file (standalone, or networked with how many nodes).
    pub mode: String,
}

/// `GET /v1/ready` when the node cannot take a file now (503): an error body
/// with `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NotReady {
    /// Always `not_ready`.
    pub status: String,
    /// Always [`ErrorCode::NotReady`].
    pub code: ErrorCode,
    /// Why not, and what to do about it.
    pub message: String,
}

/// `GET /v1/status`: node health and usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeStatus {
    /// The node's public key (hex).
    pub node_id: String,
    /// The node's libp2p peer id (as other nodes' `peers` lists show it);
    /// absent without a network.
    pub peer_id: Option<String>,
    /// DataMesh version.
    pub version: String,
    /// Data dir.
    pub data_dir: String,
    /// Store usage.
    pub store: StoreStats,
    /// Connected peers.
    pub peers: usize,
    /// Open upload sessions.
    pub uploads: usize,
    /// Whether files survive the loss of this node.
    pub protection: String,
    /// What the repair worker has done since start.
    pub repair: RepairTotals,
    /// Audit totals since start.
    pub audit: AuditTotals,
    /// Whether the node is draining (`datamesh drain`).
    pub draining: bool,
    /// The background workers (the node's and the gateway's), in the
    /// order they started, and what each is doing.
    pub workers: Vec<WorkerInfo>,
}

/// One background worker in `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerInfo {
    /// Its name (`repair`, `audit`, `scrub`, ...).
    pub name: String,
    /// Its state.
    pub state: WorkerState,
    /// What it last said it is doing.
    pub doing: String,
    /// Seconds since it said so.
    pub since_secs: u64,
    /// How many times it panicked and was restarted.
    pub restarts: u32,
    /// The last panic's message.
    pub last_panic: Option<String>,
}

/// A worker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Inside its loop, working or waiting for its next step.
    Running,
    /// Paused after a panic; it starts again shortly.
    Restarting,
    /// Asked to stop, finishing its step.
    Stopping,
    /// Returned.
    Stopped,
}

impl WorkerState {
    /// The state as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Running => "running",
            WorkerState::Restarting => "restarting",
            WorkerState::Stopping => "stopping",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// Counts and sizes of what the node's store holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StoreStats {
    /// Shards stored.
    pub shards: u64,
    /// Bytes of shards stored.
    pub shard_bytes: u64,
    /// Manifests stored.
    pub manifests: u64,
    /// Pins.
    pub pins: u64,
    /// The capacity budget.
    pub capacity_bytes: u64,
    /// Bytes counted against the budget: shards, manifests and state
    /// records.
    pub used_bytes: u64,
    /// Bytes of manifests stored.
    pub manifest_bytes: u64,
    /// The node's own state records (location records, tombstones, leases,
    /// reputations); absent from nodes before they were counted.
    #[serde(default)]
    pub state_records: u64,
    /// Their bytes on disk, part of `used_bytes`.
    #[serde(default)]
    pub state_bytes: u64,
}

/// The repair worker's totals since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepairTotals {
    /// Passes run.
    pub passes: u64,
    /// Shards rebuilt.
    pub shards_rebuilt: u64,
    /// Bytes rebuilt.
    pub bytes_rebuilt: u64,
    /// Chunks degraded in the last pass.
    pub chunks_degraded_last: usize,
    /// Chunks below k live shards in the last pass.
    pub chunks_unrecoverable_last: usize,
    /// Shards this node rebuilt and kept when another node's repair asked it
    /// to; that node counts them in its `shards_rebuilt`.
    pub rebuilt_for_peers: u64,
}

/// The audit worker's totals since the node started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditTotals {
    /// Audit passes run.
    pub passes: u64,
    /// Audits whose proof verified.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Audits unanswered.
    pub unanswered: u64,
}

/// `GET /v1/peers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Peers {
    /// Every peer the node knows, with its health.
    pub peers: Vec<Peer>,
    /// Non-empty Kademlia k-buckets.
    pub routing_table: Vec<Bucket>,
}

/// A peer's health state as its heartbeats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum PeerState {
    /// Heard from recently: it may receive shards.
    Online,
    /// Silent for a while: it gets no new shards.
    Warning,
    /// Silent for long (or never identified): its shards are repaired elsewhere.
    Offline,
}

impl PeerState {
    /// The state as it appears on the wire (`ONLINE`, `WARNING`, `OFFLINE`).
    pub fn as_str(self) -> &'static str {
        match self {
            PeerState::Online => "ONLINE",
            PeerState::Warning => "WARNING",
            PeerState::Offline => "OFFLINE",
        }
    }
}

impl std::fmt::Display for PeerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One peer as this node sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Peer {
    /// Its libp2p peer id.
    pub peer: String,
    /// Its health state.
    pub state: PeerState,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// Its listen addresses (multiaddrs).
    pub addrs: Vec<String>,
    /// Seconds since it was last heard from.
    pub since_last_seen_secs: f64,
    /// Free bytes, from its last heartbeat.
    pub free_bytes: Option<u64>,
    /// Shards it holds, from its last heartbeat.
    pub shards: Option<u64>,
    /// Protocol violations and corrupt data counted against it.
    pub strikes: u32,
    /// Whether it is draining (its last heartbeat says so).
    pub draining: bool,
    /// Its audit record, as this node has seen it.
    pub reputation: Reputation,
}

/// One peer's audit record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reputation {
    /// Current points.
    pub score: f64,
    /// Audits passed.
    pub passed: u64,
    /// Audits failed.
    pub failed: u64,
    /// Audits left unanswered.
    pub unanswered: u64,
    /// Unix time of the last audit, if any.
    pub last_audit: Option<u64>,
}

/// One non-empty Kademlia k-bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bucket {
    /// The bucket's index.
    pub bucket: u32,
    /// Peers in it.
    pub entries: usize,
}

/// `POST /v1/gc` (and the `gc` of a delete): what a garbage collection freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GcReport {
    /// Shards removed.
    pub shards_removed: u64,
    /// Manifests removed.
    pub manifests_removed: u64,
    /// Bytes of shards and manifests removed.
    pub bytes_freed: u64,
    /// Pins whose manifest is not stored here or does not decode. While this
    /// is non-zero no shards are swept; fetch those manifests or unpin.
    pub pins_without_manifest: u64,
    /// Aliases dropped because their manifest was removed.
    pub aliases_removed: u64,
}

/// `GET /v1/drain` and `POST /v1/drain`: how a drain is going.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DrainProgress {
    /// Whether the node is draining.
    pub draining: bool,
    /// When the drain started (Unix seconds).
    pub started_at: Option<u64>,
    /// Rounds over the node's files since then.
    pub rounds: u64,
    /// Files whose location record this node keeps.
    pub files: usize,
    /// Shard positions location records still give to this node.
    pub shards_to_move: usize,
    /// Shards copied to other nodes by this drain.
    pub shards_moved: u64,
    /// Bytes of those shards.
    pub bytes_moved: u64,
    /// Shards that failed verification here: not copied, rebuilt by repair.
    pub shards_failed: u64,
    /// Chunks this node held shards of still short of k+m live shards on other nodes.
    pub chunks_short: usize,
    /// Files whose manifest and location record still need copies on other nodes.
    pub files_needing_replicas: usize,
    /// Files stored while the node had no peers: they cannot be drained.
    pub files_local_only: usize,
    /// Whether the node can be stopped now without losing redundancy.
    pub safe_to_stop: bool,
    /// What went wrong in the last round (retried in the next).
    pub errors: Vec<String>,
}

/// `POST /v1/keys`: a new S3 access key pair. The secret is shown once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessKey {
    /// The access key id.
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: crate::Secret,
}

/// Query of `GET /v1/events`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Comma-separated event types to receive (all when absent).
    pub types: Option<String>,
    /// The API token, for clients that cannot send the Authorization header.
    pub token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_states_are_their_uppercase_names() {
        for s in [PeerState::Online, PeerState::Warning, PeerState::Offline] {
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
    }
}
