//! Real `datamesh node` processes, one per host of a [`Lab`], and the real
//! CLI run inside a host's namespace against that host's node.
//!
//! Each node listens for peers on its host's address at a fixed port, so a
//! node restarted after `kill -9` comes back where its peers remember it;
//! its API is on the namespace's own loopback, which no injected fault
//! touches (faults act on `eth0` only). Nodes run under
//! `setpriv --pdeathsig KILL`: if the test process dies without unwinding,
//! they die with it. One host may keep its store on a small tmpfs, the
//! disk the suite fills up.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::netlab::{Lab, PREFIX, sh};

/// The peer port every node listens on, in its own namespace.
pub const P2P_PORT: u16 = 7781;

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_datamesh"))
}

/// One node process on one host.
pub struct Node {
    pub index: usize,
    pub ns: String,
    pub ip: String,
    pub dir: PathBuf,
    child: Mutex<Option<Child>>,
    /// True while the process runs and its API is up (the workload only
    /// picks live nodes; it may still race a kill, which is the point).
    pub alive: AtomicBool,
    /// `/ip4/<ip>/tcp/7781/p2p/<id>`, known after the first start.
    pub p2p: Mutex<String>,
    log: PathBuf,
}

impl Node {
    /// The node's data dir.
    pub fn data_dir(&self) -> &Path {
        &self.dir
    }

    /// The store's shard files.
    pub fn shard_files(&self) -> Vec<PathBuf> {
        crate::common::shard_files_in(&self.dir)
    }

    /// The pid of the running process.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap().as_ref().map(Child::id)
    }

    /// The last `n` lines of the node's log (stderr of every run).
    pub fn log_tail(&self, n: usize) -> String {
        let s = strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// Removes terminal colour codes (`ESC [ ... m`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What one CLI run did.
#[derive(Debug)]
pub struct CliOut {
    /// None: killed at the timeout.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CliOut {
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// The nodes of a lab, a shared user key, and the node flags.
pub struct Cluster {
    pub lab: Lab,
    pub nodes: Vec<Node>,
    pub root: tempfile::TempDir,
    pub user_key: PathBuf,
    flags: Vec<String>,
    /// The host whose store is a small tmpfs, and its mount point.
    pub disk: Option<(usize, PathBuf)>,
    calls: AtomicU64,
    /// The tmpfs everything lives on.
    root_mount: PathBuf,
}

/// Extra node flags from the environment, for debugging (`CHAOS_NODE_LOG`
/// sets the nodes' log filter).
fn log_filter() -> String {
    std::env::var("CHAOS_NODE_LOG").unwrap_or_else(|_| "warn,datamesh_node::repair=info".into())
}

impl Cluster {
    /// Starts `n` nodes, one per host of a new lab, with `flags`; node
    /// `disk_host`'s store lives on a tmpfs of `disk_mib` MiB.
    pub fn start(n: usize, flags: &[&str], disk: Option<(usize, u64)>) -> Result<Cluster, String> {
        let lab = Lab::create(n)?;
        let root = tempfile::Builder::new()
            .prefix(&format!("{PREFIX}-{}-", lab.id))
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        // Everything on a tmpfs of its own: no IO contention with whatever
        // else shares the machine's disk, and removal in milliseconds rather
        // than seconds. Durability under kill -9 is the same as on a disk
        // (a dead process's writes are in the page cache either way);
        // power loss is the store's own crash tests' business.
        let source = format!("{PREFIX}-{}-root", lab.id);
        sh("mount", &["-t", "tmpfs", "-o", "size=8g,mode=0700", &source, root.path().to_str().unwrap()])?;
        let root_mount = root.path().to_owned();
        std::fs::create_dir_all(root.path().join("io")).map_err(|e| e.to_string())?;
        let nodes: Vec<Node> = lab
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| Node {
                index: i,
                ns: h.ns.clone(),
                ip: h.ip.clone(),
                dir: root.path().join(format!("h{i}")),
                child: Mutex::new(None),
                alive: AtomicBool::new(false),
                p2p: Mutex::new(String::new()),
                log: root.path().join(format!("h{i}.log")),
            })
            .collect();
        let mut c = Cluster {
            user_key: root.path().join("user.key"),
            lab,
            nodes,
            root,
            flags: flags.iter().map(|s| s.to_string()).collect(),
            disk: None,
            calls: AtomicU64::new(0),
            root_mount,
        };
        if let Some((host, mib)) = disk {
            let store = c.nodes[host].dir.join("store");
            std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
            // The source name `dmx-<id>-disk` marks the mount for the stale sweep.
            let source = format!("{PREFIX}-{}-disk", c.lab.id);
            let size = format!("size={mib}m");
            sh("mount", &["-t", "tmpfs", "-o", &size, &source, store.to_str().unwrap()])?;
            c.disk = Some((host, store));
        }
        // Node 0 first; the others bootstrap from it, started together.
        c.spawn(0, &[])?;
        c.wait_ready(0)?;
        let boot = c.nodes[0].p2p.lock().unwrap().clone();
        for i in 1..n {
            c.spawn(i, std::slice::from_ref(&boot))?;
        }
        for i in 1..n {
            c.wait_ready(i)?;
        }
        Ok(c)
    }

    fn spawn(&self, i: usize, bootstrap: &[String]) -> Result<(), String> {
        let node = &self.nodes[i];
        std::fs::create_dir_all(&node.dir).map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(node.dir.join("api.url"));
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&node.log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.ns, "setpriv", "--pdeathsig", "KILL"])
            .arg(bin())
            .args(["node", "--api", "127.0.0.1:0", "--listen"])
            .arg(format!("/ip4/{}/tcp/{P2P_PORT}", node.ip))
            .arg("--data-dir")
            .arg(&node.dir)
            .args(&self.flags);
        if !bootstrap.is_empty() {
            cmd.args(["--bootstrap", &bootstrap.join(",")]);
        }
        let child = cmd
            .env("DATAMESH_LOG", log_filter())
            .env_remove("DATAMESH_API")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node {i}: {e}"))?;
        *node.child.lock().unwrap() = Some(child);
        Ok(())
    }

    /// Waits for node `i`'s API and peer address; marks it alive.
    fn wait_ready(&self, i: usize) -> Result<(), String> {
        let node = &self.nodes[i];
        let start = Instant::now();
        loop {
            if let (Ok(_), Ok(addrs)) =
                (std::fs::read_to_string(node.dir.join("api.url")), std::fs::read_to_string(node.dir.join("p2p.addrs")))
                && let Some(a) = addrs.lines().next()
            {
                *node.p2p.lock().unwrap() = a.to_string();
                node.alive.store(true, Ordering::SeqCst);
                return Ok(());
            }
            if let Some(c) = node.child.lock().unwrap().as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("node {i} exited at start with {st}:\n{}", node.log_tail(30)));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("node {i} did not come up in 30 s:\n{}", node.log_tail(30)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs node `i` (no-op if it is down).
    pub fn kill9(&self, i: usize) {
        let node = &self.nodes[i];
        node.alive.store(false, Ordering::SeqCst);
        if let Some(mut c) = node.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts node `i` on its data dir, bootstrapping from every other node.
    pub fn restart(&self, i: usize) -> Result<(), String> {
        let boot: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| n.index != i)
            .map(|n| n.p2p.lock().unwrap().clone())
            .filter(|a| !a.is_empty())
            .collect();
        self.spawn(i, &boot)?;
        self.wait_ready(i)
    }

    /// Runs `datamesh <args>` inside host `i`'s namespace against its node,
    /// killed after `timeout`.
    pub fn cli(&self, i: usize, args: &[&str], timeout: Duration) -> CliOut {
        let node = &self.nodes[i];
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let io = self.root.path().join("io");
        let (out_p, err_p) = (io.join(format!("{n}.out")), io.join(format!("{n}.err")));
        let start = Instant::now();
        let out = std::fs::File::create(&out_p).unwrap();
        let err = std::fs::File::create(&err_p).unwrap();
        let mut child = super::common::cli_in_netns(&node.ns, &node.dir, &self.user_key)
            .args(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("run the CLI");
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let took = start.elapsed();
        let stdout = std::fs::read_to_string(&out_p).unwrap_or_default();
        let stderr = std::fs::read_to_string(&err_p).unwrap_or_default();
        let _ = std::fs::remove_file(&out_p);
        let _ = std::fs::remove_file(&err_p);
        CliOut { status, stdout, stderr, took }
    }

    /// ONLINE, connected peers node `i` sees.
    pub fn online_peers(&self, i: usize) -> usize {
        let o = self.cli(i, &["peers", "--json"], Duration::from_secs(10));
        if !o.ok() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
        v["peers"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["state"] == "ONLINE" && p["connected"] == true).count())
            .unwrap_or(0)
    }

    /// Indexes of live nodes.
    pub fn live(&self) -> Vec<usize> {
        self.nodes.iter().filter(|n| n.alive.load(Ordering::SeqCst)).map(|n| n.index).collect()
    }

    /// `datamesh status --json` of node `i`.
    pub fn status(&self, i: usize) -> Option<serde_json::Value> {
        let o = self.cli(i, &["status", "--json"], Duration::from_secs(10));
        o.ok().then(|| serde_json::from_str(&o.stdout).ok()).flatten()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        if let Some((_, mount)) = &self.disk {
            let _ = sh("umount", &["-l", mount.to_str().unwrap_or_default()]);
        }
        let _ = sh("umount", &["-l", self.root_mount.to_str().unwrap_or_default()]);
        // The lab (namespaces, links) goes when its field drops, after this.
    }
}
