//! Fifty nodes in one process on loopback TCP, one tokio runtime. All join
//! through two bootstrap entries; one node provides a key and several others
//! find it through the DHT. (Run with `--release` for speed; it passes in
//! debug too.)

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const N: usize = 50;

/// CPU seconds this process has used (user + system), for the log.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| f.iter().filter_map(|x| x.parse::<f64>().ok()).sum());
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_find_a_provider() {
    let t0 = Instant::now();
    let mut nodes: Vec<Node> = Vec::with_capacity(N);
    nodes.push(node(config()).await);
    let boot0 = p2p_addr(&nodes[0].net).await;
    let mut c1 = config();
    c1.bootstrap = vec![boot0.clone()];
    nodes.push(node(c1).await);
    let boot1 = p2p_addr(&nodes[1].net).await;
    for _ in 2..N {
        let mut c = config();
        c.bootstrap = vec![boot0.clone(), boot1.clone()];
        nodes.push(node(c).await);
    }
    let started = t0.elapsed();

    // Every node's routing table fills beyond its bootstrap peers.
    wait_for("routing tables filled", Duration::from_secs(60), || async {
        for n in &nodes {
            let known: usize = n.net.routing_table().await.iter().map(|(_, e)| e).sum();
            if known < 5 {
                return false;
            }
        }
        true
    })
    .await;
    let joined = t0.elapsed();
    eprintln!("joined by {joined:?} (cpu {:.1}s)", cpu_secs());

    let provider = &nodes[25];
    let key = b"a chunk's CID, say";
    provider.net.provide(key).await.expect("provide");
    eprintln!("provided by {:?} (cpu {:.1}s)", t0.elapsed(), cpu_secs());
    for i in [2, 10, 33, 40, 49] {
        let t = Instant::now();
        let found = nodes[i].net.find_providers(key).await.expect("lookup");
        assert!(found.contains(&provider.net.local_peer_id()), "node {i} found {found:?}");
        eprintln!("lookup from node {i}: {:?}", t.elapsed());
    }
    let closest = nodes[49].net.closest_peers(key).await.unwrap();
    assert_eq!(closest.len(), 20, "k = 20 closest peers");

    eprintln!("50 nodes: started in {started:?}, joined by {joined:?}, lookups done by {:?}", t0.elapsed());
    for n in &nodes {
        n.net.shutdown().await;
    }
}
