//! A manifest larger than the old 16 MiB frame limit is replicated to its
//! replica nodes (PUT_MANIFEST streams it to their disks) and served back
//! from their disks (GET_MANIFEST streams it from the file). Three nodes in
//! one process on loopback.

#![allow(clippy::unwrap_used)]

use datamesh_core::manifest::{MANIFEST_VERSION, merkle_root};
use datamesh_core::{ChunkEntry, Chunking, Cid, Compression, Erasure, Manifest};

mod common;
use common::network;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_beyond_16_mib_replicates_and_is_read_from_another_node() {
    let [a, b, c] = network().await;

    // One public chunk, placed 2+1 on the three nodes...
    let erasure = Erasure { k: 2, m: 1 };
    let upload = a.node.begin_upload(Some(erasure)).unwrap();
    let stored: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    let receipt = a.node.put_chunk(&upload, stored.clone()).await.unwrap();
    // ...named over and over by a manifest well past 16 MiB.
    let entry = ChunkEntry {
        plain_size: stored.len() as u32,
        stored_size: stored.len() as u32,
        compression: Compression::None,
        cid: receipt.cid,
        shards: receipt.shards.clone(),
    };
    let n = 110_000;
    let chunks = vec![entry; n];
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        size: (n * stored.len()) as u64,
        chunking: Chunking::Fixed { size: stored.len() as u32 },
        erasure,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    };
    let bytes = manifest.encode();
    assert!(bytes.len() > 16 << 20, "the manifest is {} bytes", bytes.len());
    let cid = a.node.complete_upload(&upload, bytes.clone(), None).await.unwrap();
    assert_eq!(cid, Cid::dag_cbor_blake3(&bytes));

    // Every replica holds it durably, pinned as a replica.
    for (name, n) in [("b", &b), ("c", &c)] {
        assert!(n.node.store().has_manifest(&cid).unwrap(), "{name} holds the manifest");
        assert!(n.node.store().pin_info(&cid).unwrap().is_some_and(|p| p.replica), "{name} pinned it");
        assert_eq!(n.node.store().get_manifest(&cid).unwrap(), bytes);
    }
    // And it is read back over the network from another node's disk.
    let got = b.net.get_manifest(c.net.local_peer_id(), cid).await.unwrap();
    assert!(got == bytes, "the manifest read from c differs");
    let (_, m) = c.node.manifest(cid).await.unwrap();
    assert_eq!(m.chunks.len(), n);

    for n in [&a, &b, &c] {
        n.net.shutdown().await;
    }
}
