//! Audits (proof of storage) and the reputation they feed.
//!
//! **Who audits whom.** A file's maintainer (see [`crate::repair`]) audits the
//! holders of that file's shards: it is the node that acts on the result, by
//! rebuilding what a holder failed to prove. Each pass samples up to
//! `audit_samples` shards at random across the files this node maintains and
//! asks each holder for a random 4 KiB segment, answered with a BLAKE3
//! verified slice ([`datamesh_core::proof`]) that checks against the shard's
//! CID alone.
//!
//! **What a result does.** A valid proof earns the holder points; a wrong
//! proof or "not found" for a shard its location record names costs many,
//! and the shard counts as lost for repair until it is rebuilt elsewhere. No
//! answer at all (timeout, dropped connection) costs a little: the health
//! timers, not audits, judge liveness. The scores themselves, and what they
//! bar a peer from, are [`crate::reputation`]'s.

use std::collections::HashSet;
use std::time::Duration;

use datamesh_core::{Cid, HolderId};
use datamesh_net::{NetError, PeerId, PeerState};
use rand::Rng;
use serde::Serialize;

use crate::context::{Node, blocking};
use crate::holder::{holder_id, peer_of};
use crate::reputation::Outcome;
pub use crate::reputation::{AuditTotals, Reputation};
use crate::workers::{Worker, WorkerCtx};

/// Bytes asked for per audit.
pub const SEGMENT: u32 = 4096;

/// What one audit pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Audits sent.
    pub audited: usize,
    /// Proofs that verified.
    pub passed: usize,
    /// Wrong proofs or missing shards.
    pub failed: usize,
    /// Audits left unanswered.
    pub unanswered: usize,
}

impl Node {
    /// This node's view of `peer`'s reputation.
    pub fn reputation(&self, peer: &PeerId) -> Reputation {
        self.inner.audit.reputation(peer)
    }

    /// Audit totals since start.
    pub fn audit_totals(&self) -> AuditTotals {
        self.inner.audit.totals()
    }

    /// One audit pass: up to `samples` random shards of the files this node
    /// maintains, each held by another ONLINE peer, are challenged. A failure
    /// starts a repair pass at once.
    pub async fn audit_pass(&self, samples: usize) -> AuditReport {
        let mut report = AuditReport::default();
        let Some(net) = self.net().cloned() else { return report };
        let me = net.local_peer_id();
        let peers = net.peers().await;
        let online: Vec<PeerId> =
            peers.iter().filter(|p| p.state == PeerState::Online && p.connected).map(|p| p.peer).collect();
        self.inner.audit.credit_uptime(&online);
        let online_ids: HashSet<HolderId> = online.iter().map(holder_id).collect();
        let is_online = |h: &HolderId| online_ids.contains(h);
        let me_id = holder_id(&me);

        // Candidates: (shard, holder, shard length) over maintained files.
        let locations = self.inner.locations.clone();
        let records = blocking(move || Ok(locations.list())).await.unwrap_or_default();
        let mut cands: Vec<(Cid, PeerId, u64)> = Vec::new();
        for rec in records {
            if !self.maintains(&rec, me, &is_online) {
                continue;
            }
            let Ok((_, m)) = self.manifest(rec.manifest).await else { continue };
            for (c, entry) in m.chunks.iter().enumerate() {
                let len = m.erasure.shard_size(entry.stored_size as usize) as u64;
                for (s, cid) in entry.shards.iter().enumerate() {
                    let Some(h) = rec.holder(c, s) else { continue };
                    if *h == me_id || !is_online(h) {
                        continue;
                    }
                    if let Some(p) = peer_of(h) {
                        cands.push((*cid, p, len));
                    }
                }
            }
        }
        let picks: Vec<(Cid, PeerId, u64, u64)> = {
            let mut rng = rand::thread_rng();
            let n = samples.min(cands.len());
            rand::seq::index::sample(&mut rng, cands.len(), n)
                .into_iter()
                .map(|i| {
                    let (cid, p, len) = cands[i];
                    // 1 KiB aligned: a slice is cheapest on BLAKE3 chunk bounds.
                    let start = rng.gen_range(0..len.max(1)) & !1023;
                    (cid, p, len, start)
                })
                .collect()
        };

        let mut asks = futures::stream::FuturesUnordered::new();
        for (cid, peer, len, start) in picks {
            let net = net.clone();
            asks.push(async move {
                let seg = SEGMENT.min((len - start.min(len)).max(1) as u32);
                (cid, peer, net.audit(peer, cid, start, seg).await)
            });
        }
        use futures::StreamExt;
        while let Some((cid, peer, r)) = asks.next().await {
            report.audited += 1;
            let outcome = match r {
                Ok(_) => Outcome::Passed,
                Err(NetError::NotFound) | Err(NetError::Corrupt { .. }) => Outcome::Failed,
                Err(e) => {
                    tracing::debug!(%peer, %cid, error = %e, "audit unanswered");
                    Outcome::Unanswered
                }
            };
            match outcome {
                Outcome::Passed => report.passed += 1,
                Outcome::Failed => {
                    report.failed += 1;
                    tracing::warn!(%peer, shard = %cid, "peer failed an audit; the shard will be rebuilt elsewhere");
                    self.inner.audit.mark_failed(cid, holder_id(&peer));
                }
                Outcome::Unanswered => report.unanswered += 1,
            }
            self.inner.audit.record(peer, outcome);
        }
        self.inner.audit.pass_done();
        // Saving is a small file write; keep it off the async threads.
        let node = self.clone();
        let _ = blocking(move || {
            node.inner.audit.save();
            Ok(())
        })
        .await;
        if report.failed > 0 {
            self.repair_pass().await;
        }
        report
    }
}

/// Runs an audit pass every `interval` (with ±25% jitter, so that nodes
/// started together do not audit in lockstep).
pub struct AuditWorker {
    /// The node whose files' holders it challenges.
    pub node: Node,
    /// Mean time between passes (each wait is jittered by ±25 %).
    pub interval: Duration,
    /// Shards challenged per pass.
    pub samples: usize,
}

#[async_trait::async_trait]
impl Worker for AuditWorker {
    fn name(&self) -> &'static str {
        "audit"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        loop {
            let jitter = rand::thread_rng().gen_range(0.75..1.25);
            if !ctx.idle(self.interval.mul_f64(jitter)).await {
                return;
            }
            ctx.set(format!("challenging up to {} shards", self.samples));
            let r = self.node.audit_pass(self.samples).await;
            if r.audited > 0 {
                tracing::debug!(audited = r.audited, passed = r.passed, failed = r.failed, "audit pass");
            }
        }
    }
}
