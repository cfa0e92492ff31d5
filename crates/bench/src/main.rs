//! `datamesh-bench`: one run that measures, on this machine and under its
//! current load, every stage of the put path alone, the whole per-chunk
//! pipeline on one core and on all cores, the disk, and a put and a get
//! through a real node, then checks the throughput and memory targets.
//!
//! ```text
//! cargo build --release -p datamesh-cli -p datamesh-bench
//! cargo run --release -p datamesh-bench -- [--quick] [--size 2GiB] [--json] [--dir DIR]
//! ```
//!
//! It is a measurement: it exits 0 when targets fail (and says FAIL), and
//! non-zero only when it could not measure. Temp files go under the system
//! temp dir (or `--dir`) and are removed; every process it starts is
//! stopped.

mod data;
mod disk;
mod e2e;
mod report;
mod spawner;
mod stages;
mod sys;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use bytesize::ByteSize;
use clap::Parser;

use crate::report::{Disk, Machine, Report};
use crate::stages::{InputKind, Settings};

#[derive(Parser)]
#[command(
    name = "datamesh-bench",
    about = "Measures the DataMesh put pipeline stage by stage and end to end, and checks the targets"
)]
struct Args {
    /// A short run for development: small inputs, 3 rounds, 128 MiB disk test, 256 MiB end to end.
    #[arg(long)]
    quick: bool,
    /// Size of the file put and got through the node (default 2GiB; 256MiB with --quick).
    #[arg(long)]
    size: Option<ByteSize>,
    /// Print one JSON document on stdout instead of the table.
    #[arg(long)]
    json: bool,
    /// Directory for temp files, the disk test and the nodes' data dirs (default: the system temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Skip the end-to-end part (no node, no `datamesh` binary needed).
    #[arg(long)]
    no_node: bool,
    /// Worker threads of the all-cores pipeline (default: the cores available).
    #[arg(long)]
    threads: Option<usize>,
}

/// The binary's allocator, as the `datamesh` binary sets it
/// (`crates/cli/src/alloc.rs` says why), so the bench measures what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == spawner::HELPER_ARG) {
        if let Err(e) = spawner::serve() {
            eprintln!("datamesh-bench spawner: {e:#}");
            std::process::exit(1);
        }
        return;
    }
    let args = Args::parse();
    match run(&args) {
        Ok(r) => {
            let out = if args.json {
                serde_json::to_string_pretty(&r)
                    .map(|s| s + "\n")
                    .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}\n"))
            } else {
                report::table(&r)
            };
            let mut stdout = std::io::stdout().lock();
            if stdout.write_all(out.as_bytes()).and_then(|_| stdout.flush()).is_err() {
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn say(msg: &str) {
    eprintln!("datamesh-bench: {msg}");
}

/// The 1-minute load average, to judge how noisy the run was.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn run(args: &Args) -> Result<Report> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let base = match &args.dir {
        Some(d) => d.clone(),
        None => std::env::temp_dir(),
    };
    let base = base.canonicalize().with_context(|| format!("temp dir {} is not usable", base.display()))?;
    // Find the binary before spending minutes measuring, and start the
    // helper that runs the CLI while this process is still small.
    let bin = if args.no_node { None } else { Some(e2e::find_binary()?) };
    let mut spawner = if args.no_node { None } else { Some(spawner::Spawner::start()?) };
    let work = tempfile::Builder::new()
        .prefix("datamesh-bench-")
        .tempdir_in(&base)
        .with_context(|| format!("cannot create a temp dir in {}", base.display()))?;
    let loadavg_start = loadavg();

    say(&format!("stages and pipelines in memory, {} rounds", settings(args).rounds));
    let in_memory = in_memory(args)?;

    let (disk_bytes, store_chunks) = if args.quick { (128u64 << 20, 8) } else { (1u64 << 30, 32) };
    say(&format!("fsynced sequential write of {} MiB in {}", disk_bytes >> 20, work.path().display()));
    let sequential = disk::sequential_write(work.path(), disk_bytes)?;
    say("node store write path (Store::put_shards)");
    // As many writers as the CLI keeps chunks in flight by default.
    let store = disk::store_write(work.path(), store_chunks, 4)?;

    let one_core_random = in_memory.pipeline(InputKind::Random).map_or(0.0, |p| p.one_core_mbps);
    let reference_mbps = report::reference(one_core_random, sequential.mbps);

    let e2e = match (&bin, spawner.as_mut()) {
        (Some(bin), Some(sp)) => {
            let size = args.size.map_or(if args.quick { 256 << 20 } else { 2 << 30 }, |s| s.as_u64());
            Some(e2e::run(sp, bin, work.path(), size, &mut |m| say(m))?)
        }
        _ => None,
    };
    drop(spawner);
    let targets = report::targets(&in_memory, reference_mbps, e2e.as_ref());
    let temp_dir = display_dir(&base);
    work.close().context("removing the temp dir")?;
    Ok(Report {
        machine: Machine { cores, loadavg_start, loadavg_end: loadavg(), temp_dir },
        in_memory,
        disk: Disk { sequential, store },
        reference_mbps,
        e2e,
        targets,
    })
}

/// How long and how often to measure in memory.
fn settings(args: &Args) -> Settings {
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if args.quick {
        Settings {
            input_bytes: 16 << 20,
            rounds: 3,
            min_round: Duration::from_millis(100),
            pipeline_passes: 2,
            threads,
        }
    } else {
        Settings {
            input_bytes: 64 << 20,
            rounds: 5,
            min_round: Duration::from_millis(250),
            pipeline_passes: 4,
            threads,
        }
    }
}

/// The in-memory measurements, with progress on stderr.
fn in_memory(args: &Args) -> Result<stages::InMemory> {
    let settings = settings(args);
    stages::measure(settings, &mut |round| say(&format!("  round {}/{}", round + 1, settings.rounds)))
}

fn display_dir(p: &Path) -> String {
    p.display().to_string()
}
