//! Wide erasure codes end to end on 80 nodes in one process: 10+20 and
//! 29+51 (every node holds one shard of each chunk). Each node is a full
//! `Node` (store on disk in its own temp dir, signed location records, the
//! repair worker) on libp2p's in-process memory transport; files go in and
//! out through the gateway's server-side pipeline (chunked, encrypted,
//! erasure coded), so nothing about the wide code is special-cased.
//!
//! For each code, on a network of its own: a put on one node, a
//! byte-identical get on another, then m holders are shut down at once (the
//! most a code survives) and the file still reads back from a survivor.
//! 10+20 then repairs: the maintainer rebuilds the lost shards on the 60
//! nodes left, and `stat` shows k+m live shards per chunk again. 29+51 uses
//! all 80 nodes; with 51 of them gone no placement can restore it, and the
//! repair must not double shards up on one node to pretend it did.
//!
//! Slow (80 nodes join, twice): behind the `full` profile.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// The `datamesh` binary's allocator (`crates/cli/src/alloc.rs`): 80 nodes
/// in one process measure what ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use datamesh_core::{Cid, Erasure};
use datamesh_gateway::keys::KeyOwner;
use datamesh_gateway::objects::{ObjectPipeline, ObjectPipelineConfig, WriteOptions};
use datamesh_net::{NetClient, PeerState};
use datamesh_node::{Node, NodeConfig};
use datamesh_pipeline::keys::UserKey;
use futures::StreamExt;

const NODES: usize = 80;

struct Peer {
    node: Node,
    net: NetClient,
    _dir: tempfile::TempDir,
}

async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn start_peer(bootstrap: Vec<String>) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let cfg = NodeConfig {
        data_dir: dir.path().to_owned(),
        listen: vec!["/memory/0".into()],
        bootstrap,
        heartbeat_interval: Duration::from_millis(500),
        warning_after: Duration::from_secs(2),
        offline_after: Duration::from_secs(4),
        // Repairs run when the test says (a pass), not on their own.
        repair_interval: Duration::from_secs(3600),
        cache: bytesize::ByteSize::mib(1),
        ..NodeConfig::default()
    };
    let node = tokio::task::spawn_blocking(move || Node::open(cfg)).await.unwrap().unwrap();
    let net = node.start_network().await.unwrap();
    Peer { node, net, _dir: dir }
}

async fn p2p_addr(n: &NetClient) -> String {
    let me = n.local_peer_id();
    format!("{}/p2p/{me}", n.listen_addrs().await[0])
}

async fn online_peers(n: &NetClient) -> usize {
    n.peers().await.iter().filter(|p| p.connected && p.state == PeerState::Online).count()
}

/// 80 nodes, joining in waves through earlier ones (a network grows; 80
/// simultaneous joins on one bootstrap node test a storm instead).
async fn network() -> Vec<Option<Peer>> {
    let mut peers = vec![Some(start_peer(Vec::new()).await)];
    let mut boots = vec![p2p_addr(&peers[0].as_ref().unwrap().net).await];
    while peers.len() < NODES {
        let start = peers.len();
        for i in start..(start + 20).min(NODES) {
            let b = (0..3).map(|j| boots[(i * 7 + j * 5) % boots.len()].clone()).collect();
            peers.push(Some(start_peer(b).await));
        }
        for p in peers[start..].iter().flatten().take(3) {
            boots.push(p2p_addr(&p.net).await);
        }
    }
    peers
}

fn live(peers: &[Option<Peer>]) -> Vec<&Peer> {
    peers.iter().flatten().collect()
}

async fn read_all(p: &ObjectPipeline, cid: Cid, who: &Arc<KeyOwner>) -> Vec<u8> {
    let f = p.open_file(cid, std::slice::from_ref(who)).await.unwrap();
    let size = f.size;
    let mut s = p.read_file(f, 0..size);
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b.unwrap());
    }
    out
}

/// The nodes' own account of discovery and placement (nextest shows it
/// only when a test fails): `RUST_LOG` overrides.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("datamesh_node=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

async fn wide_code(k: u16, m: u16, size: usize) {
    init_tracing();
    let n = (k + m) as usize;
    let t = Instant::now();
    let mut peers = network().await;
    let peers = &mut peers[..];
    // Joined: every node talks to a few others. Nobody is connected to all
    // 79; placing 30 or 80 shards makes the writer look for more nodes.
    wait_for("every node to have peers", Duration::from_secs(240), || async {
        for p in live(peers) {
            if online_peers(&p.net).await < 3 {
                return false;
            }
        }
        true
    })
    .await;
    eprintln!("{k}+{m}: {NODES} nodes up in {:.1?}", t.elapsed());
    let t = Instant::now();
    let who = Arc::new(KeyOwner { id: "wide".into(), user: UserKey::generate() });
    // 1 MiB chunks: several chunks, each spread over k+m nodes.
    let cfg = ObjectPipelineConfig { chunk_size: 1 << 20, concurrency: 2 };
    let body: Vec<u8> = (0..size).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();

    let writer = ObjectPipeline::new(peers[0].as_ref().unwrap().node.clone(), cfg);
    let stream =
        futures::stream::iter(body.chunks(256 * 1024).map(|c| Ok::<_, std::io::Error>(Bytes::copy_from_slice(c))));
    let written = writer
        .write_with(
            &who.user,
            stream,
            (),
            WriteOptions { erasure: Some(Erasure { k, m }), ..Default::default() },
            |()| Ok(()),
        )
        .await;
    let written = match written {
        Ok(w) => w,
        Err(e) => {
            // What the writer saw: how many peers in which state.
            let mut states = std::collections::BTreeMap::new();
            for p in peers[0].as_ref().unwrap().net.peers().await {
                *states
                    .entry(format!("{:?}/{}", p.state, if p.connected { "connected" } else { "not connected" }))
                    .or_insert(0) += 1;
            }
            panic!("{k}+{m} put on {NODES} nodes: {e}; the writer's peers: {states:?}")
        }
    };
    let cid = written.manifest.unwrap();
    let stat = peers[0].as_ref().unwrap().node.stat(cid).await.unwrap();
    assert_eq!((stat.k, stat.m), (k, m));
    assert!(stat.live_shards.iter().all(|&l| l as usize == n), "{k}+{m}: {:?}", stat.live_shards);
    assert!(stat.holders >= n, "{k}+{m}: {} holders for {n} shards per chunk", stat.holders);
    eprintln!("{k}+{m}: put {} chunks in {:.1?}", stat.live_shards.len(), t.elapsed());

    // Read from the far end of the network.
    let reader = ObjectPipeline::new(peers[NODES - 1].as_ref().unwrap().node.clone(), cfg);
    assert!(read_all(&reader, cid, &who).await == body, "{k}+{m}: bytes differ on another node");

    // Take m holders down at once (never the writer or the reader, which
    // stay to check the result).
    let loc = peers[0].as_ref().unwrap().node.location(cid).await.unwrap().unwrap();
    let keep = [peers[0].as_ref().unwrap().net.local_peer_id(), peers[NODES - 1].as_ref().unwrap().net.local_peer_id()];
    let mut killed = 0;
    for slot in peers.iter_mut() {
        if killed == m as usize {
            break;
        }
        let Some(p) = slot else { continue };
        let id = p.net.local_peer_id();
        if keep.contains(&id) || !loc.holders.iter().any(|h| h.as_slice() == id.to_bytes().as_slice()) {
            continue;
        }
        p.net.shutdown().await;
        *slot = None;
        killed += 1;
    }
    assert_eq!(killed, m as usize);
    assert!(read_all(&reader, cid, &who).await == body, "{k}+{m}: bytes differ with {m} holders down");
    eprintln!("{k}+{m}: read back with {m} holders down");

    // Whoever knew a dead node sees it leave; then the maintainer rebuilds.
    let left = live(peers).len();
    let dead: Vec<Vec<u8>> = loc
        .holders
        .iter()
        .map(|h| h.as_slice().to_vec())
        .filter(|h| !live(peers).iter().any(|p| p.net.local_peer_id().to_bytes() == *h))
        .collect();
    wait_for("survivors to see the dead go OFFLINE", Duration::from_secs(60), || async {
        for p in live(peers) {
            for x in p.net.peers().await {
                if dead.contains(&x.peer.to_bytes()) && x.state != PeerState::Offline {
                    return false;
                }
            }
        }
        true
    })
    .await;
    if left < n {
        // 29+51 after losing 51 nodes: fewer nodes than shards; repair
        // cannot restore k+m and must say so rather than double up.
        let mut rebuilt = 0;
        for p in live(peers) {
            rebuilt += p.node.repair_pass().await.shards_rebuilt;
        }
        assert_eq!(rebuilt, 0, "{k}+{m}: repair put two shards of a chunk on one node");
        shutdown(peers).await;
        return;
    }
    let t = Instant::now();
    wait_for("repair back to k+m live shards", Duration::from_secs(180), || async {
        for p in live(peers) {
            p.node.repair_pass().await;
        }
        let s = reader.node().stat(cid).await.unwrap();
        s.live_shards.iter().all(|&l| l as usize == n)
    })
    .await;
    eprintln!("{k}+{m}: back to {n} live shards per chunk in {:.1?} after the repair started", t.elapsed());
    assert!(read_all(&reader, cid, &who).await == body, "{k}+{m}: bytes differ after repair");
    shutdown(peers).await;
}

async fn shutdown(peers: &[Option<Peer>]) {
    for p in live(peers) {
        p.net.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_code_29_plus_51_on_eighty_nodes() {
    wide_code(29, 51, 2 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wide_code_10_plus_20_on_eighty_nodes() {
    wide_code(10, 20, 3 << 20).await;
}
