//! The small state types the node's shared context ([`crate::context`])
//! holds for each concern: upload sessions, repair totals, drain progress
//! and lease renewals. Plain data: the behaviour lives with each concern
//! (`intake`, `repair`, `drain`, `deletion`), which is also where their
//! public types are re-exported from.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use datamesh_core::{Cid, Erasure, HolderId};
use datamesh_store::UploadGuard;
use serde::Serialize;

/// An upload session id: 128 random bits, hex. Unguessable, so one client
/// cannot append to another's upload.
pub type UploadId = String;

/// Where a chunk's shards went.
#[derive(Clone)]
pub(crate) struct Placed {
    /// The CIDs of its k+m shards.
    pub(crate) shards: Vec<Cid>,
    /// Holder of each shard (peer id bytes); empty when kept locally.
    pub(crate) holders: Vec<HolderId>,
}

/// An open upload session.
pub(crate) struct Session {
    /// The code its chunks are erasure-coded with.
    pub(crate) erasure: Erasure,
    /// Keeps the shards written so far from GC until the session ends.
    pub(crate) guard: Arc<UploadGuard>,
    /// When a chunk last arrived (idle sessions expire).
    pub(crate) last_active: Instant,
    /// Whose it is, as the gateway names its users (counted against
    /// `max_uploads_per_owner`); None: the node's own or the administrator's.
    pub(crate) owner: Option<String>,
    /// Where each chunk received so far went, by chunk CID.
    pub(crate) chunks: HashMap<Cid, Placed>,
}

/// Totals since the node started, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
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
    /// Shards this node rebuilt and kept when another node's repair asked
    /// it to (`REBUILD_SHARD`); that node counts them in its
    /// `shards_rebuilt`.
    pub rebuilt_for_peers: u64,
}

/// The repair worker's state inside the node.
#[derive(Default)]
pub(crate) struct RepairState {
    /// Totals since start (`rebuilt_for_peers` is kept apart).
    pub(crate) totals: Mutex<RepairTotals>,
    /// Serialises passes (the timer and an OFFLINE trigger may overlap).
    pub(crate) running: tokio::sync::Mutex<()>,
    /// `RepairTotals::rebuilt_for_peers`.
    pub(crate) for_peers: AtomicU64,
}

/// How a drain is going, as `GET /v1/drain` reports it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct DrainProgress {
    /// Whether the node is draining.
    pub draining: bool,
    /// When the drain started (Unix seconds).
    pub started_at: Option<u64>,
    /// Rounds over the node's files completed since then.
    pub rounds: u64,
    /// Files whose location record this node keeps.
    pub files: usize,
    /// Shard positions that location records still give to this node.
    pub shards_to_move: usize,
    /// Shards copied to other nodes (and recorded there) by this drain.
    pub shards_moved: u64,
    /// Bytes of those shards.
    pub bytes_moved: u64,
    /// Shards whose bytes here failed verification: not copied, left to the
    /// file's maintainer to rebuild from the others.
    pub shards_failed: u64,
    /// Chunks this node held shards of that do not yet have k+m live shards
    /// on other nodes.
    pub chunks_short: usize,
    /// Files whose manifest and location record are not yet held by
    /// max(m+1, 3) other nodes.
    pub files_needing_replicas: usize,
    /// Files stored here while the node had no peers: no location record,
    /// every shard here. They cannot be drained; put them again through a
    /// networked node.
    pub files_local_only: usize,
    /// Whether the node can be stopped without losing redundancy.
    pub safe_to_stop: bool,
    /// What went wrong in the last round (retried in the next).
    pub errors: Vec<String>,
}

/// The drain's state inside the node.
#[derive(Default)]
pub(crate) struct DrainState {
    /// Whether the node is draining (never unset: a restart ends it).
    pub(crate) active: AtomicBool,
    /// The last round's progress.
    pub(crate) progress: Mutex<DrainProgress>,
    /// Wakes the drain worker when the drain starts.
    pub(crate) started: tokio::sync::Notify,
    /// When the drain started (peers must have heard of it before it is
    /// safe to stop).
    pub(crate) since: Mutex<Option<Instant>>,
}

/// When this node last renewed each maintained file's lease.
#[derive(Default)]
pub(crate) struct LeaseState {
    /// By file (manifest CID).
    pub(crate) renewed: Mutex<HashMap<Cid, Instant>>,
}

/// Per peer, the replicas its records made this node keep in the current
/// window (`NodeConfig::adoption_window`): a first location record of a
/// file this node holds no shard of pins a manifest here, so without a
/// bound one peer could pin as many as the capacity allows.
#[derive(Default)]
pub(crate) struct AdoptionBudget {
    window: Mutex<Option<Window>>,
}

/// When the window began, and each peer's adoptions in it.
type Window = (Instant, HashMap<Vec<u8>, u32>);

impl AdoptionBudget {
    /// Takes one of `peer`'s `limit` adoptions per `window`; false when it
    /// has none left in this one.
    pub(crate) fn take(&self, peer: &[u8], limit: u32, window: std::time::Duration) -> bool {
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if w.as_ref().is_none_or(|(start, _)| now.duration_since(*start) >= window) {
            *w = Some((now, HashMap::new()));
        }
        let Some((_, counts)) = w.as_mut() else { return false };
        let n = counts.entry(peer.to_vec()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }
}
