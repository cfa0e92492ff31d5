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
use common::network;

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

/// A file of one chunk of a 2+1 code whose shard 0 is really on `on` (the
/// other two holders are gone), with `writer` named in its manifest.
async fn one_chunk_file(on: &common::TestNode, seed: u32, writer: Option<&SigningKey>) -> Manifest {
    let e = Erasure { k: 2, m: 1 };
    let stored: Vec<u8> =
        (0..200_001u32).map(|i| (i.wrapping_mul(2_654_435_761).wrapping_add(seed) >> 13) as u8).collect();
    let shards = erasure::encode(e, &stored).unwrap();
    let cids = erasure::shard_cids(&shards);
    on.net.put_shard(on.net.local_peer_id(), cids[0], shards[0].clone()).await.unwrap();
    let chunks = vec![ChunkEntry {
        plain_size: stored.len() as u32,
        stored_size: stored.len() as u32,
        compression: Compression::None,
        cid: Cid::raw_blake3(&stored),
        shards: cids,
    }];
    Manifest {
        version: MANIFEST_VERSION,
        size: stored.len() as u64,
        chunking: Chunking::Fixed { size: stored.len() as u32 },
        erasure: e,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: writer.map(|w| w.verifying_key().to_bytes().to_vec()),
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn location_records_cannot_take_a_file_over() {
    let [a, b] = network().await;
    let victim = a.net.local_peer_id();

    // One chunk of a 2+1 code: shard 0 really on b, shards 1 and 2 on
    // nodes that are gone.
    let m = one_chunk_file(&b, 0, None).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_a_record_takes_only_what_the_manifests_writer_placed() {
    let [a, b] = network().await;
    let victim = a.net.local_peer_id();

    // One chunk of a 2+1 code, placed by `writer`, which the manifest
    // names: shard 0 really on b, shards 1 and 2 on nodes that are gone.
    let (writer, gone, gone2, newcomer, sybil) = (key(1), key(2), key(3), key(4), key(9));
    let m = one_chunk_file(&b, 1, Some(&writer)).await;
    let file = m.cid();
    b.net.put_manifest(victim, file, m.encode()).await.unwrap();
    let holder_b = b.net.local_peer_id().to_bytes();
    let first = LocationRecord::sign_upload(
        file,
        1,
        &[vec![holder_b.clone(), id_of(&gone), id_of(&gone2)]],
        datamesh_core::clock::unix_secs(),
        &writer,
    );
    let put = |r: &LocationRecord| b.net.put_record(victim, loc_key(&file), r.encode());
    let at_victim = || async { a.node.location(file).await.unwrap() };

    // Pre-seeding: a first record by anyone but the writer, at seq 1 or
    // later, is refused, and so is one carrying a forged first record.
    let mine = vec![vec![id_of(&sybil); 3]];
    let seeded = LocationRecord::sign_upload(file, 1, &mine, first.uploaded_at, &sybil);
    refused(put(&seeded).await, "not signed by the writer");
    refused(put(&LocationRecord::sign_upload(file, 5, &mine, first.uploaded_at, &sybil)).await, "origin");
    let forged_first = LocationRecord::sign_upload(file, 1, &mine, first.uploaded_at, &sybil);
    let forged = LocationRecord::sign_rewrite(&forged_first, &mine, &sybil).unwrap();
    refused(put(&forged).await, "not signed by the writer");
    // The writer's real first record as origin, but moving b's shard,
    // which b still proves it holds.
    let grab =
        LocationRecord::sign_rewrite(&first, &[vec![id_of(&sybil), id_of(&gone), id_of(&gone2)]], &sybil).unwrap();
    refused(put(&grab).await, "still proves");
    assert_eq!(at_victim().await, None, "a refused record was kept");

    // A real repair: a gone holder's shard moved to a new node, carrying
    // the writer's first record, is taken by a node that had none.
    let repaired =
        LocationRecord::sign_rewrite(&first, &[vec![holder_b.clone(), id_of(&newcomer), id_of(&gone2)]], &newcomer)
            .unwrap();
    put(&repaired).await.unwrap();
    let got = at_victim().await.unwrap();
    assert_eq!((got.seq, got.holder(0, 1).map(|h| h.as_slice().to_vec())), (2, Some(id_of(&newcomer))));
    assert_eq!(got.first_record().unwrap(), Some(first));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_names_its_writer_and_its_replicas_take_the_writers_first_record() {
    let [a, b, c] = network().await;
    let erasure = Erasure { k: 2, m: 1 };
    let stored: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
    let manifest = |receipt: &datamesh_core::manifest::ChunkEntry, writer: [u8; 32]| Manifest {
        version: MANIFEST_VERSION,
        size: stored.len() as u64,
        chunking: Chunking::Fixed { size: stored.len() as u32 },
        erasure,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: Some(writer.to_vec()),
        merkle_root: merkle_root([&receipt.cid].into_iter()),
        chunks: vec![receipt.clone()],
    };
    let upload = |_: ()| async {
        let id = a.node.begin_upload(Some(erasure)).unwrap();
        let r = a.node.put_chunk(&id, stored.clone()).await.unwrap();
        let entry = ChunkEntry {
            plain_size: stored.len() as u32,
            stored_size: stored.len() as u32,
            compression: Compression::None,
            cid: r.cid,
            shards: r.shards,
        };
        (id, entry)
    };

    // A manifest naming another node as its writer cannot be placed here:
    // its first record would be refused everywhere.
    let (id, entry) = upload(()).await;
    let err = a.node.complete_upload(&id, manifest(&entry, b.node.writer_key()).encode(), None).await.unwrap_err();
    assert!(err.to_string().contains("names another node as its writer"), "{err}");

    // Naming this node, it is placed, and the other nodes (which had no
    // record) take its first record: signed by the writer the manifest names.
    let (id, entry) = upload(()).await;
    let cid = a.node.complete_upload(&id, manifest(&entry, a.node.writer_key()).encode(), None).await.unwrap();
    for n in [&b, &c] {
        let rec = n.node.location(cid).await.unwrap().expect("a replica took the first record");
        assert_eq!((rec.seq, rec.signer.as_slice()), (1, a.node.writer_key().as_slice()));
    }
}
