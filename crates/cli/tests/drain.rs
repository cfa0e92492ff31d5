//! Draining a node before it leaves (`datamesh drain`): real node processes
//! on loopback. The drained node's shards must be *moved* by the drain
//! while it is alive, not rebuilt by repair after it dies: peers here never
//! call a silent node OFFLINE within the test (`--offline-after 10m`) and
//! periodic repair and audits are off, so nothing but the drain can put
//! copies of its shards elsewhere.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn shard_set(node: &TestNode) -> BTreeSet<PathBuf> {
    shard_files(node).into_iter().map(|p| PathBuf::from(p.file_name().unwrap())).collect()
}

#[test]
fn a_drained_node_moves_its_shards_and_can_be_killed_without_loss() {
    let timers = ["--heartbeat-interval", "200ms", "--warning-after", "1s", "--offline-after", "10m"];
    let slow_repair = ["--repair-interval", "1h", "--audit-interval", "0s", "--scrub-interval", "1h"];
    let mut net = TestNet::start(8, &[&timers[..], &slow_repair[..]].concat());
    let user = 0;

    // A multi-chunk file, a one-chunk file and a public one.
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let big = pseudo_random(3_000_000, 71);
    files.push((put_via(&net.nodes[user], &net.nodes[0], &big, &["--chunk-size", "512KiB"]), big));
    let small = pseudo_random(40_000, 72);
    files.push((put_via(&net.nodes[user], &net.nodes[1], &small, &[]), small));
    let public = text_like(1_200_000, 73);
    files.push((put_via(&net.nodes[user], &net.nodes[2], &public, &["--public", "--chunk-size", "256KiB"]), public));

    // The node holding the most shards is drained.
    let counts: Vec<usize> = net.nodes.iter().map(|n| shard_files(n).len()).collect();
    let victim = (0..8).max_by_key(|&i| counts[i]).unwrap();
    let others: Vec<usize> = (0..8).filter(|&i| i != victim).collect();
    let victim_shards = shard_set(&net.nodes[victim]);
    assert!(!victim_shards.is_empty(), "{counts:?}");
    let others_before: usize = others.iter().map(|&i| counts[i]).sum();
    let victim_id = json(&net.nodes[victim].ok(&["status", "--json"]))["peer_id"].as_str().unwrap().to_string();

    let started = json(&net.nodes[victim].ok(&["drain", "--no-wait", "--json"]));
    assert_eq!(started["draining"], true, "{started}");
    // Idempotent.
    net.nodes[victim].ok(&["drain", "--no-wait"]);
    assert_eq!(json(&net.nodes[victim].ok(&["status", "--json"]))["draining"], true);
    // Its own API takes no new files.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("refused");
    std::fs::write(&f, b"no room at a draining node").unwrap();
    let err = net.nodes[victim].fails(&["put", f.to_str().unwrap()]);
    assert!(err.contains("draining"), "{err}");

    // Every peer hears of it with the next heartbeat; a put then places
    // nothing on it.
    for &i in &others {
        wait_for(&format!("node {i} to see the drain"), Duration::from_secs(20), || {
            let peers = json(&net.nodes[i].ok(&["peers", "--json"]));
            peers["peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["peer"] == victim_id.as_str() && p["draining"] == true)
                .then_some(())
        });
    }
    let during = pseudo_random(1_500_000, 74);
    files.push((put_via(&net.nodes[user], &net.nodes[others[0]], &during, &["--chunk-size", "256KiB"]), during));

    // Wait, on the node's own word, until it is safe to stop.
    let progress = wait_for("the drain to report safe_to_stop", Duration::from_secs(90), || {
        let v = json(&net.nodes[victim].ok(&["drain", "--no-wait", "--json"]));
        (v["safe_to_stop"] == true).then_some(v)
    });
    assert!(
        progress["shards_moved"].as_u64().unwrap() >= victim_shards.len() as u64,
        "it held {} shards but moved only: {progress}",
        victim_shards.len()
    );
    assert_eq!(progress["shards_to_move"], 0, "{progress}");
    assert_eq!(progress["shards_failed"], 0, "{progress}");
    assert_eq!(progress["chunks_short"], 0, "{progress}");
    assert_eq!(progress["files_needing_replicas"], 0, "{progress}");
    // The waiting command returns at once now, with a clear last line.
    let out = net.nodes[victim].ok(&["drain"]);
    assert_eq!(last_line(&out), "safe to stop the node", "{out}");

    // A put after the drain places nothing on it either.
    let after = pseudo_random(1_000_000, 75);
    files.push((put_via(&net.nodes[user], &net.nodes[others[1]], &after, &["--chunk-size", "256KiB"]), after));
    assert_eq!(shard_set(&net.nodes[victim]), victim_shards, "new shards landed on the draining node");

    // Copies of all its shards exist elsewhere before it dies.
    let others_now: usize = others.iter().map(|&i| shard_files(&net.nodes[i]).len()).sum();
    let new_shards = 6 * (6 + 4); // the two puts after the drain started: 6 + 4 chunks of 4+2
    assert!(
        others_now >= others_before + victim_shards.len() + new_shards,
        "other nodes hold {others_now} shards; {others_before} before, {} to move, {new_shards} new",
        victim_shards.len()
    );
    let moved_elsewhere = others.iter().flat_map(|&i| shard_set(&net.nodes[i])).collect::<BTreeSet<_>>();
    let missing: Vec<_> = victim_shards.difference(&moved_elsewhere).collect();
    assert!(missing.is_empty(), "shards of the drained node found on no other node: {missing:?}");

    net.nodes[victim].kill9();

    // Every file reads back byte-identical through every survivor, and
    // every survivor sees k+m live shards per chunk without the dead node.
    for &i in &others {
        for (cid, data) in &files {
            get_via(&net.nodes[user], &net.nodes[i], cid, data);
            wait_for(&format!("node {i} to see 6 live shards per chunk of {cid}"), Duration::from_secs(20), || {
                let st = json(&net.nodes[i].ok(&["stat", cid, "--json"]));
                st["live_shards"].as_array().unwrap().iter().all(|n| n == 6).then_some(())
            });
        }
    }
    // And repair had no part in it.
    let rebuilt: u64 = others
        .iter()
        .map(|&i| json(&net.nodes[i].ok(&["status", "--json"]))["repair"]["shards_rebuilt"].as_u64().unwrap())
        .sum();
    assert_eq!(rebuilt, 0, "repair rebuilt shards: the drain did not move them all");
}

#[test]
fn drain_without_a_network_is_refused() {
    let node = TestNode::start(&["--offline"]);
    let err = node.fails(&["drain"]);
    assert!(err.contains("without the network"), "{err}");
    let v = json(&node.ok(&["status", "--json"]));
    assert_eq!(v["draining"], false);
}
