//! `REBUILD_SHARD`: a node asked by a repairer rebuilds one shard of a chunk
//! from shards it fetches from their holders, checks it against the CID it
//! was asked for, and keeps it; anything that does not add up is refused
//! and nothing is stored. Four nodes in one process on loopback TCP.

#![allow(clippy::unwrap_used)]

use datamesh_core::{Cid, Erasure};
use datamesh_net::{NetError, PeerId};
use datamesh_pipeline::erasure;

mod common;
use common::{TestNode, network};

fn holds(n: &TestNode, cid: &Cid) -> bool {
    n.node.store().has_shard(cid).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_holder_rebuilds_a_shard_from_its_peers_and_refuses_what_does_not_add_up() {
    let [a, b, c, d] = network().await;

    // A 2+1 chunk: shard 0 on b, shard 1 on c; shard 2 is the one "lost".
    let e = Erasure { k: 2, m: 1 };
    let stored: Vec<u8> = (0..300_001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let shards = erasure::encode(e, &stored).unwrap();
    let cids = erasure::shard_cids(&shards);
    let chunk = Cid::raw_blake3(&stored);
    b.net.put_shard(b.net.local_peer_id(), cids[0], shards[0].clone()).await.unwrap();
    c.net.put_shard(c.net.local_peer_id(), cids[1], shards[1].clone()).await.unwrap();
    let (pb, pc) = (Some(b.net.local_peer_id()), Some(c.net.local_peer_id()));
    let listed = |third: Cid, h0: Option<PeerId>, h1: Option<PeerId>| vec![(cids[0], h0), (cids[1], h1), (third, None)];
    let to_d = d.net.local_peer_id();
    let rebuilt_on_d = || d.node.repair_totals().rebuilt_for_peers;

    // Shard CIDs that are not one chunk's: the rebuilt bytes cannot match
    // the CID asked for; refused, nothing kept.
    let stranger = Cid::raw_blake3(b"not shard 2 of this chunk");
    let err = a.net.rebuild_shard(to_d, chunk, (2, 1), 2, listed(stranger, pb, pc)).await.unwrap_err();
    assert!(matches!(&err, NetError::Refused(why) if why.contains("does not match")), "{err}");
    assert!(!holds(&d, &stranger) && !holds(&d, &cids[2]));

    // Fewer than k shards with a holder: refused with what was missing.
    let err = a.net.rebuild_shard(to_d, chunk, (2, 1), 2, listed(cids[2], pb, None)).await.unwrap_err();
    assert!(matches!(&err, NetError::Refused(why) if why.contains("only 1 of the 2")), "{err}");
    // A holder that does not have the shard it is named for counts as a
    // failed fetch, not as data.
    let err = a.net.rebuild_shard(to_d, chunk, (2, 1), 2, listed(cids[2], pb, pb)).await.unwrap_err();
    assert!(matches!(&err, NetError::Refused(why) if why.contains("only 1 of the 2")), "{err}");
    // One shard listed in every place: each fetch verifies, the decode is
    // garbage, and the CID check catches it.
    let bad = vec![(cids[0], pb); 3];
    let err = a.net.rebuild_shard(to_d, chunk, (2, 1), 2, bad).await.unwrap_err();
    assert!(matches!(&err, NetError::Refused(_)), "{err}");
    assert!(!holds(&d, &cids[2]));
    assert_eq!(rebuilt_on_d(), 0);

    // The real thing: d pulls shards 0 and 1 from b and c, rebuilds 2,
    // keeps it durably, byte for byte what the encoder made.
    a.net.rebuild_shard(to_d, chunk, (2, 1), 2, listed(cids[2], pb, pc)).await.unwrap();
    assert!(holds(&d, &cids[2]));
    assert_eq!(d.node.store().get_shard(&cids[2]).unwrap(), shards[2]);
    assert_eq!(rebuilt_on_d(), 1);
    // Asked again (a retried request): done, nothing rebuilt twice.
    a.net.rebuild_shard(to_d, chunk, (2, 1), 2, listed(cids[2], None, None)).await.unwrap();
    assert_eq!(rebuilt_on_d(), 1);

    // A holder of one of the chunk's shards uses its own copy: c holds
    // shard 1 and rebuilds data shard 0 from it and d's shard 2 (a decode,
    // where the case above was an encode).
    let listed = vec![(cids[0], None), (cids[1], pc), (cids[2], Some(to_d))];
    let before = c.node.repair_totals().rebuilt_for_peers;
    a.net.rebuild_shard(c.net.local_peer_id(), chunk, (2, 1), 0, listed).await.unwrap();
    assert_eq!(c.node.store().get_shard(&cids[0]).unwrap(), shards[0]);
    assert_eq!(c.node.repair_totals().rebuilt_for_peers, before + 1);
}
