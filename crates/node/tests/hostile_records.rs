//! A peer cannot take a file over with location records: a record must
//! come after its manifest and fit it, a rewrite must carry the next `seq`,
//! and it may only move shards away from holders that are gone. Two nodes
//! in one process on loopback TCP; the record writers are keys of nodes
//! that do not exist (a Sybil needs no node to sign).

#![allow(clippy::unwrap_used)]

use datamesh_core::manifest::{ChunkEntry, Chunking, Compression, MANIFEST_VERSION, merkle_root};
use datamesh_core::{Cid, Erasure, LocationRecord, Manifest};
use datamesh_net::{NetError, PeerId};
use datamesh_pipeline::erasure;
use ed25519_dalek::SigningKey;

mod common;
use common::{all_online, p2p_addr, start};

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn id_of(k: &SigningKey) -> Vec<u8> {
    datamesh_net::peer_id_of_ed25519(&k.verifying_key().to_bytes()).unwrap().to_bytes()
}

fn loc_key(cid: &Cid) -> Vec<u8> {
    [b"loc/".as_slice(), &cid.to_bytes()].concat()
}

fn refused(r: Result<(), NetError>, want: &str) {
    match r {
        Err(NetError::Refused(why)) if why.contains(want) => {}
        other => panic!("expected a refusal saying {want:?}, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_records_cannot_take_a_file_over() {
    let a = start(Vec::new()).await;
    let b = start(vec![p2p_addr(&a.net).await]).await;
    all_online(&[&a, &b]).await;
    let victim = a.net.local_peer_id();

    // One chunk of a 2+1 code: shard 0 really on b, shards 1 and 2 on
    // nodes that are gone.
    let e = Erasure { k: 2, m: 1 };
    let stored: Vec<u8> = (0..200_001u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let shards = erasure::encode(e, &stored).unwrap();
    let cids = erasure::shard_cids(&shards);
    b.net.put_shard(b.net.local_peer_id(), cids[0], shards[0].clone()).await.unwrap();
    let chunks = vec![ChunkEntry {
        plain_size: stored.len() as u32,
        stored_size: stored.len() as u32,
        compression: Compression::None,
        cid: Cid::raw_blake3(&stored),
        shards: cids.clone(),
    }];
    let m = Manifest {
        version: MANIFEST_VERSION,
        size: stored.len() as u64,
        chunking: Chunking::Fixed { size: stored.len() as u32 },
        erasure: e,
        encryption: None,
        unixfs: None,
        owner: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    };
    let file = m.cid();
    let (writer, gone, gone2, newcomer) = (key(1), key(2), key(3), key(4));
    let holder_b = b.net.local_peer_id().to_bytes();
    let first_row = vec![holder_b.clone(), id_of(&gone), id_of(&gone2)];
    let put = |r: &LocationRecord| b.net.put_record(victim, loc_key(&file), r.encode());
    let seq_at_victim = || async { a.node.location(file).await.unwrap().map(|r| r.seq) };

    // No manifest yet: nothing to check a record against.
    let first = LocationRecord::sign(file, 1, std::slice::from_ref(&first_row), &writer);
    refused(put(&first).await, "PUT_MANIFEST");
    assert!(a.node.store().get_manifest(&file).is_err());
    b.net.put_manifest(victim, file, m.encode()).await.unwrap();

    // A record one shard short of the code would make repair index past
    // its end.
    let short = LocationRecord::sign(file, 1, &[first_row[..2].to_vec()], &writer);
    refused(put(&short).await, "does not fit");

    put(&first).await.unwrap();
    assert_eq!(seq_at_victim().await, Some(1));

    // The ceiling, and a jump to just below it, naming only the writer.
    let mine = vec![vec![id_of(&writer); 3]];
    refused(put(&LocationRecord::sign(file, u64::MAX, &mine, &writer)).await, "invalid location record");
    refused(put(&LocationRecord::sign(file, u64::MAX - 1, &mine, &writer)).await, "does not follow");
    refused(put(&LocationRecord::sign(file, 3, &mine, &writer)).await, "does not follow");
    // The next seq, but moving b's shard: b is online and proves it holds it.
    let grab = vec![vec![id_of(&writer), id_of(&gone), id_of(&gone2)]];
    refused(put(&LocationRecord::sign(file, 2, &grab, &writer)).await, "still proves");
    assert_eq!(seq_at_victim().await, Some(1));

    // A repair: the shard of a holder that is gone moves to a new one.
    let repaired = vec![vec![holder_b.clone(), id_of(&newcomer), id_of(&gone2)]];
    put(&LocationRecord::sign(file, 2, &repaired, &writer)).await.unwrap();
    assert_eq!(seq_at_victim().await, Some(2));
    let got = a.node.location(file).await.unwrap().unwrap();
    assert_eq!(got.holder(0, 1).map(|h| h.as_slice()), Some(id_of(&newcomer).as_slice()));
    assert_eq!(PeerId::from_bytes(got.holder(0, 0).unwrap().as_slice()).unwrap(), b.net.local_peer_id());
}
