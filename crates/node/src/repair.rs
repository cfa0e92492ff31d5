//! The repair worker: brings every chunk of the files this node maintains
//! back to k+m live shards.
//!
//! **Who repairs a file.** Every shard holder keeps the file's manifest and
//! location record. Among the holders that are ONLINE (as this node sees
//! them), the one closest to the manifest's CID in the DHT keyspace is the
//! file's maintainer; when it goes OFFLINE the next closest takes over, so
//! repair never depends on the owner being online. Two nodes that briefly
//! disagree both repair; location records carry a sequence number and the
//! higher one wins, and a repair only ever adds shards, so nothing is lost.
//!
//! **What counts as lost.** A shard is missing when its holder is OFFLINE or
//! unknown (never seen since this node started) or answers `SHARD_EXISTS`
//! with no (deleted after a failed scrub, or wiped). A WARNING holder is not
//! repaired around yet: it may be back before it is OFFLINE, and moving its
//! shards would cost bandwidth for nothing.
//!
//! **How.** Chunks with the fewest live shards go first. For each, any k live
//! shards are fetched (verified), only the missing ones are rebuilt
//! (Reed-Solomon is deterministic, so a rebuilt shard must hash to the CID
//! the manifest names, and is checked), placed on ONLINE nodes that hold no
//! shard of that chunk, and the location record is re-signed with the next
//! sequence number and sent to every holder and replica. The manifest never
//! changes. Bytes rebuilt are paced by a token bucket (`repair_rate`), so
//! repair does not crowd out user traffic.

// Store calls return `StoreError`, which carries CIDs inline.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use datamesh_core::{Cid, Erasure, HolderId, LocationRecord, Manifest};
use datamesh_net::{PeerId, PeerState};
use datamesh_pipeline::erasure;
use datamesh_store::{ScrubReport, ShardMeta, UploadGuard};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;

use crate::context::{Node, blocking};
use crate::error::{InvalidRequest, NetworkError, NodeError, StorageError, Unavailable};
use crate::holder::{holder_id, peer_of};
use crate::locate::{holders_of, positions_by_holder, shards_held};
use crate::placement::{Holder, distance, kad_key};
pub use crate::state::RepairTotals;
use crate::workers::{Worker, WorkerCtx};

/// What one repair pass did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairReport {
    /// Files whose location record this node holds.
    pub files_seen: usize,
    /// Of those, files this node maintains (closest ONLINE holder).
    pub files_maintained: usize,
    /// Chunks found with fewer than k+m live shards.
    pub chunks_degraded: usize,
    /// Shards rebuilt and placed.
    pub shards_rebuilt: usize,
    /// Bytes of rebuilt shards written.
    pub bytes_rebuilt: u64,
    /// Chunks with fewer than k live shards: unreadable until holders return.
    pub chunks_unrecoverable: usize,
    /// What went wrong, per file (the pass goes on with the others).
    pub errors: Vec<String>,
}

/// Chunks a repair pass works on at once. One at a time leaves the pass
/// waiting on round trips (fetch k shards, then place the rebuilt ones)
/// with the links and cores mostly idle; several in flight keep them busy.
/// Most are rebuilt by their new holders (`REBUILD_SHARD`), which takes no
/// memory here, so this many can be out across the network.
const REPAIR_CHUNKS_IN_FLIGHT: usize = 16;

/// Of those, chunks rebuilt on this node at once: memory is bounded by this
/// many chunks' shards (k fetched plus the rebuilt ones each).
const LOCAL_REBUILDS: usize = 6;

/// Peers' `REBUILD_SHARD`s a node serves at once; each holds k fetched
/// shards and the rebuilt one in memory.
pub(crate) const REBUILDS_IN_FLIGHT: usize = 4;

/// Paces rebuilt bytes: at most `rate` bytes per second on average, bursts
/// of one second's worth. `rate == 0` means unlimited. Shared by the chunks
/// of a pass in flight together, so the cap holds for the pass as a whole.
pub(crate) struct Pacer {
    rate: u64,
    start: Instant,
    sent: AtomicU64,
}

impl Pacer {
    pub(crate) fn new(rate: u64) -> Self {
        Self { rate, start: Instant::now(), sent: AtomicU64::new(0) }
    }

    pub(crate) async fn take(&self, bytes: u64) {
        if self.rate == 0 {
            return;
        }
        let sent = self.sent.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let due = Duration::from_secs_f64(sent as f64 / self.rate as f64);
        let ahead = due.saturating_sub(self.start.elapsed() + Duration::from_secs(1));
        if !ahead.is_zero() {
            tokio::time::sleep(ahead).await;
        }
    }
}

/// A chunk that lacks shards.
struct Degraded {
    file: Cid,
    chunk: usize,
    live: Vec<bool>,
}

impl Node {
    /// Serves a peer's `REBUILD_SHARD`: fetches any k of the chunk's listed
    /// shards like a read does (this node's own from its store, the others
    /// from their holders, each verified, a failed one replaced by the
    /// next), rebuilds shard `want`, checks it against its CID and stores it
    /// durably, kept from GC by `guard` like a `PUT_SHARD`'s shard until its
    /// file's manifest or lease covers it. Already holding it is success (a
    /// retried request).
    pub(crate) async fn rebuild_for_peer(
        &self,
        guard: std::sync::Arc<UploadGuard>,
        chunk: Cid,
        e: Erasure,
        want: usize,
        shards: Vec<(Cid, Option<PeerId>)>,
    ) -> Result<(), NodeError> {
        erasure::validate(e).map_err(InvalidRequest::BadCode)?;
        let target = shards[want].0;
        let store = self.inner.store.clone();
        if blocking(move || Ok(store.has_shard(&target)?)).await? {
            return Ok(());
        }
        let me = holder_id(&self.net().ok_or_else(NodeError::network_down)?.local_peer_id());
        let (cids, holders): (Vec<Cid>, Vec<Option<HolderId>>) =
            shards.into_iter().map(|(c, h)| (c, h.as_ref().map(holder_id))).unzip();
        // This node's own shards first (no transfer), then the listed order.
        let mut order: Vec<usize> = (0..cids.len()).filter(|&i| i != want && holders[i].is_some()).collect();
        order.sort_by_key(|&i| holders[i].as_ref() != Some(&me));
        let k = e.k as usize;
        let (slots, got, failures) = self.fetch_k_shards(k, &chunk, &cids, &holders, &order, &me, false).await;
        if got < k {
            return Err(Unavailable::TooFewToRebuild { chunk, want, got, k, failures }.into());
        }
        let store = self.inner.store.clone();
        blocking(move || {
            let (_, bytes) =
                erasure::rebuild_only(e, &slots, &[want])?.into_iter().next().ok_or(StorageError::NotRebuilt(want))?;
            drop(slots);
            if Cid::raw_blake3(&bytes) != target {
                return Err(InvalidRequest::RebuiltShardMismatch { index: want, cid: target }.into());
            }
            let meta = ShardMeta { chunk, index: want as u16 };
            Ok(store.put_shards(&[(target, bytes.as_slice(), meta)], Some(&guard))?)
        })
        .await?;
        self.inner.repair.for_peers.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Repair totals since start.
    pub fn repair_totals(&self) -> RepairTotals {
        let mut t = self.inner.repair.totals.lock().map(|t| t.clone()).unwrap_or_default();
        t.rebuilt_for_peers = self.inner.repair.for_peers.load(Ordering::Relaxed);
        t
    }

    /// One repair pass over every file this node maintains.
    pub async fn repair_pass(&self) -> RepairReport {
        let _one = self.inner.repair.running.lock().await;
        let mut report = RepairReport::default();
        let Some(net) = self.net().cloned() else { return report };
        let me = net.local_peer_id();
        let peers: HashMap<HolderId, (PeerState, bool)> =
            net.peers().await.into_iter().map(|p| (holder_id(&p.peer), (p.state, p.connected))).collect();
        let online = |h: &HolderId| matches!(peers.get(h), Some((PeerState::Online, true)));
        let online_peers: Vec<PeerId> = peers
            .iter()
            .filter(|(_, s)| matches!(s, (PeerState::Online, true)))
            .filter_map(|(h, _)| peer_of(h))
            .collect();
        let locations = self.inner.locations.clone();
        let records = blocking(move || Ok(locations.list())).await.unwrap_or_default();
        report.files_seen = records.len();

        let mut degraded = Vec::new();
        let mut files: HashMap<Cid, (LocationRecord, std::sync::Arc<Manifest>)> = HashMap::new();
        for rec in records {
            let file = rec.manifest;
            if !self.maintains(&rec, me, &online) {
                continue;
            }
            let Ok((_, m)) = self.manifest(file).await else { continue };
            if let Err(e) = rec.fits(&m) {
                report.errors.push(format!("{file}: the stored location record does not fit the manifest: {e}"));
                continue;
            }
            // The maintainer renews the holders' leases; one that answers the
            // file is deleted hands over the owner's tombstone.
            if self.renew_lease(&m, &rec).await {
                continue;
            }
            let mut rec = rec;
            let mut live = self.live_shards(&m, &rec, me, &peers).await;
            if live.as_ref().is_ok_and(|l| l.iter().any(|row| row.iter().any(|x| !x))) {
                // Before rebuilding, make sure our record is the network's
                // latest: one re-signed by a repair while this node was away
                // names other holders (and maybe another maintainer).
                // Repairing from a stale record would fork it.
                let fresh = self.refresh_location(&m, rec.clone()).await;
                if fresh.signature != rec.signature {
                    rec = fresh;
                    if !self.maintains(&rec, me, &online) {
                        continue;
                    }
                    live = self.live_shards(&m, &rec, me, &peers).await;
                }
            }
            report.files_maintained += 1;
            match live {
                Ok(live) => {
                    let before = degraded.len();
                    for (chunk, row) in live.into_iter().enumerate() {
                        if row.iter().any(|l| !l) {
                            degraded.push(Degraded { file, chunk, live: row });
                        }
                    }
                    // Never rebuild what its owner deleted: ask the holders
                    // for a tombstone first.
                    if degraded.len() > before && self.find_tombstone(&rec, &online_peers).await {
                        degraded.truncate(before);
                        report.files_maintained -= 1;
                        continue;
                    }
                }
                Err(e) => report.errors.push(format!("{file}: {e}")),
            }
            files.insert(file, (rec, m));
        }
        report.chunks_degraded = degraded.len();
        // Closest to losing data first.
        degraded.sort_by_key(|d| d.live.iter().filter(|l| **l).count());

        let pacer = Pacer::new(self.inner.cfg.repair_rate.as_u64());
        let local = tokio::sync::Semaphore::new(LOCAL_REBUILDS);
        let mut changed: HashMap<Cid, Vec<(usize, usize, HolderId)>> = HashMap::new();
        let mut ready = Vec::new();
        for d in degraded {
            let k = files[&d.file].1.erasure.k as usize;
            if d.live.iter().filter(|l| **l).count() < k {
                report.chunks_unrecoverable += 1;
            } else {
                ready.push(d);
            }
        }
        // Chunks start in the order sorted above (closest to loss first),
        // several in flight; they finish in any order (`buffered` would
        // start no new chunk while the oldest one is still running, so one
        // slow chunk would hold up the others).
        let mut rebuilt = futures::stream::iter(ready)
            .map(|d| {
                let (rec, m) = &files[&d.file];
                let (pacer, local) = (&pacer, &local);
                async move {
                    let r = self.repair_chunk(m, rec, d.chunk, &d.live, me, pacer, local).await;
                    (d.file, d.chunk, r)
                }
            })
            .buffer_unordered(REPAIR_CHUNKS_IN_FLIGHT);
        while let Some((file, chunk, r)) = rebuilt.next().await {
            match r {
                Ok(placed) => {
                    // Totals count a shard as soon as it is placed, before
                    // the new record goes out: whoever sees the repaired
                    // record (a `stat`) then sees its shards counted too.
                    if let Ok(mut t) = self.inner.repair.totals.lock() {
                        t.shards_rebuilt += placed.len() as u64;
                        t.bytes_rebuilt += placed.iter().map(|p| p.2).sum::<u64>();
                    }
                    for (shard, holder, bytes) in placed {
                        report.shards_rebuilt += 1;
                        report.bytes_rebuilt += bytes;
                        changed.entry(file).or_default().push((chunk, shard, holder));
                    }
                }
                Err(e) => report.errors.push(format!("{file} chunk {chunk}: {e}")),
            }
        }

        for (file, moves) in changed {
            let (rec, m) = &files[&file];
            if let Err(e) = self.rewrite_location(m, rec, &moves).await {
                report.errors.push(format!("{file}: {e}"));
            }
        }

        if let Ok(mut t) = self.inner.repair.totals.lock() {
            t.passes += 1;
            t.chunks_degraded_last = report.chunks_degraded;
            t.chunks_unrecoverable_last = report.chunks_unrecoverable;
        }
        if report.shards_rebuilt > 0 || report.chunks_unrecoverable > 0 || !report.errors.is_empty() {
            tracing::info!(
                maintained = report.files_maintained,
                degraded = report.chunks_degraded,
                rebuilt = report.shards_rebuilt,
                bytes = report.bytes_rebuilt,
                unrecoverable = report.chunks_unrecoverable,
                errors = ?report.errors,
                "repair pass"
            );
        }
        report
    }

    /// Re-signs `rec` with the next `seq`, each `(chunk, shard, holder)` of
    /// `moves` now naming its new holder, saves it and sends it (with the
    /// manifest) to every replica target and holder. Repair and drain both
    /// move shards this way; peers take the rewrite because this node is
    /// the record's previous writer or one of its previous holders.
    pub(crate) async fn rewrite_location(
        &self,
        m: &Manifest,
        rec: &LocationRecord,
        moves: &[(usize, usize, HolderId)],
    ) -> Result<LocationRecord, NodeError> {
        let file = rec.manifest;
        // A record that does not fit its manifest (kept by an older build)
        // or sits at the seq ceiling cannot be rewritten; indexing into it
        // would panic the worker.
        let bad = |why: String| NodeError::from(StorageError::BadRecord { file, why });
        rec.fits(m).map_err(|e| bad(e.to_string()))?;
        let mut chunks: Vec<Vec<HolderId>> =
            (0..m.chunks.len()).map(|c| rec.holders_of(c).into_iter().cloned().collect()).collect();
        for (c, s, h) in moves {
            let (Some(cid), Some(slot)) =
                (m.chunks.get(*c).and_then(|e| e.shards.get(*s)), chunks.get_mut(*c).and_then(|r| r.get_mut(*s)))
            else {
                return Err(bad(format!("shard {s} of chunk {c} is outside the file")));
            };
            self.inner.audit.clear_failed(cid, slot.as_slice());
            *slot = h.clone();
        }
        // The next seq, the same upload, and the upload's first record
        // carried on, so a new holder can check where the writer put each
        // shard (`admit.rs`).
        let next = LocationRecord::sign_rewrite(rec, &chunks, &self.inner.signing).map_err(|e| bad(e.to_string()))?;
        let locations = self.inner.locations.clone();
        let n2 = next.clone();
        blocking(move || locations.put(&n2).map_err(|e| StorageError::SaveRecord(e).into())).await?;
        let (_, bytes) = self.manifest_bytes(file).await?;
        self.replicate(m, file, &bytes, &next).await.map_err(NetworkError::SendRecord)?;
        Ok(next)
    }

    /// Whether this node is the closest ONLINE holder of the file (it must
    /// hold the record, and so is a candidate itself).
    pub(crate) fn maintains(&self, rec: &LocationRecord, me: PeerId, online: &impl Fn(&HolderId) -> bool) -> bool {
        let key = kad_key(&rec.manifest.to_bytes());
        let mine = distance(&key, &kad_key(&me.to_bytes()));
        let me = holder_id(&me);
        !rec.holders.iter().any(|h| *h != me && online(h) && distance(&key, &kad_key(h.as_slice())) < mine)
    }

    /// Live shards per chunk: local ones from the store, remote ones by
    /// asking each ONLINE or never-seen holder once; OFFLINE holders, and
    /// never-seen ones that cannot be reached, count as lost; WARNING ones
    /// (and connected ones that fail to answer) as live for now.
    pub(crate) async fn live_shards(
        &self,
        m: &Manifest,
        rec: &LocationRecord,
        me: PeerId,
        peers: &HashMap<HolderId, (PeerState, bool)>,
    ) -> Result<Vec<Vec<bool>>, NodeError> {
        let me = holder_id(&me);
        let mut live: Vec<Vec<bool>> = m.chunks.iter().map(|c| vec![false; c.shards.len()]).collect();
        let net = self.net().cloned().ok_or_else(NodeError::network_down)?;
        let mut asks = FuturesUnordered::new();
        for (h, pos) in positions_by_holder(m, rec) {
            let cids: Vec<Cid> = pos.iter().map(|&(c, s)| m.chunks[c].shards[s]).collect();
            if h == me {
                let store = self.inner.store.clone();
                let have = blocking(move || {
                    cids.iter().map(|c| Ok(store.has_shard(c)?)).collect::<Result<Vec<bool>, NodeError>>()
                })
                .await?;
                for (&(c, s), ok) in pos.iter().zip(have) {
                    live[c][s] = ok;
                }
                continue;
            }
            // Whether to ask the holder, and what no clear answer means.
            let ask_it = match peers.get(&h) {
                // Never seen: in a network wider than this node's
                // connections (a wide code) a holder may simply be one it
                // has not talked to yet. Ask it (the DHT knows its address);
                // no answer counts as lost, like OFFLINE.
                None => Some(false),
                // No clear answer from a connected peer is not evidence of
                // loss.
                Some((PeerState::Online, true)) => Some(true),
                Some((PeerState::Warning, _)) | Some((PeerState::Online, false)) => {
                    for &(c, s) in &pos {
                        live[c][s] = true;
                    }
                    None
                }
                _ => None, // OFFLINE: lost.
            };
            if let (Some(otherwise), Some(peer)) = (ask_it, peer_of(&h)) {
                let net = net.clone();
                asks.push(async move { (pos, shards_held(&net, peer, &cids).await, otherwise) });
            }
        }
        while let Some((pos, held, otherwise)) = asks.next().await {
            for ((c, s), held) in pos.into_iter().zip(held) {
                live[c][s] = held.unwrap_or(otherwise);
            }
        }
        // A holder that failed an audit of a shard does not have it, whatever
        // it says to SHARD_EXISTS.
        for (c, entry) in m.chunks.iter().enumerate() {
            for (s, cid) in entry.shards.iter().enumerate() {
                if live[c][s] && rec.holder(c, s).is_some_and(|h| self.inner.audit.failed(cid, h.as_slice())) {
                    live[c][s] = false;
                }
            }
        }
        Ok(live)
    }

    /// Rebuilds the missing shards of one chunk and stores them on new
    /// holders. Returns (shard index, new holder id, bytes) per shard placed.
    ///
    /// A chunk that lost one shard (one node died: the common case) is
    /// rebuilt by its new holder: this node picks it and sends it
    /// `REBUILD_SHARD`, and the k shards go from their holders straight to
    /// it. Rebuilding here would pull all of them through this node's link
    /// and push the result out again, so a repair would run at the speed of
    /// one link; spread over the new holders it uses every survivor's. A
    /// chunk that lost more, a new holder that turns out to be this node,
    /// or one that fails the request is rebuilt here.
    #[allow(clippy::too_many_arguments)]
    async fn repair_chunk(
        &self,
        m: &Manifest,
        rec: &LocationRecord,
        chunk: usize,
        live: &[bool],
        me: PeerId,
        pacer: &Pacer,
        local: &tokio::sync::Semaphore,
    ) -> Result<Vec<(usize, HolderId, u64)>, NodeError> {
        let entry = &m.chunks[chunk];
        let e = m.erasure;
        let k = e.k as usize;
        let missing: Vec<usize> = (0..live.len()).filter(|&i| !live[i]).collect();
        // Each live shard's holder; none for a lost one.
        let holders: Vec<Option<HolderId>> =
            holders_of(rec, chunk, live.len()).into_iter().zip(live).map(|(h, &l)| h.filter(|_| l)).collect();
        let holders_of_live: HashSet<HolderId> = holders.iter().flatten().cloned().collect();
        if let [want] = missing[..] {
            let shard_bytes = e.shard_size(entry.stored_size as usize) as u64;
            let target = self.place_among(&entry.cid, 1, shard_bytes, &holders_of_live, self.peers().await).await?;
            if let (Some(Holder::Peer(p)), Some(net)) = (target.first(), self.net().cloned()) {
                let shards =
                    entry.shards.iter().zip(&holders).map(|(c, h)| (*c, h.as_ref().and_then(peer_of))).collect();
                match net.rebuild_shard(*p, entry.cid, (e.k, e.m), want as u16, shards).await {
                    Ok(()) => {
                        // Paced once done, so a failure that falls back to
                        // rebuilding here is not charged twice.
                        pacer.take(shard_bytes).await;
                        return Ok(vec![(want, holder_id(p), shard_bytes)]);
                    }
                    Err(err) => {
                        tracing::warn!(peer = %p, chunk = %entry.cid, error = %err, "a new holder could not rebuild a shard; rebuilding it here")
                    }
                }
            }
        }
        let _slot = local.acquire().await.map_err(|_| StorageError::RepairStopped)?;
        // Fetch k live shards, local first, replacing failures.
        let me_b = holder_id(&me);
        let mut order: Vec<usize> = (0..live.len()).filter(|&i| live[i]).collect();
        order.sort_by_key(|&i| (rec.holder(chunk, i) != Some(&me_b), i));
        // No adaptive hedging: a read hedges to cut a user's wait, a repair
        // to get around a frozen holder. Spares fired by a wait tuned to
        // one quick answer would move a fifth shard per chunk under load.
        let (slots, got, _) = self.fetch_k_shards(k, &entry.cid, &entry.shards, &holders, &order, &me_b, false).await;
        if got < k {
            return Err(Unavailable::TooFewToRepair { got, k }.into());
        }
        let cids = entry.shards.clone();
        let rebuilt = blocking(move || {
            let mut out = Vec::new();
            for (i, bytes) in erasure::rebuild_only(e, &slots, &missing)? {
                if Cid::raw_blake3(&bytes) != cids[i] {
                    return Err(StorageError::RebuiltMismatch { index: i, cid: cids[i] }.into());
                }
                out.push((i, bytes));
            }
            Ok(out)
        })
        .await?;

        // New holders: ONLINE, with room, holding no live shard of this chunk.
        let shard_bytes = rebuilt.first().map(|(_, b)| b.len() as u64).unwrap_or(0);
        let keep = holders_of_live;
        // This node first, when it may take one: the rebuilt bytes are
        // already here, and sending them would be a fifth shard transfer
        // for a chunk this node holds nothing of (four fetched, one sent).
        let mut targets = Vec::new();
        let mut avoid = keep;
        // `candidates` with no peers: this node alone, if it may take shards.
        if !rebuilt.is_empty() && self.candidates(&avoid, Vec::new()).await?.iter().any(|c| c.free_bytes >= shard_bytes)
        {
            targets.push(Holder::Local);
            avoid.insert(me_b.clone());
        }
        if rebuilt.len() > targets.len() {
            let rest = rebuilt.len() - targets.len();
            targets.extend(self.place_among(&entry.cid, rest, shard_bytes, &avoid, self.peers().await).await?);
        }
        let mut placed = Vec::new();
        let mut puts = FuturesUnordered::new();
        for ((i, bytes), target) in rebuilt.into_iter().zip(targets) {
            pacer.take(bytes.len() as u64).await;
            let len = bytes.len() as u64;
            let cid = entry.shards[i];
            match target {
                Holder::Local => {
                    let store = self.inner.store.clone();
                    let meta = ShardMeta { chunk: entry.cid, index: i as u16 };
                    blocking(move || Ok(store.put_shards(&[(cid, bytes.as_slice(), meta)], None)?)).await?;
                    placed.push((i, me_b.clone(), len));
                }
                Holder::Peer(p) => {
                    let net = self.net().cloned().ok_or_else(NodeError::network_down)?;
                    puts.push(async move { (i, p, len, net.put_shard(p, cid, bytes).await) });
                }
            }
        }
        while let Some((i, p, len, r)) = puts.next().await {
            match r {
                Ok(()) => placed.push((i, holder_id(&p), len)),
                Err(e) => tracing::warn!(peer = %p, error = %e, "storing a rebuilt shard failed; retried next pass"),
            }
        }
        Ok(placed)
    }
}

/// Runs repair passes every `interval`, and at once when a peer turns
/// OFFLINE (checked every `poll`).
pub struct RepairWorker {
    /// The node whose files it maintains.
    pub node: Node,
    /// Time between scheduled passes.
    pub interval: Duration,
    /// How often the health table is checked for newly OFFLINE peers.
    pub poll: Duration,
}

#[async_trait::async_trait]
impl Worker for RepairWorker {
    fn name(&self) -> &'static str {
        "repair"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        let node = &self.node;
        let mut offline: HashSet<PeerId> = HashSet::new();
        let mut last = Instant::now();
        ctx.set("waiting for the first pass");
        loop {
            tokio::select! {
                () = ctx.stopped() => return,
                () = tokio::time::sleep(self.poll) => {}
            }
            let now_offline: HashSet<PeerId> = match node.net() {
                Some(net) => {
                    net.peers().await.into_iter().filter(|p| p.state == PeerState::Offline).map(|p| p.peer).collect()
                }
                None => return,
            };
            let newly = now_offline.difference(&offline).count();
            offline = now_offline;
            if newly > 0 || last.elapsed() >= self.interval {
                if newly > 0 {
                    tracing::info!(newly_offline = newly, "peers went OFFLINE; repairing");
                    ctx.set(format!("repair pass: {newly} peers went OFFLINE"));
                } else {
                    ctx.set("scheduled repair pass");
                }
                node.repair_pass().await;
                last = Instant::now();
                let t = node.repair_totals();
                ctx.set(format!(
                    "idle: {} passes, {} shards rebuilt, {} chunks degraded in the last pass",
                    t.passes, t.shards_rebuilt, t.chunks_degraded_last
                ));
            }
        }
    }
}

impl Node {
    /// Re-reads and verifies every stored shard and manifest, at most
    /// `rate` bytes per second (0: unpaced). The store quarantines corrupt
    /// ones and drops them from its index, so `SHARD_EXISTS` answers no and
    /// the file's maintainer rebuilds them elsewhere; a repair pass follows
    /// here at once, in case this node maintains the file.
    pub async fn scrub_pass(&self, rate: u64) -> Result<ScrubReport, NodeError> {
        let store = self.inner.store.clone();
        let report = blocking(move || Ok(store.scrub_paced(rate)?)).await?;
        if !report.corrupt.is_empty() {
            tracing::warn!(corrupt = ?report.corrupt, "scrub quarantined corrupt objects; they will be rebuilt elsewhere");
            self.repair_pass().await;
        }
        Ok(report)
    }
}

/// Runs a scrub pass every `interval`, at most `rate` bytes per second.
pub struct ScrubWorker {
    /// The node whose store it verifies.
    pub node: Node,
    /// Time between passes.
    pub interval: Duration,
    /// Bytes per second (0: unpaced).
    pub rate: u64,
}

#[async_trait::async_trait]
impl Worker for ScrubWorker {
    fn name(&self) -> &'static str {
        "scrub"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        while ctx.idle(self.interval).await {
            ctx.set("verifying every stored shard and manifest");
            match self.node.scrub_pass(self.rate).await {
                Ok(p) => {
                    tracing::debug!(checked = p.checked, bytes = p.bytes, corrupt = p.corrupt.len(), "scrub pass");
                }
                Err(e) => tracing::warn!(error = %e, "scrub pass failed"),
            }
        }
    }
}
