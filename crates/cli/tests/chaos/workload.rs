//! The workload: puts and gets of random sizes through random live nodes,
//! run on its own thread while faults come and go, and the record of every
//! acknowledged put that the invariant is checked against.
//!
//! A put is *acknowledged* when `datamesh put` exits 0 and prints a CID. Its
//! bytes are not kept: each file is generated from its own seed, so the
//! record is (CID, seed, size, kind) and every read is compared byte for
//! byte against the regenerated content. A get may fail while faults are in
//! force, but only cleanly: a non-zero exit with an `error:` message and no
//! output file. A get that exits 0 with other bytes, or that leaves bytes
//! behind when it fails, is recorded as a violation and fails the suite.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datamesh_core::testdata::{SplitMix64, pseudo_random};

use super::cluster::{CliOut, Cluster};

/// How long one CLI call may take before it is killed (the node's peer
/// requests time out at 30 s).
pub const OP_TIMEOUT: Duration = Duration::from_secs(45);

/// The erasure code of every put.
pub const K: u16 = 4;
/// The erasure code of every put.
pub const M: u16 = 2;
/// Chunk size of every put: small, so files have several chunks.
pub const CHUNK: usize = 256 * 1024;

/// What a file's bytes are made of.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// Incompressible.
    Random,
    /// Compressible (zstd pays).
    Text,
}

/// An acknowledged put.
#[derive(Debug, Clone)]
pub struct Acked {
    pub cid: String,
    pub seed: u64,
    pub size: usize,
    pub kind: Kind,
    /// The node the put went through.
    pub via: usize,
    pub round: usize,
    /// k+m of its erasure code.
    pub shards: u16,
}

impl Acked {
    /// The file's bytes.
    pub fn data(&self) -> Vec<u8> {
        make(self.kind, self.size, self.seed)
    }
}

/// The bytes of a file of `kind` and `size` made from `seed`.
pub fn make(kind: Kind, size: usize, seed: u64) -> Vec<u8> {
    match kind {
        Kind::Random => pseudo_random(size, seed),
        Kind::Text => text_like(size, seed),
    }
}

/// Text-like bytes that compress.
fn text_like(len: usize, seed: u64) -> Vec<u8> {
    let words = ["storage", "network", "shard", "chunk", "erasure", "node", "the", "of", "data", "mesh", "\n"];
    let mut r = SplitMix64::new(seed);
    let mut v = Vec::with_capacity(len + 16);
    while v.len() < len {
        v.extend_from_slice(words[(r.next_u64() % words.len() as u64) as usize].as_bytes());
        v.push(b' ');
    }
    v.truncate(len);
    v
}

/// Counters of what the workload saw.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub puts_acked: usize,
    pub puts_failed: usize,
    pub gets_ok: usize,
    pub gets_failed: usize,
    /// CLI calls killed at [`OP_TIMEOUT`].
    pub timeouts: usize,
    /// Failure messages (normalised) and how often each was seen.
    pub errors: BTreeMap<String, usize>,
    /// Wrong bytes, or a failed get that left bytes behind: must stay empty.
    pub violations: Vec<String>,
}

/// The operation in flight, for the fault injector to aim a kill at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Put,
    Get,
}

/// The workload's shared state.
pub struct Workload {
    pub acked: Mutex<Vec<Arc<Acked>>>,
    pub stats: Mutex<Stats>,
    pub round: AtomicUsize,
    paused: AtomicBool,
    /// Set while paused and no operation is in flight.
    idle: AtomicBool,
    stop: AtomicBool,
    /// (node, op) in flight.
    pub current: Mutex<Option<(usize, Op)>>,
    dir: PathBuf,
    puts_per_round: usize,
    puts_this_round: AtomicUsize,
}

/// Normalises an error message for counting: the first line, with CIDs,
/// peer ids and numbers blanked.
pub fn error_kind(stderr: &str) -> String {
    let line = stderr.lines().find(|l| l.contains("error")).or_else(|| stderr.lines().last()).unwrap_or("").trim();
    let words: Vec<String> = line
        .split_whitespace()
        .map(|w| {
            if w.len() > 20 && w.chars().any(|c| c.is_ascii_digit()) {
                "<id>".to_string()
            } else if w.chars().any(|c| c.is_ascii_digit()) {
                "<n>".to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    let s = words.join(" ");
    s.chars().take(160).collect()
}

impl Workload {
    pub fn new(dir: &Path, puts_per_round: usize) -> Workload {
        std::fs::create_dir_all(dir).unwrap();
        Workload {
            acked: Mutex::new(Vec::new()),
            stats: Mutex::new(Stats::default()),
            round: AtomicUsize::new(0),
            paused: AtomicBool::new(true),
            idle: AtomicBool::new(true),
            stop: AtomicBool::new(false),
            current: Mutex::new(None),
            dir: dir.to_owned(),
            puts_per_round,
            puts_this_round: AtomicUsize::new(0),
        }
    }

    /// Starts (or resumes) operations for round `round`.
    pub fn resume(&self, round: usize) {
        if self.round.swap(round, Ordering::SeqCst) != round {
            self.puts_this_round.store(0, Ordering::SeqCst);
        }
        self.idle.store(false, Ordering::SeqCst);
        self.paused.store(false, Ordering::SeqCst);
    }

    /// Pauses, and waits for the operation in flight to end.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        let start = Instant::now();
        while !self.idle.load(Ordering::SeqCst) && start.elapsed() < OP_TIMEOUT * 2 {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Ends the workload thread.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.paused.store(true, Ordering::SeqCst);
    }

    /// The acknowledged puts so far.
    pub fn acked(&self) -> Vec<Arc<Acked>> {
        self.acked.lock().unwrap().clone()
    }

    fn error(&self, o: &CliOut) {
        let mut s = self.stats.lock().unwrap();
        if o.status.is_none() {
            s.timeouts += 1;
            *s.errors.entry("(timed out)".into()).or_default() += 1;
        } else {
            *s.errors.entry(error_kind(&o.stderr)).or_default() += 1;
        }
    }

    /// The workload loop; runs until [`Workload::stop`].
    pub fn run(&self, cluster: &Cluster, seed: u64) {
        let mut rng = SplitMix64::new(seed ^ 0x5_eed0_ff11_e5e5);
        let mut n: u64 = 0;
        while !self.stop.load(Ordering::SeqCst) {
            if self.paused.load(Ordering::SeqCst) {
                self.idle.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
            let live = cluster.live();
            if live.is_empty() {
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            let node = live[(rng.next_u64() % live.len() as u64) as usize];
            let acked = self.acked();
            let put = acked.is_empty()
                || (self.puts_this_round.load(Ordering::SeqCst) < self.puts_per_round && rng.next_u64() % 100 < 50);
            n += 1;
            if put {
                let (kind, size) = pick_size(&mut rng);
                let file_seed = rng.next_u64();
                self.put(cluster, node, kind, size, file_seed, n);
            } else {
                let a = acked[(rng.next_u64() % acked.len() as u64) as usize].clone();
                self.get(cluster, node, &a, n);
            }
            std::thread::sleep(Duration::from_millis(50 + rng.next_u64() % 250));
        }
        self.idle.store(true, Ordering::SeqCst);
    }

    fn put(&self, cluster: &Cluster, node: usize, kind: Kind, size: usize, seed: u64, n: u64) {
        let path = self.dir.join(format!("put-{n}"));
        std::fs::write(&path, make(kind, size, seed)).unwrap();
        *self.current.lock().unwrap() = Some((node, Op::Put));
        let (k, m, chunk) = (K.to_string(), M.to_string(), format!("{CHUNK}B"));
        let o = cluster.cli(
            node,
            &["put", path.to_str().unwrap(), "-k", &k, "-m", &m, "--chunk-size", &chunk, "--quiet"],
            OP_TIMEOUT,
        );
        *self.current.lock().unwrap() = None;
        let _ = std::fs::remove_file(&path);
        let cid = o.stdout.lines().last().unwrap_or("").trim().to_string();
        if o.ok() && cid.starts_with("baf") {
            self.puts_this_round.fetch_add(1, Ordering::SeqCst);
            let round = self.round.load(Ordering::SeqCst);
            self.acked.lock().unwrap().push(Arc::new(Acked { cid, seed, size, kind, via: node, round, shards: K + M }));
            self.stats.lock().unwrap().puts_acked += 1;
        } else {
            self.stats.lock().unwrap().puts_failed += 1;
            self.error(&o);
        }
    }

    fn get(&self, cluster: &Cluster, node: usize, a: &Acked, n: u64) {
        *self.current.lock().unwrap() = Some((node, Op::Get));
        let r = read_back(cluster, node, a, &self.dir.join(format!("get-{n}")));
        *self.current.lock().unwrap() = None;
        match r {
            Read::Ok => self.stats.lock().unwrap().gets_ok += 1,
            Read::Failed(o) => {
                self.stats.lock().unwrap().gets_failed += 1;
                self.error(&o);
            }
            Read::Violation(v) => {
                let mut s = self.stats.lock().unwrap();
                s.gets_failed += 1;
                s.violations.push(format!("workload get via node {node}: {v}"));
            }
        }
    }
}

/// Sizes: the boundaries around a chunk (0, 1, chunk−1, chunk, chunk+1)
/// now and then, otherwise anything up to five chunks.
fn pick_size(rng: &mut SplitMix64) -> (Kind, usize) {
    let kind = if rng.next_u64().is_multiple_of(4) { Kind::Text } else { Kind::Random };
    let size = match rng.next_u64() % 10 {
        0 => [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK][(rng.next_u64() % 6) as usize],
        _ => (rng.next_u64() % (5 * CHUNK as u64)) as usize,
    };
    (kind, size)
}

/// The outcome of one verified read.
pub enum Read {
    Ok,
    /// A clean failure: non-zero exit (or timeout), nothing written.
    Failed(CliOut),
    /// Wrong bytes, or bytes left behind by a failed get.
    Violation(String),
}

/// Gets `a` through node `node` into `out` and compares byte for byte.
pub fn read_back(cluster: &Cluster, node: usize, a: &Acked, out: &Path) -> Read {
    let _ = std::fs::remove_file(out);
    let o = cluster.cli(node, &["get", &a.cid, "-o", out.to_str().unwrap(), "--quiet"], OP_TIMEOUT);
    let got = std::fs::read(out).ok();
    let _ = std::fs::remove_file(out);
    let partial = out.with_file_name(format!("{}.datamesh-partial", out.file_name().unwrap().to_string_lossy()));
    let _ = std::fs::remove_file(&partial);
    if o.ok() {
        match got {
            Some(b) if b == a.data() => Read::Ok,
            Some(b) => Read::Violation(format!(
                "WRONG BYTES for {} (seed {:#x}, size {}, put in round {} via node {}): got {} bytes",
                a.cid,
                a.seed,
                a.size,
                a.round,
                a.via,
                b.len()
            )),
            None => Read::Violation(format!("get of {} exited 0 but wrote no file", a.cid)),
        }
    } else if let Some(b) = got {
        Read::Violation(format!(
            "failed get of {} left {} bytes at the output path: {}",
            a.cid,
            b.len(),
            o.stderr.trim()
        ))
    } else if o.status.is_some() && !o.stderr.contains("error") {
        Read::Violation(format!("get of {} failed without an error message: {:?}", a.cid, o))
    } else {
        Read::Failed(o)
    }
}
