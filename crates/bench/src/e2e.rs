//! End to end through a real node: the release `datamesh` binary runs a
//! node on a temp data dir and the CLI puts a random file and gets it back,
//! with the defaults (AES-256-GCM, zstd when it pays, 4+2, 4 MiB chunks,
//! 32 MiB chunk cache).
//!
//! Peak memory is each process's own high-water mark: the CLI's from
//! `wait4` (`ru_maxrss`, in a small helper process: see [`crate::spawner`]),
//! the node's from `VmHWM` in `/proc/<pid>/status` read just before it is
//! stopped. A high-water mark never goes down, so
//! every measured transfer gets a fresh node process: one for the 64 MiB
//! put, one for the big put, and one restarted on the big put's data dir
//! for the get.
//!
//! Every process started here is stopped by its PID (SIGTERM, then SIGKILL
//! after a grace period), also on errors, and is told to receive SIGTERM if
//! the benchmark dies first.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;

use crate::data::Rng;
use crate::spawner::{Request, Spawner};
use crate::sys;

/// How long a node may take to write `api.url`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// The small put the big one is compared with.
pub const SMALL_PUT: u64 = 64 << 20;

/// Finds the `datamesh` binary: `$DATAMESH_BIN`, else next to this
/// executable (`target/release/` when run through `cargo run --release`).
pub fn find_binary() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("DATAMESH_BIN") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("DATAMESH_BIN={} is not a file", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe.parent().ok_or_else(|| anyhow!("{} has no parent dir", exe.display()))?;
    // `target/<profile>/deps/` when run as a test.
    let candidates = [dir.join("datamesh"), dir.join("../datamesh")];
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "the datamesh binary is not at {}: build it first with `cargo build --release -p datamesh-cli` \
             (or point DATAMESH_BIN at one), or skip this part with --no-node",
            candidates[0].display()
        ),
    }
}

/// Peak resident memory of each process, in bytes.
#[derive(Debug, Clone, Serialize)]
pub struct Rss {
    /// CLI, 64 MiB put.
    pub cli_put_small: u64,
    /// Node, 64 MiB put.
    pub node_put_small: u64,
    /// CLI, big put.
    pub cli_put_big: u64,
    /// Node, big put.
    pub node_put_big: u64,
    /// CLI, big get.
    pub cli_get_big: u64,
    /// Node (restarted), big get.
    pub node_get_big: u64,
}

/// CPU time (user + system) each process spent, in seconds: where the
/// work of a transfer goes, independent of how busy the machine was.
#[derive(Debug, Clone, Serialize)]
pub struct Cpu {
    /// CLI, big put.
    pub cli_put: f64,
    /// Node, big put (including its start-up, a few milliseconds).
    pub node_put: f64,
    /// CLI, big get.
    pub cli_get: f64,
    /// Node (restarted), big get.
    pub node_get: f64,
}

/// What the end-to-end run measured.
#[derive(Debug, Clone, Serialize)]
pub struct E2e {
    /// Bytes of the big file.
    pub size: u64,
    /// Seconds of the big put (the CLI process, start to exit).
    pub put_secs: f64,
    /// MB/s of the big put.
    pub put_mbps: f64,
    /// Seconds of the big get.
    pub get_secs: f64,
    /// MB/s of the big get.
    pub get_mbps: f64,
    /// The file came back byte-identical (BLAKE3 of both files and sizes).
    pub verified: bool,
    /// Seconds of the 64 MiB put.
    pub small_put_secs: f64,
    /// Peak RSS of every process.
    pub rss: Rss,
    /// CPU time of every process of the big transfers.
    pub cpu: Cpu,
}

/// A node process on `data_dir`; stopped on drop if not stopped before.
struct Node {
    child: Option<Child>,
    pid: u32,
    data_dir: PathBuf,
    log: PathBuf,
}

impl Node {
    fn start(bin: &Path, data_dir: &Path, log: &Path) -> Result<Node> {
        std::fs::create_dir_all(data_dir)?;
        let url = data_dir.join("api.url");
        // A clean stop removes it; make sure we wait for this node's.
        match std::fs::remove_file(&url) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let mut cmd = Command::new(bin);
        cmd.args([OsStr::new("node"), OsStr::new("--api"), OsStr::new("127.0.0.1:0"), OsStr::new("--data-dir")])
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log).with_context(|| format!("cannot create {}", log.display()))?);
        for k in datamesh_env() {
            cmd.env_remove(k);
        }
        sys::die_with_parent(&mut cmd);
        let child = cmd.spawn().with_context(|| format!("cannot start {} node", bin.display()))?;
        let mut node = Node { pid: child.id(), child: Some(child), data_dir: data_dir.to_owned(), log: log.to_owned() };
        let start = Instant::now();
        while !url.exists() {
            if let Some(c) = node.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                node.child = None;
                bail!("the node exited with {status} before it was ready:\n{}", tail(&node.log));
            }
            if start.elapsed() > START_TIMEOUT {
                bail!("the node wrote no {} within {START_TIMEOUT:?}:\n{}", url.display(), tail(&node.log));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(node)
    }

    /// The node's peak RSS so far (`VmHWM`), in bytes.
    fn peak_rss(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .with_context(|| format!("cannot read the status of node pid {}", self.pid))?;
        parse_vm_hwm(&status).ok_or_else(|| anyhow!("no VmHWM in /proc/{}/status", self.pid))
    }

    /// CPU time (user + system) the node has used so far, in seconds.
    fn cpu_secs(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .with_context(|| format!("cannot read the stat of node pid {}", self.pid))?;
        parse_stat_cpu(&stat, sys::clock_ticks()).ok_or_else(|| anyhow!("cannot parse /proc/{}/stat", self.pid))
    }

    /// Stops the node with SIGTERM and waits for it.
    fn stop(mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else { bail!("the node had already exited") };
        stop_child(&mut child, self.pid)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = stop_child(&mut child, self.pid);
        }
    }
}

/// SIGTERM, wait up to [`STOP_TIMEOUT`], then SIGKILL and reap.
fn stop_child(child: &mut Child, pid: u32) -> Result<ExitStatus> {
    if let Some(s) = child.try_wait()? {
        return Ok(s);
    }
    sys::terminate(pid).context("SIGTERM to the node")?;
    let start = Instant::now();
    while start.elapsed() < STOP_TIMEOUT {
        if let Some(s) = child.try_wait()? {
            return Ok(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    sys::kill(pid).context("SIGKILL to the node")?;
    Ok(child.wait()?)
}

/// `VmHWM:   123 kB` → bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in seconds.
/// Fields are counted after the command name, which is in parentheses and
/// may itself contain spaces.
fn parse_stat_cpu(stat: &str, ticks: f64) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is f[n - 3].
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks)
}

/// The last lines of a log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Our DATAMESH_* variables: removed from the children's environment so
/// they run with the defaults.
fn datamesh_env() -> Vec<OsString> {
    std::env::vars_os().map(|(k, _)| k).filter(|k| k.to_string_lossy().starts_with("DATAMESH_")).collect()
}

/// One CLI run: its stdout, wall time and peak RSS.
struct CliRun {
    stdout: String,
    secs: f64,
    max_rss: u64,
    cpu_secs: f64,
}

/// Runs the CLI against `node` through the spawner helper (see
/// [`crate::spawner`] for why not directly).
fn run_cli(sp: &mut Spawner, bin: &Path, node: &Node, user_key: &Path, args: &[&OsStr]) -> Result<CliRun> {
    let req = Request {
        program: bin.to_owned(),
        args: args.iter().map(|a| a.to_os_string()).collect(),
        env: vec![
            ("DATAMESH_DATA_DIR".into(), node.data_dir.clone().into_os_string()),
            ("DATAMESH_USER_KEY".into(), user_key.as_os_str().to_owned()),
        ],
        env_remove: datamesh_env(),
    };
    let r = sp.run(&req)?;
    if !r.status().success() {
        bail!(
            "`datamesh {}` failed ({}):\n{}",
            args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" "),
            r.status(),
            r.stderr
        );
    }
    Ok(CliRun { stdout: r.stdout, secs: r.secs, max_rss: r.max_rss, cpu_secs: r.cpu_secs })
}

/// Writes `size` random bytes to `path`; returns their BLAKE3 hash.
fn write_random_file(path: &Path, size: u64, seed: u64) -> Result<[u8; 32]> {
    let mut rng = Rng::new(seed);
    let mut f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        h.update(&buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    // On disk before the put starts, so its writeback does not compete
    // with the node's fsyncs and the put is timed on its own writes.
    f.sync_all()?;
    Ok(*h.finalize().as_bytes())
}

/// BLAKE3 and length of a file.
fn hash_file(path: &Path) -> Result<([u8; 32], u64)> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 4 << 20];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((*h.finalize().as_bytes(), len))
}

/// Puts `file` through a node; returns the CID and the CLI run.
fn put(sp: &mut Spawner, bin: &Path, node: &Node, key: &Path, file: &Path) -> Result<(String, CliRun)> {
    let run = run_cli(sp, bin, node, key, &[OsStr::new("put"), file.as_os_str(), OsStr::new("-q")])?;
    let cid = run
        .stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
        .ok_or_else(|| anyhow!("`datamesh put` printed no CID"))?;
    Ok((cid, run))
}

/// Stops a node, warning (not failing: the numbers are taken) if it did
/// not exit cleanly.
fn stop(node: Node, what: &str) -> Result<()> {
    let log = node.log.clone();
    let status = node.stop()?;
    if !status.success() {
        eprintln!("warning: the {what} node exited with {status}; its log:\n{}", tail(&log));
    }
    Ok(())
}

/// Runs the end-to-end part in `work` (a temp dir the caller removes).
/// `say` reports progress.
pub fn run(sp: &mut Spawner, bin: &Path, work: &Path, size: u64, say: &mut dyn FnMut(&str)) -> Result<E2e> {
    let key = work.join("user.key");
    let small_file = work.join("small.bin");
    let big_file = work.join("big.bin");
    let out_file = work.join("big.out");

    say(&format!("writing a {} MiB and a {} MiB random file", SMALL_PUT >> 20, size >> 20));
    write_random_file(&small_file, SMALL_PUT, 0x5A11)?;
    let want = write_random_file(&big_file, size, 0xB16)?;

    say("put 64 MiB through a fresh node");
    let dir_small = work.join("node-small");
    let node = Node::start(bin, &dir_small, &work.join("node-small.log"))?;
    let (_, small) = put(sp, bin, &node, &key, &small_file)?;
    let node_put_small = node.peak_rss()?;
    stop(node, "64 MiB put")?;
    // Its shards are not needed any more; give the space back now.
    std::fs::remove_dir_all(&dir_small)?;
    std::fs::remove_file(&small_file)?;

    say(&format!("put {} MiB through a fresh node", size >> 20));
    let dir_big = work.join("node-big");
    let node = Node::start(bin, &dir_big, &work.join("node-big.log"))?;
    let (cid, big) = put(sp, bin, &node, &key, &big_file)?;
    let node_put_big = node.peak_rss()?;
    let node_put_cpu = node.cpu_secs()?;
    stop(node, "big put")?;

    say(&format!("get {} MiB through a restarted node", size >> 20));
    let node = Node::start(bin, &dir_big, &work.join("node-get.log"))?;
    let get = run_cli(
        sp,
        bin,
        &node,
        &key,
        &[OsStr::new("get"), OsStr::new(&cid), OsStr::new("-o"), out_file.as_os_str(), OsStr::new("-q")],
    )?;
    let node_get_big = node.peak_rss()?;
    let node_get_cpu = node.cpu_secs()?;
    stop(node, "get")?;

    say("verifying the file that came back");
    let (got, len) = hash_file(&out_file)?;
    let verified = got == want && len == size;

    Ok(E2e {
        size,
        put_secs: big.secs,
        put_mbps: size as f64 / big.secs / 1e6,
        get_secs: get.secs,
        get_mbps: size as f64 / get.secs / 1e6,
        verified,
        small_put_secs: small.secs,
        rss: Rss {
            cli_put_small: small.max_rss,
            node_put_small,
            cli_put_big: big.max_rss,
            node_put_big,
            cli_get_big: get.max_rss,
            node_get_big,
        },
        cpu: Cpu { cli_put: big.cpu_secs, node_put: node_put_cpu, cli_get: get.cpu_secs, node_get: node_get_cpu },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_parsed_in_bytes() {
        let s = "Name:\tdatamesh\nVmPeak:\t  900000 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40000 kB\n";
        assert_eq!(parse_vm_hwm(s), Some(51234 * 1024));
        assert_eq!(parse_vm_hwm("Name:\tx\n"), None);
    }

    #[test]
    fn stat_cpu_skips_a_command_with_spaces() {
        let s = "1234 (datamesh (x) y) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_stat_cpu(s, 100.0), Some(3.0));
        assert_eq!(parse_stat_cpu("garbage", 100.0), None);
    }

    #[test]
    fn files_hash_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let want = write_random_file(&p, (4 << 20) + 3, 1).unwrap();
        assert_eq!(hash_file(&p).unwrap(), (want, (4 << 20) + 3));
    }
}
