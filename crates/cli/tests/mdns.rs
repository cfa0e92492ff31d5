//! mDNS discovery, end to end: two real `datamesh node` processes started
//! with `--mdns` and no bootstrap peer find each other on a LAN, become
//! ONLINE peers of each other, and store a file between them.
//!
//! Multicast does not work on loopback, so the LAN is real: each node runs
//! in a network namespace of its own, and the two namespaces are joined by a
//! veth pair (`eth0` in each, 198.18.0.1/24 and 198.18.0.2/24, the range set
//! aside for benchmarking). Both ends of the pair are created straight
//! inside the namespaces, so nothing of the LAN exists in the root
//! namespace. Each node's API listens on its namespace's loopback and the
//! CLI runs inside that namespace (as the chaos suite does); its peers
//! listen on `/ip4/0.0.0.0/tcp/0`, so mDNS announces the `eth0` address.
//!
//! Namespace names carry the test process's pid (`dmm-<pid hex>-a`, `-b`);
//! the namespaces and the nodes in them are removed on drop, also when the
//! test panics, and the leftovers of a run that was SIGKILLed (pid gone) are
//! swept at the next start. Needs root and iproute2: the test fails, never
//! skips, when it cannot make the namespaces.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin, cli_in_netns, last_line, pseudo_random};

/// The prefix of every namespace this test makes.
const PREFIX: &str = "dmm";

/// Fast health timers: a peer is ONLINE within a heartbeat or two.
const TIMERS: [&str; 6] = ["--heartbeat-interval", "1s", "--warning-after", "2s", "--offline-after", "5s"];

/// How long discovery may take. mDNS probes at 0.5 s, 1 s, 2 s, ... after
/// start, so the nodes should meet in a few seconds.
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs a command; returns its stdout, or an error with its stderr.
fn sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let o = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {prog}: {e} (is iproute2 installed?)"))?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("`{prog} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// Deletes namespace `ns`, killing whatever still runs in it (its end of
/// the veth pair goes with it, and so the pair). Idempotent.
fn destroy(ns: &str) {
    if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
        for pid in pids.split_whitespace() {
            let _ = sh("kill", &["-KILL", pid]);
        }
    }
    let _ = sh("ip", &["netns", "del", ns]);
}

/// Deletes the namespaces of earlier runs whose process is gone.
fn sweep_stale() {
    let list = sh("ip", &["netns", "list"]).unwrap_or_default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some((pid, _)) = ns.strip_prefix(&format!("{PREFIX}-")).and_then(|s| s.split_once('-'))
            && let Ok(pid) = u32::from_str_radix(pid, 16)
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            eprintln!("mdns: removing namespace {ns}, left by an earlier run that was killed");
            destroy(ns);
        }
    }
}

/// One host of the LAN: a namespace, its address and the node in it.
struct Host {
    ns: String,
    ip: &'static str,
    dir: PathBuf,
    log: PathBuf,
    node: Option<Child>,
}

/// Two namespaces joined by a veth pair, a node in each; all of it removed
/// on drop.
struct Lan {
    hosts: Vec<Host>,
    root: tempfile::TempDir,
    user_key: PathBuf,
}

impl Lan {
    /// Makes the namespaces and the link. Fails (never skips) when the
    /// machine cannot.
    fn create() -> Result<Lan, String> {
        sweep_stale();
        let root = tempfile::Builder::new().prefix("datamesh-mdns-").tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let pid = std::process::id();
        let mut lan = Lan { hosts: Vec::new(), user_key: root.path().join("user.key"), root };
        for (name, ip) in [("a", "198.18.0.1"), ("b", "198.18.0.2")] {
            let h = Host {
                ns: format!("{PREFIX}-{pid:x}-{name}"),
                ip,
                dir: lan.root.path().join(name),
                log: lan.root.path().join(format!("{name}.log")),
                node: None,
            };
            // Pushed first, so a failure half-way is still cleaned up.
            lan.hosts.push(h);
            let h = lan.hosts.last().unwrap();
            sh("ip", &["netns", "add", &h.ns])?;
            sh("ip", &["-n", &h.ns, "link", "set", "lo", "up"])?;
        }
        let (a, b) = (&lan.hosts[0].ns, &lan.hosts[1].ns);
        // Both ends made inside the namespaces: nothing in the root one.
        sh("ip", &["-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b])?;
        for h in &lan.hosts {
            sh("ip", &["-n", &h.ns, "addr", "add", &format!("{}/24", h.ip), "dev", "eth0"])?;
            sh("ip", &["-n", &h.ns, "link", "set", "eth0", "up"])?;
        }
        Ok(lan)
    }

    /// Starts a node in host `i`'s namespace: mDNS on, no bootstrap peer.
    fn start_node(&mut self, i: usize) -> Result<(), String> {
        let h = &mut self.hosts[i];
        std::fs::create_dir_all(&h.dir).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(&h.log).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", &h.ns, "setpriv", "--pdeathsig", "KILL"])
            .arg(bin())
            .args(["node", "--mdns", "--api", "127.0.0.1:0", "--listen", "/ip4/0.0.0.0/tcp/0", "--data-dir"])
            .arg(&h.dir)
            .args(TIMERS)
            .env("DATAMESH_LOG", std::env::var("DATAMESH_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env_remove("DATAMESH_API")
            .env_remove("DATAMESH_BOOTSTRAP")
            .env_remove("DATAMESH_LISTEN")
            .env_remove("DATAMESH_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the node in {}: {e}", h.ns))?;
        h.node = Some(child);
        Ok(())
    }

    /// Waits until host `i`'s node has written its API URL and peer
    /// addresses; returns its peer id.
    fn wait_ready(&mut self, i: usize) -> Result<String, String> {
        let start = Instant::now();
        loop {
            let h = &mut self.hosts[i];
            if let (Ok(_), Ok(addrs)) =
                (std::fs::read_to_string(h.dir.join("api.url")), std::fs::read_to_string(h.dir.join("p2p.addrs")))
                && let Some(id) =
                    addrs.lines().next().and_then(|a| a.rsplit_once("/p2p/")).map(|(_, id)| id.to_string())
            {
                return Ok(id);
            }
            if let Some(c) = h.node.as_mut()
                && let Ok(Some(st)) = c.try_wait()
            {
                return Err(format!("the node in {} exited at start with {st}", h.ns));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("the node in {} did not come up in 30 s", h.ns));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs `datamesh <args>` inside host `i`'s namespace against its node,
    /// as the LAN's one user.
    fn cli(&self, i: usize, args: &[&str]) -> Output {
        let h = &self.hosts[i];
        cli_in_netns(&h.ns, &h.dir, &self.user_key).args(args).output().expect("run the CLI")
    }

    /// Runs the CLI and asserts success; returns stdout.
    fn ok(&self, i: usize, args: &[&str]) -> String {
        let o = self.cli(i, args);
        assert!(
            o.status.success(),
            "datamesh {args:?} in {} failed: {}\n{}",
            self.hosts[i].ns,
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).expect("utf-8 stdout")
    }

    /// Whether host `i`'s node lists `peer` as ONLINE and connected.
    fn sees_online(&self, i: usize, peer: &str) -> bool {
        let o = self.cli(i, &["peers", "--json"]);
        if !o.status.success() {
            return false;
        }
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        v["peers"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p["peer"] == peer && p["state"] == "ONLINE" && p["connected"] == true))
    }

    /// The last lines of every node's log.
    fn logs(&self) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            let log = std::fs::read_to_string(&h.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            s += &format!("--- node in {} ---\n{}\n", h.ns, lines[lines.len().saturating_sub(40)..].join("\n"));
        }
        s
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            if let Some(mut c) = h.node.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        for h in &self.hosts {
            destroy(&h.ns);
        }
    }
}

/// Waits for `cond` up to `timeout`; an error naming `what` on timeout.
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_nodes_on_a_lan_find_each_other_by_mdns_and_store_a_file() {
    let mut lan = Lan::create().unwrap_or_else(|e| panic!("cannot make the network namespaces (run as root): {e}"));
    for i in 0..2 {
        lan.start_node(i).unwrap();
    }
    let ids: Vec<String> =
        (0..2).map(|i| lan.wait_ready(i).unwrap_or_else(|e| panic!("{e}\n{}", lan.logs()))).collect();

    // Neither node was told of the other: mDNS alone must bring them together.
    let took = wait_until("both nodes to see each other ONLINE", DISCOVERY_TIMEOUT, || {
        lan.sees_online(0, &ids[1]) && lan.sees_online(1, &ids[0])
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lan.logs()));
    eprintln!("mdns: the nodes met after {took:?}");

    // 1+1: one shard on each node, so the put needs the peer mDNS found.
    let data = pseudo_random(3_000_000, 7);
    let f = lan.root.path().join("f");
    std::fs::write(&f, &data).unwrap();
    let cid = last_line(&lan.ok(0, &["put", f.to_str().unwrap(), "-k", "1", "-m", "1", "--chunk-size", "1MiB", "-q"]));
    let st: serde_json::Value = serde_json::from_str(&lan.ok(0, &["stat", &cid, "--json"])).unwrap();
    assert_eq!(st["holders"], 2, "the shards are spread over both nodes: {st}");

    // The same user reads it back through the other node.
    let out = lan.root.path().join("out");
    lan.ok(1, &["get", &cid, "-o", out.to_str().unwrap(), "-q"]);
    assert!(std::fs::read(&out).unwrap() == data, "the file read through the other node differs");
}
