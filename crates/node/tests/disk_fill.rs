//! Peers cannot make a node keep files for good: a manifest alone pins
//! nothing, a location record pins it as a replica (within the sender's
//! budget), and a replica pin that no record backs lapses. Two nodes in
//! one process on loopback TCP.

#![allow(clippy::unwrap_used)]

use datamesh_core::clock::unix_secs;
use datamesh_core::manifest::{ChunkEntry, Chunking, Compression, MANIFEST_VERSION, merkle_root};
use datamesh_core::{Cid, Erasure, LocationRecord, Manifest};
use datamesh_store::PinInfo;
use ed25519_dalek::SigningKey;

mod common;
use common::{all_online, p2p_addr, start};

fn manifest(seed: u8) -> Manifest {
    let chunks: Vec<ChunkEntry> = (0..2u8)
        .map(|i| ChunkEntry {
            plain_size: 10,
            stored_size: 10,
            compression: Compression::None,
            cid: Cid::raw_blake3(&[seed, i]),
            shards: (0..3).map(|j| Cid::raw_blake3(&[seed, i, j])).collect(),
        })
        .collect();
    Manifest {
        version: MANIFEST_VERSION,
        size: 20,
        chunking: Chunking::Fixed { size: 10 },
        erasure: Erasure { k: 2, m: 1 },
        encryption: None,
        unixfs: None,
        owner: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cannot_pin_files_here_for_good() {
    let a = start(Vec::new()).await;
    let b = start(vec![p2p_addr(&a.net).await]).await;
    all_online(&[&a, &b]).await;
    let at = a.net.local_peer_id();
    let pinned = |cid: &Cid| a.node.store().pin_info(cid).unwrap();

    // The hole: a manifest sent without a location record was pinned
    // forever. Now it is kept unpinned, for GC unless a record follows.
    let m = manifest(1);
    let file = m.cid();
    b.net.put_manifest(at, file, m.encode()).await.unwrap();
    assert!(a.node.store().get_manifest(&file).is_ok());
    assert_eq!(pinned(&file), None, "a manifest alone pinned a file");

    // Its location record makes the node a replica.
    let holders = vec![vec![vec![7u8; 34]; 3]; 2];
    let rec = LocationRecord::sign_upload(file, 1, &holders, unix_secs(), &SigningKey::from_bytes(&[2; 32]));
    b.net.put_record(at, [b"loc/".as_slice(), &file.to_bytes()].concat(), rec.encode()).await.unwrap();
    assert!(pinned(&file).is_some_and(|p| p.replica));

    // A replica pin no record backs (an older build pinned manifests on
    // arrival) lapses once it is a lease old.
    let orphan = manifest(2);
    let ocid = orphan.cid();
    a.node.store().put_manifest(&ocid, &orphan.encode()).unwrap();
    let long_ago = unix_secs() - 30 * 24 * 3600;
    a.node.store().pin(&ocid, PinInfo { name: None, size: 20, created_at: long_ago, replica: true }).unwrap();
    // A user's pin of the same age stays.
    let mine = manifest(3);
    a.node.store().put_manifest(&mine.cid(), &mine.encode()).unwrap();
    a.node.store().pin(&mine.cid(), PinInfo { name: None, size: 20, created_at: long_ago, replica: false }).unwrap();
    assert!(a.node.sweep_leases().await.unwrap() >= 1);
    assert_eq!(pinned(&ocid), None, "an orphaned replica pin never lapsed");
    assert!(pinned(&mine.cid()).is_some());
    assert!(pinned(&file).is_some(), "a replica with a fresh record stays");
}
