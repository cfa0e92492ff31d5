//! A throw-away network of hosts: one network namespace per host, each with
//! a veth pair whose outer end sits in a bridge in the root namespace, and
//! the faults the chaos suite injects into it (partitions, packet loss,
//! bandwidth caps) and heals.
//!
//! ```text
//!   root namespace                 host namespaces
//!   ┌──────────────────┐   veth    ┌──────────────────────┐
//!   │ bridge dmx<id>b  ├─dmx<id>h0─┤ eth0 198.18.x.10     │ dmx-<id>-h0
//!   │ (no address:     ├─dmx<id>h1─┤ eth0 198.18.x.11     │ dmx-<id>-h1
//!   │  the root ns     │   ...     │ ...                  │
//!   │  never routes it)│           └──────────────────────┘
//!   └──────────────────┘
//! ```
//!
//! Names carry the test process's pid (`<id>` = pid in hex and a per-process
//! counter), so parallel runs never collide, and a later run can tell the
//! leftovers of a run that was SIGKILLed (pid gone) and sweep them. Each lab
//! takes its own /24 of 198.18.0.0/15, the range set aside for benchmarking
//! (RFC 2544); the bridge has no address, so nothing of it is routed outside
//! the bridge. Faults live in the hosts' own namespaces (nftables tables
//! `chaos_part` and `chaos_loss` on `eth0`, never on `lo`, so a client in the
//! namespace always reaches its node's API) and on the veths (`tc tbf`).
//!
//! Everything is undone on drop, which also runs when a test panics.

#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The prefix of every name a lab creates.
pub const PREFIX: &str = "dmx";

static LABS: AtomicU32 = AtomicU32::new(0);

/// Runs a command; returns an error with its stderr when it fails.
pub fn sh(prog: &str, args: &[&str]) -> Result<String, String> {
    let o =
        Command::new(prog).args(args).stdin(Stdio::null()).output().map_err(|e| {
            format!("cannot run {prog}: {e} (is it installed? `.ci/run` installs iproute2 and nftables)")
        })?;
    if o.status.success() {
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    } else {
        Err(format!("`{prog} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// Runs `nft -f -` with `script` inside namespace `ns`.
fn nft(ns: &str, script: &str) -> Result<(), String> {
    use std::io::Write;
    let mut c = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    c.stdin.take().ok_or("no stdin")?.write_all(script.as_bytes()).map_err(|e| e.to_string())?;
    let o = c.wait_with_output().map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("nft in {ns} failed: {}\n{script}", String::from_utf8_lossy(&o.stderr).trim()))
    }
}

/// One host: a namespace and its address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name.
    pub ns: String,
    /// The outer (root namespace) end of its veth.
    pub veth: String,
    /// Its address on the bridge.
    pub ip: String,
}

/// A bridge and its hosts.
pub struct Lab {
    /// `<pid hex>x<counter>`: unique on this machine while the process lives.
    pub id: String,
    pub bridge: String,
    pub hosts: Vec<Host>,
}

impl Lab {
    /// Creates `n` hosts on a fresh bridge. Fails (never skips) when the
    /// machine cannot make namespaces.
    pub fn create(n: usize) -> Result<Lab, String> {
        assert!(n <= 200, "a lab holds at most 200 hosts");
        sweep_stale();
        let counter = LABS.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let id = format!("{pid:x}x{counter}");
        // A /24 of 198.18.0.0/15 per lab, from the pid and counter.
        let net = (pid as usize * 7 + counter as usize) % 512;
        let prefix = format!("198.{}.{}", 18 + net / 256, net % 256);
        let mut lab = Lab { id: id.clone(), bridge: format!("{PREFIX}{id}b"), hosts: Vec::new() };
        sh("ip", &["link", "add", &lab.bridge, "type", "bridge"])?;
        sh("ip", &["link", "set", &lab.bridge, "up"])?;
        for i in 0..n {
            let h = Host {
                ns: format!("{PREFIX}-{id}-h{i}"),
                veth: format!("{PREFIX}{id}h{i}"),
                ip: format!("{prefix}.{}", 10 + i),
            };
            // Pushed first, so a failure half-way is still cleaned up.
            lab.hosts.push(h.clone());
            sh("ip", &["netns", "add", &h.ns])?;
            sh("ip", &["link", "add", &h.veth, "type", "veth", "peer", "name", "eth0", "netns", &h.ns])?;
            sh("ip", &["link", "set", &h.veth, "master", &lab.bridge, "up"])?;
            sh("ip", &["-n", &h.ns, "addr", "add", &format!("{}/24", h.ip), "dev", "eth0"])?;
            sh("ip", &["-n", &h.ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", &h.ns, "link", "set", "lo", "up"])?;
        }
        Ok(lab)
    }

    /// Splits the network: every host in `side` stops exchanging packets
    /// with every host outside it (both directions dropped on both sides).
    pub fn partition(&self, side: &[usize]) -> Result<(), String> {
        let ips = |inside: bool| -> String {
            self.hosts
                .iter()
                .enumerate()
                .filter(|(i, _)| side.contains(i) == inside)
                .map(|(_, h)| h.ip.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (a, b) = (ips(true), ips(false));
        for (i, h) in self.hosts.iter().enumerate() {
            let others = if side.contains(&i) { &b } else { &a };
            if others.is_empty() {
                continue;
            }
            nft(
                &h.ns,
                &format!(
                    "table inet chaos_part {{\n\
                       chain input {{ type filter hook input priority 0; policy accept;\n\
                         iifname \"eth0\" ip saddr {{ {others} }} drop\n\
                       }}\n\
                       chain output {{ type filter hook output priority 0; policy accept;\n\
                         oifname \"eth0\" ip daddr {{ {others} }} drop\n\
                       }}\n\
                     }}\n"
                ),
            )?;
        }
        Ok(())
    }

    /// Ends a partition.
    pub fn heal_partition(&self) {
        for h in &self.hosts {
            let _ = sh("ip", &["netns", "exec", &h.ns, "nft", "delete", "table", "inet", "chaos_part"]);
        }
    }

    /// Drops `percent`% of the packets host `i` sends or receives on its
    /// network interface, at random.
    pub fn packet_loss(&self, i: usize, percent: u32) -> Result<(), String> {
        nft(
            &self.hosts[i].ns,
            &format!(
                "table inet chaos_loss {{\n\
                   chain input {{ type filter hook input priority 0; policy accept;\n\
                     iifname \"eth0\" numgen random mod 100 < {percent} drop\n\
                   }}\n\
                   chain output {{ type filter hook output priority 0; policy accept;\n\
                     oifname \"eth0\" numgen random mod 100 < {percent} drop\n\
                   }}\n\
                 }}\n"
            ),
        )
    }

    /// Ends packet loss on host `i`.
    pub fn heal_loss(&self, i: usize) {
        let _ = sh("ip", &["netns", "exec", &self.hosts[i].ns, "nft", "delete", "table", "inet", "chaos_loss"]);
    }

    /// Caps host `i`'s bandwidth to `mbit` Mbit/s each way with a token
    /// bucket on both ends of its veth.
    pub fn cap_bandwidth(&self, i: usize, mbit: u32) -> Result<(), String> {
        let h = &self.hosts[i];
        let rate = format!("{mbit}mbit");
        // Burst: at least one MTU and a few ms worth; latency bounds the queue.
        let tbf = ["root", "tbf", "rate", rate.as_str(), "burst", "32kb", "latency", "200ms"];
        let mut outer = vec!["qdisc", "replace", "dev", h.veth.as_str()];
        outer.extend_from_slice(&tbf);
        sh("tc", &outer)?;
        let mut inner = vec!["-n", h.ns.as_str(), "qdisc", "replace", "dev", "eth0"];
        inner.extend_from_slice(&tbf);
        sh("tc", &inner)?;
        Ok(())
    }

    /// Lifts host `i`'s bandwidth cap.
    pub fn heal_bandwidth(&self, i: usize) {
        let h = &self.hosts[i];
        let _ = sh("tc", &["qdisc", "del", "dev", &h.veth, "root"]);
        let _ = sh("tc", &["-n", &h.ns, "qdisc", "del", "dev", "eth0", "root"]);
    }

    /// Whether every namespace and link of this lab exists.
    pub fn exists(&self) -> bool {
        let list = sh("ip", &["netns", "list"]).unwrap_or_default();
        let names: Vec<&str> = list.lines().filter_map(|l| l.split_whitespace().next()).collect();
        sh("ip", &["link", "show", &self.bridge]).is_ok() && self.hosts.iter().all(|h| names.contains(&h.ns.as_str()))
    }
}

/// Removes one lab's namespaces (killing whatever still runs in them), veths
/// and bridge. Idempotent.
fn destroy(id: &str, namespaces: &[String]) {
    for ns in namespaces {
        if let Ok(pids) = sh("ip", &["netns", "pids", ns]) {
            for pid in pids.split_whitespace() {
                let _ = sh("kill", &["-KILL", pid]);
            }
        }
        let _ = sh("ip", &["netns", "del", ns]);
    }
    // Deleting a namespace destroys its veth end and so the pair; delete the
    // outer ends too in case a namespace was already gone.
    let links = sh("ip", &["-o", "link", "show"]).unwrap_or_default();
    let mine = format!("{PREFIX}{id}");
    for l in links.lines() {
        if let Some(name) = l.split(':').nth(1).map(|s| s.trim().split('@').next().unwrap_or("").to_string())
            && name.strip_prefix(&format!("{mine}h")).is_some_and(|i| i.parse::<u32>().is_ok())
        {
            let _ = sh("ip", &["link", "del", &name]);
        }
    }
    let _ = sh("ip", &["link", "del", &format!("{mine}b")]);
}

impl Drop for Lab {
    fn drop(&mut self) {
        let ns: Vec<String> = self.hosts.iter().map(|h| h.ns.clone()).collect();
        destroy(&self.id, &ns);
    }
}

/// Removes what runs SIGKILLed before their drop left behind: namespaces,
/// links and mounts named after a pid that no longer runs.
pub fn sweep_stale() {
    let alive = |id: &str| -> bool {
        let pid = id.split('x').next().and_then(|p| u32::from_str_radix(p, 16).ok());
        pid.is_none_or(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
    };
    let list = sh("ip", &["netns", "list"]).unwrap_or_default();
    let mut stale: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for ns in list.lines().filter_map(|l| l.split_whitespace().next()) {
        if let Some(rest) = ns.strip_prefix(&format!("{PREFIX}-"))
            && let Some((id, _)) = rest.split_once('-')
            && !alive(id)
        {
            stale.entry(id.to_string()).or_default().push(ns.to_string());
        }
    }
    let links = sh("ip", &["-o", "link", "show", "type", "bridge"]).unwrap_or_default();
    for l in links.lines() {
        if let Some(name) = l.split(':').nth(1).map(|s| s.trim().to_string())
            && let Some(id) = name.strip_prefix(PREFIX).and_then(|s| s.strip_suffix('b'))
            && !alive(id)
        {
            stale.entry(id.to_string()).or_default();
        }
    }
    for (id, ns) in &stale {
        eprintln!("chaos: removing the leftovers of an earlier run that was killed ({PREFIX}{id}*)");
        destroy(id, ns);
    }
    // Mounts (the suite's tmpfs root and the full disk): source
    // `dmx-<id>-<what>`; inner ones first.
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut points: Vec<String> = Vec::new();
    for l in mounts.lines() {
        let mut f = l.split_whitespace();
        let (Some(source), Some(point)) = (f.next(), f.next()) else { continue };
        if let Some((id, _)) = source.strip_prefix(&format!("{PREFIX}-")).and_then(|s| s.split_once('-'))
            && !alive(id)
        {
            points.push(point.to_string());
        }
    }
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in &points {
        let _ = sh("umount", &["-l", p]);
    }
    // Their temp dirs: `<tmp>/dmx-<id>-*`.
    if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some((id, _)) = name.strip_prefix(&format!("{PREFIX}-")).and_then(|s| s.split_once('-'))
                && !alive(id)
                && e.path().is_dir()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}
