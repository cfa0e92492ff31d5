//! Multi-node tests: real node processes on loopback, each in its own temp
//! dir, talking libp2p to each other.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn get_ok(node: &TestNode, cid: &str, want: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    node.ok(&["get", cid, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == want, "bytes differ");
}

#[test]
fn five_nodes_put_on_one_get_on_another() {
    let net = TestNet::start(5, &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(3_000_000, 1);
    std::fs::write(&f, &data).unwrap();
    // 3+2 = 5 shards on 5 distinct nodes.
    let cid = net.nodes[0].put(&f, &["-k", "3", "-m", "2", "--chunk-size", "1MiB"]);
    let st = json(&net.nodes[0].ok(&["stat", &cid, "--json"]));
    assert_eq!(st["holders"], 5, "shards spread over 5 nodes: {st}");
    assert!(st["live_shards"].as_array().unwrap().iter().all(|n| n == 5), "{st}");
    // Node 0's user reads through node 4: its own data must cross the network.
    get_via(&net.nodes[0], &net.nodes[4], &cid, &data);
    // A public file is found by its UnixFS CID from another node.
    let p = net.nodes[1].put(&f, &["--public", "-k", "3", "-m", "2"]);
    get_via(&net.nodes[1], &net.nodes[3], &p, &data);
}

#[test]
fn too_few_nodes_for_the_code_is_a_clear_error() {
    let net = TestNet::start(3, &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"some bytes").unwrap();
    let e = net.nodes[0].fails(&["put", f.to_str().unwrap()]);
    assert!(e.contains("needs 6") && e.contains("only 3"), "{e}");
    net.nodes[0].put(&f, &["-k", "2", "-m", "1"]);
}

#[test]
fn twenty_nodes_survive_two_holders_killed() {
    let mut net = TestNet::start(20, &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(6_000_000, 2);
    std::fs::write(&f, &data).unwrap();
    let cid = net.nodes[0].put(&f, &["--chunk-size", "1MiB"]);
    // Find two nodes (not node 0) that hold shards, and kill -9 them.
    let mut holders = vec![];
    for (i, n) in net.nodes.iter().enumerate().skip(1) {
        let st = json(&n.ok(&["status", "--json"]));
        if st["store"]["shards"].as_u64().unwrap_or(0) > 0 {
            holders.push(i);
        }
    }
    assert!(holders.len() >= 2, "shards should be spread: holders {holders:?}");
    for &i in &holders[..2] {
        net.nodes[i].kill9();
    }
    for (i, n) in net.nodes.iter().enumerate() {
        if n.child.is_some() {
            get_via(&net.nodes[0], n, &cid, &data);
            let _ = i;
        }
    }
}

#[test]
fn a_frozen_holder_is_hedged_around_not_waited_for() {
    // Slow health timers: the frozen node stays ONLINE in everyone's eyes,
    // so only hedging (not health ranking) can route around it.
    let net = TestNet::start(
        6,
        &["--heartbeat-interval", "10s", "--warning-after", "60s", "--offline-after", "120s", "--hedge-after", "200ms"],
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(4_000_000, 7);
    std::fs::write(&f, &data).unwrap();
    // 4+2 on 6 nodes: every node holds one shard of each of the 8 chunks, a
    // data shard (asked first) of most of them.
    let cid = net.nodes[0].put(&f, &["--chunk-size", "512KiB"]);
    let frozen = net.nodes[2].child.as_ref().unwrap().id().to_string();
    assert!(std::process::Command::new("kill").args(["-STOP", &frozen]).status().unwrap().success());
    let t = std::time::Instant::now();
    let o = net.nodes[0]
        .cli()
        .args(["get", &cid, "-o", dir.path().join("out").to_str().unwrap()])
        .env("DATAMESH_DATA_DIR", net.nodes[5].data_dir())
        .output()
        .unwrap();
    let took = t.elapsed();
    let _ = std::process::Command::new("kill").args(["-CONT", &frozen]).status();
    assert!(o.status.success(), "get failed: {}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::read(dir.path().join("out")).unwrap() == data, "bytes differ");
    // Without hedging (--hedge-after 0s) this get takes over 10 s: chunks
    // wait on the frozen holder until its requests fail; with it, well
    // under a second.
    assert!(took < std::time::Duration::from_secs(5), "get took {took:?}: the frozen holder was waited for");
}

#[test]
fn the_whole_network_restarts_and_files_read_back() {
    let mut net = TestNet::start(6, &[]);
    let dir = tempfile::tempdir().unwrap();
    let mut files = vec![];
    for i in 0..3u64 {
        let f = dir.path().join(format!("f{i}"));
        let data = pseudo_random(1_500_000 + i as usize, 10 + i);
        std::fs::write(&f, &data).unwrap();
        files.push((net.nodes[i as usize].put(&f, &["--chunk-size", "512KiB"]), data, i as usize));
    }
    for n in net.nodes.iter_mut() {
        n.stop();
    }
    // Restart: node 0 first (its address changes), the rest bootstrap from it.
    net.nodes[0].spawn();
    let boot = net.nodes[0].p2p_addr();
    for n in net.nodes.iter_mut().skip(1) {
        let pos = n.extra.iter().position(|a| a == "--bootstrap").unwrap();
        n.extra[pos + 1] = boot.clone();
        n.spawn();
    }
    net.wait_connected(5);
    for (cid, data, owner) in &files {
        get_via(&net.nodes[*owner], &net.nodes[(owner + 3) % 6], cid, data);
        get_ok(&net.nodes[*owner], cid, data);
    }
}

#[test]
fn a_dead_bootstrap_entry_does_not_stop_joining() {
    let a = TestNode::start(&FAST_TIMERS);
    let boot = a.p2p_addr();
    // First entry: a port nobody listens on.
    let list = format!("/ip4/127.0.0.1/tcp/9/p2p/{},{}", boot.rsplit('/').next().unwrap(), boot);
    let mut args = FAST_TIMERS.to_vec();
    args.extend_from_slice(&["--bootstrap", &list]);
    let b = TestNode::start(&args);
    wait_for("b to join through the live bootstrap", std::time::Duration::from_secs(30), || {
        (b.online_peers() >= 1).then_some(())
    });
    wait_for("a to see b", std::time::Duration::from_secs(30), || (a.online_peers() >= 1).then_some(()));
}

#[test]
fn peers_go_warning_then_offline_when_a_node_dies() {
    let mut net = TestNet::start(3, &[]);
    net.nodes[2].kill9();
    let state_of_dead = |n: &TestNode| -> Vec<String> {
        let v = json(&n.ok(&["peers", "--json"]));
        v["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["state"] != "ONLINE")
            .map(|p| p["state"].as_str().unwrap_or("").to_string())
            .collect()
    };
    wait_for("a WARNING peer", std::time::Duration::from_secs(20), || {
        state_of_dead(&net.nodes[0]).iter().any(|s| s == "WARNING" || s == "OFFLINE").then_some(())
    });
    wait_for("an OFFLINE peer", std::time::Duration::from_secs(20), || {
        state_of_dead(&net.nodes[0]).iter().any(|s| s == "OFFLINE").then_some(())
    });
    let text = net.nodes[0].ok(&["peers"]);
    assert!(text.contains("OFFLINE") && text.contains("k-buckets"), "{text}");
}

#[test]
fn devnet_starts_prints_urls_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(bin())
        .args([
            "devnet",
            "--nodes",
            "3",
            "--json",
            "-k",
            "2",
            "-m",
            "1",
            "--heartbeat-interval",
            "200ms",
            "--warning-after",
            "1s",
            "--offline-after",
            "3s",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("DATAMESH_USER_KEY", dir.path().join("user.key"))
        .env("USER", "tester")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Stops the devnet (which stops its nodes) even if an assertion fails.
    struct Stop(u32);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["-TERM", &self.0.to_string()]).status();
        }
    }
    let _stop = Stop(pid);
    let mut child = child;
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let v = json(&line);
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    let api = nodes[1]["api"].as_str().unwrap();
    assert!(api.starts_with("http://127.0.0.1:"));
    // Use it: put through node 1, get through node 2.
    let user = dir.path().join("user.key");
    let f = dir.path().join("f");
    std::fs::write(&f, pseudo_random(200_000, 4)).unwrap();
    let run = |node: &Value, args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("DATAMESH_API", node["api"].as_str().unwrap())
            .env("DATAMESH_TOKEN", node["token"].as_str().unwrap())
            .env("DATAMESH_USER_KEY", &user)
            .output()
            .unwrap()
    };
    // The devnet's peers may still be greeting each other: wait until node 1 sees both.
    wait_for("devnet peers", std::time::Duration::from_secs(30), || {
        let o = run(&nodes[1], &["peers", "--json"]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        (v["peers"].as_array().map(|a| a.iter().filter(|p| p["state"] == "ONLINE").count()).unwrap_or(0) >= 2)
            .then_some(())
    });
    let o = run(&nodes[1], &["put", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cid = last_line(&String::from_utf8_lossy(&o.stdout));
    let out = dir.path().join("out");
    let o = run(&nodes[2], &["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());

    // The devnet signed the user's key in on node 0: with no token, the
    // CLI is that user (not the administrator), and what it stores is theirs.
    assert_eq!(v["user"], "tester", "{v}");
    let as_user = |args: &[&str]| {
        std::process::Command::new(bin())
            .args(args)
            .env("DATAMESH_API", nodes[0]["api"].as_str().unwrap())
            .env("DATAMESH_USER_KEY", &user)
            .env_remove("DATAMESH_TOKEN")
            .output()
            .unwrap()
    };
    let o = as_user(&["account", "whoami", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&String::from_utf8_lossy(&o.stdout))["name"], "tester");
    let o = as_user(&["put", f.to_str().unwrap(), "-q"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_user(&["usage", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(json(&String::from_utf8_lossy(&o.stdout))["files"], 1, "the put counts for the devnet's user");
    let pids: Vec<u64> = nodes.iter().map(|n| n["pid"].as_u64().unwrap()).collect();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let status = wait_for("devnet exit", std::time::Duration::from_secs(30), || child.try_wait().ok().flatten());
    assert!(status.success(), "devnet exited with {status}");
    for p in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{p}")).exists()
                || std::fs::read_to_string(format!("/proc/{p}/status"))
                    .map(|s| s.contains("State:\tZ"))
                    .unwrap_or(true),
            "node {p} still running"
        );
    }
}

#[test]
fn a_cid_no_node_knows_fails_clearly_within_30_s() {
    let net = TestNet::start(3, &[]);
    // A well-formed manifest CID that was never stored anywhere.
    let unknown = "bafyr4iad7eb3nl4hkwqzdomct66rqd5hclx7zaib77j3e4jcgw6q6qefwa";
    let t = std::time::Instant::now();
    let o = net.nodes[2].run(&["get", unknown, "-o", "-"]);
    assert!(t.elapsed() < std::time::Duration::from_secs(30), "took {:?}", t.elapsed());
    assert_eq!(o.status.code(), Some(3), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not stored"));
}

/// Live shards per chunk as `stat --json` reports them on `node`.
fn live_shards(node: &TestNode, cid: &str) -> Vec<u64> {
    let st = json(&node.ok(&["stat", cid, "--json"]));
    st["live_shards"].as_array().unwrap().iter().map(|n| n.as_u64().unwrap()).collect()
}

#[test]
fn a_dead_holder_is_repaired_around_back_to_k_plus_m() {
    let mut net = TestNet::start(8, &[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(3_000_000, 21);
    std::fs::write(&f, &data).unwrap();
    let cid = net.nodes[0].put(&f, &["--chunk-size", "512KiB"]);
    assert!(live_shards(&net.nodes[0], &cid).iter().all(|&n| n == 6));
    // Kill two holders, one after the other (never more than m = 2 at once).
    let mut lost = 0;
    // Rebuilt counts are summed per round over the nodes alive then: a
    // repairer killed in a later round takes its counter with it.
    let live_rebuilt = |net: &TestNet| -> u64 {
        net.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| json(&n.ok(&["status", "--json"]))["repair"]["shards_rebuilt"].as_u64().unwrap())
            .sum()
    };
    let mut rebuilt = 0;
    for round in 0..2 {
        let shards = |i: usize| json(&net.nodes[i].ok(&["status", "--json"]))["store"]["shards"].as_u64().unwrap();
        let victim = (1..8).find(|&i| net.nodes[i].child.is_some() && shards(i) > 0).expect("a holder to kill");
        lost += shards(victim);
        let before = live_rebuilt(&net)
            - json(&net.nodes[victim].ok(&["status", "--json"]))["repair"]["shards_rebuilt"].as_u64().unwrap();
        net.nodes[victim].kill9();
        // OFFLINE after 3 s of silence, then a repair pass on the maintainer.
        wait_for(
            &format!("round {round}: every chunk back to 6 live shards"),
            std::time::Duration::from_secs(60),
            || {
                let live = live_shards(&net.nodes[0], &cid);
                live.iter().all(|&n| n == 6).then_some(())
            },
        );
        rebuilt += live_rebuilt(&net) - before;
    }
    // Readable from every survivor, and the repairs are on record.
    for n in net.nodes.iter().filter(|n| n.child.is_some()) {
        get_via(&net.nodes[0], n, &cid, &data);
    }
    assert!(rebuilt >= lost, "the dead holders had {lost} shards; only {rebuilt} were rebuilt");
    // New holders rebuilt shards themselves (REBUILD_SHARD) rather than
    // taking them from the maintainer: with one shard lost per chunk, a
    // chunk the maintainer holds a shard of can only go to another node.
    let for_peers: u64 = net
        .nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| json(&n.ok(&["status", "--json"]))["repair"]["rebuilt_for_peers"].as_u64().unwrap())
        .sum();
    assert!(for_peers >= 1, "no shard was rebuilt by its new holder");
}

#[test]
fn a_rotted_shard_is_found_by_scrub_and_rebuilt() {
    let net = TestNet::start(7, &["--scrub-interval", "500ms", "--repair-interval", "1s"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(2_000_000, 31);
    std::fs::write(&f, &data).unwrap();
    let cid = net.nodes[0].put(&f, &["--chunk-size", "512KiB"]);
    // Flip one bit in a shard file on a node that is not the reader.
    let victim = (1..7).find(|&i| !shard_files(&net.nodes[i]).is_empty()).expect("a holder");
    let path = shard_files(&net.nodes[victim]).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let rebuilt = || -> u64 {
        net.nodes.iter().map(|n| json(&n.ok(&["status", "--json"]))["repair"]["shards_rebuilt"].as_u64().unwrap()).sum()
    };
    wait_for("scrub to quarantine the shard and repair to rebuild it", std::time::Duration::from_secs(60), || {
        (rebuilt() >= 1 && live_shards(&net.nodes[0], &cid).iter().all(|&n| n == 6)).then_some(())
    });
    get_via(&net.nodes[0], &net.nodes[victim], &cid, &data);
}

#[test]
fn a_holder_that_cannot_prove_its_shard_loses_reputation_and_the_shard_is_rebuilt() {
    // Scrub and periodic repair are slowed right down: only an audit can
    // find the rot here.
    let net = TestNet::start(7, &["--audit-interval", "300ms", "--scrub-interval", "1h", "--repair-interval", "1h"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(2_000_000, 41);
    std::fs::write(&f, &data).unwrap();
    let cid = net.nodes[0].put(&f, &["--chunk-size", "512KiB"]);
    let status = |i: usize| json(&net.nodes[i].ok(&["status", "--json"]));
    // The file's maintainer is the node whose audits pass.
    let maintainer = wait_for("the maintainer's first passed audits", std::time::Duration::from_secs(30), || {
        (0..7).find(|&i| status(i)["audit"]["passed"].as_u64().unwrap() > 0)
    });
    let maintainer_id = status(maintainer)["peer_id"].as_str().unwrap().to_string();
    let victim = (0..7).find(|&i| i != maintainer && !shard_files(&net.nodes[i]).is_empty()).expect("a holder");
    let victim_id = status(victim)["peer_id"].as_str().unwrap().to_string();
    assert_ne!(maintainer_id, victim_id);
    let path = shard_files(&net.nodes[victim]).into_iter().next().unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();

    wait_for("an audit to fail and repair to rebuild the shard", std::time::Duration::from_secs(60), || {
        let s = status(maintainer);
        (s["audit"]["failed"].as_u64().unwrap() >= 1
            && s["repair"]["shards_rebuilt"].as_u64().unwrap() >= 1
            && live_shards(&net.nodes[0], &cid).iter().all(|&n| n == 6))
        .then_some(())
    });
    // The maintainer's view of the victim: points lost, the failure counted;
    // honest holders gained.
    let peers = json(&net.nodes[maintainer].ok(&["peers", "--json"]));
    let rep = |id: &str| {
        peers["peers"].as_array().unwrap().iter().find(|p| p["peer"] == id).map(|p| p["reputation"].clone()).unwrap()
    };
    let v = rep(&victim_id);
    assert!(v["failed"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["score"].as_f64().unwrap() < 1000.0, "{v}");
    let honest = (0..7).find(|&i| i != maintainer && i != victim && !shard_files(&net.nodes[i]).is_empty()).unwrap();
    let h = rep(status(honest)["peer_id"].as_str().unwrap());
    assert!(h["passed"].as_u64().unwrap() >= 1 && h["score"].as_f64().unwrap() > 1000.0, "{h}");
    get_via(&net.nodes[0], &net.nodes[victim], &cid, &data);
}

fn shards_on(net: &TestNet) -> Vec<usize> {
    net.nodes.iter().map(|n| if n.child.is_some() { shard_files(n).len() } else { 0 }).collect()
}

#[test]
fn rm_by_the_owner_deletes_across_the_network_and_a_stale_holder_drops_its_copy() {
    let mut net = TestNet::start(7, &["--lease", "2s", "--repair-interval", "500ms"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(1_500_000, 51);
    std::fs::write(&f, &data).unwrap();
    let cid = net.nodes[0].put(&f, &["--chunk-size", "512KiB"]);
    let before = shards_on(&net);
    assert_eq!(before.iter().sum::<usize>(), 3 * 6, "{before:?}");

    // Leases are renewed by the maintainer: replicas outlive several leases.
    let t0 = std::time::Instant::now();
    wait_for("three lease periods", std::time::Duration::from_secs(20), || {
        (t0.elapsed() >= std::time::Duration::from_secs(6)).then_some(())
    });
    assert_eq!(shards_on(&net), before, "replicas lapsed while their maintainer was renewing them");
    get_via(&net.nodes[0], &net.nodes[3], &cid, &data);

    // Someone else's key cannot delete it, from any node.
    let err = net.nodes[2].fails(&["rm", &cid]);
    assert!(err.contains("owner"), "{err}");
    assert_eq!(shards_on(&net), before);

    // A holder is down while the owner deletes.
    let stale = (1..7).find(|&i| before[i] > 0).unwrap();
    net.nodes[stale].kill9();
    net.nodes[0].ok(&["rm", &cid]);
    wait_for("every live holder to drop its shards", std::time::Duration::from_secs(30), || {
        (shards_on(&net).iter().sum::<usize>() == 0).then_some(())
    });
    let err = net.nodes[4].fails(&["stat", &cid]);
    assert!(err.contains("not stored") || err.contains("deleted by its owner"), "{err}");

    // Back up, it still has its copy: nobody renews the lease (its holders
    // answer with the tombstone), so it lapses and the space comes back.
    net.nodes[stale].spawn();
    assert!(!shard_files(&net.nodes[stale]).is_empty());
    wait_for("the stale holder to drop its copy", std::time::Duration::from_secs(30), || {
        shard_files(&net.nodes[stale]).is_empty().then_some(())
    });
    // And nothing was rebuilt in the meantime.
    wait_for("the network to settle", std::time::Duration::from_secs(5), || Some(()));
    assert_eq!(shards_on(&net).iter().sum::<usize>(), 0);
}
