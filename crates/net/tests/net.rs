//! Two- and three-node tests on loopback: the shard protocol, QUIC,
//! bootstrap, health timers, hostile peers and DHT store persistence.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use datamesh_core::Cid;
use datamesh_net::{HealthTimers, Heartbeat, NetError, PeerState, Request, Response, Tuning};

const T: Duration = Duration::from_secs(20);

/// Starts `a`, then `b` bootstrapping off `a`, and waits until each sees the
/// other online.
async fn pair(cfg_a: datamesh_net::NetConfig, mut cfg_b: datamesh_net::NetConfig) -> (Node, Node) {
    let a = node(cfg_a).await;
    cfg_b.bootstrap = vec![p2p_addr(&a.net).await];
    let b = node(cfg_b).await;
    let (ida, idb) = (a.net.local_peer_id(), b.net.local_peer_id());
    wait_for("a and b online to each other", T, || async {
        let ab = info(&a.net, idb).await.is_some_and(|i| i.state == PeerState::Online && i.connected);
        let ba = info(&b.net, ida).await.is_some_and(|i| i.state == PeerState::Online && i.connected);
        ab && ba
    })
    .await;
    (a, b)
}

async fn round_trip(a: &Node, b: &Node) {
    let pb = b.net.local_peer_id();
    // Shards, including an empty one and a 4 MiB one (the default shard size bound).
    for size in [0usize, 1, 1000, 4 << 20] {
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let cid = Cid::raw_blake3(&data);
        a.net.put_shard(pb, cid, data.clone()).await.expect("put_shard");
        assert_eq!(b.store.shards.lock().unwrap().get(&cid), Some(&data), "durable on b");
        assert_eq!(a.net.get_shard(pb, cid).await.expect("get_shard"), data);
    }
    let present = Cid::raw_blake3(b"");
    let missing = Cid::raw_blake3(b"never stored");
    assert_eq!(a.net.get_shard(pb, missing).await, Err(NetError::NotFound));
    assert_eq!(a.net.shard_exists(pb, vec![present, missing, present]).await.unwrap(), vec![true, false, true]);

    // Delete: the node checks the opaque authorization.
    assert_eq!(
        a.net.delete_shard(pb, present, b"nope".to_vec()).await,
        Err(NetError::Refused("bad authorization".into()))
    );
    a.net.delete_shard(pb, present, b"let me".to_vec()).await.unwrap();
    assert_eq!(a.net.shard_exists(pb, vec![present]).await.unwrap(), vec![false]);

    // Manifests are verified like shards.
    let m = b"a manifest in dag-cbor, pretend".to_vec();
    let mcid = Cid::dag_cbor_blake3(&m);
    a.net.put_manifest(pb, mcid, m.clone()).await.unwrap();
    assert_eq!(a.net.get_manifest(pb, mcid).await.unwrap(), m);
    assert_eq!(a.net.get_manifest(pb, Cid::dag_cbor_blake3(b"other")).await, Err(NetError::NotFound));

    // Records.
    a.net.put_record(pb, b"loc/1".to_vec(), b"signed".to_vec()).await.unwrap();
    assert_eq!(a.net.get_record(pb, b"loc/1".to_vec()).await.unwrap(), Some(b"signed".to_vec()));
    assert_eq!(a.net.get_record(pb, b"loc/2".to_vec()).await.unwrap(), None);

    // The raw request API gives the response as is.
    let r = a.net.request(pb, Request::GetShard { cid: missing }).await.unwrap();
    assert_eq!(r, Response::NotFound);
    // Heartbeats are answered by the network layer with the local numbers.
    let hb = Heartbeat { free_bytes: 5, shards: 6, uptime_secs: 7, draining: false };
    b.net.set_local_heartbeat(hb);
    let r = a.net.request(pb, Request::Heartbeat(Heartbeat::default())).await.unwrap();
    assert_eq!(r, Response::Heartbeat(hb));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_tcp_round_trip() {
    let (a, b) = pair(config(), config()).await;
    round_trip(&a, &b).await;
    round_trip(&b, &a).await;
    // Requests to self are served by the local handler.
    let me = a.net.local_peer_id();
    let d = b"self".to_vec();
    a.net.put_shard(me, Cid::raw_blake3(&d), d.clone()).await.unwrap();
    assert_eq!(a.net.get_shard(me, Cid::raw_blake3(&d)).await.unwrap(), d);
    // Over-bound requests fail locally with a reason.
    let too_many = vec![Cid::raw_blake3(b"x"); 1025];
    assert!(matches!(a.net.shard_exists(b.net.local_peer_id(), too_many).await, Err(NetError::Protocol(_))));
    a.net.shutdown().await;
    b.net.shutdown().await;
    assert_eq!(a.net.get_shard(me, Cid::raw_blake3(&d)).await, Err(NetError::Shutdown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_only_pair_connects_and_transfers() {
    let mut ca = config();
    ca.listen = quic();
    let mut cb = config();
    cb.listen = quic();
    let (a, b) = pair(ca, cb).await;
    assert!(a.net.listen_addrs().await.iter().all(|m| m.to_string().contains("quic-v1")));
    round_trip(&a, &b).await;
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_pass_with_the_bytes_and_fail_without_them() {
    let (a, b) = pair(config(), config()).await;
    let pb = b.net.local_peer_id();
    let shard = datamesh_core::testdata::pseudo_random(300_000, 9);
    let cid = Cid::raw_blake3(&shard);
    a.net.put_shard(pb, cid, shard.clone()).await.unwrap();
    for start in [0u64, 4096, 150_000, 299_000] {
        let seg = a.net.audit(pb, cid, start, 4096).await.unwrap();
        assert_eq!(seg, &shard[start as usize..(start as usize + 4096).min(shard.len())]);
    }
    // Not held: NotFound. Held, but other bytes (a holder that kept a
    // different or damaged copy): Corrupt, and a strike.
    assert_eq!(a.net.audit(pb, Cid::raw_blake3(b"never stored"), 0, 4096).await, Err(NetError::NotFound));
    let mut damaged = shard.clone();
    damaged[200_000] ^= 1;
    *b.store.lie_with.lock().unwrap() = Some(damaged);
    assert_eq!(a.net.audit(pb, cid, 196_608, 4096).await, Err(NetError::Corrupt { cid, peer: pb }));
    wait_for("a strike against b", T, || async { info(&a.net, pb).await.is_some_and(|i| i.strikes == 1) }).await;
    // Segment bounds are checked before anything is sent.
    assert!(matches!(a.net.audit(pb, cid, 0, 0).await, Err(NetError::Protocol(_))));
    assert!(matches!(a.net.audit(pb, cid, 0, 1 << 20).await, Err(NetError::Protocol(_))));
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_answer_is_refused_and_struck() {
    let (a, b) = pair(config(), config()).await;
    let pb = b.net.local_peer_id();
    let good = b"the real shard".to_vec();
    let cid = Cid::raw_blake3(&good);
    a.net.put_shard(pb, cid, good).await.unwrap();
    *b.store.lie_with.lock().unwrap() = Some(b"something else".to_vec());
    assert_eq!(a.net.get_shard(pb, cid).await, Err(NetError::Corrupt { cid, peer: pb }));
    wait_for("a strike against b", T, || async { info(&a.net, pb).await.is_some_and(|i| i.strikes == 1) }).await;
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_requests_beyond_the_limit_are_refused_busy() {
    let mut cb = config();
    cb.max_inbound_requests = 1;
    let (a, b) = pair(config(), cb).await;
    *b.store.delay.lock().unwrap() = Duration::from_millis(500);
    let pb = b.net.local_peer_id();
    let slow = {
        let net = a.net.clone();
        tokio::spawn(async move { net.get_shard(pb, Cid::raw_blake3(b"slow")).await })
    };
    wait_for("b busy with the slow request", T, || async { !b.store.seen.lock().unwrap().is_empty() }).await;
    assert_eq!(a.net.get_shard(pb, Cid::raw_blake3(b"fast")).await, Err(NetError::Refused("busy".into())));
    assert_eq!(slow.await.unwrap(), Err(NetError::NotFound), "the first one completes");
    a.net.shutdown().await;
    b.net.shutdown().await;
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_bootstrap_entries_do_not_stop_joining_and_peers_are_reconnected() {
    // A bootstrap node on a fixed port so that it can come back on it.
    let port = dead_port();
    let boot_seed = seed();
    let boot_cfg = || {
        let mut c = datamesh_net::NetConfig::new(boot_seed);
        c.listen = vec![format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()];
        c
    };
    let boot = node(boot_cfg()).await;
    let boot_id = boot.net.local_peer_id();
    let other = node(config()).await;

    let mut c = config();
    c.bootstrap = vec![
        // Dead, with an id: dialed first, fails, backs off.
        format!("/ip4/127.0.0.1/tcp/{}/p2p/{}", dead_port(), libp2p::PeerId::random()).parse().unwrap(),
        // Dead, without an id.
        format!("/ip4/127.0.0.1/tcp/{}", dead_port()).parse().unwrap(),
        // Alive, without an id: learned on connect.
        other.net.listen_addrs().await[0].clone(),
        format!("/ip4/127.0.0.1/tcp/{port}/p2p/{boot_id}").parse().unwrap(),
    ];
    let started = Instant::now();
    let n = node(c).await;
    wait_for("joined through the live entries", T, || async {
        let b = info(&n.net, boot_id).await.is_some_and(|i| i.connected && i.state == PeerState::Online);
        let o = info(&n.net, other.net.local_peer_id()).await.is_some_and(|i| i.connected);
        b && o && !n.net.routing_table().await.is_empty()
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5), "dead entries did not delay the join");

    // The bootstrap peer goes away and comes back on the same address.
    boot.net.shutdown().await;
    wait_for("n sees the bootstrap peer gone", T, || async {
        info(&n.net, boot_id).await.is_some_and(|i| !i.connected)
    })
    .await;
    let boot = node(boot_cfg()).await;
    assert_eq!(boot.net.local_peer_id(), boot_id);
    wait_for("n reconnects to the bootstrap peer", Duration::from_secs(30), || async {
        info(&n.net, boot_id).await.is_some_and(|i| i.connected)
    })
    .await;
    for x in [&n, &boot, &other] {
        x.net.shutdown().await;
    }
}

/// A node's first heartbeat already carries its real numbers: peers place
/// shards by the free space they report, and a default (no room) answer
/// would keep a fresh node out of placement until the next refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_heartbeat_carries_the_configured_numbers() {
    let timers = HealthTimers {
        heartbeat_interval: Duration::from_secs(600),
        warning_after: Duration::from_secs(1200),
        offline_after: Duration::from_secs(2400),
    };
    let hb = Heartbeat { free_bytes: 1 << 30, shards: 2, uptime_secs: 1, draining: false };
    let mut ca = config();
    ca.timers = timers;
    let mut cb = config();
    cb.timers = timers;
    cb.heartbeat = hb;
    let (a, b) = pair(ca, cb).await;
    let pb = b.net.local_peer_id();
    wait_for("a has b's first heartbeat", T, || async {
        info(&a.net, pb).await.is_some_and(|i| i.last_heartbeat.is_some())
    })
    .await;
    assert_eq!(info(&a.net, pb).await.unwrap().last_heartbeat, Some(hb));
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_goes_online_warning_offline_when_a_peer_dies() {
    let timers = HealthTimers {
        heartbeat_interval: Duration::from_millis(200),
        warning_after: Duration::from_millis(600),
        offline_after: Duration::from_millis(1500),
    };
    let mut ca = config();
    ca.timers = timers;
    let mut cb = config();
    cb.timers = timers;
    let (a, b) = pair(ca, cb).await;
    let pb = b.net.local_peer_id();
    let hb = Heartbeat { free_bytes: 42, shards: 3, uptime_secs: 9, draining: false };
    b.net.set_local_heartbeat(hb);
    wait_for("a has b's heartbeat numbers", T, || async {
        info(&a.net, pb).await.is_some_and(|i| i.last_heartbeat == Some(hb) && i.state == PeerState::Online)
    })
    .await;
    // Heartbeats keep it online for several warning periods.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(info(&a.net, pb).await.unwrap().state, PeerState::Online);

    b.net.shutdown().await;
    let killed = Instant::now();
    let mut seen = vec![];
    let mut at = vec![];
    while killed.elapsed() < Duration::from_secs(10) {
        let s = info(&a.net, pb).await.unwrap().state;
        if seen.last() != Some(&s) {
            seen.push(s);
            at.push(killed.elapsed());
        }
        if s == PeerState::Offline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, [PeerState::Online, PeerState::Warning, PeerState::Offline], "at {at:?}");
    // Silence counts from the last exchange, normally within one heartbeat
    // interval before the kill; the bounds leave room for a loaded machine.
    assert!(at[1] >= Duration::from_millis(200), "warning too early: {at:?}");
    assert!(at[1] <= Duration::from_secs(3), "warning too late: {at:?}");
    assert!(at[2] >= Duration::from_millis(1000), "offline too early: {at:?}");
    assert!(at[2] <= Duration::from_secs(5), "offline too late: {at:?}");
    assert!(!info(&a.net, pb).await.unwrap().connected);
    a.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let a_seed = seed();
    let a_cfg = || {
        let mut c = datamesh_net::NetConfig::new(a_seed);
        c.listen = tcp();
        c.state_dir = Some(dir.path().to_path_buf());
        c
    };
    let (a, b) = pair(a_cfg(), config()).await;
    let (ida, idb) = (a.net.local_peer_id(), b.net.local_peer_id());
    a.net.provide(b"key-a").await.expect("a provides");
    b.net.provide(b"key-b").await.expect("b provides (stored on a, its only peer)");
    // ADD_PROVIDER is one-way: a takes it shortly after b's query ends.
    wait_for("a to keep b's provider record", T, || async {
        a.net.local_providers(b"key-b").await.unwrap() == vec![idb]
    })
    .await;
    a.net.shutdown().await;
    b.net.shutdown().await;
    assert!(dir.path().join("kad-store.cbor").exists());

    let mut c = a_cfg();
    c.bootstrap.clear();
    let a2 = node(c).await;
    assert_eq!(a2.net.local_peer_id(), ida);
    assert_eq!(a2.net.local_providers(b"key-a").await.unwrap(), vec![ida], "own provider record");
    assert_eq!(a2.net.local_providers(b"key-b").await.unwrap(), vec![idb], "peer's provider record");
    a2.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strikes_ban_a_peer_after_the_limit() {
    // Through the public API: a peer whose shards never match gets banned.
    let tuning = Tuning { max_strikes: 2, ..Tuning::default() };
    let a = node_with(config(), tuning).await;
    let mut cb = config();
    cb.bootstrap = vec![p2p_addr(&a.net).await];
    let b = node(cb).await;
    let (pa, pb) = (a.net.local_peer_id(), b.net.local_peer_id());
    wait_for("connected", T, || async { info(&a.net, pb).await.is_some_and(|i| i.connected) }).await;
    let cid = Cid::raw_blake3(b"one thing");
    let r = b.net.put_shard(pa, cid, b"another".to_vec()).await;
    assert!(matches!(r, Err(NetError::Refused(ref why)) if why.contains("does not match")), "{r:?}");
    // The second strike bans: its answer may or may not make it out before
    // the connection is closed.
    let r = b.net.put_shard(pa, cid, b"another".to_vec()).await;
    assert!(matches!(r, Err(NetError::Refused(_) | NetError::PeerUnreachable)), "{r:?}");
    wait_for("b banned and cut off", T, || async {
        info(&a.net, pb).await.is_some_and(|i| i.banned && !i.connected && i.strikes == 2)
    })
    .await;
    assert!(a.store.shards.lock().unwrap().is_empty(), "nothing reached the handler");
    // Banned: b cannot get back in.
    assert!(b.net.get_shard(pa, cid).await.is_err());
    assert!(!info(&a.net, pb).await.unwrap().connected);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_beyond_the_inbound_memory_budget_wait_and_complete() {
    // The smallest budget (one largest frame, ~16 MiB) against 32 MiB of
    // concurrent puts: they queue for memory instead of failing.
    let tuning = Tuning { max_inbound_bytes: 0, ..Tuning::default() };
    let a = node_with(config(), tuning).await;
    let mut cb = config();
    cb.bootstrap = vec![p2p_addr(&a.net).await];
    let b = node(cb).await;
    let pa = a.net.local_peer_id();
    wait_for("connected", T, || async { info(&b.net, pa).await.is_some_and(|i| i.connected) }).await;
    let puts: Vec<_> = (0..8u8)
        .map(|i| {
            let net = b.net.clone();
            tokio::spawn(async move {
                let data = vec![i; 4 << 20];
                let cid = Cid::raw_blake3(&data);
                net.put_shard(pa, cid, data).await
            })
        })
        .collect();
    for p in puts {
        p.await.unwrap().expect("each put completes");
    }
    assert_eq!(a.store.shards.lock().unwrap().len(), 8);
    a.net.shutdown().await;
    b.net.shutdown().await;
}

/// Above `keep_connections`, a node disconnects and forgets the peers it is
/// not working with (so their silence never reads as OFFLINE), keeps its
/// bootstrap peer and the peer it exchanges requests with, and reaches a
/// pruned peer again through the DHT when it needs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_limit_are_pruned_and_forgotten() {
    let fast = HealthTimers {
        heartbeat_interval: Duration::from_millis(200),
        warning_after: Duration::from_secs(2),
        offline_after: Duration::from_secs(5),
    };
    let cfg = |boot: Vec<libp2p::Multiaddr>| {
        let mut c = config();
        c.timers = fast;
        c.bootstrap = boot;
        c
    };
    let seed = node(cfg(vec![])).await;
    let seed_addr = p2p_addr(&seed.net).await;
    let mut others = Vec::new();
    for _ in 0..5 {
        others.push(node(cfg(vec![seed_addr.clone()])).await);
    }
    // Peers count as in use for a second after they connect or answer.
    let tuning = Tuning { keep_connections: 2, idle_connection_timeout: Duration::from_secs(1), ..Tuning::default() };
    let hub = node_with(cfg(vec![seed_addr]), tuning).await;
    let ids: Vec<_> = others.iter().map(|o| o.net.local_peer_id()).collect();
    // The hub's lookups reach every node.
    wait_for("the hub's routing table to hold every node", T, || async {
        hub.net.routing_table().await.iter().map(|(_, n)| n).sum::<usize>() >= 6
    })
    .await;
    // It works with one of them.
    let (used, idle) = (ids[0], &ids[1..]);
    let seed_id = seed.net.local_peer_id();
    wait_for("only the bootstrap peer and the peer in use to stay connected", T, || async {
        hub.net.shard_exists(used, vec![]).await.expect("the peer in use answers");
        let peers = hub.net.peers().await;
        let connected: Vec<_> = peers.iter().filter(|p| p.connected).map(|p| p.peer).collect();
        connected.len() <= 2
            && connected.contains(&seed_id)
            && connected.contains(&used)
            && idle.iter().all(|i| !peers.iter().any(|p| p.peer == *i))
    })
    .await;
    // A pruned peer is still reachable: its address is in the DHT.
    let again = idle[2];
    hub.net.shard_exists(again, vec![]).await.expect("a pruned peer is dialed again");
    assert!(info(&hub.net, again).await.is_some_and(|i| i.connected));
    for n in others.iter().chain([&seed, &hub]) {
        n.net.shutdown().await;
    }
}
