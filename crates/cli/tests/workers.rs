//! The node's workers: started by the node and the gateway, listed by
//! `datamesh status`, stopped in reverse order on SIGTERM with the store
//! closed cleanly.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{bin, wait_for};

/// Every worker a networked node with S3 runs, in the order they start.
const STARTED: [&str; 12] = [
    "heartbeat",
    "upload-expiry",
    "gc",
    "scrub",
    "repair",
    "audit",
    "leases",
    "drain",
    "events-peers",
    "events-metrics",
    "s3-multipart-expiry",
    "accounts-housekeeping",
];

fn start(dir: &std::path::Path, log: &std::path::Path) -> std::process::Child {
    let _ = std::fs::remove_file(dir.join("api.url"));
    let child = Command::new(bin())
        .args(["node", "--api", "127.0.0.1:0", "--s3", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .arg("--data-dir")
        .arg(dir)
        // Worker starts and stops are debug lines; the store's open report is info.
        .env("DATAMESH_LOG", "info,datamesh_node::workers=debug")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    wait_for("api.url", Duration::from_secs(30), || std::fs::read_to_string(dir.join("api.url")).ok());
    child
}

fn status(dir: &std::path::Path) -> serde_json::Value {
    let o = Command::new(bin())
        .args(["status", "--json"])
        .env("DATAMESH_DATA_DIR", dir)
        .env_remove("DATAMESH_API")
        .env_remove("DATAMESH_TOKEN")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn sigterm_and_wait(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    wait_for("the node to exit", Duration::from_secs(30), || child.try_wait().ok().flatten())
}

/// The workers named in `... worker stopped worker="NAME"` lines, in order.
fn stopped_in_order(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("worker stopped"))
        .filter_map(|l| l.split("worker=").nth(1))
        .map(|w| w.trim().trim_matches('"').split_whitespace().next().unwrap_or("").trim_matches('"').to_string())
        .collect()
}

#[test]
fn status_lists_the_workers_and_sigterm_stops_them_in_reverse_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("node");
    let log = tmp.path().join("node.log");
    let mut child = start(&dir, &log);
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = Command::new("kill").args(["-KILL", &self.0.to_string()]).status();
        }
    }
    let _kill = Kill(child.id());

    // Every worker is listed, running, and says what it is doing.
    let v = wait_for("every worker running", Duration::from_secs(30), || {
        let v = status(&dir);
        let ws = v["workers"].as_array()?.clone();
        (ws.len() == STARTED.len() && ws.iter().all(|w| w["state"] == "running")).then_some(ws)
    });
    let names: Vec<&str> = v.iter().map(|w| w["name"].as_str().unwrap()).collect();
    assert_eq!(names, STARTED);
    for w in &v {
        assert!(!w["doing"].as_str().unwrap().is_empty(), "{w}");
        assert_eq!(w["restarts"], 0, "{w}");
    }
    // The human status shows them too.
    let o = Command::new(bin()).arg("status").env("DATAMESH_DATA_DIR", &dir).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for name in STARTED {
        assert!(text.contains(name), "`datamesh status` does not list {name}:\n{text}");
    }

    // SIGTERM: every worker stops, the last started first, none aborted.
    let exit = sigterm_and_wait(&mut child);
    assert!(exit.success(), "node exited with {exit}");
    let text = std::fs::read_to_string(&log).unwrap();
    let mut reversed = STARTED.map(String::from).to_vec();
    reversed.reverse();
    assert_eq!(stopped_in_order(&text), reversed, "{text}");
    assert!(!text.contains("did not stop in time"), "{text}");
    assert!(text.contains("node stopped"), "{text}");
    for f in ["api.url", "s3.url", "p2p.addrs"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }

    // The store was closed cleanly: the next start finds nothing to recover.
    let log2 = tmp.path().join("node2.log");
    let mut child = start(&dir, &log2);
    let _kill = Kill(child.id());
    let exit = sigterm_and_wait(&mut child);
    assert!(exit.success(), "node exited with {exit}");
    let text = std::fs::read_to_string(&log2).unwrap();
    let opened = text.lines().find(|l| l.contains("store opened")).expect("a `store opened` line");
    for clean in ["orphans_removed: 0", "missing_dropped: 0", "temp_removed: 0", "corrupt_quarantined: 0"] {
        assert!(opened.contains(clean), "{opened}");
    }
}
