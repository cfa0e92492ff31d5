//! Nodes in one process on loopback TCP, for the node's integration tests.

#![allow(clippy::unwrap_used, dead_code)]

use std::time::{Duration, Instant};

use datamesh_net::{HealthTimers, Multiaddr, NetClient, NetConfig, PeerState};
use datamesh_node::{Node, NodeConfig, NodeIdentity};

pub struct TestNode {
    pub node: Node,
    pub net: NetClient,
    _dir: tempfile::TempDir,
}

pub async fn start(bootstrap: Vec<Multiaddr>) -> TestNode {
    start_with(bootstrap, |_| {}).await
}

/// [`start`] with the default configuration changed by `tweak`.
pub async fn start_with(bootstrap: Vec<Multiaddr>, tweak: impl FnOnce(&mut NodeConfig)) -> TestNode {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = NodeConfig { data_dir: dir.path().join("node"), ..NodeConfig::default() };
    tweak(&mut cfg);
    let data_dir = cfg.data_dir.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(cfg)).await.unwrap().unwrap();
    let identity = NodeIdentity::load_or_create(&data_dir).unwrap();
    let net_cfg = NetConfig {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()],
        bootstrap,
        timers: HealthTimers {
            heartbeat_interval: Duration::from_millis(200),
            warning_after: Duration::from_secs(5),
            offline_after: Duration::from_secs(10),
        },
        heartbeat: node.heartbeat().await,
        request_timeout: Duration::from_secs(60),
        ..NetConfig::new(identity.secret_seed())
    };
    let net = datamesh_net::start(net_cfg, node.handler()).await.unwrap();
    node.attach_net(net.clone());
    TestNode { node, net, _dir: dir }
}

pub async fn p2p_addr(n: &NetClient) -> Multiaddr {
    let a = n.listen_addrs().await.into_iter().next().unwrap();
    format!("{a}/p2p/{}", n.local_peer_id()).parse().unwrap()
}

/// `N` nodes, every one bootstrapped from the first, once each sees all the
/// others ONLINE and connected.
pub async fn network<const N: usize>() -> [TestNode; N] {
    let first = start(Vec::new()).await;
    let boot = vec![p2p_addr(&first.net).await];
    let mut nodes = vec![first];
    for _ in 1..N {
        nodes.push(start(boot.clone()).await);
    }
    all_online(&nodes.iter().collect::<Vec<_>>()).await;
    nodes.try_into().unwrap_or_else(|_| unreachable!("N nodes were started"))
}

/// Waits until each of `nodes` sees all the others ONLINE and connected.
pub async fn all_online(nodes: &[&TestNode]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in nodes {
        while n.net.peers().await.iter().filter(|p| p.state == PeerState::Online && p.connected).count()
            < nodes.len() - 1
        {
            assert!(Instant::now() < deadline, "the {} nodes did not all see each other", nodes.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
