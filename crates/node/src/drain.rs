//! Draining: a node that is about to leave the network moves what it holds
//! to other nodes first, and says when it is safe to stop.
//!
//! **Starting.** [`Node::start_drain`] (idempotent; `POST /v1/drain`,
//! `datamesh drain`) sets the node draining. From then on its heartbeats
//! carry the draining flag and advertise no free space, so peers place no
//! new shards on it (`place_among`) and pick it as no new replica
//! (`replica_targets`); its own API refuses new uploads, and its own repair
//! places nothing on itself. Draining lives in memory: a restarted node is
//! not draining until asked again.
//!
//! **Moving.** The [`run`] worker goes over every location record this node
//! keeps, round after round. For each shard position the record gives to
//! this node, it reads its own copy (a verified read: a shard that fails is
//! quarantined by the store and *not* copied; the file's maintainer rebuilds
//! it from the others, as for any lost shard, and the drain counts it
//! failed) and copies the bytes, nothing rebuilt, to an ONLINE node with
//! room that holds nothing of that chunk, chosen as repair chooses
//! (`place_among`), paced by `repair_rate`. The record is then re-signed
//! with the next `seq` naming the new holders and sent to every replica
//! target and holder (`rewrite_location`, shared with repair; peers take it
//! because this node is one of the previous holders), and to the record's
//! previous writer, which keeps its own copy. Every file whose record it
//! keeps, holder or not, has its manifest and record sent to the max(m+1, 3)
//! closest other nodes and every holder (`replicate`).
//!
//! **Safe to stop** once a whole round finds: no record naming this node as
//! a holder, every chunk it held shards of with k+m live shards on *other*
//! nodes (asked with `SHARD_EXISTS`), every file's manifest and record taken
//! by at least max(m+1, 3) other nodes, and no file stored here without a
//! location record (put while the node had no peers: all its shards are
//! here and there is no record to move them by). Shards that peers sent
//! before they heard of the drain are in records like any other and are
//! moved in a later round, so the answer can go back to not safe until
//! they are.
//!
//! A repair on another node that rewrites a file's record at the same `seq`
//! as the drain's rewrite forks the record. A node on the losing line takes
//! the one more replicas hold when it next refreshes the record (`stat`, a
//! repair pass, a failed read: `records::newest_vouched`); until then the
//! next round moves again whatever the record this node keeps names here.

// Store calls return `StoreError`, which carries CIDs inline.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::Duration;

use datamesh_core::{Cid, HolderId, LocationRecord, Manifest};
use datamesh_net::{PeerId, PeerInfo, PeerState, Request, Response};
use datamesh_store::StoreError;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::context::{Node, blocking};
use crate::error::{InvalidRequest, NodeError};
use crate::holder::holder_id;
use crate::locate::replica_count;
use crate::placement::Holder;
use crate::repair::Pacer;
pub use crate::state::DrainProgress;
use crate::workers::{Worker, WorkerCtx};

/// What the worker remembers between rounds.
#[derive(Default)]
struct Memory {
    /// Files whose manifest and record went to enough others, at that seq.
    replicated: HashMap<Cid, u64>,
    /// Files found safe (nothing here, k+m elsewhere), at that seq.
    safe: HashMap<Cid, u64>,
    /// Chunks (file, index) this node held shards of during the drain.
    held: HashSet<(Cid, usize)>,
    /// Shards that failed verification (counted once).
    failed: HashSet<Cid>,
}

/// At most this many errors are kept per round.
const MAX_ERRORS: usize = 20;

impl Node {
    /// Starts draining (idempotent) and returns the progress so far.
    pub async fn start_drain(&self) -> Result<DrainProgress, NodeError> {
        let Some(net) = self.net().cloned() else {
            return Err(InvalidRequest::DrainOffline.into());
        };
        if !self.inner.drain.active.swap(true, Ordering::SeqCst) {
            if let Ok(mut p) = self.inner.drain.progress.lock() {
                *p = DrainProgress {
                    draining: true,
                    started_at: Some(datamesh_core::clock::unix_secs()),
                    ..Default::default()
                };
            }
            if let Ok(mut t) = self.inner.drain.since.lock() {
                *t = Some(std::time::Instant::now());
            }
            // Peers hear of it with the next heartbeat.
            net.set_local_heartbeat(self.heartbeat().await);
            self.inner.drain.started.notify_one();
            tracing::info!("draining: moving this node's shards to other nodes");
        }
        Ok(self.drain_progress())
    }

    /// How the drain is going (all zero when not draining).
    pub fn drain_progress(&self) -> DrainProgress {
        self.inner.drain.progress.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// One round over every file this node keeps a location record of.
    async fn drain_round(&self, mem: &mut Memory) -> DrainProgress {
        let mut out = DrainProgress { draining: true, ..self.drain_progress() };
        out.errors.clear();
        let mut errors = Vec::new();
        let Some(net) = self.net().cloned() else { return out };
        let me = net.local_peer_id();
        let me_b = holder_id(&me);
        let peer_list = net.peers().await;
        let peers: HashMap<HolderId, (PeerState, bool)> =
            peer_list.iter().map(|p| (holder_id(&p.peer), (p.state, p.connected))).collect();
        let locations = self.inner.locations.clone();
        let records = blocking(move || Ok(locations.list())).await.unwrap_or_default();
        out.files = records.len();
        let pacer = Pacer::new(self.inner.cfg.repair_rate.as_u64());
        let (mut to_move, mut short, mut need_replicas) = (0, 0, 0);
        let mut with_record = HashSet::new();
        for mut rec in records {
            let file = rec.manifest;
            with_record.insert(file);
            if self.inner.tombstones.get(&file).is_some() {
                continue;
            }
            let m = match self.manifest(file).await {
                Ok((_, m)) => m,
                Err(NodeError::Deleted(_)) => continue,
                Err(e) => {
                    errors.push(format!("{file}: {e}"));
                    continue;
                }
            };
            let mine: Vec<(usize, usize)> = (0..m.chunks.len())
                .flat_map(|c| (0..m.chunks[c].shards.len()).map(move |s| (c, s)))
                .filter(|&(c, s)| rec.holder(c, s) == Some(&me_b))
                .collect();
            mem.held.extend(mine.iter().map(|&(c, _)| (file, c)));
            if !mine.is_empty() {
                let moves = self.copy_shards(&m, &rec, &mine, &peer_list, &pacer, mem, &mut out, &mut errors).await;
                if !moves.is_empty() {
                    let old_signer = rec.signer.clone();
                    match self.rewrite_location(&m, &rec, &moves).await {
                        Ok(next) => {
                            rec = next;
                            mem.replicated.insert(file, rec.seq);
                            self.tell_previous_writer(&old_signer, me, &rec, &peers).await;
                        }
                        Err(e) => errors.push(format!("{file}: {e}")),
                    }
                }
                // The record now on disk (ours, or a newer one that arrived).
                if let Some(r) = self.inner.locations.get(&file) {
                    rec = r;
                }
            }
            let still_mine = (0..m.chunks.len())
                .flat_map(|c| (0..m.chunks[c].shards.len()).map(move |s| (c, s)))
                .filter(|&(c, s)| rec.holder(c, s) == Some(&me_b))
                .count();
            to_move += still_mine;

            // Manifest and record on enough other nodes.
            if mem.replicated.get(&file) != Some(&rec.seq) {
                match self.send_replicas(&m, &rec).await {
                    Ok(true) => {
                        mem.replicated.insert(file, rec.seq);
                    }
                    Ok(false) => errors.push(format!("{file}: too few ONLINE nodes to keep its manifest")),
                    Err(e) => errors.push(format!("{file}: {e}")),
                }
            }
            let replicated = mem.replicated.get(&file) == Some(&rec.seq);
            if !replicated {
                need_replicas += 1;
            }

            // Every chunk it held: k+m live shards elsewhere.
            if mem.safe.get(&file) == Some(&rec.seq) {
                continue;
            }
            let held: Vec<usize> = (0..m.chunks.len()).filter(|&c| mem.held.contains(&(file, c))).collect();
            let mut file_short = 0;
            if !held.is_empty() {
                match self.live_shards(&m, &rec, me, &peers).await {
                    Ok(live) => {
                        for &c in &held {
                            let elsewhere = (0..live[c].len())
                                .filter(|&s| live[c][s] && rec.holder(c, s).is_some_and(|h| *h != me_b))
                                .count();
                            if elsewhere < live[c].len() {
                                file_short += 1;
                            }
                        }
                    }
                    Err(e) => {
                        errors.push(format!("{file}: {e}"));
                        file_short = held.len();
                    }
                }
            }
            short += file_short;
            if file_short == 0 && still_mine == 0 && replicated {
                mem.safe.insert(file, rec.seq);
            }
        }
        let local_only = self.local_only_files(&with_record).await;
        out.shards_to_move = to_move;
        out.chunks_short = short;
        out.files_needing_replicas = need_replicas;
        out.files_local_only = local_only;
        out.rounds += 1;
        // Until every peer has had a heartbeat saying so, one may still
        // place a shard here.
        let heard = self
            .inner
            .drain
            .since
            .lock()
            .ok()
            .and_then(|t| *t)
            .is_some_and(|t| t.elapsed() >= self.inner.cfg.heartbeat_interval * 2);
        out.safe_to_stop =
            heard && to_move == 0 && short == 0 && need_replicas == 0 && local_only == 0 && errors.is_empty();
        errors.truncate(MAX_ERRORS);
        out.errors = errors;
        out
    }

    /// Copies this node's shards at `mine` (verified reads) to new holders.
    /// Returns the moves made: (chunk, shard, new holder).
    #[allow(clippy::too_many_arguments)]
    async fn copy_shards(
        &self,
        m: &Manifest,
        rec: &LocationRecord,
        mine: &[(usize, usize)],
        peers: &[PeerInfo],
        pacer: &Pacer,
        mem: &mut Memory,
        out: &mut DrainProgress,
        errors: &mut Vec<String>,
    ) -> Vec<(usize, usize, HolderId)> {
        let mut by_chunk: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for &(c, s) in mine {
            by_chunk.entry(c).or_default().push(s);
        }
        let mut moves = Vec::new();
        let Some(net) = self.net().cloned() else { return moves };
        for (c, shards) in by_chunk {
            let entry = &m.chunks[c];
            let mut good = Vec::new();
            for s in shards {
                let cid = entry.shards[s];
                let store = self.inner.store.clone();
                match blocking(move || Ok(store.get_shard(&cid))).await {
                    Ok(Ok(bytes)) => good.push((s, bytes)),
                    Ok(Err(StoreError::NotFound { .. } | StoreError::Corrupt { .. })) => {
                        if mem.failed.insert(cid) {
                            out.shards_failed += 1;
                            tracing::warn!(shard = %cid, "draining: this shard failed verification; repair rebuilds it");
                        }
                    }
                    Ok(Err(e)) => errors.push(format!("{} chunk {c}: reading shard {s}: {e}", rec.manifest)),
                    Err(e) => errors.push(format!("{} chunk {c}: reading shard {s}: {e}", rec.manifest)),
                }
            }
            if good.is_empty() {
                continue;
            }
            // Nodes holding anything of this chunk (this one included) are
            // not candidates: never two shards of a chunk on one node.
            let avoid: HashSet<HolderId> = rec.holders_of(c).into_iter().cloned().collect();
            let shard_bytes = good[0].1.len() as u64;
            let targets = match self.place_among(&entry.cid, good.len(), shard_bytes, &avoid, peers.to_vec()).await {
                Ok(t) => t,
                Err(e) => {
                    errors.push(format!("{} chunk {c}: {e}", rec.manifest));
                    continue;
                }
            };
            let mut puts = FuturesUnordered::new();
            for ((s, bytes), target) in good.into_iter().zip(targets) {
                let Holder::Peer(p) = target else { continue };
                pacer.take(bytes.len() as u64).await;
                let (net, cid, len) = (net.clone(), entry.shards[s], bytes.len() as u64);
                puts.push(async move { (s, p, len, net.put_shard(p, cid, bytes).await) });
            }
            while let Some((s, p, len, r)) = puts.next().await {
                match r {
                    Ok(()) => {
                        out.shards_moved += 1;
                        out.bytes_moved += len;
                        moves.push((c, s, holder_id(&p)));
                    }
                    Err(e) => errors.push(format!("{} chunk {c}: copying shard {s} to {p}: {e}", rec.manifest)),
                }
            }
        }
        moves
    }

    /// Sends the file's manifest and record to its replica targets; true
    /// when at least max(m+1, 3) other nodes took them.
    async fn send_replicas(&self, m: &Manifest, rec: &LocationRecord) -> Result<bool, NodeError> {
        let (_, bytes) = self.manifest_bytes(rec.manifest).await?;
        let took = self.replicate(m, rec.manifest, &bytes, rec).await?;
        Ok(took >= replica_count(m))
    }

    /// The record's previous writer (the uploader, or the last repairer)
    /// keeps its own copy of the record even when it is no replica target:
    /// it gets the rewrite too, so it does not read from this node later.
    async fn tell_previous_writer(
        &self,
        signer: &[u8],
        me: PeerId,
        rec: &LocationRecord,
        peers: &HashMap<HolderId, (PeerState, bool)>,
    ) {
        let Some(p) = datamesh_net::peer_id_of_ed25519(signer) else { return };
        if p == me || !matches!(peers.get(&holder_id(&p)), Some((PeerState::Online, true))) {
            return;
        }
        let Some(net) = self.net() else { return };
        let req = Request::PutRecord { key: crate::records::location_key(&rec.manifest), value: rec.encode() };
        match net.request(p, req).await {
            Ok(Response::Ok) => {}
            other => {
                tracing::debug!(peer = %p, answer = ?other, "the previous writer did not take the rewritten record")
            }
        }
    }

    /// Pinned files with chunks but no location record whose shards are
    /// here: stored while the node had no peers.
    async fn local_only_files(&self, with_record: &HashSet<Cid>) -> usize {
        let store = self.inner.store.clone();
        let pins = blocking(move || Ok(store.pins()?)).await.unwrap_or_default();
        let mut n = 0;
        for (cid, _) in pins {
            if with_record.contains(&cid) || self.inner.locations.get(&cid).is_some() {
                continue;
            }
            let Ok((_, m)) = self.manifest(cid).await else { continue };
            let Some(first) = m.chunks.first().and_then(|c| c.shards.first()).copied() else { continue };
            let store = self.inner.store.clone();
            if blocking(move || Ok(store.has_shard(&first)?)).await.unwrap_or(false) {
                n += 1;
            }
        }
        n
    }
}

/// The drain worker: idle until [`Node::start_drain`], then a round every
/// `poll` until safe to stop, and every `poll × 10` after that (shards that
/// arrive late are still moved).
pub struct DrainWorker {
    /// The node to drain when asked.
    pub node: Node,
    /// Pause between rounds.
    pub poll: Duration,
}

#[async_trait::async_trait]
impl Worker for DrainWorker {
    fn name(&self) -> &'static str {
        "drain"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        ctx.set("idle: not draining");
        tokio::select! {
            () = ctx.stopped() => return,
            () = self.node.inner.drain.started.notified() => {}
        }
        drain_rounds(&self.node, self.poll, ctx).await
    }
}

async fn drain_rounds(node: &Node, poll: Duration, ctx: &WorkerCtx) {
    let mut mem = Memory::default();
    loop {
        ctx.set("draining: moving shards and replicas to other nodes");
        let p = node.drain_round(&mut mem).await;
        let became_safe = p.safe_to_stop && !node.drain_progress().safe_to_stop;
        let failed_before = node.drain_progress().shards_failed;
        let new_failures = p.shards_failed > failed_before;
        if let Ok(mut g) = node.inner.drain.progress.lock() {
            *g = p.clone();
        }
        if became_safe {
            tracing::info!(moved = p.shards_moved, failed = p.shards_failed, "drained: safe to stop this node");
        } else if !p.safe_to_stop && !p.errors.is_empty() {
            tracing::debug!(errors = ?p.errors, to_move = p.shards_to_move, "drain round");
        }
        // A shard that failed verification is gone from the store now: if
        // this node maintains the file, its own repair rebuilds it elsewhere.
        if new_failures {
            node.repair_pass().await;
        }
        ctx.set(if p.safe_to_stop {
            "drained: safe to stop this node".to_string()
        } else {
            format!("draining: {} shards left to move", p.shards_to_move)
        });
        tokio::select! {
            () = ctx.stopped() => return,
            () = tokio::time::sleep(if p.safe_to_stop { poll * 10 } else { poll }) => {}
        }
    }
}
