//! Crash tests on the simulated page cache (`sim.rs`), plus tests that need
//! the store's internals (disk full, access-time batching).
//!
//! `crash_at_any_operation_keeps_acknowledged_writes` runs a random workload
//! (uploads with guards and pins, loose puts, re-puts, deletes, unpins,
//! aliases, GC, reads), cuts power at a random operation, sometimes cuts it
//! again during the recovery, then opens the surviving disk and checks
//! against a model: every acknowledged write reads back byte-identical,
//! every acknowledged delete stays deleted, an interrupted operation is
//! either fully there or absent (never corrupt), the index and the files
//! agree, and `tmp/` is empty.
//!
//! Reproduce one seed with `DATAMESH_SIM_SEED=<n>`; run more with
//! `DATAMESH_SIM_SEEDS=<count>`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use datamesh_core::manifest::{MANIFEST_VERSION, merkle_root};
use datamesh_core::{ChunkEntry, Chunking, Cid, Compression, Erasure, Manifest};

use crate::io::Io;
use crate::sim::{Rng, SimFs};
use crate::store::{Kind, Options, TMP_DIR, object_path};
use crate::{PinInfo, ShardMeta, Store, StoreConfig, StoreError};

const ROOT: &str = "/sim";
const OPS_PER_PHASE: usize = 24;
const PHASES: usize = 3;

fn root() -> &'static Path {
    Path::new(ROOT)
}

fn open_sim(fs: &SimFs) -> Result<(Store, crate::OpenReport), StoreError> {
    let cfg = StoreConfig { capacity_bytes: 1 << 30, cache_bytes: 0 };
    Store::open_with(root(), cfg, Arc::new(fs.clone()), Options::default())
}

/// Whether an object exists, as far as acknowledged operations tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Yes,
    No,
    /// The operation touching it was cut short: either outcome is correct.
    Maybe,
}

#[derive(Debug, Default)]
struct Model {
    shards: BTreeMap<Cid, (Vec<u8>, St)>,
    /// manifest → (bytes, shards it references, state)
    manifests: BTreeMap<Cid, (Vec<u8>, Vec<Cid>, St)>,
    pins: BTreeMap<Cid, St>,
    /// public CID → (manifest, state)
    aliases: BTreeMap<Cid, (Cid, St)>,
}

impl Model {
    fn begin_shard(&mut self, cid: Cid, data: &[u8]) {
        let e = self.shards.entry(cid).or_insert_with(|| (data.to_vec(), St::No));
        if e.1 != St::Yes {
            e.1 = St::Maybe;
        }
    }

    fn yes_shards(&self) -> Vec<Cid> {
        self.shards.iter().filter(|(_, v)| v.1 == St::Yes).map(|(c, _)| *c).collect()
    }
}

/// Sets the state of a model entry whose state is its second field.
fn set<T>(map: &mut BTreeMap<Cid, (T, St)>, c: &Cid, st: St) {
    if let Some(e) = map.get_mut(c) {
        e.1 = st;
    }
}

fn shard_len(rng: &mut Rng) -> usize {
    match rng.below(10) {
        0 => 2,
        1..=2 => 4096 + rng.below(20_000) as usize, // spans pages: can tear
        _ => 2 + rng.below(3000) as usize,
    }
}

fn new_shards(rng: &mut Rng, m: &Model, n: usize) -> Vec<(Cid, Vec<u8>)> {
    let mut out: Vec<(Cid, Vec<u8>)> = (0..n)
        .map(|_| {
            let len = shard_len(rng);
            let b = rng.bytes(len);
            (Cid::raw_blake3(&b), b)
        })
        .collect();
    // Sometimes re-put a shard seen before, in whatever state: exercises the
    // idempotent path and re-puts after a delete or GC.
    if !m.shards.is_empty() && rng.below(3) == 0 {
        let i = rng.below(m.shards.len() as u64) as usize;
        if let Some((c, (b, _))) = m.shards.iter().nth(i) {
            out[0] = (*c, b.clone());
        }
    }
    out
}

fn put_batch(
    s: &Store,
    m: &mut Model,
    shards: &[(Cid, Vec<u8>)],
    guard: Option<&crate::UploadGuard>,
) -> Result<(), StoreError> {
    for (c, b) in shards {
        m.begin_shard(*c, b);
    }
    let batch: Vec<(Cid, &[u8], ShardMeta)> = shards
        .iter()
        .enumerate()
        .map(|(i, (c, b))| (*c, b.as_slice(), ShardMeta { chunk: Cid::raw_blake3(b"c"), index: i as u16 }))
        .collect();
    s.put_shards(&batch, guard)?;
    for (c, _) in shards {
        if let Some(e) = m.shards.get_mut(c) {
            e.1 = St::Yes;
        }
    }
    Ok(())
}

fn upload(s: &Store, m: &mut Model, rng: &mut Rng) -> Result<(), StoreError> {
    let guard = s.protect();
    let mut chunks = Vec::new();
    for _ in 0..1 + rng.below(2) {
        let shards = new_shards(rng, m, 6);
        put_batch(s, m, &shards, Some(&guard))?;
        chunks.push(ChunkEntry {
            plain_size: 100,
            stored_size: 100,
            compression: Compression::None,
            cid: Cid::raw_blake3(&rng.bytes(16)),
            shards: shards.iter().map(|x| x.0).collect(),
        });
    }
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        size: 100 * chunks.len() as u64,
        chunking: Chunking::Fixed { size: 100 },
        erasure: Erasure::DEFAULT,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: None,
        merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
        chunks,
    };
    let bytes = manifest.encode();
    let mcid = manifest.cid();
    let refs: Vec<Cid> = manifest.chunks.iter().flat_map(|c| c.shards.iter().copied()).collect();
    guard.add(mcid);
    m.manifests.insert(mcid, (bytes.clone(), refs, St::Maybe));
    s.put_manifest(&mcid, &bytes)?;
    if let Some(e) = m.manifests.get_mut(&mcid) {
        e.2 = St::Yes;
    }
    if rng.below(5) == 0 {
        return Ok(()); // abandoned upload: never pinned
    }
    m.pins.insert(mcid, St::Maybe);
    s.pin(&mcid, PinInfo { name: Some(format!("file-{mcid}")), size: manifest.size, created_at: 1, replica: false })?;
    m.pins.insert(mcid, St::Yes);
    Ok(())
}

fn pick<T: Copy>(rng: &mut Rng, v: &[T]) -> Option<T> {
    if v.is_empty() { None } else { Some(v[rng.below(v.len() as u64) as usize]) }
}

fn gc(s: &Store, m: &mut Model, rng: &mut Rng) -> Result<(), StoreError> {
    let guard = s.protect();
    let yes = m.yes_shards();
    for _ in 0..rng.below(3) {
        if let Some(c) = pick(rng, &yes) {
            guard.add(c);
        }
    }
    let pinned: Vec<Cid> = m.pins.iter().filter(|(_, st)| **st == St::Yes).map(|(c, _)| *c).collect();
    let unresolved = pinned.iter().filter(|p| m.manifests.get(p).is_none_or(|x| x.2 != St::Yes)).count() as u64;
    let live: BTreeSet<Cid> =
        pinned.iter().filter_map(|p| m.manifests.get(p)).flat_map(|x| x.1.iter().copied()).collect();
    let gone_shards: Vec<Cid> =
        yes.iter().copied().filter(|c| unresolved == 0 && !live.contains(c) && !guard.contains(c)).collect();
    let gone_manifests: Vec<Cid> = m
        .manifests
        .iter()
        .filter(|(c, x)| x.2 == St::Yes && !pinned.contains(c) && !guard.contains(c))
        .map(|(c, _)| *c)
        .collect();
    let gone_aliases: Vec<Cid> = m
        .aliases
        .iter()
        .filter(|(_, (to, st))| *st == St::Yes && gone_manifests.contains(to))
        .map(|(c, _)| *c)
        .collect();
    let freed: u64 = gone_shards.iter().map(|c| m.shards[c].0.len() as u64).sum::<u64>()
        + gone_manifests.iter().map(|c| m.manifests[c].0.len() as u64).sum::<u64>();
    for c in &gone_shards {
        set(&mut m.shards, c, St::Maybe);
    }
    for c in &gone_manifests {
        if let Some(e) = m.manifests.get_mut(c) {
            e.2 = St::Maybe;
        }
    }
    for c in &gone_aliases {
        set(&mut m.aliases, c, St::Maybe);
    }
    let r = s.gc()?;
    assert_eq!(
        (r.shards_removed, r.manifests_removed, r.aliases_removed, r.bytes_freed, r.pins_without_manifest),
        (gone_shards.len() as u64, gone_manifests.len() as u64, gone_aliases.len() as u64, freed, unresolved),
        "GC removed something other than the model predicts"
    );
    for c in &gone_shards {
        set(&mut m.shards, c, St::No);
    }
    for c in &gone_manifests {
        if let Some(e) = m.manifests.get_mut(c) {
            e.2 = St::No;
        }
    }
    for c in &gone_aliases {
        set(&mut m.aliases, c, St::No);
    }
    Ok(())
}

fn delete_one(s: &Store, m: &mut Model, c: Cid) -> Result<(), StoreError> {
    set(&mut m.shards, &c, St::Maybe);
    assert!(s.delete_shard(&c)?, "a stored shard must delete");
    set(&mut m.shards, &c, St::No);
    Ok(())
}

fn unpin_one(s: &Store, m: &mut Model, c: Cid) -> Result<(), StoreError> {
    m.pins.insert(c, St::Maybe);
    assert!(s.unpin(&c)?, "a pin must unpin");
    m.pins.insert(c, St::No);
    Ok(())
}

fn alias_one(s: &Store, m: &mut Model, rng: &mut Rng, to: Cid) -> Result<(), StoreError> {
    let mut d = [0u8; 32];
    d.copy_from_slice(&rng.bytes(32));
    let from = Cid::from_sha256(datamesh_core::cid::DAG_PB, &d);
    m.aliases.insert(from, (to, St::Maybe));
    s.set_alias(&from, &to)?;
    m.aliases.insert(from, (to, St::Yes));
    Ok(())
}

fn pinned(m: &Model) -> Vec<Cid> {
    m.pins.iter().filter(|(_, st)| **st == St::Yes).map(|(c, _)| *c).collect()
}

fn stored_manifests(m: &Model) -> Vec<Cid> {
    m.manifests.iter().filter(|(_, x)| x.2 == St::Yes).map(|(c, _)| *c).collect()
}

fn step(s: &Store, m: &mut Model, rng: &mut Rng) -> Result<(), StoreError> {
    match rng.below(14) {
        0..=3 => upload(s, m, rng),
        4..=5 => {
            let n = 1 + rng.below(4) as usize;
            let shards = new_shards(rng, m, n);
            put_batch(s, m, &shards, None)
        }
        6 => match pick(rng, &m.yes_shards()) {
            Some(c) => delete_one(s, m, c),
            None => Ok(()),
        },
        7 => match pick(rng, &pinned(m)) {
            Some(c) => unpin_one(s, m, c),
            None => Ok(()),
        },
        8 => gc(s, m, rng),
        9..=10 => {
            let Some(c) = pick(rng, &m.yes_shards()) else {
                return Ok(());
            };
            assert_eq!(s.get_shard(&c)?, m.shards[&c].0);
            Ok(())
        }
        11 => match pick(rng, &stored_manifests(m)) {
            Some(to) => alias_one(s, m, rng, to),
            None => Ok(()),
        },
        12 => {
            let Some(c) = pick(rng, &stored_manifests(m)) else {
                return Ok(());
            };
            assert_eq!(s.get_manifest(&c)?, m.manifests[&c].0);
            Ok(())
        }
        _ => s.flush(),
    }
}

/// Opens the surviving disk without faults and checks it against the
/// model, resolving every `Maybe` to what survived.
fn verify(fs: &SimFs, m: &mut Model, ctx: &str) {
    let tmp_before = fs.files_in(&root().join(TMP_DIR)).len();
    let (s, report) = open_sim(fs).unwrap_or_else(|e| panic!("{ctx}: open after a crash failed: {e}"));
    assert_eq!(report.temp_removed, tmp_before, "{ctx}: every temp file is removed");
    assert_eq!(report.corrupt_quarantined, 0, "{ctx}: a file renamed into place is always complete");
    assert_eq!(report.missing_dropped, 0, "{ctx}: an index entry never outlives its file");

    for (c, (data, st)) in m.shards.iter_mut() {
        let has = s.has_shard(c).unwrap();
        match (*st, has) {
            (St::Yes, false) => panic!("{ctx}: acknowledged shard {c} was lost"),
            (St::No, true) => panic!("{ctx}: deleted shard {c} came back"),
            _ => {}
        }
        if has {
            let got = s.get_shard(c).unwrap_or_else(|e| panic!("{ctx}: shard {c} is listed but unreadable: {e}"));
            assert!(got == *data, "{ctx}: shard {c} reads back different bytes");
        }
        *st = if has { St::Yes } else { St::No };
    }
    for (c, (data, _, st)) in m.manifests.iter_mut() {
        let has = s.has_manifest(c).unwrap();
        match (*st, has) {
            (St::Yes, false) => panic!("{ctx}: acknowledged manifest {c} was lost"),
            (St::No, true) => panic!("{ctx}: collected manifest {c} came back"),
            _ => {}
        }
        if has {
            assert!(s.get_manifest(c).unwrap() == *data, "{ctx}: manifest {c} differs");
        }
        *st = if has { St::Yes } else { St::No };
    }
    for (c, st) in m.pins.iter_mut() {
        let has = s.pin_info(c).unwrap().is_some();
        match (*st, has) {
            (St::Yes, false) => panic!("{ctx}: acknowledged pin {c} was lost"),
            (St::No, true) => panic!("{ctx}: removed pin {c} came back"),
            _ => {}
        }
        *st = if has { St::Yes } else { St::No };
    }
    for (from, (to, st)) in m.aliases.iter_mut() {
        let got = s.resolve_alias(from).unwrap();
        match (*st, got) {
            (St::Yes, None) => panic!("{ctx}: acknowledged alias {from} was lost"),
            (St::No, Some(_)) => panic!("{ctx}: removed alias {from} came back"),
            (_, Some(t)) => assert_eq!(t, *to),
            _ => {}
        }
        *st = if got.is_some() { St::Yes } else { St::No };
    }

    // Nothing beyond the model is listed, and the files match the index.
    let scrub = s.scrub().unwrap();
    assert!(scrub.corrupt.is_empty(), "{ctx}: scrub found {:?}", scrub.corrupt);
    let stats = s.stats().unwrap();
    let yes: Vec<&Vec<u8>> = m.shards.values().filter(|v| v.1 == St::Yes).map(|v| &v.0).collect();
    assert_eq!(stats.shards, yes.len() as u64, "{ctx}: shard count");
    assert_eq!(stats.shard_bytes, yes.iter().map(|b| b.len() as u64).sum::<u64>(), "{ctx}: shard bytes");
    assert_eq!(stats.pins, m.pins.values().filter(|s| **s == St::Yes).count() as u64, "{ctx}: pins");
    for kind in Kind::ALL {
        let listed = match kind {
            Kind::Shard => s.list_shards().unwrap(),
            Kind::Manifest => s.list_manifests().unwrap(),
        };
        let want: BTreeSet<PathBuf> = listed.iter().map(|c| object_path(root(), kind, c)).collect();
        assert_eq!(fs.files_below(&root().join(kind.dir())), want, "{ctx}: files and index disagree");
    }
    assert!(fs.files_in(&root().join(TMP_DIR)).is_empty(), "{ctx}: tmp/ is empty after open");
    drop(s);
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("DATAMESH_SIM_SEED") {
        return vec![s.parse().expect("DATAMESH_SIM_SEED is a number")];
    }
    let n = std::env::var("DATAMESH_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 24 } else { 150 });
    (0..n).collect()
}

/// Operation counts of an uninterrupted phase and of a re-open, to spread
/// crash points over the whole run.
fn calibrate() -> (u64, u64) {
    let fs = SimFs::new(root());
    let mut m = Model::default();
    let mut rng = Rng::new(12345);
    let (s, _) = open_sim(&fs).unwrap();
    for _ in 0..OPS_PER_PHASE {
        step(&s, &mut m, &mut rng).unwrap();
    }
    drop(s);
    let phase = fs.ctl.ops();
    let before = fs.ctl.ops();
    drop(open_sim(&fs).unwrap());
    (phase, fs.ctl.ops() - before)
}

#[test]
fn crash_at_any_operation_keeps_acknowledged_writes() {
    let (phase_ops, open_ops) = calibrate();
    let mut crashes = 0;
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let mut wl = Rng::new(seed.wrapping_mul(31).wrapping_add(7));
        let mut fs = SimFs::new(root());
        let mut m = Model::default();
        for phase in 0..PHASES {
            let ctx = format!("seed {seed} phase {phase} (DATAMESH_SIM_SEED={seed})");
            // Past the end now and then: power cut right after the last op.
            fs.ctl.crash_after(rng.below(phase_ops + phase_ops / 4));
            let store = match open_sim(&fs) {
                Ok((s, _)) => Some(s),
                Err(e) => {
                    assert!(fs.ctl.crashed(), "{ctx}: open failed without a crash: {e}");
                    None
                }
            };
            if let Some(s) = &store {
                for _ in 0..OPS_PER_PHASE {
                    if let Err(e) = step(s, &mut m, &mut wl) {
                        assert!(fs.ctl.crashed(), "{ctx}: failed without a crash: {e}");
                        break;
                    }
                }
            }
            crashes += u64::from(fs.ctl.crashed());
            // Image first: the store must not get to close cleanly.
            let image = fs.crash_image(&mut rng);
            drop(store);
            fs = image;
            if rng.coin() {
                // Power fails again during recovery.
                fs.ctl.crash_after(rng.below(open_ops + 1));
                let r = open_sim(&fs);
                if let Err(e) = &r {
                    assert!(fs.ctl.crashed(), "{ctx}: recovery failed without a crash: {e}");
                }
                let image = fs.crash_image(&mut rng);
                drop(r);
                fs = image;
            }
            verify(&fs, &mut m, &ctx);
        }
    }
    assert!(crashes > 0, "no run actually crashed");
}

/// Crash points are every `stride()`th operation: all of them in release.
fn stride() -> usize {
    if cfg!(debug_assertions) { 13 } else { 1 }
}

/// Power cut at every single operation of a first open (FORMAT, the
/// directory tree, the index's creation): the next open always succeeds
/// and finds a clean, empty store.
#[test]
fn crash_at_every_operation_of_a_first_open() {
    let total = {
        let fs = SimFs::new(root());
        let _open = open_sim(&fs).unwrap();
        fs.ctl.ops()
    };
    for n in (0..=total).step_by(stride()) {
        for variant in 0..2 {
            let fs = SimFs::new(root());
            fs.ctl.crash_after(n);
            let r = open_sim(&fs);
            if let Err(e) = &r {
                assert!(fs.ctl.crashed(), "open failed without a crash: {e}");
            }
            let image = fs.crash_image(&mut Rng::new(n * 2 + variant));
            drop(r);
            verify(&image, &mut Model::default(), &format!("first open cut at op {n}/{total}"));
        }
    }
}

/// An upload, a loose put, a delete, an unpin, an alias, a GC and another
/// upload, on a store holding a few files: power cut at every one of the
/// operations they make.
#[test]
fn crash_at_every_operation_of_a_fixed_scenario() {
    fn prefix(fs: &SimFs, m: &mut Model) -> Store {
        let (s, _) = open_sim(fs).unwrap();
        let mut rng = Rng::new(77);
        for _ in 0..5 {
            upload(&s, m, &mut rng).unwrap();
        }
        s
    }
    fn scenario(s: &Store, m: &mut Model, rng: &mut Rng) -> Result<(), StoreError> {
        upload(s, m, rng)?;
        let loose = new_shards(rng, m, 3);
        put_batch(s, m, &loose, None)?;
        delete_one(s, m, loose[1].0)?;
        if let Some(c) = pinned(m).first() {
            unpin_one(s, m, *c)?;
        }
        if let Some(c) = stored_manifests(m).last() {
            alias_one(s, m, rng, *c)?;
        }
        gc(s, m, rng)?;
        upload(s, m, rng)
    }
    let total = {
        let fs = SimFs::new(root());
        let mut m = Model::default();
        let s = prefix(&fs, &mut m);
        let start = fs.ctl.ops();
        scenario(&s, &mut m, &mut Rng::new(78)).unwrap();
        fs.ctl.ops() - start
    };
    for n in (0..=total).step_by(stride()) {
        let fs = SimFs::new(root());
        let mut m = Model::default();
        let s = prefix(&fs, &mut m);
        fs.ctl.crash_after(n);
        if let Err(e) = scenario(&s, &mut m, &mut Rng::new(78)) {
            assert!(fs.ctl.crashed(), "op {n}: failed without a crash: {e}");
        }
        let image = fs.crash_image(&mut Rng::new(n));
        drop(s);
        verify(&image, &mut m, &format!("scenario cut at op {n}/{total}"));
    }
}

/// One I/O error (EIO, no crash) at a random operation: the failing call
/// returns an error, and right away — without a reopen — no temp file is
/// left and every indexed object still has its file. After a restart (same
/// disk, nothing lost) the model holds.
#[test]
fn transient_io_error_leaves_a_consistent_store() {
    let (phase_ops, _) = calibrate();
    let mut failures = 0;
    for seed in seeds() {
        let ctx = format!("seed {seed} (DATAMESH_SIM_SEED={seed})");
        let mut rng = Rng::new(seed ^ 0xF00D);
        let fs = SimFs::new(root());
        let mut m = Model::default();
        let (s, _) = open_sim(&fs).unwrap();
        fs.ctl.fail_once_after(rng.below(phase_ops));
        for _ in 0..OPS_PER_PHASE {
            if let Err(e) = step(&s, &mut m, &mut rng) {
                assert!(fs.ctl.failed(), "{ctx}: failed without an injected error: {e}");
                failures += 1;
                break;
            }
        }
        assert!(fs.files_in(&root().join(TMP_DIR)).is_empty(), "{ctx}: a failed write left a temp file");
        for kind in Kind::ALL {
            let listed = match kind {
                Kind::Shard => s.list_shards(),
                Kind::Manifest => s.list_manifests(),
            };
            // After an index I/O error redb refuses further use until reopened.
            let Ok(listed) = listed else { continue };
            let files = fs.files_below(&root().join(kind.dir()));
            for c in listed {
                assert!(files.contains(&object_path(root(), kind, &c)), "{ctx}: {c} is indexed but has no file");
            }
        }
        fs.ctl.disarm();
        drop(s);
        verify(&fs, &mut m, &ctx);
    }
    assert!(failures > 0, "no injected error ever hit an operation");
}

/// Several threads putting at once when power fails: every put any of them
/// saw acknowledged survives. Exercises per-batch directory fsyncs racing
/// with other batches' renames.
#[test]
fn crash_during_concurrent_puts_keeps_acknowledged_writes() {
    let n = if cfg!(debug_assertions) { 10 } else { 60 };
    for seed in 0..n {
        let mut rng = Rng::new(1000 + seed);
        let fs = SimFs::new(root());
        let (s, _) = open_sim(&fs).unwrap();
        fs.ctl.crash_after(rng.below(4000));
        let acked = Arc::new(Mutex::new(Model::default()));
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let (s, acked) = (s.clone(), acked.clone());
                std::thread::spawn(move || {
                    let mut rng = Rng::new(seed * 7 + t);
                    for _ in 0..40 {
                        let mut local = Model::default();
                        let r = if rng.below(3) == 0 {
                            upload(&s, &mut local, &mut rng)
                        } else {
                            let n = 1 + rng.below(6) as usize;
                            let shards = new_shards(&mut rng, &local, n);
                            put_batch(&s, &mut local, &shards, None)
                        };
                        let mut a = crate::lock(&acked);
                        // Only what this call acknowledged (Yes) is owed.
                        for (c, v) in local.shards {
                            if v.1 == St::Yes {
                                a.shards.insert(c, v);
                            }
                        }
                        for (c, v) in local.manifests {
                            if v.2 == St::Yes {
                                a.manifests.insert(c, v);
                            }
                        }
                        for (c, v) in local.pins {
                            if v == St::Yes {
                                a.pins.insert(c, v);
                            }
                        }
                        if r.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let image = fs.crash_image(&mut rng);
        drop(s);
        let (s, _) = open_sim(&image).unwrap();
        let a = crate::lock(&acked);
        for (c, (b, _)) in &a.shards {
            assert_eq!(&s.get_shard(c).unwrap_or_else(|e| panic!("seed {seed}: acked shard lost: {e}")), b);
        }
        for (c, (b, _, _)) in &a.manifests {
            assert_eq!(&s.get_manifest(c).unwrap(), b);
        }
        for c in a.pins.keys() {
            assert!(s.pin_info(c).unwrap().is_some(), "seed {seed}: acked pin lost");
        }
        assert!(s.scrub().unwrap().corrupt.is_empty());
        let want: BTreeSet<PathBuf> =
            s.list_shards().unwrap().iter().map(|c| object_path(root(), Kind::Shard, c)).collect();
        assert_eq!(image.files_below(&root().join("shards")), want);
    }
}

#[test]
fn disk_full_is_reported_and_leaves_nothing_behind() {
    let fs = SimFs::new(root());
    let (s, _) = open_sim(&fs).unwrap();
    let mut rng = Rng::new(5);
    let shards: Vec<(Cid, Vec<u8>)> = (0..3)
        .map(|_| {
            let b = rng.bytes(4000);
            (Cid::raw_blake3(&b), b)
        })
        .collect();
    let batch: Vec<(Cid, &[u8], ShardMeta)> =
        shards.iter().map(|(c, b)| (*c, b.as_slice(), ShardMeta { chunk: *c, index: 0 })).collect();
    // Room for two of the three files: the third write hits ENOSPC.
    fs.ctl.set_space(Some(9000));
    let e = s.put_shards(&batch, None).unwrap_err();
    assert!(matches!(e, StoreError::DiskFull { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("free space") && msg.contains("lower the store's capacity budget"), "{msg}");
    assert!(fs.files_in(&root().join(TMP_DIR)).is_empty(), "no temp file left");
    assert!(fs.files_below(&root().join("shards")).is_empty(), "the batch's finished files are removed too");
    for (c, _) in &shards {
        assert!(!s.has_shard(c).unwrap());
    }
    assert_eq!(s.stats().unwrap().used_bytes, 0);
    // Space freed: the same put succeeds.
    fs.ctl.set_space(None);
    s.put_shards(&batch, None).unwrap();
    assert_eq!(s.stats().unwrap().shards, 3);
}

#[test]
fn reads_batch_access_times_instead_of_writing() {
    let d = tempfile::tempdir().unwrap();
    let open = |interval| {
        Store::open_with(
            d.path(),
            StoreConfig::default(),
            Arc::new(crate::io::RealIo),
            Options { access_interval_secs: interval },
        )
        .unwrap()
        .0
    };
    let s = open(0);
    let data = b"hello shard".to_vec();
    let cid = Cid::raw_blake3(&data);
    s.put_shards(&[(cid, &data, ShardMeta { chunk: cid, index: 0 })], None).unwrap();
    let before = s.shard_record(&cid).unwrap().unwrap();
    s.get_shard(&cid).unwrap();
    // Noted in memory, not written: no write transaction per read.
    assert_eq!(crate::lock(&s.inner.pending_access).len(), 1);
    assert_eq!(s.shard_record(&cid).unwrap().unwrap(), before);
    s.flush().unwrap();
    assert!(crate::lock(&s.inner.pending_access).is_empty());
    let after = s.shard_record(&cid).unwrap().unwrap();
    assert!(after.last_access >= before.last_access && after.verified_at >= before.verified_at);
    // The next put's commit carries pending access times along.
    s.get_shard(&cid).unwrap();
    let other = b"other".to_vec();
    let oc = Cid::raw_blake3(&other);
    s.put_shards(&[(oc, &other, ShardMeta { chunk: oc, index: 0 })], None).unwrap();
    assert!(crate::lock(&s.inner.pending_access).is_empty());
    drop(s);
    // With the default interval a fresh shard's read notes nothing.
    let s = open(3600);
    s.get_shard(&cid).unwrap();
    assert!(crate::lock(&s.inner.pending_access).is_empty());
}

/// What the state records should hold: per (kind, key), the last
/// acknowledged value (`None`: absent) and, while an operation on it is
/// cut short, what it was writing (`Some(None)`: a remove).
type StateModel = BTreeMap<(&'static str, String), (Option<Vec<u8>>, Option<Option<Vec<u8>>>)>;

/// Puts `v` as the record, or removes the record if `v` is `None`.
fn state_set(
    s: &Store,
    m: &mut StateModel,
    kind: &'static str,
    key: &str,
    v: Option<Vec<u8>>,
) -> Result<(), StoreError> {
    let e = m.entry((kind, key.to_string())).or_default();
    e.1 = Some(v.clone());
    match &v {
        Some(bytes) => s.put_state(kind, key, bytes)?,
        None => {
            s.remove_state(kind, key)?;
        }
    }
    *e = (v, None);
    Ok(())
}

/// A small value or one spanning several pages (so an unsynced write can tear).
fn state_value(rng: &mut Rng) -> Vec<u8> {
    let len = if rng.coin() { 1 + rng.below(200) } else { 4096 + rng.below(12_000) };
    rng.bytes(len as usize)
}

/// Every record reads back as its acknowledged value or the one its cut
/// operation was writing: never torn, never lost, never back from a remove.
/// The listing agrees. Resolves the model to what survived.
fn verify_state(s: &Store, m: &mut StateModel, ctx: &str) {
    for ((kind, key), (acked, pending)) in m.iter_mut() {
        let got = s
            .get_state(kind, key)
            .unwrap_or_else(|e| panic!("{ctx}: state record {kind}/{key} is unreadable: {e}"))
            .map(|r| r.value);
        assert!(
            got == *acked || pending.as_ref() == Some(&got),
            "{ctx}: state record {kind}/{key} is neither the acknowledged value nor the one being written"
        );
        assert_eq!(
            s.list_state(kind).unwrap().contains(key),
            got.is_some(),
            "{ctx}: the listing of {kind} disagrees about {key}"
        );
        *acked = got;
        *pending = None;
    }
}

/// Replacing (small by large and back), creating (in a new kind's
/// directory too), removing state records: power cut at every operation,
/// and an I/O error at every operation. A cut leaves each record old or
/// new, an error leaves it old (or new: the rename may have happened), and
/// no temp file. Fails if a record is written in place, or without the
/// fsync of the file or of its directory.
#[test]
fn state_records_survive_a_crash_at_every_operation() {
    fn prefix(fs: &SimFs, m: &mut StateModel) -> Store {
        let (s, _) = open_sim(fs).unwrap();
        let mut rng = Rng::new(90);
        for key in ["a", "b", "c"] {
            state_set(&s, m, "locations", key, Some(state_value(&mut rng))).unwrap();
        }
        state_set(&s, m, "reputation", "peers", Some(state_value(&mut rng))).unwrap();
        s
    }
    fn scenario(s: &Store, m: &mut StateModel) -> Result<(), StoreError> {
        let mut rng = Rng::new(91);
        state_set(s, m, "locations", "a", Some(rng.bytes(9000)))?;
        state_set(s, m, "locations", "d", Some(state_value(&mut rng)))?;
        state_set(s, m, "locations", "b", None)?;
        state_set(s, m, "tombstones", "x", Some(state_value(&mut rng)))?;
        state_set(s, m, "reputation", "peers", Some(state_value(&mut rng)))?;
        state_set(s, m, "locations", "a", Some(rng.bytes(20)))?;
        state_set(s, m, "tombstones", "x", None)?;
        state_set(s, m, "locations", "c", Some(rng.bytes(5000)))
    }
    // The scenario on a fresh store, `arm` setting up the fault first.
    let run = |arm: &dyn Fn(&SimFs)| {
        let fs = SimFs::new(root());
        let mut m = StateModel::new();
        let s = prefix(&fs, &mut m);
        arm(&fs);
        let r = scenario(&s, &mut m);
        (fs, s, m, r)
    };
    let start = std::cell::Cell::new(0);
    let (fs, _, _, r) = run(&|fs| start.set(fs.ctl.ops()));
    r.unwrap();
    let total = fs.ctl.ops() - start.get();
    for n in 0..=total {
        for variant in 0..2 {
            let ctx = format!("state scenario cut at op {n}/{total} (variant {variant})");
            let (fs, s, mut m, r) = run(&|fs| fs.ctl.crash_after(n));
            if let Err(e) = r {
                assert!(fs.ctl.crashed(), "{ctx}: failed without a crash: {e}");
            }
            let image = fs.crash_image(&mut Rng::new(n * 2 + variant));
            drop(s);
            let (s, _) = open_sim(&image).unwrap_or_else(|e| panic!("{ctx}: open failed: {e}"));
            verify_state(&s, &mut m, &ctx);
            assert!(image.files_in(&root().join(TMP_DIR)).is_empty(), "{ctx}: tmp/ is empty after open");
        }

        let ctx = format!("state scenario with an I/O error at op {n}/{total}");
        let (fs, s, mut m, r) = run(&|fs| fs.ctl.fail_once_after(n));
        if let Err(e) = r {
            assert!(fs.ctl.failed(), "{ctx}: failed without an injected error: {e}");
        }
        fs.ctl.disarm();
        assert!(fs.files_in(&root().join(TMP_DIR)).is_empty(), "{ctx}: a failed write left a temp file");
        verify_state(&s, &mut m, &ctx);
    }
}

/// Moving an older layout's files into state records, with power cut at
/// every operation: the next import (the node's next start) always ends
/// with every file's record in place and the old files gone.
#[test]
fn importing_old_state_files_survives_a_crash_at_every_operation() {
    let legacy = root().join("old-locations");
    let files: Vec<(String, Vec<u8>)> =
        (0..4u64).map(|i| (format!("f{i}"), Rng::new(i).bytes(100 + 3000 * i as usize))).collect();
    let setup = || {
        let fs = SimFs::new(root());
        let (s, _) = open_sim(&fs).unwrap();
        fs.create_dir(&legacy).unwrap();
        for (name, bytes) in &files {
            let mut f = fs.create_new(&legacy.join(name)).unwrap();
            f.write_all(bytes).unwrap();
            f.sync().unwrap();
        }
        // A leftover the import drops.
        drop(fs.create_new(&legacy.join("f0.tmp")).unwrap());
        fs.sync_dir(&legacy).unwrap();
        fs.sync_dir(root()).unwrap();
        (fs, s)
    };
    let keep = |name: &str, b: Vec<u8>| (!name.ends_with(".tmp")).then_some(b);
    let total = {
        let (fs, s) = setup();
        let start = fs.ctl.ops();
        assert_eq!(s.import_state_dir("locations", &legacy, keep).unwrap(), files.len());
        fs.ctl.ops() - start
    };
    for n in 0..=total {
        let ctx = format!("import cut at op {n}/{total}");
        let (fs, s) = setup();
        fs.ctl.crash_after(n);
        if let Err(e) = s.import_state_dir("locations", &legacy, keep) {
            assert!(fs.ctl.crashed(), "{ctx}: failed without a crash: {e}");
        }
        let image = fs.crash_image(&mut Rng::new(n));
        drop(s);
        let (s, _) = open_sim(&image).unwrap();
        s.import_state_dir("locations", &legacy, keep).unwrap_or_else(|e| panic!("{ctx}: import again: {e}"));
        for (name, bytes) in &files {
            let got = s.get_state("locations", name).unwrap().unwrap_or_else(|| panic!("{ctx}: {name} was lost"));
            assert_eq!(&got.value, bytes, "{ctx}: {name} differs");
        }
        assert_eq!(s.list_state("locations").unwrap().len(), files.len(), "{ctx}: nothing else is imported");
        assert!(image.list_dir(&legacy).is_err(), "{ctx}: the old directory is gone");
    }
}
