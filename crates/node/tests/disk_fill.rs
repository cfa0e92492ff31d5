//! Peers cannot make a node keep files for good: a manifest alone pins
//! nothing, a location record pins it as a replica (within the sender's
//! budget), and a replica pin that no record backs lapses. Two nodes in
//! one process on loopback TCP.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use datamesh_core::clock::unix_secs;
use datamesh_core::manifest::{ChunkEntry, Chunking, Compression, MANIFEST_VERSION, merkle_root};
use datamesh_core::{Cid, Erasure, LocationRecord, Manifest};
use datamesh_net::{NetError, PeerId};
use datamesh_store::PinInfo;
use ed25519_dalek::SigningKey;

mod common;
use common::{TestNode, all_online, network, p2p_addr, start, start_with};

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
        writer: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_cannot_pin_files_here_for_good() {
    let [a, b] = network().await;
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

/// What a node answers a first record over its sender's budget.
const OVER_BUDGET: &str = "keeps no more files for this peer";

/// Sends `m` and then a first location record of it to `to`, as a peer
/// pre-seeding a file there would.
async fn offer(from: &TestNode, to: PeerId, m: &Manifest) -> Result<(), NetError> {
    let file = m.cid();
    from.net.put_manifest(to, file, m.encode()).await.unwrap();
    let holders = vec![vec![vec![7u8; 34]; 3]; 2];
    let rec = LocationRecord::sign_upload(file, 1, &holders, unix_secs(), &SigningKey::from_bytes(&[2; 32]));
    from.net.put_record(to, [b"loc/".as_slice(), &file.to_bytes()].concat(), rec.encode()).await
}

/// `node` neither pins `m` nor keeps a record of it.
async fn kept_nothing(node: &TestNode, m: &Manifest) {
    assert_eq!(node.node.store().pin_info(&m.cid()).unwrap(), None, "a file over the budget was pinned");
    assert!(node.node.location(m.cid()).await.unwrap().is_none(), "a record over the budget was kept");
}

fn over_budget(r: Result<(), NetError>) {
    match r {
        Err(NetError::Refused(why)) if why.contains(OVER_BUDGET) => {}
        other => panic!("expected the over-budget refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_peer_pins_at_most_its_budget_per_window() {
    // Small so the test can spend it; the window long enough that a loaded
    // machine still sends every record below within one.
    const BUDGET: u8 = 3;
    const WINDOW: Duration = Duration::from_secs(15);
    let a = start_with(Vec::new(), |c| {
        c.adoptions_per_peer = BUDGET.into();
        c.adoption_window = WINDOW;
    })
    .await;
    let at_a = p2p_addr(&a.net).await;
    let b = start(vec![at_a.clone()]).await;
    let c = start(vec![at_a]).await;
    all_online(&[&a, &b, &c]).await;
    let at = a.net.local_peer_id();
    let replica = |m: &Manifest| a.node.store().pin_info(&m.cid()).unwrap().is_some_and(|p| p.replica);

    // b offers two files more than its budget: the first BUDGET are
    // adopted, the rest refused and nothing kept for them.
    let before = Instant::now();
    let of_b: Vec<Manifest> = (0..BUDGET + 2).map(|i| manifest(10 + i)).collect();
    for m in &of_b[..BUDGET.into()] {
        offer(&b, at, m).await.unwrap();
        assert!(replica(m), "a first record within the budget did not make a replica");
    }
    for m in &of_b[BUDGET.into()..] {
        over_budget(offer(&b, at, m).await);
        kept_nothing(&a, m).await;
    }

    // b's spending is not c's: c still gets its whole budget, and no more.
    let of_c: Vec<Manifest> = (0..BUDGET + 1).map(|i| manifest(30 + i)).collect();
    for m in &of_c[..BUDGET.into()] {
        offer(&c, at, m).await.unwrap();
        assert!(replica(m), "one peer's spending exhausted another's budget");
    }
    over_budget(offer(&c, at, &of_c[usize::from(BUDGET)]).await);
    kept_nothing(&a, &of_c[usize::from(BUDGET)]).await;

    // The budget starts again when the window ends, not before: b's
    // refused file is refused until then, and adopted after.
    let late = &of_b[usize::from(BUDGET)];
    let deadline = before + WINDOW + Duration::from_secs(60);
    loop {
        match offer(&b, at, late).await {
            Ok(()) => break,
            r => over_budget(r),
        }
        assert!(Instant::now() < deadline, "the budget never refilled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(before.elapsed() >= WINDOW, "the budget refilled before its window ended");
    assert!(replica(late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_node_refuses_peers_records_and_keeps_nothing_of_them() {
    // Records count against the capacity budget: a node whose disk budget
    // is spent takes no more of them, however small.
    let a = start_with(Vec::new(), |c| c.capacity = bytesize::ByteSize::kib(256)).await;
    let b = start(vec![p2p_addr(&a.net).await]).await;
    all_online(&[&a, &b]).await;
    let at = a.net.local_peer_id();
    let store = a.node.store();

    // The manifest arrives while there is room; then the node's own data
    // fills the budget to within a few bytes.
    let m = manifest(50);
    b.net.put_manifest(at, m.cid(), m.encode()).await.unwrap();
    let st = store.stats().unwrap();
    let fill = vec![5u8; usize::try_from(st.capacity_bytes - st.used_bytes - 16).unwrap()];
    let meta = datamesh_store::ShardMeta { chunk: Cid::raw_blake3(b"c"), index: 0 };
    store.put_shards(&[(Cid::raw_blake3(&fill), &fill, meta)], None).unwrap();
    let records = store.stats().unwrap().state_records;

    let holders = vec![vec![vec![7u8; 34]; 3]; 2];
    let rec = LocationRecord::sign_upload(m.cid(), 1, &holders, unix_secs(), &SigningKey::from_bytes(&[2; 32]));
    let key = [b"loc/".as_slice(), &m.cid().to_bytes()].concat();
    match b.net.put_record(at, key.clone(), rec.encode()).await {
        Err(NetError::Refused(why)) if why.contains("capacity") => {}
        other => panic!("a full node took a peer's record: {other:?}"),
    }
    kept_nothing(&a, &m).await;
    assert_eq!(store.stats().unwrap().state_records, records, "a refused record was counted");

    // Once space is freed the same record is taken.
    store.delete_shard(&Cid::raw_blake3(&fill)).unwrap();
    b.net.put_record(at, key, rec.encode()).await.unwrap();
    assert!(a.node.location(m.cid()).await.unwrap().is_some());
    assert_eq!(store.stats().unwrap().state_records, records + 1);
}
