//! Behaviour of the store on the real file system: capacity, corruption,
//! GC, locking, format versions, idempotence, stats, open-time recovery.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use datamesh_core::manifest::merkle_root;
use datamesh_core::{ChunkEntry, Chunking, Cid, Compression, Erasure, Manifest};
use datamesh_store::{PinInfo, ShardMeta, Store, StoreConfig, StoreError};

fn cfg() -> StoreConfig {
    StoreConfig { capacity_bytes: 1 << 30, cache_bytes: 1 << 20 }
}

fn open(dir: &Path) -> Store {
    Store::open(dir, cfg()).unwrap().0
}

/// Deterministic pseudo-random bytes.
fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn meta(i: u16) -> ShardMeta {
    ShardMeta { chunk: Cid::raw_blake3(b"chunk"), index: i }
}

fn put(s: &Store, data: &[u8]) -> Cid {
    let cid = Cid::raw_blake3(data);
    s.put_shards(&[(cid, data, meta(0))], None).unwrap();
    cid
}

/// Files under `<dir>/<sub>/*/*`.
fn files(dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir.join(sub)).unwrap() {
        let d = d.unwrap().path();
        if d.is_dir() {
            for f in std::fs::read_dir(&d).unwrap() {
                out.push(f.unwrap().path());
            }
        } else {
            out.push(d);
        }
    }
    out.sort();
    out
}

fn flat(dir: &Path, sub: &str) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join(sub)).unwrap().map(|e| e.unwrap().path()).collect()
}

fn shard_file(dir: &Path, cid: &Cid) -> PathBuf {
    dir.join("shards").join(format!("{:02x}", cid.digest()[0])).join(cid.to_string())
}

/// A valid manifest over one chunk of the given shards (4+2).
fn manifest(shards: &[Cid]) -> (Cid, Vec<u8>) {
    assert_eq!(shards.len(), 6);
    let chunk = ChunkEntry {
        plain_size: 100,
        stored_size: 100,
        compression: Compression::None,
        cid: Cid::raw_blake3(&shards[0].to_bytes()),
        shards: shards.to_vec(),
    };
    let m = Manifest {
        version: datamesh_core::manifest::MANIFEST_VERSION,
        size: 100,
        chunking: Chunking::Fixed { size: 100 },
        erasure: Erasure::DEFAULT,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: None,
        merkle_root: merkle_root(std::iter::once(&chunk.cid)),
        chunks: vec![chunk],
    };
    let b = m.encode();
    (m.cid(), b)
}

fn six(seed: u64) -> Vec<(Cid, Vec<u8>)> {
    (0..6).map(|i| bytes(seed * 10 + i, 300 + i as usize)).map(|b| (Cid::raw_blake3(&b), b)).collect()
}

fn put_six(s: &Store, shards: &[(Cid, Vec<u8>)], guard: Option<&datamesh_store::UploadGuard>) {
    let batch: Vec<(Cid, &[u8], ShardMeta)> =
        shards.iter().enumerate().map(|(i, (c, b))| (*c, b.as_slice(), meta(i as u16))).collect();
    s.put_shards(&batch, guard).unwrap();
}

fn pin_info() -> PinInfo {
    PinInfo { name: Some("f.txt".into()), size: 100, created_at: 1, replica: false }
}

#[test]
fn put_get_round_trip_and_record() {
    let d = tempfile::tempdir().unwrap();
    let (s, report) = Store::open(d.path(), cfg()).unwrap();
    assert_eq!(report, Default::default());
    let data = bytes(1, 5000);
    let cid = put(&s, &data);
    assert_eq!(s.get_shard(&cid).unwrap(), data);
    assert!(s.has_shard(&cid).unwrap());
    let rec = s.shard_record(&cid).unwrap().unwrap();
    assert_eq!((rec.size, rec.index, rec.chunk), (5000, 0, Cid::raw_blake3(b"chunk")));
    assert!(rec.stored_at > 1_600_000_000 && rec.verified_at >= rec.stored_at);
    let missing = Cid::raw_blake3(b"nope");
    assert!(matches!(s.get_shard(&missing), Err(StoreError::NotFound { cid }) if cid == missing));
    assert!(!s.has_shard(&missing).unwrap());
    assert_eq!(std::fs::read_to_string(d.path().join("FORMAT")).unwrap(), "datamesh-store 1\n");
    // Survives a reopen.
    drop(s);
    let (s, report) = Store::open(d.path(), cfg()).unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(s.get_shard(&cid).unwrap(), data);
}

#[test]
fn put_refuses_bytes_that_do_not_match_the_cid() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let cid = Cid::raw_blake3(b"right");
    let r = s.put_shards(&[(cid, b"wrong", meta(0))], None);
    assert!(matches!(r, Err(StoreError::Corrupt { cid: c }) if c == cid));
    assert!(files(d.path(), "shards").is_empty());
    assert!(flat(d.path(), "tmp").is_empty());
    assert!(!s.has_shard(&cid).unwrap());
    let m = Cid::dag_cbor_blake3(b"m");
    assert!(matches!(s.put_manifest(&m, b"x"), Err(StoreError::Corrupt { .. })));
}

#[test]
fn capacity_exceeded_leaves_nothing_behind() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), StoreConfig { capacity_bytes: 10_000, cache_bytes: 0 }).unwrap().0;
    put(&s, &bytes(1, 8000));
    let a = bytes(2, 1500);
    let b = bytes(3, 1500);
    let (ca, cb) = (Cid::raw_blake3(&a), Cid::raw_blake3(&b));
    let r = s.put_shards(&[(ca, &a, meta(0)), (cb, &b, meta(1))], None);
    match r {
        Err(StoreError::CapacityExceeded { needed, available }) => {
            assert_eq!((needed, available), (3000, 2000))
        }
        other => panic!("expected CapacityExceeded, got {other:?}"),
    }
    let e = s.put_shards(&[(ca, &a, meta(0)), (cb, &b, meta(1))], None).unwrap_err().to_string();
    assert!(e.contains("capacity") && e.contains("run GC"), "{e}");
    assert_eq!(files(d.path(), "shards").len(), 1);
    assert!(flat(d.path(), "tmp").is_empty());
    assert!(!s.has_shard(&ca).unwrap() && !s.has_shard(&cb).unwrap());
    let st = s.stats().unwrap();
    assert_eq!((st.shards, st.used_bytes, st.capacity_bytes), (1, 8000, 10_000));
    // One of them fits.
    s.put_shards(&[(ca, &a, meta(0))], None).unwrap();
    // Re-putting something already stored needs no room.
    s.put_shards(&[(ca, &a, meta(0))], None).unwrap();
    assert_eq!(s.stats().unwrap().used_bytes, 9500);
}

#[test]
fn state_records_count_against_capacity_and_a_freeing_record_has_headroom() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), StoreConfig { capacity_bytes: 10_000, cache_bytes: 0 }).unwrap().0;
    put(&s, &bytes(1, 9000));
    // A record's file is its value plus 41 bytes (version, time, BLAKE3).
    s.put_state("locations", "a", &[1; 500]).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.state_records, st.state_bytes, st.used_bytes), (1, 541, 9541));
    // A new record past the budget is refused, and nothing of it is kept.
    match s.put_state("locations", "b", &[2; 500]) {
        Err(StoreError::CapacityExceeded { needed, available }) => assert_eq!((needed, available), (541, 459)),
        other => panic!("expected CapacityExceeded, got {other:?}"),
    }
    assert_eq!(s.list_state("locations").unwrap(), vec!["a".to_string()]);
    assert!(flat(d.path(), "tmp").is_empty());
    // Shards are refused too once records take the room.
    assert!(matches!(
        s.put_shards(&[(Cid::raw_blake3(&[3; 500]), &[3; 500], meta(0))], None),
        Err(StoreError::CapacityExceeded { .. })
    ));
    // Rewriting a record at its size (a lease renewal) needs no room.
    s.put_state("locations", "a", &[9; 500]).unwrap();
    // A record that lets the node free space goes into the headroom.
    s.put_state_freeing("tombstones", "t", &[4; 500]).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.state_records, st.state_bytes, st.used_bytes), (2, 1082, 10_082));
    drop(s);
    // Counted again from the disk at open.
    let s = Store::open(d.path(), StoreConfig { capacity_bytes: 10_000, cache_bytes: 0 }).unwrap().0;
    let st = s.stats().unwrap();
    assert_eq!((st.state_records, st.state_bytes, st.used_bytes), (2, 1082, 10_082));
    // Removing records gives their bytes back.
    assert!(s.remove_state("tombstones", "t").unwrap());
    assert!(s.remove_state("locations", "a").unwrap());
    assert!(!s.remove_state("locations", "a").unwrap());
    let st = s.stats().unwrap();
    assert_eq!((st.state_records, st.state_bytes, st.used_bytes), (0, 0, 9000));
    s.put_state("locations", "b", &[2; 500]).unwrap();
    // The headroom is bounded: 1 % of the budget, between 1 and 64 MiB.
    assert_eq!(datamesh_store::state_headroom(10_000), 1 << 20);
    assert_eq!(datamesh_store::state_headroom(1 << 40), 64 << 20);
    assert_eq!(datamesh_store::state_headroom(1 << 32), (1 << 32) / 100);
}

#[test]
fn corrupt_file_is_reported_and_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let data = bytes(4, 4096);
    let cid = put(&s, &data);
    let f = shard_file(d.path(), &cid);
    let mut on_disk = std::fs::read(&f).unwrap();
    on_disk[1000] ^= 0x10;
    std::fs::write(&f, &on_disk).unwrap();

    assert!(matches!(s.get_shard(&cid), Err(StoreError::Corrupt { cid: c }) if c == cid));
    assert!(!s.has_shard(&cid).unwrap(), "dropped from the index so repair can rebuild it");
    assert!(!f.exists());
    let q = flat(d.path(), "quarantine");
    assert_eq!(q.len(), 1);
    assert_eq!(std::fs::read(&q[0]).unwrap(), on_disk, "bad bytes kept for inspection");
    assert_eq!(s.stats().unwrap().shards, 0);
    assert!(matches!(s.get_shard(&cid), Err(StoreError::NotFound { .. })));
    // Repair: a fresh put works.
    put(&s, &data);
    assert_eq!(s.get_shard(&cid).unwrap(), data);
}

#[test]
fn truncated_or_missing_file_is_corrupt() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let data = bytes(5, 3000);
    let cid = put(&s, &data);
    let f = shard_file(d.path(), &cid);
    std::fs::write(&f, &data[..2999]).unwrap();
    assert!(matches!(s.get_shard(&cid), Err(StoreError::Corrupt { .. })));
    assert!(!s.has_shard(&cid).unwrap());

    // Grown file (right prefix, extra bytes).
    let cid = put(&s, &data);
    let mut grown = data.clone();
    grown.push(0);
    std::fs::write(shard_file(d.path(), &cid), &grown).unwrap();
    assert!(matches!(s.get_shard(&cid), Err(StoreError::Corrupt { .. })));

    // Vanished file.
    let cid = put(&s, &data);
    std::fs::remove_file(shard_file(d.path(), &cid)).unwrap();
    assert!(matches!(s.get_shard(&cid), Err(StoreError::Corrupt { .. })));
    assert!(!s.has_shard(&cid).unwrap());
    assert_eq!(s.stats().unwrap().shards, 0);
}

#[test]
fn corrupt_manifest_is_quarantined() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let (mcid, mb) = manifest(&six(1).iter().map(|x| x.0).collect::<Vec<_>>());
    s.put_manifest(&mcid, &mb).unwrap();
    assert_eq!(s.get_manifest(&mcid).unwrap(), mb);
    let f = d.path().join("manifests").join(format!("{:02x}", mcid.digest()[0])).join(mcid.to_string());
    std::fs::write(&f, b"garbage").unwrap();
    assert!(matches!(s.get_manifest(&mcid), Err(StoreError::Corrupt { .. })));
    assert!(!s.has_manifest(&mcid).unwrap());
    assert_eq!(flat(d.path(), "quarantine").len(), 1);
}

#[test]
fn idempotent_puts_do_not_rewrite() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let data = bytes(6, 1000);
    let cid = Cid::raw_blake3(&data);
    // Duplicates inside one batch count once.
    s.put_shards(&[(cid, &data, meta(0)), (cid, &data, meta(0))], None).unwrap();
    let rec = s.shard_record(&cid).unwrap().unwrap();
    let f = shard_file(d.path(), &cid);
    let ino_before = std::fs::metadata(&f).unwrap().modified().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    s.put_shards(&[(cid, &data, meta(3))], None).unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), ino_before, "file not rewritten");
    assert_eq!(s.shard_record(&cid).unwrap().unwrap(), rec, "record not rewritten");
    let st = s.stats().unwrap();
    assert_eq!((st.shards, st.shard_bytes), (1, 1000));
    let (mcid, mb) = manifest(&six(2).iter().map(|x| x.0).collect::<Vec<_>>());
    s.put_manifest(&mcid, &mb).unwrap();
    s.put_manifest(&mcid, &mb).unwrap();
    assert_eq!(s.stats().unwrap().manifests, 1);
}

#[test]
fn stats_follow_puts_deletes_and_gc() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let a = six(1);
    put_six(&s, &a, None);
    let sz: u64 = a.iter().map(|x| x.1.len() as u64).sum();
    let (mcid, mb) = manifest(&a.iter().map(|x| x.0).collect::<Vec<_>>());
    s.put_manifest(&mcid, &mb).unwrap();
    s.pin(&mcid, pin_info()).unwrap();
    let st = s.stats().unwrap();
    assert_eq!((st.shards, st.shard_bytes, st.manifests, st.pins, st.used_bytes), (6, sz, 1, 1, sz + mb.len() as u64));
    let loose = put(&s, &bytes(9, 777));
    assert!(s.delete_shard(&loose).unwrap());
    assert!(!s.delete_shard(&loose).unwrap());
    assert!(!shard_file(d.path(), &loose).exists());
    assert_eq!(s.stats().unwrap().shards, 6);
    assert!(s.unpin(&mcid).unwrap());
    assert!(!s.unpin(&mcid).unwrap());
    let r = s.gc().unwrap();
    assert_eq!((r.shards_removed, r.manifests_removed, r.bytes_freed), (6, 1, sz + mb.len() as u64));
    let st = s.stats().unwrap();
    assert_eq!((st.shards, st.shard_bytes, st.manifests, st.pins, st.used_bytes), (0, 0, 0, 0, 0));
    assert!(files(d.path(), "shards").is_empty() && files(d.path(), "manifests").is_empty());
    // Stats are rebuilt from the index on open.
    put_six(&s, &a, None);
    drop(s);
    let s = open(d.path());
    assert_eq!(s.stats().unwrap().shard_bytes, sz);
}

#[test]
fn gc_keeps_pinned_and_guarded_and_removes_the_rest() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let pinned = six(1);
    let unpinned = six(2);
    let guarded = six(3);
    let loose = six(4);
    let g = s.protect();
    put_six(&s, &pinned, Some(&g));
    let (pm, pb) = manifest(&pinned.iter().map(|x| x.0).collect::<Vec<_>>());
    g.add(pm);
    s.put_manifest(&pm, &pb).unwrap();
    s.pin(&pm, pin_info()).unwrap();
    drop(g);
    let unixfs = Cid::from_sha256(datamesh_core::cid::RAW, &[7; 32]);
    s.set_alias(&unixfs, &pm).unwrap();

    put_six(&s, &unpinned, None);
    let (um, ub) = manifest(&unpinned.iter().map(|x| x.0).collect::<Vec<_>>());
    s.put_manifest(&um, &ub).unwrap();
    let unixfs2 = Cid::from_sha256(datamesh_core::cid::RAW, &[8; 32]);
    s.set_alias(&unixfs2, &um).unwrap();

    let g = s.protect();
    put_six(&s, &guarded, Some(&g));
    assert_eq!(g.len(), 6);
    put_six(&s, &loose, None);

    let r = s.gc().unwrap();
    assert_eq!((r.shards_removed, r.manifests_removed, r.pins_without_manifest, r.aliases_removed), (12, 1, 0, 1));
    for (c, b) in &pinned {
        assert_eq!(&s.get_shard(c).unwrap(), b);
    }
    for (c, _) in &guarded {
        assert!(s.has_shard(c).unwrap());
    }
    for (c, _) in unpinned.iter().chain(&loose) {
        assert!(!s.has_shard(c).unwrap());
        assert!(!shard_file(d.path(), c).exists());
    }
    assert!(s.has_manifest(&pm).unwrap() && !s.has_manifest(&um).unwrap());
    assert_eq!(s.resolve_alias(&unixfs).unwrap(), Some(pm));
    assert_eq!(s.resolve_alias(&unixfs2).unwrap(), None);

    drop(g);
    let r = s.gc().unwrap();
    assert_eq!(r.shards_removed, 6);
    assert_eq!(s.stats().unwrap().shards, 6);
}

#[test]
fn gc_sweeps_no_shards_while_a_pinned_manifest_is_missing() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let loose = six(1);
    put_six(&s, &loose, None);
    let stray = Cid::dag_cbor_blake3(b"not here");
    s.pin(&stray, pin_info()).unwrap();
    let r = s.gc().unwrap();
    assert_eq!((r.shards_removed, r.pins_without_manifest), (0, 1));
    assert_eq!(s.stats().unwrap().shards, 6);
    s.unpin(&stray).unwrap();
    assert_eq!(s.gc().unwrap().shards_removed, 6);
}

#[test]
fn second_open_is_refused_while_the_first_is_live() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let e = Store::open(d.path(), cfg()).unwrap_err();
    match &e {
        StoreError::InUse { pid, .. } => assert_eq!(pid, &std::process::id().to_string()),
        other => panic!("expected InUse, got {other:?}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&format!("is in use by another datamesh node (pid {})", std::process::id())), "{msg}");
    assert!(msg.contains(&d.path().display().to_string()));
    // A clone shares the lock; dropping every handle releases it.
    let s2 = s.clone();
    drop(s);
    assert!(Store::open(d.path(), cfg()).is_err());
    drop(s2);
    Store::open(d.path(), cfg()).unwrap();
}

#[test]
fn newer_or_foreign_formats_are_refused() {
    let d = tempfile::tempdir().unwrap();
    drop(open(d.path()));
    std::fs::write(d.path().join("FORMAT"), "datamesh-store 2\n").unwrap();
    let e = Store::open(d.path(), cfg()).unwrap_err();
    assert!(matches!(e, StoreError::FormatTooNew { found: 2, supported: 1, .. }), "{e:?}");
    assert!(e.to_string().contains("upgrade datamesh"));

    std::fs::write(d.path().join("FORMAT"), "something else").unwrap();
    assert!(matches!(Store::open(d.path(), cfg()), Err(StoreError::NotAStore { .. })));

    // A non-empty directory that is not a store is left alone.
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("notes.txt"), "mine").unwrap();
    let e = Store::open(d.path(), cfg()).unwrap_err();
    assert!(matches!(e, StoreError::NotAStore { .. }), "{e:?}");
    assert!(!d.path().join("FORMAT").exists());

    // A missing directory is created.
    let d = tempfile::tempdir().unwrap();
    let nested = d.path().join("a/b");
    drop(open(&nested));
    assert!(nested.join("FORMAT").exists());
}

#[test]
fn open_removes_temp_and_orphans_and_drops_missing() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let kept = put(&s, &bytes(1, 100));
    let lost = put(&s, &bytes(2, 100));
    let shrunk = put(&s, &bytes(3, 100));
    drop(s);
    std::fs::write(d.path().join("tmp/shard-3.tmp"), b"half").unwrap();
    let orphan = Cid::raw_blake3(b"orphan");
    std::fs::write(shard_file(d.path(), &orphan), b"orphan").unwrap();
    std::fs::write(d.path().join("shards/00/not-a-cid"), b"junk").unwrap();
    std::fs::remove_file(shard_file(d.path(), &lost)).unwrap();
    std::fs::write(shard_file(d.path(), &shrunk), b"short").unwrap();

    let (s, report) = Store::open(d.path(), cfg()).unwrap();
    assert_eq!(report.temp_removed, 1);
    assert_eq!(report.orphans_removed, 2);
    assert_eq!(report.missing_dropped, 1);
    assert_eq!(report.corrupt_quarantined, 1);
    assert!(s.has_shard(&kept).unwrap());
    assert!(!s.has_shard(&lost).unwrap() && !s.has_shard(&shrunk).unwrap());
    assert_eq!(s.list_shards().unwrap(), vec![kept]);
    assert_eq!(files(d.path(), "shards"), vec![shard_file(d.path(), &kept)]);
    assert!(flat(d.path(), "tmp").is_empty());
    assert_eq!(s.stats().unwrap().shards, 1);
}

#[test]
fn pins_and_aliases_persist() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let a = Cid::dag_cbor_blake3(b"a");
    let b = Cid::dag_cbor_blake3(b"b");
    s.pin(&a, pin_info()).unwrap();
    s.pin(&b, PinInfo { name: None, size: 5, created_at: 9, replica: false }).unwrap();
    s.pin(&b, PinInfo { name: None, size: 6, created_at: 9, replica: false }).unwrap();
    let long =
        PinInfo { name: Some("x".repeat(datamesh_store::MAX_PIN_NAME + 1)), size: 0, created_at: 0, replica: false };
    assert!(matches!(s.pin(&a, long), Err(StoreError::PinNameTooLong { .. })));
    let u = Cid::from_sha256(datamesh_core::cid::DAG_PB, &[1; 32]);
    s.set_alias(&u, &a).unwrap();
    drop(s);
    let s = open(d.path());
    let mut pins = s.pins().unwrap();
    pins.sort_by_key(|p| p.0);
    let mut want = vec![(a, pin_info()), (b, PinInfo { name: None, size: 6, created_at: 9, replica: false })];
    want.sort_by_key(|p| p.0);
    assert_eq!(pins, want);
    assert_eq!(s.pin_info(&a).unwrap(), Some(pin_info()));
    assert_eq!(s.resolve_alias(&u).unwrap(), Some(a));
    assert_eq!(s.resolve_alias(&a).unwrap(), None);
    assert_eq!(s.stats().unwrap().pins, 2);
}

#[test]
fn cache_is_bounded_by_bytes() {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), StoreConfig { capacity_bytes: 1 << 30, cache_bytes: 4 << 20 }).unwrap().0;
    let big = bytes::Bytes::from(bytes(1, 1 << 20));
    let c = Cid::raw_blake3(&big);
    s.cache_put(c, big.clone());
    assert_eq!(s.cache_get(&c).as_deref(), Some(&big[..]));
    for i in 0..32 {
        let v = bytes::Bytes::from(bytes(100 + i, 1 << 20));
        s.cache_put(Cid::raw_blake3(&v), v);
        assert!(s.cache_bytes_used() <= 4 << 20);
    }
    assert!(s.cache_bytes_used() > 2 << 20, "cache keeps items up to its budget");
    // No cache at all.
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path(), StoreConfig { capacity_bytes: 1 << 30, cache_bytes: 0 }).unwrap().0;
    s.cache_put(c, big);
    assert!(s.cache_get(&c).is_none());
}

#[test]
fn scrub_finds_and_quarantines_bit_rot() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let cids: Vec<Cid> = (0..10).map(|i| put(&s, &bytes(i, 500))).collect();
    let f = shard_file(d.path(), &cids[3]);
    let mut b = std::fs::read(&f).unwrap();
    b[0] ^= 1;
    std::fs::write(&f, b).unwrap();
    let r = s.scrub().unwrap();
    assert_eq!((r.checked, r.corrupt.clone()), (10, vec![cids[3]]));
    assert_eq!(s.stats().unwrap().shards, 9);
    assert_eq!(s.scrub().unwrap().corrupt, vec![]);
}

/// Puts, reads, deletes and GCs from several threads at once, then checks
/// the index and the files agree and every pinned shard is intact.
#[test]
fn concurrent_puts_reads_deletes_and_gc_stay_consistent() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let s = s.clone();
            std::thread::spawn(move || {
                let mut pinned = Vec::new();
                for i in 0..15u64 {
                    let seed = t * 1000 + i;
                    let sh = six(seed);
                    let g = s.protect();
                    put_six(&s, &sh, Some(&g));
                    let (m, mb) = manifest(&sh.iter().map(|x| x.0).collect::<Vec<_>>());
                    g.add(m);
                    s.put_manifest(&m, &mb).unwrap();
                    if i % 3 == 0 {
                        // An abandoned upload: guard dropped without a pin.
                        drop(g);
                        continue;
                    }
                    s.pin(&m, pin_info()).unwrap();
                    drop(g);
                    // A shard shared with another thread's loose puts.
                    let shared = bytes(i, 64);
                    let sc = Cid::raw_blake3(&shared);
                    let _ = s.put_shards(&[(sc, &shared, meta(0))], None);
                    if i % 4 == 0 {
                        let _ = s.delete_shard(&sc);
                    }
                    if i % 5 == 0 {
                        s.gc().unwrap();
                    }
                    for (c, b) in &sh {
                        assert_eq!(&s.get_shard(c).unwrap(), b);
                    }
                    pinned.push(sh);
                }
                pinned
            })
        })
        .collect();
    let pinned: Vec<_> = threads.into_iter().flat_map(|t| t.join().unwrap()).collect();
    s.gc().unwrap();
    for sh in &pinned {
        for (c, b) in sh {
            assert_eq!(&s.get_shard(c).unwrap(), b);
        }
    }
    let listed: Vec<PathBuf> = {
        let mut v: Vec<_> = s.list_shards().unwrap().iter().map(|c| shard_file(d.path(), c)).collect();
        v.sort();
        v
    };
    assert_eq!(files(d.path(), "shards"), listed);
    assert_eq!(s.stats().unwrap().shards as usize, pinned.len() * 6);
    assert!(flat(d.path(), "tmp").is_empty());
    drop(s);
    let (_, report) = Store::open(d.path(), cfg()).unwrap();
    assert_eq!(report, Default::default());
}

/// A put under a guard protects shards that were already stored (and so
/// not rewritten): an upload that reuses existing shards must not lose them
/// to a GC before its pin lands.
#[test]
fn guard_covers_shards_that_were_already_stored() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    let sh = six(7);
    put_six(&s, &sh, None);
    let g = s.protect();
    put_six(&s, &sh, Some(&g));
    assert!(sh.iter().all(|(c, _)| g.contains(c)));
    assert_eq!(s.gc().unwrap().shards_removed, 0);
    drop(g);
    assert_eq!(s.gc().unwrap().shards_removed, 6);
}

/// A directory whose tmp/ holds files that are not ours is not taken over
/// (open would otherwise empty tmp/).
#[test]
fn foreign_tmp_dir_is_not_taken_over() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("tmp")).unwrap();
    std::fs::write(d.path().join("tmp/precious"), b"x").unwrap();
    assert!(matches!(Store::open(d.path(), cfg()), Err(StoreError::NotAStore { .. })));
    assert!(d.path().join("tmp/precious").exists());
}

// ---------------------------------------------------------------------------
// Streaming writes and reads

fn write_in_pieces(w: &mut datamesh_store::ObjectWriter, data: &[u8]) {
    for piece in data.chunks(64 * 1024) {
        w.write(piece).unwrap();
    }
}

#[test]
fn streamed_put_commits_only_matching_bytes_of_the_announced_length() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let data = bytes(1, 300 * 1024 + 7);
    let cid = Cid::raw_blake3(&data);

    // The right bytes: durable, indexed, readable.
    let mut w = s.shard_writer(cid, data.len() as u64, meta(3)).unwrap();
    write_in_pieces(&mut w, &data);
    w.finish(None).unwrap();
    assert_eq!(s.get_shard(&cid).unwrap(), data);
    assert_eq!(s.shard_record(&cid).unwrap().unwrap().index, 3);
    assert!(flat(dir.path(), "tmp").is_empty());

    // Again: already stored, nothing rewritten, no temp file left.
    let mut w = s.shard_writer(cid, data.len() as u64, meta(3)).unwrap();
    write_in_pieces(&mut w, &data);
    w.finish(None).unwrap();
    assert_eq!(s.stats().unwrap().shards, 1);
    assert!(flat(dir.path(), "tmp").is_empty());
}

#[test]
fn failed_streamed_writes_leave_no_file_and_no_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let data = bytes(2, 200 * 1024);
    let cid = Cid::raw_blake3(&data);
    let len = data.len() as u64;
    let nothing_left = |s: &Store| {
        assert!(!s.has_shard(&cid).unwrap());
        assert!(flat(dir.path(), "tmp").is_empty(), "temp files: {:?}", flat(dir.path(), "tmp"));
        assert!(files(dir.path(), "shards").is_empty());
        let st = s.stats().unwrap();
        assert_eq!((st.shards, st.used_bytes), (0, 0));
    };

    // Bytes that do not match the CID.
    let mut forged = data.clone();
    forged[1000] ^= 1;
    let mut w = s.shard_writer(cid, len, meta(0)).unwrap();
    write_in_pieces(&mut w, &forged);
    assert!(matches!(w.finish(None), Err(StoreError::Corrupt { .. })));
    nothing_left(&s);

    // Cut short: the peer died mid-body (the writer is finished early, or dropped).
    let mut w = s.shard_writer(cid, len, meta(0)).unwrap();
    write_in_pieces(&mut w, &data[..100 * 1024]);
    assert!(matches!(w.finish(None), Err(StoreError::Corrupt { .. })));
    nothing_left(&s);
    let mut w = s.shard_writer(cid, len, meta(0)).unwrap();
    write_in_pieces(&mut w, &data[..100 * 1024]);
    drop(w);
    nothing_left(&s);

    // More than announced.
    let mut w = s.shard_writer(cid, len - 1, meta(0)).unwrap();
    assert!(matches!(w.write(&data), Err(StoreError::Corrupt { .. })));
    drop(w);
    nothing_left(&s);

    // An announced length beyond the largest shard, or beyond the budget, is
    // refused before anything is written.
    let huge = datamesh_core::limits::MAX_STORED_CHUNK_SIZE as u64 + 1;
    assert!(matches!(s.shard_writer(cid, huge, meta(0)), Err(StoreError::TooLarge { .. })));
    let small = Store::open(&dir.path().join("small"), StoreConfig { capacity_bytes: 1000, cache_bytes: 0 }).unwrap().0;
    assert!(matches!(small.shard_writer(cid, len, meta(0)), Err(StoreError::CapacityExceeded { .. })));
    // While a writer is open its length is reserved.
    let a = small.shard_writer(cid, 600, meta(0)).unwrap();
    assert!(matches!(small.shard_writer(cid, 600, meta(0)), Err(StoreError::CapacityExceeded { .. })));
    drop(a);
    drop(small.shard_writer(cid, 600, meta(0)).unwrap());
    nothing_left(&s);

    // And the store still takes the real thing.
    let mut w = s.shard_writer(cid, len, meta(0)).unwrap();
    write_in_pieces(&mut w, &data);
    w.finish(None).unwrap();
    assert_eq!(s.get_shard(&cid).unwrap(), data);
}

#[test]
fn streamed_reads_verify_before_the_last_piece() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let s = open(dir.path());
    let data = bytes(3, 150 * 1024);
    let cid = put(&s, &data);

    let mut r = s.shard_reader(&cid).unwrap();
    assert_eq!(r.len(), data.len() as u64);
    let mut out = Vec::new();
    r.read_to_end(&mut out).unwrap();
    assert_eq!(out, data);

    // Empty objects verify too.
    let empty = put(&s, b"");
    let mut out = Vec::new();
    s.shard_reader(&empty).unwrap().read_to_end(&mut out).unwrap();
    assert!(out.is_empty());

    // Rot the last byte: every piece but the last comes out, then an error,
    // and the shard is quarantined.
    let path = shard_file(dir.path(), &cid);
    let mut rotten = std::fs::read(&path).unwrap();
    *rotten.last_mut().unwrap() ^= 1;
    std::fs::write(&path, &rotten).unwrap();
    let mut r = s.shard_reader(&cid).unwrap();
    let mut got = 0;
    let mut buf = vec![0u8; 64 * 1024];
    let err = loop {
        match r.read(&mut buf) {
            Ok(0) => panic!("a corrupt shard was read to the end"),
            Ok(n) => got += n,
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(got < data.len(), "the last piece was withheld");
    assert!(!s.has_shard(&cid).unwrap(), "quarantined");
    assert!(matches!(s.shard_reader(&cid), Err(StoreError::NotFound { .. })));
    assert_eq!(flat(dir.path(), "quarantine").len(), 1);

    // A grown file is corrupt too.
    let cid = put(&s, &data);
    let mut grown = data.clone();
    grown.push(0);
    std::fs::write(shard_file(dir.path(), &cid), &grown).unwrap();
    let mut out = Vec::new();
    assert!(s.shard_reader(&cid).unwrap().read_to_end(&mut out).is_err());
    assert!(!s.has_shard(&cid).unwrap());
}

/// State records: put, replace, get, list, remove, across a reopen; names
/// that are not plain file names, oversized values and damaged files are
/// refused or reported, never served; GC leaves them alone.
#[test]
fn state_records_round_trip_and_refuse_what_they_cannot_hold() {
    let d = tempfile::tempdir().unwrap();
    let s = open(d.path());
    assert_eq!(s.get_state("locations", "a").unwrap(), None);
    assert!(s.list_state("locations").unwrap().is_empty());
    assert!(!s.remove_state("locations", "a").unwrap());
    s.put_state("locations", "a", b"one").unwrap();
    s.put_state("locations", "a", &bytes(3, 30_000)).unwrap();
    s.put_state("locations", "b", b"").unwrap();
    s.put_state_at("tombstones", "a", b"t", 1234).unwrap();
    assert_eq!(s.get_state("locations", "a").unwrap().unwrap().value, bytes(3, 30_000));
    assert_eq!(s.get_state("tombstones", "a").unwrap().unwrap().written_at, 1234);
    let written = s.get_state("locations", "b").unwrap().unwrap();
    assert!(written.value.is_empty() && written.written_at > 1_600_000_000_000);
    let mut keys = s.list_state("locations").unwrap();
    keys.sort();
    assert_eq!(keys, ["a", "b"]);
    s.gc().unwrap();
    drop(s);

    let s = open(d.path());
    assert_eq!(s.get_state("locations", "a").unwrap().unwrap().value, bytes(3, 30_000));
    assert!(s.remove_state("locations", "a").unwrap());
    assert_eq!(s.get_state("locations", "a").unwrap(), None);
    assert_eq!(s.list_state("locations").unwrap(), ["b"]);
    assert_eq!(std::fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);

    for (kind, key) in [("locations", "../x"), ("../shards", "x"), ("locations", ""), ("locations", ".tmp")] {
        assert!(matches!(s.put_state(kind, key, b"v"), Err(StoreError::BadState { .. })), "{kind}/{key}");
        assert!(matches!(s.get_state(kind, key), Err(StoreError::BadState { .. })), "{kind}/{key}");
    }
    let big = vec![0; datamesh_store::MAX_STATE_VALUE + 1];
    assert!(matches!(s.put_state("locations", "big", &big), Err(StoreError::BadState { .. })));

    std::fs::write(d.path().join("state/locations/b"), b"\x01garbage that is long enough to hold a checksum").unwrap();
    assert!(matches!(s.get_state("locations", "b"), Err(StoreError::BadRecord { .. })));
    // A good put replaces a damaged record.
    s.put_state("locations", "b", b"fine").unwrap();
    assert_eq!(s.get_state("locations", "b").unwrap().unwrap().value, b"fine");
}

/// Files of an older layout move into state records once: their bytes as
/// `convert` gives them, their modification time as `written_at`; dropped
/// files and the emptied directory are removed.
#[test]
fn old_state_files_are_imported_once() {
    let d = tempfile::tempdir().unwrap();
    let s = open(&d.path().join("store"));
    let old = d.path().join("locations");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(old.join("a"), b"record a").unwrap();
    std::fs::write(old.join("b"), b"record b").unwrap();
    std::fs::write(old.join("a.tmp"), b"half").unwrap();
    let mtime = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_650_000_000_250);
    std::fs::File::options().append(true).open(old.join("a")).unwrap().set_modified(mtime).unwrap();
    let n = s
        .import_state_dir("locations", &old, |name, b| {
            (!name.ends_with(".tmp")).then(|| [b"v1:".as_slice(), &b].concat())
        })
        .unwrap();
    assert_eq!(n, 2);
    let a = s.get_state("locations", "a").unwrap().unwrap();
    assert_eq!((a.value.as_slice(), a.written_at), (b"v1:record a".as_slice(), 1_650_000_000_250));
    assert_eq!(s.get_state("locations", "b").unwrap().unwrap().value, b"v1:record b");
    assert_eq!(s.get_state("locations", "a.tmp").unwrap(), None);
    assert!(!old.exists(), "the old directory is gone");
    // Nothing left to import: a second start changes nothing.
    assert_eq!(s.import_state_dir("locations", &old, |_, b| Some(b)).unwrap(), 0);

    let file = d.path().join("reputation.json");
    std::fs::write(&file, b"{}").unwrap();
    assert!(s.import_state_file("reputation", "peers", &file, Some).unwrap());
    assert!(!file.exists());
    assert_eq!(s.get_state("reputation", "peers").unwrap().unwrap().value, b"{}");
    assert!(!s.import_state_file("reputation", "peers", &file, Some).unwrap());
}

/// The node's own files outside the store are written whole, and a private
/// one is readable by its owner only.
#[test]
fn files_are_written_atomically_and_privately() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("node.key");
    std::fs::write(d.path().join("node.key.tmp"), b"left over").unwrap();
    datamesh_store::write_file_atomically(&p, b"secret", true).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"secret");
    assert!(!d.path().join("node.key.tmp").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
    datamesh_store::write_file_atomically(&p, b"other", false).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"other");
}
