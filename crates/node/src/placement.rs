//! Shard placement: which nodes get the k+m shards of a chunk.
//!
//! The shards of a chunk go to the k+m distinct nodes closest to the
//! chunk's key by XOR distance (Kademlia's metric, so the holders are the
//! nodes a DHT lookup of the chunk lands on), among nodes that are ONLINE and
//! have room for a shard. **Architecture invariant:** never two shards of one
//! chunk on one node. With fewer suitable nodes than shards the put fails and
//! says how many are needed and how many were found.
//!
//! Pure: the caller supplies candidates with their keys and free space.

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

/// Not enough nodes to spread a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "placing a chunk needs {needed} distinct online nodes with {shard_bytes} bytes free each, but only {found} were found; \
     start more nodes, wait for peers to come online, or use a smaller code (-k/-m)"
)]
pub struct PlacementError {
    /// k+m.
    pub needed: usize,
    /// Suitable nodes found.
    pub found: usize,
    /// Size of one shard.
    pub shard_bytes: u64,
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
