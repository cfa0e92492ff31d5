//! Rebalancing when nodes join: placement is by XOR distance among the
//! ONLINE nodes with room, so new nodes take their share of *new*
//! placements at once, and nothing already stored moves. Real node
//! processes on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;

/// Shard CIDs (file names) a node holds.
fn shard_set(node: &TestNode) -> BTreeSet<String> {
    shard_files(node).into_iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

#[test]
fn joining_nodes_take_a_fair_share_of_new_shards_and_nothing_old_moves() {
    let mut net = TestNet::start(6, &[]);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    // 6 nodes, 4+2: every chunk has a shard on every node.
    for (i, (len, chunk)) in [(2_000_000, "256KiB"), (300_000, "64KiB")].into_iter().enumerate() {
        let data = pseudo_random(len, 80 + i as u64);
        let cid = put_via(&net.nodes[0], &net.nodes[i], &data, &["--chunk-size", chunk]);
        files.push((cid, data));
    }
    let old: Vec<BTreeSet<String>> = net.nodes.iter().map(shard_set).collect();
    let old_all: BTreeSet<String> = old.iter().flatten().cloned().collect();
    assert_eq!(old_all.len(), 6 * (8 + 5), "{old:?}");

    // Six more nodes join through node 0.
    let mut args: Vec<&str> = FAST_TIMERS.to_vec();
    let boot = net.nodes[0].p2p_addr();
    args.extend(["--bootstrap", &boot]);
    for _ in 0..6 {
        net.nodes.push(TestNode::start(&args));
    }
    net.wait_connected(11);

    // New files: 64 chunks of 64 KiB, 384 shards, through old and new nodes.
    let mut new_files = Vec::new();
    for (i, via) in [(0, 1), (1, 8)] {
        let data = pseudo_random(32 * 65_536, 90 + i as u64);
        let cid = put_via(&net.nodes[0], &net.nodes[via], &data, &["--chunk-size", "64KiB"]);
        new_files.push((cid, data));
    }
    let now: Vec<BTreeSet<String>> = net.nodes.iter().map(shard_set).collect();

    // (a) Nothing old moved: each old node holds exactly the old shards it
    // held, and the new nodes none of them.
    for i in 0..6 {
        let old_here: BTreeSet<String> = now[i].intersection(&old_all).cloned().collect();
        assert_eq!(old_here, old[i], "node {i}'s old shards changed");
    }
    for (i, set) in now.iter().enumerate().skip(6) {
        assert!(set.is_disjoint(&old_all), "new node {i} received shards of files stored before it joined");
    }

    // (b) The new nodes took their share of the new shards. Each chunk's 6
    // shards go to the 6 of the 12 nodes closest to the chunk's key, so a
    // new node is in that set for about half of the keys and the new nodes
    // hold about half of the new shards; how far below half depends mostly
    // on where the 12 random node keys fall. A simulation of this placement
    // (random 256-bit node keys, 64 random chunk keys, 35 000 networks) never
    // gave the new nodes less than 0.35 of the shards nor any one new node
    // fewer than 15, so the bounds below (a quarter; at least 4 each) fail
    // only if placement ignores the new nodes, not by chance.
    let new_shards: Vec<usize> = now.iter().map(|n| n.difference(&old_all).count()).collect();
    let total: usize = new_shards.iter().sum();
    assert_eq!(total, 64 * 6, "{new_shards:?}");
    let to_new: usize = new_shards[6..].iter().sum();
    for (i, &n) in new_shards.iter().enumerate().skip(6) {
        assert!(n >= 4, "new node {i} got only {n} of the {total} new shards: {new_shards:?}");
    }
    assert!(4 * to_new >= total, "the new nodes got {to_new} of {total} new shards: {new_shards:?}");

    // (c) Everything reads back, through an old node and a new one.
    for (cid, data) in files.iter().chain(&new_files) {
        get_via(&net.nodes[0], &net.nodes[3], cid, data);
        get_via(&net.nodes[0], &net.nodes[10], cid, data);
    }
    // And nothing moved while reading, either (no repair had cause to).
    for (i, (node, was)) in net.nodes.iter().zip(&old).enumerate() {
        let old_here: BTreeSet<String> = shard_set(node).intersection(&old_all).cloned().collect();
        assert_eq!(&old_here, was, "node {i}'s old shards changed");
    }
}
