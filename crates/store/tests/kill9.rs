//! kill -9 crash loop on the real file system.
//!
//! The parent re-executes this test binary as a child writer (selected by
//! an environment variable). The child opens the store and loops: upload a
//! file (6 shards under a guard, manifest, pin), sometimes put and delete a
//! loose shard, unpin an older file, run GC. It prints a line when it starts
//! an operation and another once the operation returned `Ok` (acknowledged).
//! The parent kills it with SIGKILL at a random moment — right after spawn
//! (during open), right after it is ready, or after a random number of
//! acknowledgements, always waiting on output with a timeout, never on a
//! sleep — then opens the store itself and checks:
//! - every acknowledged put reads back byte-identical, every acknowledged
//!   pin is there, every acknowledged delete or collection stayed done;
//! - open found no index entry without its file and no torn file;
//! - the files on disk are exactly the indexed ones, `tmp/` is empty, and a
//!   scrub finds nothing corrupt;
//! - the state record the child overwrites after every file (`put_state`)
//!   holds the last acknowledged value or the one being written, whole.
//!
//! `DATAMESH_KILL9_ITERATIONS` sets the number of kills (default 25 in release,
//! 10 in debug builds).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use datamesh_core::manifest::{MANIFEST_VERSION, merkle_root};
use datamesh_core::{ChunkEntry, Chunking, Cid, Compression, Erasure, Manifest};
use datamesh_store::{PinInfo, ShardMeta, Store, StoreConfig};

const DIR_ENV: &str = "DATAMESH_STORE_KILL9_DIR";
const SEED_ENV: &str = "DATAMESH_STORE_KILL9_SEED";
/// Generous: fsync latency on a loaded CI machine can reach seconds.
const WAIT: Duration = Duration::from_secs(60);

fn cfg() -> StoreConfig {
    StoreConfig { capacity_bytes: 1 << 34, cache_bytes: 0 }
}

/// Deterministic bytes for shard `j` of file `i` of child `seed`.
fn shard_bytes(seed: u64, i: u64, j: u64) -> Vec<u8> {
    let mut x = (seed << 40) ^ (i << 8) ^ j ^ 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let len = 1 + (next() % 48_000) as usize;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The one state record every child overwrites, once per file.
const STATE_KIND: &str = "kill9";
const STATE_KEY: &str = "latest";

/// Deterministic contents of the state record written after file `i` of
/// child `seed` (up to 48 KB: many pages, so a torn write would show).
fn state_value(seed: u64, i: u64) -> Vec<u8> {
    shard_bytes(seed, i, 77)
}

fn file_shards(seed: u64, i: u64) -> Vec<(Cid, Vec<u8>)> {
    (0..6).map(|j| shard_bytes(seed, i, j)).map(|b| (Cid::raw_blake3(&b), b)).collect()
}

fn loose_shard(seed: u64, i: u64) -> (Cid, Vec<u8>) {
    let b = shard_bytes(seed, i, 99);
    (Cid::raw_blake3(&b), b)
}

fn file_manifest(shards: &[(Cid, Vec<u8>)]) -> (Cid, Vec<u8>) {
    let chunk = ChunkEntry {
        plain_size: 10,
        stored_size: 10,
        compression: Compression::None,
        cid: Cid::raw_blake3(&shards[0].0.to_bytes()),
        shards: shards.iter().map(|s| s.0).collect(),
    };
    let m = Manifest {
        version: MANIFEST_VERSION,
        size: 10,
        chunking: Chunking::Fixed { size: 10 },
        erasure: Erasure::DEFAULT,
        encryption: None,
        unixfs: None,
        owner: None,
        writer: None,
        merkle_root: merkle_root(std::iter::once(&chunk.cid)),
        chunks: vec![chunk],
    };
    (m.cid(), m.encode())
}

fn say(line: String) {
    let mut out = std::io::stdout().lock();
    // "@@ " finds the message even when the test harness printed something
    // before it on the same line; the trailing " ." marks a complete line
    // (a line cut by the kill is ignored).
    let _ = writeln!(out, "@@ {line} .");
    let _ = out.flush();
}

/// The child writer. A no-op unless run by the parent with `DIR_ENV` set.
#[test]
fn kill9_child_writer() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let seed: u64 = std::env::var(SEED_ENV).unwrap().parse().unwrap();
    let (store, _) = match Store::open(Path::new(&dir), cfg()) {
        Ok(s) => s,
        Err(e) => {
            say(format!("ERR {e}"));
            std::process::exit(2);
        }
    };
    say("READY".into());
    let mut pinned = Vec::new();
    for i in 0u64.. {
        let shards = file_shards(seed, i);
        let guard = store.protect();
        let batch: Vec<(Cid, &[u8], ShardMeta)> = shards
            .iter()
            .enumerate()
            .map(|(j, (c, b))| (*c, b.as_slice(), ShardMeta { chunk: shards[0].0, index: j as u16 }))
            .collect();
        store.put_shards(&batch, Some(&guard)).unwrap();
        say(format!("PUT {seed} {i}"));
        let (mcid, mbytes) = file_manifest(&shards);
        guard.add(mcid);
        store.put_manifest(&mcid, &mbytes).unwrap();
        store
            .pin(&mcid, PinInfo { name: Some(format!("{seed}-{i}")), size: 10, created_at: i, replica: false })
            .unwrap();
        say(format!("PIN {seed} {i}"));
        drop(guard);
        pinned.push(i);

        say(format!("STATING {seed} {i}"));
        store.put_state(STATE_KIND, STATE_KEY, &state_value(seed, i)).unwrap();
        say(format!("STATE {seed} {i}"));

        if i % 3 == 1 {
            let (c, b) = loose_shard(seed, i);
            store.put_shards(&[(c, &b, ShardMeta { chunk: c, index: 0 })], None).unwrap();
            say(format!("LOOSE {seed} {i}"));
            say(format!("DELETING {seed} {i}"));
            assert!(store.delete_shard(&c).unwrap());
            say(format!("DEL {seed} {i}"));
        }
        if i % 4 == 3 {
            let j = pinned.remove(0);
            say(format!("UNPINNING {seed} {j}"));
            let (mcid, _) = file_manifest(&file_shards(seed, j));
            assert!(store.unpin(&mcid).unwrap());
            say(format!("UNPIN {seed} {j}"));
        }
        if i % 6 == 5 {
            say("GCSTART".into());
            store.gc().unwrap();
            say("GC".into());
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    /// Shards acknowledged; the pin may or may not have landed.
    Put,
    /// Pinned: everything must be there.
    Pinned,
    /// Unpin started; the pin may or may not be gone. Shards stay until a GC.
    Unpinning,
    /// Unpin acknowledged. Shards stay until a GC.
    Unpinned,
    /// An acknowledged GC found it unpinned: shards and manifest are gone.
    Collected,
    /// Cannot be known (a GC ran while its pin was uncertain).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loose {
    Present,
    Deleting,
    Absent,
}

#[derive(Debug, Default)]
struct Model {
    files: BTreeMap<(u64, u64), File>,
    loose: BTreeMap<(u64, u64), Loose>,
    /// Files an unacknowledged GC may have collected.
    gc_pending: Vec<(u64, u64)>,
    /// A GC started and was not acknowledged yet.
    gc_running: bool,
    /// The state record's last acknowledged value, as (child, file).
    state: Option<(u64, u64)>,
    /// The value a state write was writing when it was not acknowledged yet.
    state_pending: Option<(u64, u64)>,
    acks: usize,
}

impl Model {
    fn apply(&mut self, line: &str) {
        let Some(line) = message(line) else {
            return;
        };
        let w: Vec<&str> = line.split(' ').collect();
        let id = || (w[1].parse::<u64>().unwrap(), w[2].parse::<u64>().unwrap());
        match w[0] {
            "PUT" => {
                self.files.insert(id(), File::Put);
            }
            "PIN" => {
                self.files.insert(id(), File::Pinned);
            }
            "UNPINNING" => {
                self.files.insert(id(), File::Unpinning);
            }
            "UNPIN" => {
                self.files.insert(id(), File::Unpinned);
            }
            "STATING" => {
                self.state_pending = Some(id());
            }
            "STATE" => {
                self.state = Some(id());
                self.state_pending = None;
            }
            "LOOSE" => {
                self.loose.insert(id(), Loose::Present);
            }
            "DELETING" => {
                self.loose.insert(id(), Loose::Deleting);
            }
            "DEL" => {
                self.loose.insert(id(), Loose::Absent);
            }
            "GCSTART" => {
                self.gc_running = true;
                for (k, f) in &mut self.files {
                    match f {
                        File::Unpinned => self.gc_pending.push(*k),
                        File::Put | File::Unpinning => *f = File::Unknown,
                        _ => {}
                    }
                }
            }
            "GC" => {
                self.gc_running = false;
                for k in self.gc_pending.drain(..) {
                    self.files.insert(k, File::Collected);
                }
                // Every loose shard is unreferenced: collected or deleted.
                for l in self.loose.values_mut() {
                    *l = Loose::Absent;
                }
            }
            _ => return,
        }
        self.acks += 1;
    }

    /// After a kill: a GC that started but was not acknowledged may or may
    /// not have collected its candidates.
    fn after_kill(&mut self) {
        if !std::mem::take(&mut self.gc_running) {
            return;
        }
        for k in self.gc_pending.drain(..) {
            self.files.insert(k, File::Unknown);
        }
        for l in self.loose.values_mut() {
            // The unacknowledged GC may have collected loose shards too.
            if *l == Loose::Present {
                *l = Loose::Deleting;
            }
        }
    }
}

/// The child's message in an output line, if the line carries a complete one.
fn message(line: &str) -> Option<&str> {
    let at = line.rfind("@@ ")?;
    line[at + 3..].strip_suffix(" .")
}

fn all_files(dir: &Path, sub: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(dir.join(sub)).unwrap() {
        let d = d.unwrap().path();
        for f in std::fs::read_dir(&d).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

fn object_file(dir: &Path, sub: &str, c: &Cid) -> PathBuf {
    dir.join(sub).join(format!("{:02x}", c.digest()[0])).join(c.to_string())
}

fn check(dir: &Path, m: &Model, ctx: &str) {
    let (s, report) = Store::open(dir, cfg()).unwrap_or_else(|e| panic!("{ctx}: open after kill failed: {e}"));
    assert_eq!(report.missing_dropped, 0, "{ctx}: an index entry outlived its file: {report:?}");
    assert_eq!(report.corrupt_quarantined, 0, "{ctx}: a torn file was in place: {report:?}");
    for (&(seed, i), &state) in &m.files {
        let shards = file_shards(seed, i);
        let (mcid, mbytes) = file_manifest(&shards);
        let must_exist = matches!(state, File::Put | File::Pinned | File::Unpinning | File::Unpinned);
        for (c, b) in &shards {
            if must_exist {
                let got =
                    s.get_shard(c).unwrap_or_else(|e| panic!("{ctx}: acked shard of file {seed}/{i} ({state:?}): {e}"));
                assert!(got == *b, "{ctx}: shard of {seed}/{i} differs");
            } else if state == File::Collected {
                assert!(!s.has_shard(c).unwrap(), "{ctx}: collected shard of {seed}/{i} is back");
            }
        }
        match state {
            File::Pinned => {
                assert_eq!(s.get_manifest(&mcid).unwrap(), mbytes, "{ctx}: manifest of {seed}/{i}");
                assert!(s.pin_info(&mcid).unwrap().is_some(), "{ctx}: pin of {seed}/{i} lost");
            }
            File::Unpinned => assert!(s.pin_info(&mcid).unwrap().is_none(), "{ctx}: unpin of {seed}/{i} undone"),
            File::Collected => assert!(!s.has_manifest(&mcid).unwrap(), "{ctx}: collected manifest is back"),
            _ => {}
        }
    }
    for (&(seed, i), &state) in &m.loose {
        let (c, b) = loose_shard(seed, i);
        match state {
            Loose::Present => {
                assert_eq!(s.get_shard(&c).unwrap(), b, "{ctx}: loose shard {seed}/{i}")
            }
            Loose::Absent => assert!(!s.has_shard(&c).unwrap(), "{ctx}: deleted shard {seed}/{i} is back"),
            Loose::Deleting => {}
        }
    }
    let scrub = s.scrub().unwrap();
    assert!(scrub.corrupt.is_empty(), "{ctx}: scrub found corrupt data: {:?}", scrub.corrupt);
    for (sub, listed) in [("shards", s.list_shards().unwrap()), ("manifests", s.list_manifests().unwrap())] {
        let mut want: Vec<PathBuf> = listed.iter().map(|c| object_file(dir, sub, c)).collect();
        want.sort();
        assert_eq!(all_files(dir, sub), want, "{ctx}: {sub} on disk differ from the index");
    }
    assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0, "{ctx}: tmp/ not empty");
}

/// The state record holds its last acknowledged value or the one being
/// written when the child was killed, whole: never torn, never lost. The
/// model takes what survived.
fn check_state(dir: &Path, m: &mut Model, ctx: &str) {
    let (s, _) = Store::open(dir, cfg()).unwrap_or_else(|e| panic!("{ctx}: open after kill failed: {e}"));
    let got = s
        .get_state(STATE_KIND, STATE_KEY)
        .unwrap_or_else(|e| panic!("{ctx}: the state record is unreadable (torn?): {e}"))
        .map(|r| r.value);
    let is = |id: Option<(u64, u64)>| got == id.map(|(seed, i)| state_value(seed, i));
    if is(m.state) {
        m.state_pending = None;
    } else if m.state_pending.is_some() && is(m.state_pending) {
        m.state = m.state_pending.take();
    } else {
        panic!(
            "{ctx}: the state record is neither the acknowledged value {:?} nor the one being written {:?}",
            m.state, m.state_pending
        );
    }
}

/// Reads the child's stdout on a thread, so the parent can wait on lines
/// with a timeout. Only complete lines (ending in '\n') are passed on.
fn spawn_reader(stdout: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        loop {
            let mut buf = Vec::new();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) if buf.ends_with(b"\n") => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if tx.send(line).is_err() {
                        break;
                    }
                }
                Ok(_) => break, // a torn last line
            }
        }
    });
    rx
}

#[test]
fn kill9_loop_loses_no_acknowledged_write() {
    if std::env::var(DIR_ENV).is_ok() {
        return; // we are a child
    }
    let iterations: u64 = std::env::var("DATAMESH_KILL9_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 10 } else { 25 });
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut model = Model::default();
    let mut rng = 0x2545_F491_4F6C_DD1Du64 ^ u64::from(std::process::id());
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let started = Instant::now();
    for seed in 1..=iterations {
        let mode = next() % 8;
        let want_acks = model.acks + 1 + (next() % 60) as usize;
        let mut child = Command::new(&exe)
            .args(["kill9_child_writer", "--exact", "--nocapture", "--test-threads=1"])
            .env(DIR_ENV, dir.path())
            .env(SEED_ENV, seed.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = spawn_reader(child.stdout.take().unwrap());
        let mut lines = Vec::new();
        let wait_for = |pred: &dyn Fn(&Model, &str) -> bool, model: &mut Model, lines: &mut Vec<String>| {
            let deadline = Instant::now() + WAIT;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(line) => {
                        model.apply(&line);
                        let done = pred(model, &line);
                        lines.push(line);
                        if done {
                            return true;
                        }
                    }
                    Err(_) => return false,
                }
            }
        };
        let ok = match mode {
            // Kill during startup and open.
            0 => true,
            // Kill as soon as it is ready (racing the first put).
            1 => wait_for(&|_, l| message(l) == Some("READY"), &mut model, &mut lines),
            _ => wait_for(&|m, _| m.acks >= want_acks, &mut model, &mut lines),
        };
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        // Lines printed before the kill are still in the pipe.
        while let Ok(line) = rx.recv_timeout(WAIT) {
            model.apply(&line);
            lines.push(line);
        }
        assert!(
            ok && !lines.iter().any(|l| message(l).is_some_and(|m| m.starts_with("ERR"))),
            "child {seed} failed or never reached its kill point ({status}):\n{}\n{err}",
            lines.join("\n")
        );
        model.after_kill();
        let ctx = format!("after kill {seed} (mode {mode}, {} acks)", model.acks);
        check(dir.path(), &model, &ctx);
        check_state(dir.path(), &mut model, &ctx);
    }
    assert!(model.acks > 0, "the children acknowledged nothing");
    assert!(model.files.values().any(|f| *f == File::Collected), "no GC was ever acknowledged");
    assert!(model.state.is_some(), "no state record write was ever acknowledged");
    eprintln!("kill9: {iterations} kills, {} acks, {:?}", model.acks, started.elapsed());
}
