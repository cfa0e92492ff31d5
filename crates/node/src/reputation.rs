//! Reputation: the score this node keeps of every peer, fed by audits
//! (see [`crate::audit`]) and uptime.
//!
//! Every peer starts at [`START`] points, gains [`PASS_POINTS`] per passed
//! audit and [`UPTIME_POINTS_PER_HOUR`] per hour seen ONLINE, loses
//! [`FAIL_POINTS`] per failed audit and [`SILENT_POINTS`] per unanswered
//! one, within `0..=`[`MAX`]. A peer below [`FLOOR`] gets no new shards.
//! Scores are this node's own view (there is no global ledger to trust),
//! kept in the store (the state record `reputation/peers`) so a restart does
//! not wipe a bad record.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use datamesh_core::clock::unix_secs;
use datamesh_core::{Cid, HolderId};
use datamesh_net::PeerId;
use datamesh_store::{Store, StoreError};
use serde::{Deserialize, Serialize};

/// Points of a peer never audited.
pub const START: f64 = 1000.0;
/// Below this a peer gets no new shards.
pub const FLOOR: f64 = 500.0;
/// Most points a peer can hold (so a long good record cannot buy many
/// failures).
pub const MAX: f64 = 2000.0;
/// Points per passed audit.
pub const PASS_POINTS: f64 = 5.0;
/// Points per failed audit (wrong proof, or the shard is gone).
pub const FAIL_POINTS: f64 = 100.0;
/// Points per audit left unanswered.
pub const SILENT_POINTS: f64 = 10.0;
/// Points per hour a peer is seen ONLINE.
pub const UPTIME_POINTS_PER_HOUR: f64 = 2.0;

/// Failed (shard, holder) pairs remembered for repair.
const MAX_FAILED: usize = 100_000;

/// One peer's record, as this node has seen it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

impl Default for Reputation {
    fn default() -> Self {
        Self { score: START, passed: 0, failed: 0, unanswered: 0, last_audit: None }
    }
}

/// How an audit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The proof verified.
    Passed,
    /// A wrong proof, or the holder does not have the shard.
    Failed,
    /// No answer.
    Unanswered,
}

impl Reputation {
    fn apply(&mut self, o: Outcome, now: u64) {
        match o {
            Outcome::Passed => {
                self.passed += 1;
                self.score += PASS_POINTS;
            }
            Outcome::Failed => {
                self.failed += 1;
                self.score -= FAIL_POINTS;
            }
            Outcome::Unanswered => {
                self.unanswered += 1;
                self.score -= SILENT_POINTS;
            }
        }
        self.score = self.score.clamp(0.0, MAX);
        self.last_audit = Some(now);
    }

    /// Whether the peer may receive new shards.
    pub fn eligible(&self) -> bool {
        self.score >= FLOOR
    }
}

/// Totals since start, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
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

/// The reputations and audit results inside the node.
pub(crate) struct AuditState {
    store: Store,
    scores: Mutex<HashMap<PeerId, Reputation>>,
    /// (shard, holder) that failed an audit: lost for repair.
    failed: Mutex<HashSet<(Cid, HolderId)>>,
    totals: Mutex<AuditTotals>,
    last_uptime_credit: Mutex<Instant>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// State-record kind and key of the reputations (one record for all peers).
const REPUTATION: (&str, &str) = ("reputation", "peers");
/// Version byte of the reputation record: `[1]` then a JSON object from
/// peer id (base58) to [`Reputation`].
const REPUTATION_VERSION: u8 = 1;

/// Decodes a reputation record's value; `None` if it is not one.
fn decode_scores(value: &[u8]) -> Option<HashMap<String, Reputation>> {
    match value.split_first() {
        Some((&REPUTATION_VERSION, json)) => serde_json::from_slice(json).ok(),
        _ => None,
    }
}

impl AuditState {
    /// Loads the reputations from `store`, after moving in the
    /// `reputation.json` an older build kept in `legacy_dir` (the data dir).
    /// A missing record starts everyone afresh, an unreadable one too, with
    /// a warning.
    // `StoreError` carries CIDs inline; this runs once, at open.
    #[allow(clippy::result_large_err)]
    pub(crate) fn open(store: &Store, legacy_dir: &Path) -> Result<Self, StoreError> {
        let (kind, key) = REPUTATION;
        let legacy = legacy_dir.join("reputation.json");
        store.import_state_file(kind, key, &legacy, |json| {
            match serde_json::from_slice::<HashMap<String, Reputation>>(&json) {
                Ok(_) => Some([&[REPUTATION_VERSION], json.as_slice()].concat()),
                Err(e) => {
                    tracing::warn!(path = %legacy.display(), error = %e, "reputation file unreadable; starting afresh");
                    None
                }
            }
        })?;
        // What an interrupted save of an older build left behind.
        store.import_state_file(kind, key, &legacy_dir.join("reputation.json.tmp"), |_| None)?;
        let scores = match store.get_state(kind, key) {
            Ok(None) => HashMap::new(),
            Ok(Some(rec)) => match decode_scores(&rec.value) {
                Some(m) => m.into_iter().filter_map(|(k, v)| Some((k.parse().ok()?, v))).collect(),
                None => {
                    tracing::warn!("reputation record unreadable; starting afresh");
                    HashMap::new()
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "reputation record unreadable; starting afresh");
                HashMap::new()
            }
        };
        Ok(Self {
            store: store.clone(),
            scores: Mutex::new(scores),
            failed: Mutex::new(HashSet::new()),
            totals: Mutex::new(AuditTotals::default()),
            last_uptime_credit: Mutex::new(Instant::now()),
        })
    }

    /// Writes the scores to the store.
    pub(crate) fn save(&self) {
        let snapshot: HashMap<String, Reputation> =
            lock(&self.scores).iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let Ok(json) = serde_json::to_vec(&snapshot) else { return };
        let (kind, key) = REPUTATION;
        if let Err(e) = self.store.put_state(kind, key, &[&[REPUTATION_VERSION], json.as_slice()].concat()) {
            tracing::warn!(error = %e, "could not save reputations");
        }
    }

    /// Audit totals since start.
    pub(crate) fn totals(&self) -> AuditTotals {
        lock(&self.totals).clone()
    }

    /// Counts one audit pass done.
    pub(crate) fn pass_done(&self) {
        lock(&self.totals).passes += 1;
    }

    /// Scores one audit of `peer`.
    pub(crate) fn record(&self, peer: PeerId, o: Outcome) {
        lock(&self.scores).entry(peer).or_default().apply(o, unix_secs());
        let mut t = lock(&self.totals);
        match o {
            Outcome::Passed => t.passed += 1,
            Outcome::Failed => t.failed += 1,
            Outcome::Unanswered => t.unanswered += 1,
        }
    }

    /// Credits uptime to the peers ONLINE now, for the time since the last
    /// credit.
    pub(crate) fn credit_uptime(&self, online: &[PeerId]) {
        let hours = {
            let mut last = lock(&self.last_uptime_credit);
            let h = last.elapsed().as_secs_f64() / 3600.0;
            *last = Instant::now();
            h
        };
        let mut s = lock(&self.scores);
        for p in online {
            let r = s.entry(*p).or_default();
            r.score = (r.score + hours * UPTIME_POINTS_PER_HOUR).min(MAX);
        }
    }

    pub(crate) fn reputation(&self, peer: &PeerId) -> Reputation {
        lock(&self.scores).get(peer).cloned().unwrap_or_default()
    }

    pub(crate) fn eligible(&self, peer: &PeerId) -> bool {
        lock(&self.scores).get(peer).is_none_or(Reputation::eligible)
    }

    /// Whether `holder` failed an audit of `shard` (so it counts as lost).
    pub(crate) fn failed(&self, shard: &Cid, holder: &[u8]) -> bool {
        lock(&self.failed).contains(&(*shard, HolderId::from(holder)))
    }

    /// Remembers that `holder` failed an audit of `shard`.
    pub(crate) fn mark_failed(&self, shard: Cid, holder: impl Into<HolderId>) {
        let mut f = lock(&self.failed);
        if f.len() >= MAX_FAILED {
            f.clear();
        }
        f.insert((shard, holder.into()));
    }

    /// Forgets a failure once the shard has a new holder.
    pub(crate) fn clear_failed(&self, shard: &Cid, holder: &[u8]) {
        lock(&self.failed).remove(&(*shard, HolderId::from(holder)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_move_within_bounds_and_failures_cost_eligibility() {
        let mut r = Reputation::default();
        assert!(r.eligible());
        for _ in 0..1000 {
            r.apply(Outcome::Passed, 1);
        }
        assert_eq!(r.score, MAX);
        // From the cap, enough failures still push a peer under the floor.
        let to_floor = ((MAX - FLOOR) / FAIL_POINTS).floor() as u64 + 1;
        for _ in 0..to_floor {
            r.apply(Outcome::Failed, 2);
        }
        assert!(!r.eligible(), "{r:?}");
        for _ in 0..100 {
            r.apply(Outcome::Failed, 3);
        }
        assert_eq!(r.score, 0.0);
        assert_eq!((r.passed, r.failed, r.last_audit), (1000, to_floor + 100, Some(3)));
        // Silence costs less than a lie.
        let mut s = Reputation::default();
        s.apply(Outcome::Unanswered, 1);
        let mut f = Reputation::default();
        f.apply(Outcome::Failed, 1);
        assert!(s.score > f.score && s.score < START);
    }

    #[test]
    fn reputations_survive_a_restart_and_a_bad_file_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        let p = PeerId::random();
        let a = AuditState::open(&store(dir.path()), dir.path()).unwrap();
        assert!(a.eligible(&p));
        for _ in 0..6 {
            a.record(p, Outcome::Failed);
        }
        assert!(!a.eligible(&p));
        a.save();
        let before = a.reputation(&p);
        drop(a);
        let b = AuditState::open(&store(dir.path()), dir.path()).unwrap();
        assert_eq!(b.reputation(&p), before);
        assert!(!b.eligible(&p));
        drop(b);
        std::fs::write(dir.path().join("store/state/reputation/peers"), b"{not json").unwrap();
        assert!(AuditState::open(&store(dir.path()), dir.path()).unwrap().eligible(&p));
    }

    /// The `reputation.json` of an older build is moved into the store once.
    #[test]
    fn an_older_reputation_file_is_moved_into_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = PeerId::random();
        let old = Reputation { score: 420.0, passed: 1, failed: 6, unanswered: 2, last_audit: Some(7) };
        let json = serde_json::to_vec(&HashMap::from([(p.to_string(), old.clone())])).unwrap();
        std::fs::write(dir.path().join("reputation.json"), json).unwrap();
        std::fs::write(dir.path().join("reputation.json.tmp"), b"{").unwrap();
        let a = AuditState::open(&store(dir.path()), dir.path()).unwrap();
        assert_eq!(a.reputation(&p), old);
        assert!(!dir.path().join("reputation.json").exists() && !dir.path().join("reputation.json.tmp").exists());
        drop(a);
        assert_eq!(AuditState::open(&store(dir.path()), dir.path()).unwrap().reputation(&p), old);
    }

    fn store(dir: &Path) -> Store {
        Store::open(&dir.join("store"), Default::default()).unwrap().0
    }

    #[test]
    fn failures_are_remembered_per_holder_until_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let a = AuditState::open(&store(dir.path()), dir.path()).unwrap();
        let c = Cid::raw_blake3(b"s");
        a.mark_failed(c, vec![1]);
        assert!(a.failed(&c, &[1]));
        assert!(!a.failed(&c, &[2]));
        a.clear_failed(&c, &[1]);
        assert!(!a.failed(&c, &[1]));
    }
}
