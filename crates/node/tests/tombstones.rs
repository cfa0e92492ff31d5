//! An owner's tombstone is tied to the uploads it deletes: a peer's
//! manifest does not lift it, and it does not delete a later re-upload of
//! the same bytes. Two nodes in one process on loopback TCP.

#![allow(clippy::unwrap_used)]

use datamesh_core::clock::unix_secs;
use datamesh_core::manifest::{ChunkEntry, Chunking, Compression, MANIFEST_VERSION, merkle_root};
use datamesh_core::tombstone::{Tombstone, delete_message};
use datamesh_core::{Cid, Erasure, LocationRecord, Manifest};
use datamesh_net::NetError;
use ed25519_dalek::{Signer, SigningKey};

mod common;
use common::network;

fn owned_manifest(owner: &SigningKey) -> Manifest {
    let chunks: Vec<ChunkEntry> = (0..2u8)
        .map(|i| ChunkEntry {
            plain_size: 10,
            stored_size: 10,
            compression: Compression::None,
            cid: Cid::raw_blake3(&[i]),
            shards: (0..3).map(|j| Cid::raw_blake3(&[i, j])).collect(),
        })
        .collect();
    Manifest {
        version: MANIFEST_VERSION,
        size: 20,
        chunking: Chunking::Fixed { size: 10 },
        erasure: Erasure { k: 2, m: 1 },
        encryption: None,
        unixfs: None,
        owner: Some(owner.verifying_key().to_bytes().to_vec()),
        writer: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tombstone_deletes_the_upload_before_it_and_nothing_else() {
    let [a, b] = network().await;
    let at = a.net.local_peer_id();

    let (owner, writer) = (SigningKey::from_bytes(&[1; 32]), SigningKey::from_bytes(&[2; 32]));
    let m = owned_manifest(&owner);
    let file = m.cid();
    let loc = [b"loc/".as_slice(), &file.to_bytes()].concat();
    let tomb = [b"tomb/".as_slice(), &file.to_bytes()].concat();
    let holders = vec![vec![vec![7u8; 34]; 3]; 2];
    let now = unix_secs();
    let upload = |when: u64| LocationRecord::sign_upload(file, 1, &holders, when, &writer).encode();
    let deletion = |when: u64| Tombstone {
        manifest: file,
        deleted_at: when,
        signature: owner.sign(&delete_message(&file, when)).to_bytes(),
    };

    // Uploaded, then deleted by its owner.
    b.net.put_manifest(at, file, m.encode()).await.unwrap();
    b.net.put_record(at, loc.clone(), upload(now - 100)).await.unwrap();
    b.net.put_record(at, tomb.clone(), deletion(now - 50).encode()).await.unwrap();
    assert!(b.net.get_record(at, tomb.clone()).await.unwrap().is_some());
    assert!(b.net.get_record(at, loc.clone()).await.unwrap().is_none());

    // Anyone can send the manifest again: the deletion stays.
    b.net.put_manifest(at, file, m.encode()).await.unwrap();
    assert!(b.net.get_record(at, tomb.clone()).await.unwrap().is_some(), "a manifest lifted the owner's tombstone");
    // And the deleted upload's record is refused.
    let r = b.net.put_record(at, loc.clone(), upload(now - 100)).await;
    assert!(matches!(&r, Err(NetError::Refused(why)) if why.contains("deleted")), "{r:?}");

    // The same bytes uploaded again later: kept, the tombstone lifted.
    b.net.put_record(at, loc.clone(), upload(now)).await.unwrap();
    assert!(b.net.get_record(at, tomb.clone()).await.unwrap().is_none());
    assert_eq!(a.node.location(file).await.unwrap().unwrap().uploaded_at, now);
    assert!(a.node.store().pin_info(&file).unwrap().is_some_and(|p| p.replica));

    // The old tombstone, sent again, does not delete the new upload.
    let r = b.net.put_record(at, tomb.clone(), deletion(now - 50).encode()).await;
    assert!(matches!(&r, Err(NetError::Refused(why)) if why.contains("predates")), "{r:?}");
    assert!(a.node.location(file).await.unwrap().is_some());
    // A deletion after the new upload does.
    b.net.put_record(at, tomb.clone(), deletion(now + 1).encode()).await.unwrap();
    assert!(b.net.get_record(at, loc).await.unwrap().is_none());
}
