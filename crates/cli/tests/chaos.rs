//! The chaos suite: no acknowledged write is lost.
//!
//! Eight real `datamesh node` processes run as hosts in network namespaces
//! the suite makes itself (`chaos/netlab.rs`: veth pairs into a bridge,
//! unique names and a unique /24 per run, removed on drop and on panic, and
//! leftovers of a SIGKILLed run swept at the next start). A workload of puts
//! and gets of random sizes (`chaos/workload.rs`) runs through random live
//! nodes while the suite injects faults, round after round. Each round has
//! four episodes, each healed and brought back to full redundancy before
//! the next:
//!
//! 1. **crash**: `kill -9` of one or two nodes, aimed at a node serving a
//!    put or a get half the time, the second one once the first is OFFLINE
//!    and being repaired around; bit flips and truncations in shard files of
//!    the dead nodes (or, with one dead, of one live node); restart.
//! 2. **partition**: one or two hosts cut off from the rest by nftables
//!    DROP rules in every namespace, sometimes with a kill -9 of a cut-off
//!    node; heal.
//! 3. **degraded network, full disk**: 20% random packet loss on one or two
//!    hosts (nftables `numgen random mod 100 < 20 drop`), `tc tbf` bandwidth
//!    caps on two others, and the disk of host 7 (its store is a small tmpfs)
//!    filled up: it must refuse new shards with a clear error and keep
//!    serving reads.
//! 4. **beyond m**: m+1 nodes killed at once, on purpose; every file is read
//!    through a live node meanwhile, and each read is whole or a clean error.
//!
//! **Fault budget.** A chunk never has two shards on one node, so faults
//! that touch at most m nodes at once take out at most m shards of any
//! chunk. The suite counts a node as faulty while it is dead, corrupted (until
//! its bad shards are quarantined and rebuilt), cut off (the minority side of
//! a partition, from the majority's view) or losing packets, and asserts the
//! count never exceeds m. A full disk and a bandwidth cap lose no shard and
//! are not counted; only the beyond-m episode breaks the budget, on purpose.
//! Reads during faults may fail, but only cleanly; wrong bytes fail the
//! suite at once.
//!
//! **Invariant**, checked after each episode is healed and in full at the
//! end of every round: every chunk of every acknowledged put is back to k+m
//! live shards within the repair deadline (polled with `datamesh stat
//! --json`), and at the end of the round every acknowledged put reads back
//! byte-identical through every live node.
//!
//! Environment: `CHAOS_SEED` (default fixed; `random` picks one; printed
//! either way), `CHAOS_ROUNDS` (default 3; `scripts/chaos 100` for the long
//! run), `CHAOS_PUTS_PER_ROUND` (default 8), `CHAOS_REPAIR_DEADLINE` in
//! seconds (default 60), `CHAOS_NODE_LOG` (the nodes' log filter; logs are
//! printed on failure). Needs root, iproute2 and nftables.

#![allow(clippy::unwrap_used)]

#[path = "chaos/cluster.rs"]
mod cluster;
mod common;
#[path = "chaos/netlab.rs"]
mod netlab;
#[path = "chaos/workload.rs"]
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::Cluster;
use datamesh_core::testdata::SplitMix64;
use workload::{Acked, K, M, Op, Read, Workload, read_back};

/// Hosts in the network.
const NODES: usize = 8;
/// The host whose store is a small tmpfs that the suite fills up.
const DISK_HOST: usize = 7;
/// Size of that tmpfs.
const DISK_MIB: u64 = 256;
/// The default seed: CI runs the same schedule every time.
const DEFAULT_SEED: u64 = 0xC4A0_5EED;

/// Fast health, repair and scrub timers, so rounds are short.
const FLAGS: [&str; 14] = [
    "--heartbeat-interval",
    "200ms",
    "--warning-after",
    "1s",
    "--offline-after",
    "3s",
    "--repair-interval",
    "2s",
    "--scrub-interval",
    "3s",
    "--hedge-after",
    "300ms",
    "--repair-rate",
    "64MiB",
];
const OFFLINE_AFTER: Duration = Duration::from_secs(3);

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            let v = v.trim();
            v.strip_prefix("0x")
                .map(|h| u64::from_str_radix(h, 16))
                .unwrap_or_else(|| v.parse())
                .unwrap_or_else(|e| panic!("{name}={v}: {e}"))
        }
        _ => default,
    }
}

fn seed() -> u64 {
    match std::env::var("CHAOS_SEED").as_deref() {
        Ok("random") => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
                ^ u64::from(std::process::id())
        }
        _ => env_u64("CHAOS_SEED", DEFAULT_SEED),
    }
}

/// Seconds since the suite started, for the log.
fn t(start: Instant) -> String {
    format!("[{:>6.1}s]", start.elapsed().as_secs_f64())
}

/// Nodes counted as faulty; never more than m at once.
#[derive(Default)]
struct Budget {
    faulty: BTreeSet<usize>,
    peak: usize,
}

impl Budget {
    fn take(&mut self, nodes: &[usize], why: &str) {
        self.faulty.extend(nodes.iter().copied());
        self.peak = self.peak.max(self.faulty.len());
        assert!(
            self.faulty.len() <= M as usize,
            "the suite broke its own fault budget ({why}): nodes {:?} faulty at once, m = {M}",
            self.faulty
        );
    }

    fn release_all(&mut self) {
        self.faulty.clear();
    }
}

/// `repair.shards_rebuilt` summed over nodes and restarts (each node's
/// counter starts again at 0 when it restarts; it is read before each kill).
#[derive(Default)]
struct Rebuilt {
    last: BTreeMap<usize, u64>,
    total: u64,
}

impl Rebuilt {
    fn read(&mut self, c: &Cluster, i: usize) {
        let Some(v) = c.status(i).and_then(|s| s["repair"]["shards_rebuilt"].as_u64()) else { return };
        let last = self.last.get(&i).copied().unwrap_or(0);
        self.total += if v >= last { v - last } else { v };
        self.last.insert(i, v);
    }

    fn forget(&mut self, i: usize) {
        self.last.insert(i, 0);
    }
}

/// Everything the suite prints at the end.
#[derive(Default)]
struct Report {
    rounds: usize,
    faults: BTreeMap<&'static str, usize>,
    /// When the kills landed: mid-put, mid-get, mid-repair, ...
    kill_moments: BTreeMap<&'static str, usize>,
    /// Per file: from a kill -9 until the file is back at k+m with the
    /// killed nodes still down (the repair worker rebuilt their shards).
    repair_times: Vec<Duration>,
    /// Per episode: from the heal until every acknowledged file is at k+m
    /// (reconnection, scrub of corrupted shards and their rebuild included).
    converge_times: Vec<Duration>,
    readback_gets: usize,
    readback_retries: usize,
    /// Acknowledged puts that did not read back from some node, or never got
    /// back to k+m: must stay empty.
    lost: BTreeMap<String, String>,
    violations: Vec<String>,
    disk_full_refusal: Option<String>,
    /// 6+2 puts through the full-disk node once freed (each needs a shard there).
    freed_disk_puts: usize,
    /// Reads with m+1 nodes down: whole, or failed cleanly.
    beyond_reads_ok: usize,
    beyond_reads_clean_errors: usize,
    /// (file, node) pairs, summed over rounds, where the node's `stat` saw
    /// fewer than k+m live shards at the end of a round although the network
    /// held k+m (a stale location record on that node); up to 64 files a
    /// round are looked at.
    stale_views: usize,
    stale_examples: Vec<String>,
    /// Files whose k+m was proven through a node whose location record was
    /// not the highest-`seq` one (the highest showed fewer: a forked record).
    older_views: usize,
}

impl Report {
    fn fault(&mut self, kind: &'static str, n: usize) {
        *self.faults.entry(kind).or_default() += n;
    }
}

fn pct(v: &[Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    let mut s = v.to_vec();
    s.sort();
    s[((s.len() - 1) as f64 * p).round() as usize]
}

/// Stops the workload thread when the suite unwinds, so the thread scope
/// can end.
struct StopOnDrop<'a>(&'a Workload);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// The suite's state across rounds.
struct Chaos<'a> {
    c: &'a Cluster,
    wl: &'a Workload,
    rng: SplitMix64,
    budget: Budget,
    rebuilt: Rebuilt,
    report: Report,
    start: Instant,
    deadline: Duration,
    /// Corrupted shard files not yet seen quarantined or mended.
    corrupted: Vec<(usize, PathBuf)>,
    scratch: PathBuf,
    last_kill: Instant,
    /// Every live node's `stat` must show k+m, not just one.
    strict: bool,
}

impl Chaos<'_> {
    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }

    /// `n` distinct random nodes out of `from`.
    fn pick(&mut self, from: &[usize], n: usize) -> Vec<usize> {
        let mut pool = from.to_vec();
        let mut out = Vec::new();
        while out.len() < n && !pool.is_empty() {
            let i = self.below(pool.len() as u64) as usize;
            out.push(pool.swap_remove(i));
        }
        out
    }

    fn log(&self, msg: impl AsRef<str>) {
        eprintln!("{} {}", t(self.start), msg.as_ref());
    }

    /// A victim for a kill: half the time the node serving the workload's
    /// operation in flight (waiting up to 3 s for one), else a random live
    /// node; never one in `exclude`. Returns the node and how it was hit.
    fn victim(&mut self, exclude: &[usize]) -> (usize, &'static str) {
        if self.chance(50) {
            let until = Instant::now() + Duration::from_secs(3);
            while Instant::now() < until {
                if let Some((n, op)) = *self.wl.current.lock().unwrap()
                    && !exclude.contains(&n)
                    && self.c.nodes[n].alive.load(std::sync::atomic::Ordering::SeqCst)
                {
                    return (n, if op == Op::Put { "kill9_mid_put" } else { "kill9_mid_get" });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let live: Vec<usize> = self.c.live().into_iter().filter(|n| !exclude.contains(n)).collect();
        (self.pick(&live, 1)[0], "kill9_idle")
    }

    fn kill(&mut self, n: usize, how: &'static str) {
        let mid_op = how == "kill9_mid_put" || how == "kill9_mid_get";
        // Bank the node's repair count first, unless that would let the
        // operation in flight finish before the kill lands.
        if !mid_op {
            self.rebuilt.read(self.c, n);
        }
        self.c.kill9(n);
        self.last_kill = Instant::now();
        self.rebuilt.forget(n);
        // Still in flight once the node is dead: the kill interrupted it.
        let how = if mid_op && !matches!(*self.wl.current.lock().unwrap(), Some((c, _)) if c == n) {
            "kill9_just_after_op"
        } else {
            how
        };
        self.report.fault("kill9", 1);
        *self.report.kill_moments.entry(how).or_default() += 1;
        self.log(format!("kill -9 node {n} ({how})"));
    }

    fn restart(&mut self, n: usize) {
        self.c.restart(n).unwrap_or_else(|e| panic!("restarting node {n}: {e}"));
        self.log(format!("node {n} restarted"));
    }

    /// Flips a bit in, or truncates, `files` random shard files of node `n`.
    fn corrupt(&mut self, n: usize, files: usize) {
        let all = self.c.nodes[n].shard_files();
        for path in self.pick_paths(&all, files) {
            let Ok(mut bytes) = std::fs::read(&path) else { continue };
            if bytes.is_empty() {
                continue;
            }
            if self.chance(70) {
                let at = self.below(bytes.len() as u64) as usize;
                let bit = self.below(8);
                bytes[at] ^= 1 << bit;
                std::fs::write(&path, &bytes).unwrap();
                self.report.fault("bitflip", 1);
                self.log(format!("bit flip in node {n}'s shard {} at byte {at}", name(&path)));
            } else {
                let len = self.below(bytes.len() as u64);
                std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(len).unwrap();
                self.report.fault("truncate", 1);
                self.log(format!("truncated node {n}'s shard {} to {len} of {} bytes", name(&path), bytes.len()));
            }
            self.corrupted.push((n, path));
        }
    }

    fn pick_paths(&mut self, all: &[PathBuf], n: usize) -> Vec<PathBuf> {
        let idx: Vec<usize> = (0..all.len()).collect();
        self.pick(&idx, n).into_iter().map(|i| all[i].clone()).collect()
    }

    // -- episodes -----------------------------------------------------------

    fn crash_episode(&mut self) {
        let (v1, how) = self.victim(&[]);
        if how == "kill9_idle" {
            let d = self.millis(0, 1500);
            std::thread::sleep(d);
        }
        self.budget.take(&[v1], "kill");
        self.kill(v1, how);
        let mut victims = vec![v1];
        if self.chance(70) {
            // Once v1 is OFFLINE its files' maintainers are rebuilding its
            // shards: the second kill lands in that repair.
            let d = OFFLINE_AFTER + self.millis(200, 1500);
            std::thread::sleep(d);
            let (v2, how) = self.victim(&victims);
            let how = if how == "kill9_idle" { "kill9_mid_repair" } else { how };
            self.budget.take(&[v2], "second kill");
            self.kill(v2, how);
            victims.push(v2);
        }
        for &v in &victims.clone() {
            let files = 1 + self.below(3) as usize;
            self.corrupt(v, files);
        }
        if victims.len() == 1 && self.chance(60) {
            let live: Vec<usize> = self.c.live();
            let n = self.pick(&live, 1)[0];
            self.budget.take(&[n], "corruption on a live node");
            let files = 1 + self.below(2) as usize;
            self.corrupt(n, files);
        }
        if self.chance(50) {
            // Stay down until the network has repaired around the dead:
            // each file's time from the last kill back to k+m is a repair time.
            match self.converge(self.last_kill, &format!("repair around dead nodes {victims:?}")) {
                Some(times) => self.report.repair_times.extend(times),
                None => self.fail_with_logs(&format!("repair around dead nodes {victims:?} did not converge")),
            }
        } else {
            // Back before or during the repair.
            let d = self.millis(500, 4500);
            std::thread::sleep(d);
        }
        for v in victims {
            self.restart(v);
        }
        self.heal("crash");
    }

    fn partition_episode(&mut self) {
        let size = if self.chance(70) { 2 } else { 1 };
        let all: Vec<usize> = (0..NODES).collect();
        let side = self.pick(&all, size);
        self.budget.take(&side, "partition minority");
        self.c.lab.partition(&side).unwrap();
        self.report.fault("partition", 1);
        self.log(format!("partition: nodes {side:?} cut off from the rest"));
        let hold = self.millis(4000, 8000);
        let mut killed = None;
        if self.chance(40) {
            let d = self.millis(500, 3000);
            std::thread::sleep(d);
            let v = side[0];
            self.kill(v, "kill9_in_partition");
            killed = Some(v);
            std::thread::sleep(hold.saturating_sub(d));
        } else {
            std::thread::sleep(hold);
        }
        self.c.lab.heal_partition();
        self.log("partition healed");
        if let Some(v) = killed {
            self.restart(v);
        }
        self.heal("partition");
    }

    fn degraded_episode(&mut self) {
        // The full disk first, while every node is healthy, so the probe
        // below can only fail for the disk's sake.
        let filler = self.fill_disk();
        self.report.fault("disk_full", 1);
        self.probe_full_disk();
        let all: Vec<usize> = (0..NODES).collect();
        let lossy_n = 1 + self.below(2) as usize;
        let lossy = self.pick(&all, lossy_n);
        self.budget.take(&lossy, "packet loss");
        for &h in &lossy {
            self.c.lab.packet_loss(h, 20).unwrap();
            self.report.fault("packet_loss", 1);
        }
        let rest: Vec<usize> = all.iter().copied().filter(|h| !lossy.contains(h)).collect();
        let capped = self.pick(&rest, 2);
        let mut caps = Vec::new();
        for &h in &capped {
            let mbit = [8, 16, 32][self.below(3) as usize];
            self.c.lab.cap_bandwidth(h, mbit).unwrap();
            self.report.fault("bandwidth_cap", 1);
            caps.push(format!("{h}@{mbit}mbit"));
        }
        self.log(format!("20% packet loss on {lossy:?}, bandwidth caps {caps:?}, disk of node {DISK_HOST} full"));
        let hold = self.millis(5000, 9000);
        std::thread::sleep(hold);
        for &h in &lossy {
            self.c.lab.heal_loss(h);
        }
        for &h in &capped {
            self.c.lab.heal_bandwidth(h);
        }
        std::fs::remove_file(&filler).unwrap();
        self.log("loss, caps and full disk healed");
        self.heal("degraded");
        self.probe_freed_disk();
    }

    /// Before the faults: one file of each boundary size (0, 1, chunk−1,
    /// chunk, chunk+1 bytes), each put through another node, so every run
    /// covers them whatever the seed.
    fn put_boundary_files(&mut self) {
        let c = workload::CHUNK;
        for (i, size) in [0, 1, c - 1, c, c + 1].into_iter().enumerate() {
            let seed = self.rng.next_u64();
            let path = self.scratch.join(format!("boundary-{size}"));
            std::fs::write(&path, workload::make(workload::Kind::Random, size, seed)).unwrap();
            let (k, m, chunk) = (K.to_string(), M.to_string(), format!("{c}B"));
            let via = i % NODES;
            let o = self.c.cli(
                via,
                &["put", path.to_str().unwrap(), "-k", &k, "-m", &m, "--chunk-size", &chunk, "--quiet"],
                workload::OP_TIMEOUT,
            );
            let cid = o.stdout.lines().last().unwrap_or("").trim().to_string();
            assert!(o.ok() && cid.starts_with("baf"), "put of {size} bytes with no fault in force: {}", o.stderr);
            let a = Acked { cid, seed, size, kind: workload::Kind::Random, via, round: 0, shards: K + M };
            self.wl.acked.lock().unwrap().push(Arc::new(a));
        }
        self.log("boundary files (0, 1, chunk-1, chunk, chunk+1 bytes) put");
    }

    /// Puts `file` as 6+2 through node DISK_HOST: on 8 nodes, every node,
    /// that one too, must take a shard. Placement needs all 8 ONLINE in the
    /// node's eyes at that moment; a peer that just reconnected after a
    /// heal may not be yet, which is no fault of the disk, so a placement
    /// refusal is retried (up to 5 times, waiting for the mesh between).
    fn put_on_every_node(&self, file: &std::path::Path) -> cluster::CliOut {
        let mut tries = 0;
        loop {
            let o = self.c.cli(
                DISK_HOST,
                &["put", file.to_str().unwrap(), "-k", "6", "-m", "2", "--quiet"],
                workload::OP_TIMEOUT,
            );
            tries += 1;
            if o.ok() || !o.stderr.contains("distinct online nodes") || tries == 5 {
                return o;
            }
            self.log(format!("6+2 put through node {DISK_HOST} found too few online nodes; again"));
            self.wait_mesh();
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Once its disk has room again, the node takes shards again: a 6+2 put
    /// through it (every node holds a shard) succeeds, and is one more
    /// acknowledged put to keep.
    fn probe_freed_disk(&mut self) {
        let (seed, size) = (self.rng.next_u64(), 300_000);
        let probe = self.scratch.join("probe-freed");
        std::fs::write(&probe, workload::make(workload::Kind::Random, size, seed)).unwrap();
        let o = self.put_on_every_node(&probe);
        let cid = o.stdout.lines().last().unwrap_or("").trim().to_string();
        if o.ok() && cid.starts_with("baf") {
            let round = self.wl.round.load(std::sync::atomic::Ordering::SeqCst);
            let a = Acked { cid, seed, size, kind: workload::Kind::Random, via: DISK_HOST, round, shards: 8 };
            self.wl.acked.lock().unwrap().push(Arc::new(a));
            self.report.freed_disk_puts += 1;
        } else {
            self.report.violations.push(format!(
                "node {DISK_HOST} did not take shards again once its disk was freed: {}",
                o.stderr.trim()
            ));
        }
    }

    /// Beyond the budget on purpose: m+1 nodes killed at once. Every file is
    /// read through a live node meanwhile: chunks with fewer than k live
    /// shards must fail cleanly, never with wrong bytes. The dead keep their
    /// disks, so once they are back every file must be whole again.
    fn beyond_budget_episode(&mut self) {
        let live = self.c.live();
        let victims = self.pick(&live, usize::from(M) + 1);
        self.report.fault("beyond_m", 1);
        for &v in &victims {
            self.kill(v, "kill9_beyond_m");
        }
        let files = self.wl.acked();
        let (mut ok, mut clean) = (0, 0);
        for a in &files {
            let live = self.c.live();
            let n = live[self.below(live.len() as u64) as usize];
            match read_back(self.c, n, a, &self.scratch.join("beyond")) {
                Read::Ok => ok += 1,
                Read::Failed(_) => clean += 1,
                Read::Violation(v) => self.report.violations.push(format!("with m+1 nodes down: {v}")),
            }
        }
        self.log(format!(
            "{} nodes {victims:?} down (m+1): {ok} files read back whole, {clean} failed cleanly",
            victims.len()
        ));
        self.report.beyond_reads_ok += ok;
        self.report.beyond_reads_clean_errors += clean;
        for v in victims {
            self.restart(v);
        }
        self.heal("beyond m");
    }

    /// Fills the tmpfs under node DISK_HOST's store; returns the filler.
    fn fill_disk(&mut self) -> PathBuf {
        use std::io::Write;
        let (_, mount) = self.c.disk.clone().unwrap();
        let filler = mount.join("chaos-filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0xA5u8; 1 << 20];
        let mut written = 0u64;
        // Whole MiBs, then smaller writes down to single bytes: ENOSPC at
        // every size.
        for size in [1 << 20, 1 << 12, 1] {
            while f.write_all(&block[..size]).is_ok() {
                written += size as u64;
            }
        }
        let _ = f.sync_all();
        self.log(format!("filled node {DISK_HOST}'s disk ({} MiB of filler)", written >> 20));
        filler
    }

    /// With the disk full, a put that must place a shard on that node fails
    /// with an error that says so, and the node still serves reads.
    fn probe_full_disk(&mut self) {
        let probe = self.scratch.join("probe");
        std::fs::write(&probe, datamesh_core::testdata::pseudo_random(300_000, self.rng.next_u64())).unwrap();
        let o = self.put_on_every_node(&probe);
        let msg = o.stderr.trim().to_string();
        self.log(format!("put through the full node: {}", if o.ok() { "succeeded".into() } else { msg.clone() }));
        if o.ok() || !msg.contains("full") {
            self.report.violations.push(format!(
                "a put that needs a shard on the full node {DISK_HOST} did not fail with a disk-full error: ok={} {msg}",
                o.ok()
            ));
        }
        self.report.disk_full_refusal.get_or_insert(msg);
        // Reads through the full node.
        let acked = self.wl.acked();
        let idx: Vec<usize> = (0..acked.len()).collect();
        for s in self.pick(&idx, 3) {
            let a = &acked[s];
            match read_back(self.c, DISK_HOST, a, &self.scratch.join("probe-get")) {
                Read::Ok => {}
                Read::Failed(o) => self.report.violations.push(format!(
                    "node {DISK_HOST} with a full disk did not serve a read of {}: {}",
                    a.cid,
                    o.stderr.trim()
                )),
                Read::Violation(v) => self.report.violations.push(v),
            }
        }
    }

    // -- healing and the invariant -------------------------------------------

    /// After an episode: waits for every node to see every other ONLINE, for
    /// corrupted shards to be quarantined or mended, and for every chunk to
    /// be back at k+m; then the faulty nodes leave the budget.
    fn heal(&mut self, episode: &str) {
        let healed = Instant::now();
        self.wait_mesh();
        self.wait_quarantined();
        let ok = self.converge(healed, &format!("{episode} healed"));
        if ok.is_some() {
            self.report.converge_times.push(healed.elapsed());
        }
        self.budget.release_all();
        for i in self.c.live() {
            self.rebuilt.read(self.c, i);
        }
        if ok.is_none() {
            self.fail_with_logs(&format!("{episode}: repair did not converge"));
        }
    }

    fn wait_mesh(&self) {
        let want = NODES - 1;
        let until = Instant::now() + Duration::from_secs(60);
        for i in 0..NODES {
            loop {
                let n = self.c.online_peers(i);
                if n >= want {
                    break;
                }
                if Instant::now() > until {
                    self.fail_with_logs(&format!("node {i} sees {n} ONLINE peers 60 s after the heal, not {want}"));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn wait_quarantined(&mut self) {
        let until = Instant::now() + Duration::from_secs(30);
        while !self.corrupted.is_empty() {
            self.corrupted.retain(|(_, p)| match std::fs::read(p) {
                Err(_) => false,
                Ok(b) => datamesh_core::Cid::raw_blake3(&b).to_string() != name(p),
            });
            if self.corrupted.is_empty() {
                break;
            }
            if Instant::now() > until {
                let left = self.corrupted.clone();
                self.fail_with_logs(&format!("corrupt shard files still in place 30 s after the heal: {left:?}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Polls `stat --json` until every acknowledged file has k+m live shards
    /// in every chunk. Returns, per file, when it was first seen so
    /// (relative to `from`); None at the deadline.
    fn converge(&mut self, from: Instant, what: &str) -> Option<Vec<Duration>> {
        // With nodes down, a file with more shards per chunk than live nodes
        // (the 6+2 disk probes while any node is down) cannot be at k+m:
        // its turn comes when they are back.
        let live = self.c.live().len();
        let mut pending: Vec<Arc<Acked>> =
            self.wl.acked().into_iter().filter(|a| usize::from(a.shards) <= live).collect();
        let mut times = Vec::new();
        let mut last_seen: BTreeMap<String, String> = BTreeMap::new();
        loop {
            let mut still = Vec::new();
            for a in pending {
                match self.full_redundancy(&a) {
                    Ok(older_view) => {
                        times.push(from.elapsed());
                        self.report.older_views += usize::from(older_view);
                    }
                    Err(views) => {
                        last_seen.insert(a.cid.clone(), views);
                        still.push(a);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                self.log(format!("{what}: every chunk at k+m {:.1} s after", from.elapsed().as_secs_f64()));
                return Some(times);
            }
            if from.elapsed() > self.deadline {
                for a in &pending {
                    self.dump_file(a);
                }
                for a in &pending {
                    let why = format!(
                        "not back at k+m within {:?} ({what}): live shards {}",
                        self.deadline,
                        last_seen.get(&a.cid).cloned().unwrap_or_default()
                    );
                    self.log(format!("{} (put via node {} in round {}): {why}", a.cid, a.via, a.round));
                    self.report.lost.insert(a.cid.clone(), why);
                }
                return None;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `stat --json` of `a` through node `n`: live shards per chunk.
    fn live_shards(&self, a: &Acked, n: usize) -> Result<Vec<u64>, String> {
        let o = self.c.cli(n, &["stat", &a.cid, "--json"], Duration::from_secs(30));
        if !o.ok() {
            return Err(o.stderr.trim().to_string());
        }
        let v: serde_json::Value = serde_json::from_str(&o.stdout).map_err(|e| e.to_string())?;
        Ok(v["live_shards"].as_array().ok_or("no live_shards")?.iter().filter_map(|n| n.as_u64()).collect())
    }

    /// The `seq` of node `n`'s copy of `a`'s location record (read from its
    /// data dir), if it has one.
    fn record_seq(&self, n: usize, a: &Acked) -> Option<u64> {
        stored_location(&self.c.nodes[n].dir, &a.cid).map(|r| r.seq)
    }

    /// Whether every chunk of `a` has k+m live shards. `stat` asks each
    /// holder its node's location record names whether it still holds its
    /// shard, so one node's `stat` showing k+m everywhere proves that k+m
    /// distinct nodes hold distinct shards of every chunk. Live nodes are
    /// asked in order of their record's `seq`, highest first (a repair
    /// re-signs the record with the next `seq`), so the network's latest word
    /// is what counts when it shows k+m; a lower one is accepted after it,
    /// and counted, because records can fork (both sides of a partition may
    /// repair). In strict mode (the suite's) every live node must show k+m.
    /// Ok(true): proven through a view other than the newest. Err: the views
    /// seen.
    fn full_redundancy(&self, a: &Acked) -> Result<bool, String> {
        let mut seqs: Vec<(usize, Option<u64>)> =
            self.c.live().into_iter().map(|n| (n, self.record_seq(n, a))).collect();
        seqs.sort_by_key(|&(n, s)| (std::cmp::Reverse(s), n));
        let newest = seqs.first().and_then(|&(_, s)| s);
        let mut views = Vec::new();
        let mut full_via: Option<Option<u64>> = None;
        for (n, seq) in seqs {
            let v = self.live_shards(a, n);
            if v.as_ref().is_ok_and(|l| l.iter().all(|&x| x == u64::from(a.shards))) {
                full_via.get_or_insert(seq);
                if !self.strict {
                    break;
                }
            } else {
                views.push(format!("node {n} (record seq {seq:?}): {v:?}"));
            }
        }
        match full_via {
            Some(seq) if !self.strict || views.is_empty() => Ok(seq != newest),
            _ => Err(views.join("; ")),
        }
    }

    /// Counts (file, node) pairs whose `stat` shows fewer than k+m live
    /// shards although the network holds k+m: nodes with a stale location
    /// record.
    fn count_stale_views(&mut self, round: usize) {
        let mut stale = 0;
        // Every file while there are few; a sample of 64 in long runs.
        let files = self.wl.acked();
        let idx: Vec<usize> = (0..files.len()).collect();
        let sample: Vec<Arc<Acked>> = self.pick(&idx, 64).into_iter().map(|i| files[i].clone()).collect();
        for a in sample {
            for n in self.c.live() {
                let v = self.live_shards(&a, n);
                if !v.as_ref().is_ok_and(|l| l.iter().all(|&x| x == u64::from(a.shards))) {
                    stale += 1;
                    if self.report.stale_examples.len() < 5 {
                        self.report.stale_examples.push(format!(
                            "round {round}: node {n} reports {v:?} for {} (put via node {} in round {})",
                            a.cid, a.via, a.round
                        ));
                    }
                }
            }
        }
        if stale > 0 {
            self.log(format!(
                "round {round}: {stale} stale views (a node's stat below k+m while the network holds k+m)"
            ));
        }
        self.report.stale_views += stale;
    }

    /// Every acknowledged put, through every live node, byte for byte; two
    /// readers at once. A failed read is retried twice (counted).
    fn read_back_all(&mut self, round: usize) {
        let files = self.wl.acked();
        let live = self.c.live();
        let jobs: Vec<(Arc<Acked>, usize)> =
            files.iter().flat_map(|a| live.iter().map(move |&n| (a.clone(), n))).collect();
        let started = Instant::now();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..2 {
                let (jobs, next, results, c, scratch) = (&jobs, &next, &results, self.c, &self.scratch);
                s.spawn(move || {
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some((a, n)) = jobs.get(j) else { break };
                        let out = scratch.join(format!("readback-{w}"));
                        let mut retries = 0;
                        let r = loop {
                            match read_back(c, *n, a, &out) {
                                Read::Failed(o) if retries < 2 => {
                                    retries += 1;
                                    let _ = o;
                                    std::thread::sleep(Duration::from_millis(500));
                                }
                                r => break r,
                            }
                        };
                        results.lock().unwrap().push((a.clone(), *n, retries, r));
                    }
                });
            }
        });
        for (a, n, retries, r) in results.into_inner().unwrap() {
            self.report.readback_gets += 1 + retries;
            self.report.readback_retries += retries;
            match r {
                Read::Ok => {}
                Read::Failed(o) => {
                    let why = format!(
                        "round {round}: {} bytes, does not read back through node {n}: {}",
                        a.size,
                        o.stderr.trim()
                    );
                    self.log(format!("{} (put via node {} in round {}): {why}", a.cid, a.via, a.round));
                    self.report.lost.entry(a.cid.clone()).or_insert(why);
                }
                Read::Violation(v) => self.report.violations.push(format!("round {round} read-back: {v}")),
            }
        }
        self.log(format!(
            "round {round}: read back {} files through {} nodes ({} gets) in {:.1} s",
            files.len(),
            live.len(),
            files.len() * live.len(),
            started.elapsed().as_secs_f64()
        ));
    }

    /// Each node's view of a file: its location record (seq, signer,
    /// holders of each chunk as node indexes) and what `stat` says through it.
    fn dump_file(&self, a: &Acked) {
        let ids: Vec<String> =
            self.c.nodes.iter().map(|n| n.p2p.lock().unwrap().rsplit('/').next().unwrap_or("").to_string()).collect();
        let who = |peer: Option<String>| -> String {
            match peer {
                Some(p) => ids.iter().position(|i| *i == p).map(|i| i.to_string()).unwrap_or_else(|| "?".into()),
                None => "-".into(),
            }
        };
        eprintln!("{} (put via node {} in round {}), as each node sees it:", a.cid, a.via, a.round);
        for n in &self.c.nodes {
            let rec = stored_location(&n.dir, &a.cid);
            let rec = match rec {
                None => "no record".to_string(),
                Some(r) => {
                    let signer = who(datamesh_net::peer_id_of_ed25519(&r.signer).map(|p| p.to_string()));
                    let chunks: Vec<String> = (0..r.chunks.len())
                        .map(|c| {
                            r.holders_of(c)
                                .iter()
                                .map(|h| {
                                    who(datamesh_net::PeerId::from_bytes(h.as_slice()).ok().map(|p| p.to_string()))
                                })
                                .collect::<Vec<_>>()
                                .join(",")
                        })
                        .collect();
                    format!("seq {} signed by {signer}, holders {}", r.seq, chunks.join(" | "))
                }
            };
            let stat = if n.alive.load(std::sync::atomic::Ordering::SeqCst) {
                let o = self.c.cli(n.index, &["stat", &a.cid, "--json"], Duration::from_secs(30));
                serde_json::from_str::<serde_json::Value>(&o.stdout)
                    .map(|v| v["live_shards"].to_string())
                    .unwrap_or_else(|_| o.stderr.trim().to_string())
            } else {
                "(down)".into()
            };
            eprintln!("  node {}: stat {stat}; {rec}", n.index);
        }
    }

    fn fail_with_logs(&self, why: &str) -> ! {
        for n in &self.c.nodes {
            eprintln!("---- node {} log (last lines) ----\n{}", n.index, n.log_tail(40));
        }
        panic!("{why}");
    }

    fn round(&mut self, r: usize, rounds: usize) {
        self.log(format!("round {r}/{rounds}"));
        self.wl.resume(r);
        self.crash_episode();
        self.partition_episode();
        self.degraded_episode();
        self.beyond_budget_episode();
        self.wl.pause();
        // Files acknowledged during the last heal: bring them to k+m too.
        let ok = self.converge(Instant::now(), "round end");
        if ok.is_none() {
            self.fail_with_logs(&format!("round {r}: repair did not converge"));
        }
        self.read_back_all(r);
        self.count_stale_views(r);
        self.report.rounds = r;
        let s = self.wl.stats.lock().unwrap().clone();
        self.log(format!(
            "round {r} done: {} puts acknowledged so far, {} lost, {} violations; workload puts ok/failed {}/{}, gets ok/failed {}/{}",
            s.puts_acked,
            self.report.lost.len(),
            self.report.violations.len() + s.violations.len(),
            s.puts_acked,
            s.puts_failed,
            s.gets_ok,
            s.gets_failed
        ));
        assert!(
            self.report.violations.is_empty() && s.violations.is_empty(),
            "{:#?}\n{:#?}",
            self.report.violations,
            s.violations
        );
        assert!(self.report.lost.is_empty(), "acknowledged puts lost: {:#?}", self.report.lost);
    }
}

/// Node `dir`'s copy of the location record of the file `cid`, read from
/// its store's state records while it runs.
fn stored_location(dir: &std::path::Path, cid: &str) -> Option<datamesh_core::LocationRecord> {
    let b = std::fs::read(dir.join("store/state/locations").join(cid)).ok()?;
    let rec = datamesh_store::StateRecord::decode(&b).ok()?;
    datamesh_core::LocationRecord::decode(&rec.value).ok()
}

fn name(p: &std::path::Path) -> String {
    p.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The rounds, checking after each heal that every acknowledged put reads
/// back from every live node and that `stat` through *every* live node
/// shows k+m live shards (a node that was away while a repair re-signed a
/// file's location record takes over the newer record from its peers).
#[test]
fn chaos_no_acknowledged_write_is_lost() {
    run_suite(true);
}

fn run_suite(strict: bool) {
    let seed = seed();
    let rounds = env_u64("CHAOS_ROUNDS", 3) as usize;
    let puts_per_round = env_u64("CHAOS_PUTS_PER_ROUND", 8) as usize;
    let deadline = Duration::from_secs(env_u64("CHAOS_REPAIR_DEADLINE", 60));
    let start = Instant::now();
    eprintln!("chaos: seed {seed:#x} (replay with CHAOS_SEED={seed:#x}), {rounds} rounds, {NODES} nodes, {K}+{M}");
    let c = Cluster::start(NODES, &FLAGS, Some((DISK_HOST, DISK_MIB))).unwrap_or_else(|e| {
        panic!("cannot build the chaos network (needs root, iproute2, nftables; `.ci/run` installs them): {e}")
    });
    let wl = Workload::new(&c.root.path().join("workload"), puts_per_round);
    let scratch = c.root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let mut chaos = Chaos {
        c: &c,
        wl: &wl,
        rng: SplitMix64::new(seed),
        budget: Budget::default(),
        rebuilt: Rebuilt::default(),
        report: Report::default(),
        start,
        deadline,
        corrupted: Vec::new(),
        scratch,
        last_kill: start,
        strict,
    };
    chaos.wait_mesh();
    chaos.log(format!("{NODES} nodes up and meshed"));
    chaos.put_boundary_files();
    chaos.read_back_all(0);
    assert!(chaos.report.lost.is_empty(), "acknowledged puts lost before any fault: {:#?}", chaos.report.lost);
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&wl);
        s.spawn(|| wl.run(&c, seed));
        for r in 1..=rounds {
            chaos.round(r, rounds);
        }
        wl.stop();
    });
    let s = wl.stats.lock().unwrap().clone();
    let rep = &chaos.report;
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    eprintln!("\n==== chaos summary (seed {seed:#x}) ====");
    eprintln!("rounds run:             {}", rep.rounds);
    eprintln!("faults injected:        {}", rep.faults.values().sum::<usize>());
    for (k, v) in &rep.faults {
        eprintln!("  {k:<22}{v}");
    }
    let moments: Vec<String> = rep.kill_moments.iter().map(|(k, v)| format!("{k} {v}")).collect();
    eprintln!("kill -9 moments:        {}", moments.join(", "));
    eprintln!("peak faulty nodes:      {} (m = {M}) outside the beyond-m episodes", chaos.budget.peak);
    eprintln!(
        "with m+1 nodes down:    {} reads whole, {} failed cleanly, none wrong",
        rep.beyond_reads_ok, rep.beyond_reads_clean_errors
    );
    eprintln!(
        "acknowledged puts:      {} (workload {}, boundary sizes 5, full-disk probes {})",
        chaos.wl.acked().len(),
        s.puts_acked,
        rep.freed_disk_puts
    );
    eprintln!("puts lost:              {}", rep.lost.len());
    eprintln!("wrong bytes / unclean:  {}", rep.violations.len() + s.violations.len());
    eprintln!(
        "workload:               puts failed cleanly {}, gets ok {}, gets failed cleanly {}, timeouts {}",
        s.puts_failed, s.gets_ok, s.gets_failed, s.timeouts
    );
    for (e, n) in &s.errors {
        eprintln!("  {n:>4} × {e}");
    }
    eprintln!(
        "repair times:           kill -9 → k+m with the dead still down: p50 {} max {} over {} files \
         (offline-after 3 s included)",
        secs(pct(&rep.repair_times, 0.5)),
        secs(pct(&rep.repair_times, 1.0)),
        rep.repair_times.len()
    );
    eprintln!(
        "                        heal → every chunk at k+m: p50 {} max {} over {} heals",
        secs(pct(&rep.converge_times, 0.5)),
        secs(pct(&rep.converge_times, 1.0)),
        rep.converge_times.len()
    );
    eprintln!(
        "shards rebuilt:         {} (repair.shards_rebuilt over all nodes; a node's count since its last read is \
         lost when it is killed mid-operation)",
        chaos.rebuilt.total
    );
    eprintln!("read-back gets:         {} ({} retries)", rep.readback_gets, rep.readback_retries);
    eprintln!("stale views:            {} (file, node) pairs at round ends", rep.stale_views);
    eprintln!("k+m proven via an older record: {} times (the newest-seq record showed fewer)", rep.older_views);
    for e in &rep.stale_examples {
        eprintln!("  {e}");
    }
    if let Some(m) = &rep.disk_full_refusal {
        eprintln!("full disk refusal:      {m}");
    }
    eprintln!("after the disk is freed: {} puts needing a shard on that node acknowledged", rep.freed_disk_puts);
    eprintln!("run time:               {}", secs(start.elapsed()));
    assert_eq!(rep.lost.len(), 0, "acknowledged puts lost: {:#?}", rep.lost);
    assert!(rep.violations.is_empty() && s.violations.is_empty(), "{:#?}\n{:#?}", rep.violations, s.violations);
}

/// The lab's namespaces, links and rules exist while it lives and are gone
/// after it drops, also when the test panics.
#[test]
fn chaos_lab_is_removed_on_drop_and_on_panic() {
    let lab = netlab::Lab::create(2).expect("network namespaces (needs root and iproute2)");
    assert!(lab.exists());
    lab.partition(&[0]).expect("nftables rules in a namespace (needs nftables)");
    lab.packet_loss(1, 20).unwrap();
    lab.cap_bandwidth(1, 8).unwrap();
    let rules = netlab::sh("ip", &["netns", "exec", &lab.hosts[1].ns, "nft", "list", "ruleset"]).unwrap();
    assert!(rules.contains("chaos_part") && rules.contains("numgen random mod 100 < 20"), "{rules}");
    let names: Vec<String> = lab.hosts.iter().map(|h| h.ns.clone()).chain([lab.bridge.clone()]).collect();
    drop(lab);
    let gone = |names: &[String]| {
        let ns = netlab::sh("ip", &["netns", "list"]).unwrap();
        let links = netlab::sh("ip", &["-o", "link", "show"]).unwrap();
        names.iter().all(|n| !ns.contains(n.as_str()) && !links.contains(n.as_str()))
    };
    assert!(gone(&names), "lab left behind: {names:?}");
    // A panic while the lab is alive still removes it.
    let names = std::sync::Mutex::new(Vec::new());
    let r = std::panic::catch_unwind(|| {
        let lab = netlab::Lab::create(1).unwrap();
        names.lock().unwrap().extend(lab.hosts.iter().map(|h| h.ns.clone()).chain([lab.bridge.clone()]));
        panic!("injected");
    });
    assert!(r.is_err());
    assert!(gone(&names.into_inner().unwrap()), "lab left behind after a panic");
}
