//! Reads: the stored form of a chunk, rebuilt from any k of its verified
//! shards.
//!
//! A file kept whole on this node is read from the store (data shards
//! first, parity only when one is missing or corrupt). A file spread over
//! the network is read from the holders its location record names: this
//! node's own shards and the data shards first, several at once; a holder
//! that fails is replaced by the next, and a slow one gets a spare request
//! to the next (hedging). When too few shards arrive, the record may be
//! stale: the node asks the file's replicas for a newer one and tries again.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use datamesh_core::{ChunkEntry, Cid, Erasure, HolderId, LocationRecord};
use datamesh_pipeline::erasure;
use datamesh_store::{Store, StoreError};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::context::{Node, blocking};
use crate::error::{InvalidRequest, NodeError, ShardFailures, Unavailable};
use crate::holder::{holder_id, peer_of};
use crate::locate::holders_of;
use crate::observe::{self, Observer, Timing};
use crate::placement::can_receive;

/// How long a read waits before asking live holders that failed once again.
const READ_RETRY_PAUSE: Duration = Duration::from_millis(250);

impl Node {
    /// The stored form of chunk `index` of a file, rebuilt from any k
    /// verified shards.
    pub async fn chunk(&self, file: Cid, index: usize) -> Result<bytes::Bytes, NodeError> {
        let (mcid, m) = self.manifest(file).await?;
        let entry =
            m.chunks.get(index).cloned().ok_or(InvalidRequest::NoSuchChunk { file, chunks: m.chunks.len(), index })?;
        if let Some(hit) = self.inner.store.cache_get(&entry.cid) {
            return Ok(hit);
        }
        let data = match self.location(mcid).await? {
            Some(loc) => match self.read_chunk_networked(m.erasure, &entry, index, &loc).await {
                // Too few shards where our record says: the record may be
                // stale (repairs moved them while this node was away).
                Err(e @ NodeError::Unavailable(_)) => {
                    let fresh = self.refresh_location(&m, loc.clone()).await;
                    if fresh.signature == loc.signature {
                        return Err(e);
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
        let me = self.net().map(|n| holder_id(&n.local_peer_id())).unwrap_or_default();
        let offline: HashSet<HolderId> = self
            .peers()
            .await
            .into_iter()
            .filter(|p| !p.connected || !can_receive(p.state))
            .map(|p| holder_id(&p.peer))
            .collect();
        // Local first, then healthy holders, then the rest; data shards
        // before parity within each group (no decode needed if all k data
        // shards arrive).
        let mut order: Vec<usize> = (0..total).collect();
        order.sort_by_key(|&i| {
            let h = loc.holder(index, i).map(HolderId::as_slice).unwrap_or_default();
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
            let alive: HashSet<HolderId> = self
                .peers()
                .await
                .into_iter()
                .filter(|p| p.connected && can_receive(p.state))
                .map(|p| holder_id(&p.peer))
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
                failures.0.extend(f.0);
            }
        }
        if got < k {
            return Err(Unavailable::TooFewReachable { chunk: entry.cid, got, k, failures }.into());
        }
        let e2 = entry.clone();
        let observer = self.observer();
        blocking(move || {
            let started = Instant::now();
            let chunk = erasure::decode_chunk(e, &e2, slots)?;
            observe::report(&observer, Timing::ErasureDecode, started.elapsed());
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
        holders: &[Option<HolderId>],
        order: &[usize],
        me: &HolderId,
        adaptive: bool,
    ) -> (Vec<Option<Vec<u8>>>, usize, ShardFailures) {
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; cids.len()];
        let mut next = 0;
        let mut got = 0;
        let mut inflight = FuturesUnordered::new();
        let mut failures = ShardFailures::default();
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
                let fut = self.fetch_shard(cids[i], holders[i].clone(), me.clone());
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
                    if adaptive && !tuned && holders[i].as_ref() != Some(me) {
                        tuned = true;
                        let first = started.elapsed();
                        hedge_wait = hedge_wait.min((first * 4).max(Duration::from_millis(20)));
                    }
                    slots[i] = Some(b);
                    got += 1;
                }
                Err(err) => failures.0.push((i, err)),
            }
        }
        (slots, got, failures)
    }

    pub(crate) async fn fetch_shard(
        &self,
        cid: Cid,
        holder: Option<HolderId>,
        me: HolderId,
    ) -> Result<Vec<u8>, NodeError> {
        let holder = holder.ok_or(Unavailable::NoHolder)?;
        if holder == me {
            let store = self.inner.store.clone();
            return blocking(move || Ok(store.get_shard(&cid)?)).await;
        }
        let peer = peer_of(&holder).ok_or(Unavailable::BadHolderId)?;
        let net = self.net().ok_or_else(NodeError::network_down)?;
        Ok(net.get_shard(peer, cid).await?)
    }
}

/// Reads a chunk's data shards (and parity ones only when needed), verifies
/// them and decodes.
fn read_chunk(
    store: &Store,
    e: Erasure,
    entry: &ChunkEntry,
    observer: &Option<Observer>,
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
        return Err(Unavailable::TooFewReadable { chunk: entry.cid, have, k }.into());
    }
    let started = Instant::now();
    let chunk = erasure::decode_chunk(e, entry, shards)?;
    observe::report(observer, Timing::ErasureDecode, started.elapsed());
    Ok(chunk)
}
