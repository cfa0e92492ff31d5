//! Test harness: a real `datamesh node` process in a temp dir, and the real
//! CLI run against it with an isolated user key.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_datamesh"))
}

/// `datamesh` run inside network namespace `ns` against the node whose data
/// dir is `data_dir` (its API address and token come from there), as the
/// user whose key is `user_key`; nothing of the caller's DATAMESH_*
/// environment leaks in.
#[allow(dead_code)]
pub fn cli_in_netns(ns: &str, data_dir: &Path, user_key: &Path) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns])
        .arg(bin())
        .env("DATAMESH_DATA_DIR", data_dir)
        .env("DATAMESH_USER_KEY", user_key)
        .env_remove("DATAMESH_API")
        .env_remove("DATAMESH_TOKEN")
        .env_remove("DATAMESH_PASSPHRASE")
        .env("DATAMESH_LOG", "warn")
        .stdin(Stdio::null());
    c
}

/// Waits for `cond` up to `timeout`, polling; panics with `what` on timeout.
pub fn wait_for<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A node process; killed on drop.
pub struct TestNode {
    pub child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub user_dir: tempfile::TempDir,
    pub url: String,
    pub extra: Vec<String>,
    /// Log level and file, when the log is not the test's stderr.
    pub log: Option<(String, PathBuf)>,
}

/// Fast health timers for network tests.
pub const FAST_TIMERS: [&str; 6] = ["--heartbeat-interval", "200ms", "--warning-after", "1s", "--offline-after", "3s"];

impl TestNode {
    /// The node's dialable p2p addresses (with /p2p/<id>), once listening.
    pub fn p2p_addr(&self) -> String {
        let f = self.data_dir().join("p2p.addrs");
        wait_for("p2p.addrs", Duration::from_secs(30), || {
            std::fs::read_to_string(&f).ok().and_then(|s| s.lines().next().map(str::to_owned))
        })
    }

    /// Connected ONLINE peers, as `datamesh peers --json` reports them.
    pub fn online_peers(&self) -> usize {
        let o = self.run(&["peers", "--json"]);
        if !o.status.success() {
            return 0;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["peers"]
            .as_array()
            .map(|a| a.iter().filter(|p| p["state"] == "ONLINE" && p["connected"] == true).count())
            .unwrap_or(0)
    }

    pub fn start(extra: &[&str]) -> TestNode {
        Self::start_logged(extra, None)
    }

    /// A node whose log (at `level`) goes to the file `log` instead of the
    /// test's stderr.
    pub fn start_logged(extra: &[&str], log: Option<(&str, &Path)>) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let user_dir = tempfile::tempdir().expect("temp dir");
        let mut n = TestNode {
            child: None,
            dir,
            user_dir,
            url: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: log.map(|(level, path)| (level.to_string(), path.to_owned())),
        };
        n.spawn();
        n
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("node")
    }

    /// (Re)starts the node process on the same data dir.
    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.data_dir().join("api.url"));
        let mut cmd = Command::new(bin());
        cmd.args(["node", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
            .arg(self.data_dir())
            .args(&self.extra)
            .env("DATAMESH_LOG", std::env::var("DATAMESH_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some((level, path)) = &self.log {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(path).expect("log file");
            cmd.env("DATAMESH_LOG", level).stderr(f);
        }
        let child = cmd.spawn().expect("start node");
        self.child = Some(child);
        let url_file = self.data_dir().join("api.url");
        self.url = wait_for("the node's api.url", Duration::from_secs(30), || std::fs::read_to_string(&url_file).ok());
    }

    /// SIGKILLs the node.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERMs the node and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe_free_sigterm(c.id());
            let status = wait_for("node exit", Duration::from_secs(30), || c.try_wait().ok().flatten());
            assert!(status.success(), "node exited with {status}");
        }
    }

    /// The CLI, pointed at this node, with this test's own user key.
    pub fn cli(&self) -> Command {
        let mut c = Command::new(bin());
        c.env("DATAMESH_DATA_DIR", self.data_dir())
            .env("DATAMESH_USER_KEY", self.user_dir.path().join("user.key"))
            .env_remove("DATAMESH_API")
            .env_remove("DATAMESH_TOKEN")
            .env_remove("DATAMESH_PASSPHRASE")
            .env("DATAMESH_LOG", std::env::var("DATAMESH_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null());
        c
    }

    /// Runs the CLI with `args`; returns the output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cli().args(args).output().expect("run cli")
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "datamesh {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).expect("utf-8 stdout")
    }

    /// Runs the CLI and asserts failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "datamesh {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stderr).expect("utf-8 stderr")
    }

    /// Puts a file and returns its CID (the last line of stdout).
    pub fn put(&self, path: &Path, extra: &[&str]) -> String {
        let mut args = vec!["put", path.to_str().expect("utf-8 path")];
        args.extend_from_slice(extra);
        last_line(&self.ok(&args))
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir().join("api.token")).expect("token")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn unsafe_free_sigterm(pid: u32) {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
}

pub fn last_line(s: &str) -> String {
    s.lines().last().unwrap_or("").trim().to_string()
}

/// Deterministic pseudo-random bytes, so failures reproduce.
pub use datamesh_core::testdata::pseudo_random;

/// Text-like bytes that compress.
pub fn text_like(len: usize, seed: u64) -> Vec<u8> {
    let words = ["storage", "network", "shard", "chunk", "erasure", "node", "the", "of", "data", "mesh", "\n"];
    let r = pseudo_random(len / 4 + 8, seed);
    let mut v = Vec::with_capacity(len + 16);
    let mut i = 0;
    while v.len() < len {
        v.extend_from_slice(words[r[i % r.len()] as usize % words.len()].as_bytes());
        v.push(b' ');
        i += 1;
    }
    v.truncate(len);
    v
}

/// Every shard file under a node's store.
pub fn shard_files(node: &TestNode) -> Vec<PathBuf> {
    shard_files_in(&node.data_dir())
}

/// Every shard file under the store of the node whose data dir is `dir`,
/// sorted.
pub fn shard_files_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.join("store").join("shards")];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out.sort();
    out
}

/// A network of node processes on loopback; node 0 is everyone's bootstrap.
pub struct TestNet {
    pub nodes: Vec<TestNode>,
}

impl TestNet {
    /// `n` nodes with [`FAST_TIMERS`] (unless `extra` sets the timers).
    pub fn start(n: usize, extra: &[&str]) -> TestNet {
        let mut args: Vec<&str> =
            if extra.contains(&"--heartbeat-interval") { Vec::new() } else { FAST_TIMERS.to_vec() };
        args.extend_from_slice(extra);
        let first = TestNode::start(&args);
        let boot = first.p2p_addr();
        let mut nodes = vec![first];
        let mut with_boot = args.clone();
        with_boot.push("--bootstrap");
        with_boot.push(&boot);
        for _ in 1..n {
            nodes.push(TestNode::start(&with_boot));
        }
        let net = TestNet { nodes };
        net.wait_connected(n - 1);
        net
    }

    /// Waits until every node sees at least `n` online peers.
    pub fn wait_connected(&self, n: usize) {
        for (i, node) in self.nodes.iter().enumerate() {
            if node.child.is_some() {
                wait_for(&format!("node {i} to see {n} online peers"), Duration::from_secs(60), || {
                    (node.online_peers() >= n).then_some(())
                });
            }
        }
    }
}

/// The user key and client setup of `from`, pointed at `to`'s API.
pub fn get_via(from: &TestNode, to: &TestNode, cid: &str, want: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = from
        .cli()
        .args(["get", cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_DATA_DIR", to.data_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "get via another node failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == want, "bytes differ");
}

/// `from`'s user puts `data` through `to`.
pub fn put_via(from: &TestNode, to: &TestNode, data: &[u8], extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, data).unwrap();
    let o = from
        .cli()
        .args(["put", f.to_str().unwrap()])
        .args(extra)
        .env("DATAMESH_DATA_DIR", to.data_dir())
        .output()
        .unwrap();
    assert!(o.status.success(), "put via another node failed: {}", String::from_utf8_lossy(&o.stderr));
    last_line(&String::from_utf8(o.stdout).unwrap())
}
