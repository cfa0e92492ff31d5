//! Shard placement: which nodes get the k+m shards of a chunk.
//!
//! The shards of a chunk go to the k+m distinct nodes closest to the
//! chunk's key by XOR distance (Kademlia's metric, so the holders are the
//! nodes a DHT lookup of the chunk lands on), among nodes that are ONLINE and
//! have room for a shard. **Architecture invariant:** never two shards of one
//! chunk on one node. With fewer suitable nodes than shards the put fails and
//! says how many are needed and how many were found.
//!
//! [`place`] is pure: it picks among candidates with their keys and free
//! space. The node's side gathers those candidates (this node and its
//! connected peers, minus those draining or below the reputation floor),
//! widens its view of the network when a wide code needs more nodes than it
//! is connected to, and reports its own free space in its heartbeats.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use datamesh_core::{Cid, HolderId};
use datamesh_net::{NetClient, PeerId, PeerInfo, PeerState};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use sha2::Digest;

use crate::context::{Node, blocking};
use crate::error::NodeError;
pub use crate::error::PlacementError;
use crate::holder::holder_id;

/// Peer discovery for wide placements: random-key lookups, at most this
/// many, for at most this long, at most once per cooldown.
const DISCOVERY_LOOKUPS: usize = 32;
const DISCOVERY_TIME: Duration = Duration::from_secs(10);
const DISCOVERY_COOLDOWN: Duration = Duration::from_secs(30);
/// Longest a placement waits for connected peers to turn ONLINE (see
/// `Node::settle_peers`): five seconds left two of 80 nodes short on a
/// loaded machine.
const DISCOVERY_SETTLE: Duration = Duration::from_secs(15);

/// A node that may receive shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<Id> {
    /// The node, as the caller names it.
    pub id: Id,
    /// Its 256-bit key in the DHT keyspace.
    pub key: [u8; 32],
    /// Free bytes it last reported.
    pub free_bytes: u64,
}

/// XOR distance, big-endian comparable.
pub fn distance(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut d = [0u8; 32];
    for i in 0..32 {
        d[i] = a[i] ^ b[i];
    }
    d
}

/// Picks `n` distinct candidates closest to `key` that have room for a
/// shard of `shard_bytes`; returns them in order of distance (shard 0 goes to
/// the closest).
pub fn place<Id: Clone + Eq>(
    key: &[u8; 32],
    candidates: &[Candidate<Id>],
    n: usize,
    shard_bytes: u64,
) -> Result<Vec<Id>, PlacementError> {
    let mut fit: Vec<&Candidate<Id>> = Vec::with_capacity(candidates.len());
    for c in candidates.iter().filter(|c| c.free_bytes >= shard_bytes) {
        // The same node listed twice must not count as two.
        if !fit.iter().any(|f| f.id == c.id) {
            fit.push(c);
        }
    }
    if fit.len() < n {
        return Err(PlacementError { needed: n, found: fit.len(), shard_bytes });
    }
    fit.sort_by_key(|c| distance(key, &c.key));
    Ok(fit.into_iter().take(n).map(|c| c.id.clone()).collect())
}

/// Who holds a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Holder {
    /// This node.
    Local,
    /// Another node.
    Peer(PeerId),
}

/// Whether a peer may receive new shards.
pub fn can_receive(state: PeerState) -> bool {
    matches!(state, PeerState::Online)
}

/// Whether a peer said in its last heartbeat that it is draining: it gets
/// no new shards and no new replicas.
pub fn is_draining(p: &PeerInfo) -> bool {
    p.last_heartbeat.as_ref().is_some_and(|h| h.draining)
}

/// Connected peers that are ONLINE (can take new shards).
fn online(peers: &[PeerInfo]) -> usize {
    peers.iter().filter(|p| p.connected && can_receive(p.state)).count()
}

/// A key in Kademlia's keyspace: SHA-256 of the bytes (as libp2p-kad hashes
/// peer ids and record keys), so placement agrees with DHT lookups.
pub(crate) fn kad_key(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

impl Node {
    /// The numbers this node reports in its heartbeats.
    pub async fn heartbeat(&self) -> datamesh_net::Heartbeat {
        let store = self.inner.store.clone();
        let stats = blocking(move || Ok(store.stats()?)).await.ok();
        let draining = self.draining();
        datamesh_net::Heartbeat {
            // A draining node has room for nothing new: nodes that do not
            // know the draining flag skip it for that alone.
            free_bytes: match draining {
                true => 0,
                false => stats.as_ref().map(|s| s.capacity_bytes.saturating_sub(s.used_bytes)).unwrap_or(0),
            },
            shards: stats.map(|s| s.shards).unwrap_or(0),
            uptime_secs: self.inner.started.elapsed().as_secs(),
            draining,
        }
    }

    /// Chooses holders for the k+m shards of a chunk. Without peers the node
    /// keeps them all; with peers, k+m distinct ONLINE nodes are required.
    pub(crate) async fn place(&self, chunk: &Cid, n: usize, shard_bytes: u64) -> Result<Vec<Holder>, NodeError> {
        let Some(net) = self.net() else { return Ok(vec![Holder::Local; n]) };
        let peers = net.peers().await;
        if peers.is_empty() {
            return Ok(vec![Holder::Local; n]);
        }
        self.place_among(chunk, n, shard_bytes, &HashSet::new(), peers).await
    }

    /// `n` distinct holders among this node and the connected ONLINE
    /// `peers` with room, closest to the chunk's key, none of them in
    /// `avoid` (repair passes the chunk's live holders).
    pub(crate) async fn place_among(
        &self,
        chunk: &Cid,
        n: usize,
        shard_bytes: u64,
        avoid: &HashSet<HolderId>,
        peers: Vec<PeerInfo>,
    ) -> Result<Vec<Holder>, NodeError> {
        let mut cands = self.candidates(avoid, peers).await?;
        if cands.len() < n {
            // Whether or not this call ran the discovery (another chunk's
            // may just have), the peers may have changed meanwhile.
            self.discover_peers(n).await;
            let peers = self.peers().await;
            cands = self.candidates(avoid, peers).await?;
        }
        Ok(place(&kad_key(&chunk.to_bytes()), &cands, n, shard_bytes)?)
    }

    /// This node (unless avoided or draining) and the `peers` that may take
    /// new shards: connected, ONLINE, not draining, not avoided, above the
    /// reputation floor.
    pub(crate) async fn candidates(
        &self,
        avoid: &HashSet<HolderId>,
        peers: Vec<PeerInfo>,
    ) -> Result<Vec<Candidate<Holder>>, NodeError> {
        let me = self.net().ok_or_else(NodeError::network_down)?.local_peer_id();
        let mut cands = Vec::new();
        // A draining node keeps nothing new itself.
        if !avoid.contains(&holder_id(&me)) && !self.draining() {
            let own_free = self.heartbeat().await.free_bytes;
            cands.push(Candidate { id: Holder::Local, key: kad_key(&me.to_bytes()), free_bytes: own_free });
        }
        for p in peers {
            // A peer below the reputation floor keeps what it has but gets
            // nothing new.
            if p.connected
                && can_receive(p.state)
                && !is_draining(&p)
                && !avoid.contains(&holder_id(&p.peer))
                && self.inner.audit.eligible(&p.peer)
            {
                cands.push(Candidate {
                    id: Holder::Peer(p.peer),
                    key: kad_key(&p.peer.to_bytes()),
                    free_bytes: p.last_heartbeat.as_ref().map(|h| h.free_bytes).unwrap_or(u64::MAX),
                });
            }
        }
        Ok(cands)
    }

    /// Widens this node's view of the network when a placement needs more
    /// nodes than it is connected to (a wide code such as 29+51): Kademlia
    /// lookups of random keys find the nodes closest to each (a node keeps
    /// connections only to its routing table's neighbours and to whom it
    /// talked), each one found is dialed, and every new connection is
    /// identified and heartbeated into the health table; then waits for
    /// connected peers to turn ONLINE (`settle_peers`). Lookups at most once per `DISCOVERY_COOLDOWN`, so a network that really is too
    /// small fails its puts fast.
    async fn discover_peers(&self, want: usize) {
        let Some(net) = self.net().cloned() else { return };
        let mut last = self.inner.discovered.lock().await;
        if last.is_some_and(|t| t.elapsed() < DISCOVERY_COOLDOWN) {
            // Another placement just looked; the peers it found may still
            // be turning ONLINE.
            drop(last);
            self.settle_peers(&net, want).await;
            return;
        }
        *last = Some(Instant::now());
        let before = online(&net.peers().await);
        let deadline = Instant::now() + DISCOVERY_TIME;
        // Rounds of four lookups at once (Kademlia's α is per lookup).
        for _ in 0..DISCOVERY_LOOKUPS / 4 {
            if Instant::now() > deadline || online(&net.peers().await) + 1 >= want {
                break;
            }
            let round: FuturesUnordered<_> = (0..4)
                .map(|_| {
                    let (net, key) = (net.clone(), rand::random::<[u8; 32]>());
                    async move { tokio::time::timeout(Duration::from_secs(5), net.closest_peers(&key)).await }
                })
                .collect();
            let found: HashSet<PeerId> = round
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .filter_map(|r| r.ok().and_then(Result::ok))
                .flatten()
                .collect();
            // A lookup connects to the peers it queries, not to every peer
            // it learns of: ask each one not yet connected an empty
            // SHARD_EXISTS, which dials it (its address came with the
            // lookup), and it is then identified and heartbeated like any
            // other. Under load, lookups alone left a few nodes of an
            // 80-node network unseen.
            let connected: HashSet<PeerId> =
                net.peers().await.into_iter().filter(|p| p.connected).map(|p| p.peer).collect();
            let me = net.local_peer_id();
            let dials: FuturesUnordered<_> = found
                .into_iter()
                .filter(|p| *p != me && !connected.contains(p))
                .map(|p| {
                    let net = net.clone();
                    async move { tokio::time::timeout(Duration::from_secs(5), net.shard_exists(p, Vec::new())).await }
                })
                .collect();
            dials.collect::<Vec<_>>().await;
        }
        drop(last);
        let after = self.settle_peers(&net, want).await;
        tracing::info!(want, before, after, "looked for more peers to place shards on");
    }

    /// Waits, up to `DISCOVERY_SETTLE`, while fewer than `want` nodes can
    /// take shards and some connected peer is not ONLINE yet: connections
    /// opened by discovery (or by peers still joining) turn ONLINE once
    /// identified and heartbeated, which a loaded node may take seconds to
    /// do. Returns the ONLINE peers. With nobody on the way, it returns at
    /// once: a network that is too small fails its puts fast.
    async fn settle_peers(&self, net: &NetClient, want: usize) -> usize {
        let settle = Instant::now() + DISCOVERY_SETTLE;
        loop {
            let peers = net.peers().await;
            let online = online(&peers);
            let coming = peers.iter().any(|p| p.connected && !can_receive(p.state));
            if online + 1 >= want || !coming || Instant::now() >= settle {
                return online;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cand(i: u8, free: u64) -> Candidate<u8> {
        Candidate { id: i, key: *blake3::hash(&[i]).as_bytes(), free_bytes: free }
    }

    #[test]
    fn picks_the_closest_distinct_nodes_with_room() {
        let cands: Vec<_> = (0..20).map(|i| cand(i, if i % 5 == 0 { 10 } else { 1 << 30 })).collect();
        let key = *blake3::hash(b"chunk").as_bytes();
        let chosen = place(&key, &cands, 6, 1 << 20).unwrap();
        assert_eq!(chosen.len(), 6);
        let mut dedup = chosen.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(dedup.len(), 6, "never two shards on one node");
        assert!(chosen.iter().all(|i| i % 5 != 0), "full nodes get no shards");
        // Every unchosen node with room is at least as far as every chosen one.
        let far = chosen.iter().map(|&i| distance(&key, &cands[i as usize].key)).max().unwrap();
        for c in cands.iter().filter(|c| c.id % 5 != 0 && !chosen.contains(&c.id)) {
            assert!(distance(&key, &c.key) >= far);
        }
    }

    #[test]
    fn too_few_nodes_is_a_clear_error() {
        let mut cands: Vec<_> = (0..4).map(|i| cand(i, 1 << 30)).collect();
        cands.push(cand(1, 1 << 30)); // a duplicate does not help
        let e = place(&[0; 32], &cands, 6, 100).unwrap_err();
        assert_eq!((e.needed, e.found), (6, 4));
        assert!(e.to_string().contains("needs 6") && e.to_string().contains("only 4"));
    }

    proptest::proptest! {
        #[test]
        fn placement_is_distinct_and_deterministic(n in 1usize..12, count in 0u8..30, key in proptest::array::uniform32(0u8..)) {
            let cands: Vec<_> = (0..count).map(|i| cand(i, 1 << 20)).collect();
            match place(&key, &cands, n, 1) {
                Ok(a) => {
                    let mut d = a.clone(); d.sort(); d.dedup();
                    proptest::prop_assert_eq!(d.len(), n);
                    proptest::prop_assert_eq!(place(&key, &cands, n, 1).unwrap(), a);
                }
                Err(e) => proptest::prop_assert!(e.found < n),
            }
        }
    }
}
