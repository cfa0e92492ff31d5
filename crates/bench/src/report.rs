//! The report: every number measured in one run, the targets checked
//! against them, and the two ways to print it (a plain table, or one JSON
//! document).

use std::fmt::Write as _;

use serde::Serialize;

use crate::disk::{SeqWrite, StoreWrite};
use crate::e2e::{E2e, SMALL_PUT};
use crate::stages::{InMemory, InputKind, Stage, ratio};

/// Most peak RSS a node or a CLI may reach, in bytes (10^6-byte MB).
pub const MAX_RSS: u64 = 150_000_000;
/// Most a big put's peak RSS may exceed the 64 MiB put's, in bytes.
pub const MAX_RSS_GROWTH: u64 = 10_000_000;
/// Least one-core pipeline / serial composition.
pub const MIN_COMPOSITION_RATIO: f64 = 0.8;
/// Least all-cores / one-core pipeline.
pub const MIN_SCALING: f64 = 1.6;
/// Least end-to-end rate as a fraction of the reference.
pub const MIN_E2E_FRACTION: f64 = 0.5;

/// Where and under what load the run happened.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `available_parallelism`.
    pub cores: usize,
    /// 1-minute load average when the run started.
    pub loadavg_start: Option<f64>,
    /// 1-minute load average when it ended.
    pub loadavg_end: Option<f64>,
    /// Where temp files, the disk test and the nodes' data dirs went.
    pub temp_dir: String,
}

/// The disk measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Disk {
    /// Fsynced sequential write.
    pub sequential: SeqWrite,
    /// The node's store write path.
    pub store: StoreWrite,
}

/// One target, checked.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is checked.
    pub name: String,
    /// The measured value, in words.
    pub measured: String,
    /// Whether it is met.
    pub pass: bool,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine and its load.
    pub machine: Machine,
    /// Stages and pipelines in memory.
    pub in_memory: InMemory,
    /// Disk rates.
    pub disk: Disk,
    /// `min(one-core pipeline on random, fsync disk × k/(k+m))`, MB/s: what
    /// a put or get through the node is compared with.
    pub reference_mbps: f64,
    /// Through the node; None with `--no-node`.
    pub e2e: Option<E2e>,
    /// Every target, checked.
    pub targets: Vec<Target>,
}

/// `min(one-core pipeline, disk × k/(k+m))` for 4+2.
pub fn reference(one_core_random: f64, disk: f64) -> f64 {
    one_core_random.min(disk * 4.0 / 6.0)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// Checks every target against what was measured.
pub fn targets(mem: &InMemory, reference_mbps: f64, e2e: Option<&E2e>) -> Vec<Target> {
    let mut t = Vec::new();
    for kind in InputKind::ALL {
        if let Some(p) = mem.pipeline(kind) {
            t.push(Target {
                name: format!("one-core pipeline / serial composition, {} ≥ {MIN_COMPOSITION_RATIO}", kind.name()),
                measured: format!("{:.2} ({:.0} / {:.0} MB/s)", p.ratio, p.one_core_mbps, p.serial_mbps),
                pass: p.ratio >= MIN_COMPOSITION_RATIO,
            });
        }
    }
    for kind in InputKind::ALL {
        if let Some(p) = mem.pipeline(kind) {
            t.push(Target {
                name: format!("all cores / one core, {} ≥ {MIN_SCALING}", kind.name()),
                measured: format!(
                    "{:.2} ({:.0} / {:.0} MB/s, {} threads; machine ceiling this run {:.2})",
                    p.scaling, p.all_cores_mbps, p.one_core_mbps, mem.settings.threads, mem.ceiling.scaling
                ),
                pass: p.scaling >= MIN_SCALING,
            });
        }
    }
    let Some(e) = e2e else { return t };
    let gib = e.size as f64 / (1u64 << 30) as f64;
    for (what, mbps) in [("put", e.put_mbps), ("get", e.get_mbps)] {
        let f = ratio(mbps, reference_mbps);
        t.push(Target {
            name: format!("{gib:.2} GiB {what} through the node ≥ {MIN_E2E_FRACTION} × reference"),
            measured: format!("{f:.2} ({mbps:.0} / {reference_mbps:.0} MB/s)"),
            pass: f >= MIN_E2E_FRACTION,
        });
    }
    t.push(Target {
        name: "get returned the file byte-identical".into(),
        measured: if e.verified { "BLAKE3 and size match".into() } else { "MISMATCH".into() },
        pass: e.verified,
    });
    let r = &e.rss;
    for (who, vals) in [
        ("CLI", [r.cli_put_small, r.cli_put_big, r.cli_get_big]),
        ("node", [r.node_put_small, r.node_put_big, r.node_get_big]),
    ] {
        let max = vals.iter().copied().max().unwrap_or(0);
        t.push(Target {
            name: format!("{who} peak RSS ≤ {:.0} MB", mb(MAX_RSS)),
            measured: format!(
                "max {:.1} MB (put 64 MiB {:.1}, put {gib:.2} GiB {:.1}, get {:.1})",
                mb(max),
                mb(vals[0]),
                mb(vals[1]),
                mb(vals[2])
            ),
            pass: max <= MAX_RSS,
        });
    }
    for (who, small, big) in [("CLI", r.cli_put_small, r.cli_put_big), ("node", r.node_put_small, r.node_put_big)] {
        let growth = big as i64 - small as i64;
        t.push(Target {
            name: format!("{who} peak RSS, {gib:.2} GiB put within {:.0} MB of 64 MiB put", mb(MAX_RSS_GROWTH)),
            measured: format!("{:+.1} MB ({:.1} → {:.1})", growth as f64 / 1e6, mb(small), mb(big)),
            pass: growth <= MAX_RSS_GROWTH as i64,
        });
    }
    t
}

fn load(l: Option<f64>) -> String {
    l.map_or("?".into(), |l| format!("{l:.2}"))
}

/// The plain-text table, then one line per target.
pub fn table(r: &Report) -> String {
    let mem = &r.in_memory;
    let s = &mem.settings;
    let mut o = String::new();
    // `write!` into a String cannot fail.
    let _ = writeln!(
        o,
        "datamesh-bench: MB = 10^6 bytes; median of {} interleaved rounds; 4 MiB chunks, AES-256-GCM, zstd-1 if it pays, RS 4+2",
        s.rounds
    );
    let _ = writeln!(
        o,
        "machine: {} cores; load average {} at start, {} at end; temp dir {}",
        r.machine.cores,
        load(r.machine.loadavg_start),
        load(r.machine.loadavg_end),
        r.machine.temp_dir
    );
    let _ = writeln!(
        o,
        "inputs: {} MiB random, {} MiB text-like (zstd-1 ratio {:.2})",
        s.input_bytes >> 20,
        s.input_bytes >> 20,
        mem.pipeline(InputKind::Text).map_or(0.0, |p| p.compression_ratio)
    );
    let _ = writeln!(o);
    let _ = writeln!(
        o,
        "{:<22}{:>12}{:>12}   measures (MB/s of the bytes the stage itself processes)",
        "stage alone, 1 thread", "random", "text"
    );
    for stage in Stage::ALL {
        let (name, what) = stage.describe();
        let rate = |k| mem.stage(stage, k).map_or(0.0, |x| x.mbps);
        let _ = writeln!(o, "{name:<22}{:>12.0}{:>12.0}   {what}", rate(InputKind::Random), rate(InputKind::Text));
    }
    let d = &r.disk;
    let _ = writeln!(
        o,
        "{:<22}{:>12.0}{:>12}   {} MiB in 4 MiB blocks + fsync, in {}",
        "fsynced disk write",
        d.sequential.mbps,
        "",
        d.sequential.bytes >> 20,
        r.machine.temp_dir
    );
    let _ = writeln!(
        o,
        "{:<22}{:>12.0}{:>12}   diagnostic: Store::put_shards of 4+2 shards, MB/s of chunk bytes, 1 thread ({:.0} with {} threads)",
        "node store write", d.store.one_thread_mbps, "", d.store.threads_mbps, d.store.threads
    );
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<34}{:>12}{:>12}", "put pipeline per chunk (MB/s)", "random", "text");
    let row = |o: &mut String, name: &str, f: &dyn Fn(InputKind) -> String| {
        let _ = writeln!(o, "{name:<34}{:>12}{:>12}", f(InputKind::Random), f(InputKind::Text));
    };
    let p = |k| mem.pipeline(k);
    for stage in Stage::PIPELINE {
        let (name, _) = stage.describe();
        row(&mut o, &format!("  {name}: bytes/plain byte"), &|k| {
            mem.stage(stage, k).map_or("-".into(), |x| format!("{:.3}", x.weight))
        });
    }
    row(&mut o, "serial composition 1/Σ(w/rate)", &|k| p(k).map_or("-".into(), |x| format!("{:.0}", x.serial_mbps)));
    row(&mut o, "pipeline, one core", &|k| p(k).map_or("-".into(), |x| format!("{:.0}", x.one_core_mbps)));
    row(&mut o, "  ratio one core / serial", &|k| p(k).map_or("-".into(), |x| format!("{:.2}", x.ratio)));
    row(&mut o, &format!("pipeline, all cores ({} threads)", s.threads), &|k| {
        p(k).map_or("-".into(), |x| format!("{:.0}", x.all_cores_mbps))
    });
    row(&mut o, "  ratio all cores / one core", &|k| p(k).map_or("-".into(), |x| format!("{:.2}", x.scaling)));
    if InputKind::ALL.iter().any(|&k| p(k).is_some_and(|x| x.scaling > s.threads as f64 * 1.1)) {
        let _ = writeln!(
            o,
            "note: scaling above the thread count means the one-thread run is slowed by something the threaded run escapes \
             (seen here: glibc giving per-chunk buffers back to the kernel and faulting them in again)"
        );
    }
    let c = &mem.ceiling;
    let _ = writeln!(
        o,
        "machine scaling ceiling: BLAKE3 of a cache-resident buffer per thread, {:.0} MB/s on 1 thread, {:.0} on {} = {:.2}×",
        c.one_core_mbps, c.all_cores_mbps, s.threads, c.scaling
    );
    let _ = writeln!(o);
    let one_random = p(InputKind::Random).map_or(0.0, |x| x.one_core_mbps);
    let _ = writeln!(
        o,
        "reference = min(one-core pipeline on random {:.0}, fsynced disk {:.0} × 4/6 = {:.0}) = {:.0} MB/s",
        one_random,
        d.sequential.mbps,
        d.sequential.mbps * 4.0 / 6.0,
        r.reference_mbps
    );
    match &r.e2e {
        None => {
            let _ = writeln!(o, "end to end: skipped (--no-node)");
        }
        Some(e) => {
            let mib = e.size >> 20;
            let _ =
                writeln!(o, "end to end through `datamesh node` (defaults: encrypted, 4+2), {mib} MiB random file:");
            for (what, secs, mbps, cli, node) in [
                ("put", e.put_secs, e.put_mbps, e.cpu.cli_put, e.cpu.node_put),
                ("get", e.get_secs, e.get_mbps, e.cpu.cli_get, e.cpu.node_get),
            ] {
                let _ = writeln!(
                    o,
                    "  {what} {mib} MiB  {secs:>7.2} s  {mbps:>7.0} MB/s  = {:.2} × reference; CPU: CLI {cli:.2} s, node {node:.2} s",
                    ratio(mbps, r.reference_mbps)
                );
            }
            let _ =
                writeln!(o, "  put 64 MiB {:>9.2} s  {:>7.0} MB/s", e.small_put_secs, mb(SMALL_PUT) / e.small_put_secs);
            let _ = writeln!(o, "  output byte-identical: {}", if e.verified { "yes" } else { "NO" });
            let _ = writeln!(o, "  {:<24}{:>10}{:>10}", "peak RSS (MB)", "CLI", "node");
            let rss = &e.rss;
            for (what, c, n) in [
                ("put 64 MiB".to_string(), rss.cli_put_small, rss.node_put_small),
                (format!("put {mib} MiB"), rss.cli_put_big, rss.node_put_big),
                (format!("get {mib} MiB"), rss.cli_get_big, rss.node_get_big),
            ] {
                let _ = writeln!(o, "  {what:<24}{:>10.1}{:>10.1}", mb(c), mb(n));
            }
        }
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "targets");
    for t in &r.targets {
        let _ = writeln!(o, "{}  {}: {}", if t.pass { "PASS" } else { "FAIL" }, t.name, t.measured);
    }
    let failed = r.targets.iter().filter(|t| !t.pass).count();
    let _ = writeln!(
        o,
        "{}",
        if failed == 0 {
            format!("all {} targets PASS", r.targets.len())
        } else {
            format!("{failed} of {} targets FAIL", r.targets.len())
        }
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_is_the_lower_of_cpu_and_disk_share() {
        assert_eq!(reference(600.0, 1200.0), 600.0);
        assert_eq!(reference(600.0, 600.0), 400.0);
    }
}
