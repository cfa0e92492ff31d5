//! Locating and replicating what describes a file: its manifest and its
//! location record.
//!
//! A user names a file by its manifest CID or, for a public file, its UnixFS
//! CID (an alias record resolves it). The manifest and the record are read
//! from this node's store when it has them, else from the nodes that
//! announced the file in the DHT (providers). A put or a repair sends both to
//! the file's replicas: the max(m+1, 3) nodes closest to the manifest CID
//! and every shard holder. A node that missed repairs catches up by asking
//! those replicas for their record (`refresh_location`, in `admit.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use datamesh_core::{Cid, Codec, HolderId, LocationRecord, Manifest};
use datamesh_net::{NetClient, PeerId, Request, Response};
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::context::{Node, blocking};
use crate::error::{NetworkError, NodeError, StorageError};
use crate::holder::peer_of;
use crate::placement::{can_receive, distance, is_draining, kad_key};
use crate::records::{alias_key, dht_key, location_key};

/// How long a provider lookup may take before the file counts as unknown.
const PROVIDER_LOOKUP_TIMEOUT: Duration = Duration::from_secs(20);

impl Node {
    /// Resolves a CID given by a user (a manifest CID, or the UnixFS CID of
    /// a public file) to the manifest CID, asking the network if needed.
    pub async fn resolve(&self, cid: Cid) -> Result<Cid, NodeError> {
        let store = self.inner.store.clone();
        let local = blocking(move || {
            if store.has_manifest(&cid)? {
                return Ok(Some(cid));
            }
            Ok(store.resolve_alias(&cid)?)
        })
        .await?;
        if let Some(m) = local {
            return Ok(m);
        }
        if cid.codec() == Codec::DagCbor {
            return Ok(cid);
        }
        let Some(net) = self.net() else { return Err(NodeError::NotFound(cid)) };
        for p in self.providers(&cid).await? {
            if let Ok(Response::Record(Some(b))) = net.request(p, Request::GetRecord { key: alias_key(&cid) }).await
                && let Ok(m) = Cid::from_bytes(&b)
            {
                return Ok(m);
            }
        }
        Err(NodeError::NotFound(cid))
    }

    /// Resolves a CID without asking the network: a manifest CID is
    /// itself, a UnixFS CID goes through this node's aliases; None when
    /// only the network could tell. For checks that must come before any
    /// lookup a caller could provoke.
    pub async fn resolve_local(&self, cid: Cid) -> Result<Option<Cid>, NodeError> {
        if cid.codec() == Codec::DagCbor {
            return Ok(Some(cid));
        }
        let store = self.inner.store.clone();
        blocking(move || Ok(store.resolve_alias(&cid)?)).await
    }

    /// Nodes that announced `cid`, found within a bounded time.
    async fn providers(&self, cid: &Cid) -> Result<Vec<PeerId>, NodeError> {
        let Some(net) = self.net() else { return Ok(Vec::new()) };
        let started = Instant::now();
        let found = tokio::time::timeout(PROVIDER_LOOKUP_TIMEOUT, net.find_providers(&dht_key(cid))).await;
        crate::observe::report(&self.observer(), crate::observe::Timing::DhtLookup, started.elapsed());
        match found {
            Ok(Ok(mut v)) => {
                let me = net.local_peer_id();
                v.retain(|p| *p != me);
                Ok(v)
            }
            Ok(Err(e)) => {
                tracing::debug!(%cid, error = %e, "provider lookup failed");
                Ok(Vec::new())
            }
            Err(_) => Ok(Vec::new()),
        }
    }

    /// The manifest's CID and encoded bytes, from this node or the network.
    pub async fn manifest_bytes(&self, cid: Cid) -> Result<(Cid, Vec<u8>), NodeError> {
        let cid = self.resolve(cid).await?;
        let store = self.inner.store.clone();
        match blocking(move || Ok(store.get_manifest(&cid)?)).await {
            Ok(bytes) if cid.verifies(&bytes) => return Ok((cid, bytes)),
            Ok(_) => tracing::warn!(%cid, "local manifest copy is corrupt; asking the network"),
            Err(NodeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        if let Some(net) = self.net().cloned() {
            for p in self.providers(&cid).await? {
                match net.get_manifest(p, cid).await {
                    Ok(bytes) => {
                        // Keep a copy (unpinned: GC may drop it) so the next
                        // read of this file is local.
                        let store = self.inner.store.clone();
                        let b = bytes.clone();
                        let _ = blocking(move || Ok(store.put_manifest(&cid, &b)?)).await;
                        return Ok((cid, bytes));
                    }
                    Err(e) => tracing::debug!(%cid, peer = %p, error = %e, "manifest fetch failed"),
                }
            }
        }
        Err(NodeError::NotFound(cid))
    }

    /// The decoded manifest (cached).
    pub async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), NodeError> {
        if let Some(m) = self.inner.manifests.get(&cid) {
            return Ok((cid, m));
        }
        let (cid, bytes) = self.manifest_bytes(cid).await?;
        if self.inner.tombstones.get(&cid).is_some() {
            return Err(NodeError::Deleted(cid));
        }
        let m = Arc::new(Manifest::decode_verified(&cid, &bytes)?);
        self.inner.manifests.insert(cid, m.clone());
        Ok((cid, m))
    }

    /// The file's location record: this node's copy, else the highest valid
    /// one its replicas hold. None for files kept whole on one node.
    pub async fn location(&self, manifest: Cid) -> Result<Option<LocationRecord>, NodeError> {
        let locations = self.inner.locations.clone();
        if let Some(r) = blocking(move || Ok(locations.get(&manifest))).await? {
            return Ok(Some(r));
        }
        let Some(net) = self.net().cloned() else { return Ok(None) };
        let (_, m) = self.manifest(manifest).await?;
        // The record most providers hold, the highest seq among equals: one
        // provider alone cannot win with a record of a seq it made up.
        let mut seen: Vec<(LocationRecord, usize)> = Vec::new();
        for p in self.providers(&manifest).await? {
            if let Ok(Response::Record(Some(b))) =
                net.request(p, Request::GetRecord { key: location_key(&manifest) }).await
                && let Ok(r) = LocationRecord::decode(&b)
            {
                // A record another provider sent too was checked then.
                match seen.iter_mut().find(|(x, _)| *x == r) {
                    Some((_, n)) => *n += 1,
                    None if r.manifest == manifest && r.fits(&m).is_ok() && crate::admit::from_the_writer(&m, &r) => {
                        seen.push((r, 1));
                    }
                    None => {}
                }
            }
        }
        let best = seen.into_iter().max_by_key(|(r, n)| (*n, r.seq)).map(|(r, _)| r);
        if let Some(r) = &best {
            let locations = self.inner.locations.clone();
            let r = r.clone();
            let _ = blocking(move || locations.put(&r).map_err(|e| StorageError::Store(e).into())).await;
        }
        Ok(best)
    }

    /// Stores the manifest and location record on the max(m+1, 3) nodes
    /// closest to the manifest's CID (this node counts as one, unless it is
    /// draining) and on every shard holder (whose replica pin keeps its
    /// shards from GC), then announces the file in the DHT. Returns how many
    /// other nodes took both.
    pub(crate) async fn replicate(
        &self,
        m: &Manifest,
        cid: Cid,
        bytes: &[u8],
        record: &LocationRecord,
    ) -> Result<usize, NodeError> {
        let Some(net) = self.net().cloned() else { return Ok(0) };
        let targets = self.replica_targets(m, cid, record).await;
        let rec = record.encode();
        let mut jobs = FuturesUnordered::new();
        for p in targets {
            let net = net.clone();
            let (bytes, rec) = (bytes.to_vec(), rec.clone());
            jobs.push(async move {
                match net.request(p, Request::PutManifest { cid, data: bytes }).await? {
                    Response::Ok => {}
                    answer => return Err(NodeError::from(NetworkError::ManifestRefused { peer: p, answer })),
                }
                match net.request(p, Request::PutRecord { key: location_key(&cid), value: rec }).await? {
                    Response::Ok => Ok(()),
                    answer => Err(NodeError::from(NetworkError::RecordRefused { peer: p, answer })),
                }
            });
        }
        let took = jobs.len();
        // Every target is tried; one refusal does not cancel the others.
        let mut first_err = None;
        while let Some(r) = jobs.next().await {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        net.provide(&dht_key(&cid)).await?;
        if let Some(u) = m.unixfs {
            net.provide(&dht_key(&u)).await?;
        }
        Ok(took)
    }

    /// Who keeps a file's manifest and location record besides this node:
    /// the max(m+1, 3) − 1 ONLINE nodes closest to the manifest CID (all
    /// max(m+1, 3) of them when this node is draining: it will not be one),
    /// none of them draining, and every shard holder.
    pub(crate) async fn replica_targets(&self, m: &Manifest, cid: Cid, record: &LocationRecord) -> Vec<PeerId> {
        let Some(net) = self.net().cloned() else { return Vec::new() };
        let me = net.local_peer_id();
        let want = replica_count(m) - usize::from(!self.draining());
        let online: HashSet<PeerId> = net
            .peers()
            .await
            .into_iter()
            .filter(|p| p.connected && can_receive(p.state) && !is_draining(p))
            .map(|p| p.peer)
            .collect();
        let mut targets: Vec<PeerId> = match net.closest_peers(&dht_key(&cid)).await {
            Ok(c) => c.into_iter().filter(|p| *p != me && online.contains(p)).take(want).collect(),
            Err(_) => Vec::new(),
        };
        if targets.len() < want {
            // The DHT may not have converged yet: fill from connected peers,
            // nearest first.
            let mut rest: Vec<PeerId> = online.iter().copied().filter(|p| !targets.contains(p)).collect();
            let key = kad_key(&cid.to_bytes());
            rest.sort_by_key(|p| distance(&key, &kad_key(&p.to_bytes())));
            targets.extend(rest.into_iter().take(want - targets.len()));
        }
        for h in &record.holders {
            if let Some(p) = peer_of(h)
                && p != me
                && !targets.contains(&p)
            {
                targets.push(p);
            }
        }
        targets
    }
}

/// How many nodes keep a file's manifest and location record: max(m+1, 3).
pub(crate) fn replica_count(m: &Manifest) -> usize {
    (m.erasure.m as usize + 1).max(3)
}

/// The recorded holder of each of chunk `index`'s `n` shards.
pub(crate) fn holders_of(loc: &LocationRecord, index: usize, n: usize) -> Vec<Option<HolderId>> {
    (0..n).map(|i| loc.holder(index, i).cloned()).collect()
}

/// Shard positions `(chunk, shard)` per holder named in `loc`.
pub(crate) fn positions_by_holder(m: &Manifest, loc: &LocationRecord) -> HashMap<HolderId, Vec<(usize, usize)>> {
    let mut by_holder: HashMap<HolderId, Vec<(usize, usize)>> = HashMap::new();
    for (ci, c) in m.chunks.iter().enumerate() {
        for si in 0..c.shards.len() {
            if let Some(h) = loc.holder(ci, si) {
                by_holder.entry(h.clone()).or_default().push((ci, si));
            }
        }
    }
    by_holder
}

/// Asks `peer` which of `cids` it holds (`SHARD_EXISTS`, in batches a frame
/// can carry). `None` where it gave no clear answer.
pub(crate) async fn shards_held(net: &NetClient, peer: PeerId, cids: &[Cid]) -> Vec<Option<bool>> {
    let mut out = Vec::with_capacity(cids.len());
    for batch in cids.chunks(1024) {
        match net.request(peer, Request::ShardExists { cids: batch.to_vec() }).await {
            Ok(Response::Exists(v)) if v.len() == batch.len() => out.extend(v.into_iter().map(Some)),
            _ => out.extend(std::iter::repeat_n(None, batch.len())),
        }
    }
    out
}
