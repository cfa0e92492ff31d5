//! A hostile peer: a raw libp2p swarm speaking `/datamesh/shard/2.0.0` with a
//! codec that writes whatever bytes it is given. It sends an oversized length
//! prefix, garbage, and a shard that does not match its CID; each is refused
//! and struck, and the third gets it banned. Against a node that streams
//! bodies into a sink it announces a huge body, stops mid-body, streams bytes
//! that do not match the CID and sends more than it announced: nothing of it
//! is kept, and it is cut off. Meanwhile an honest peer's 4 MiB transfer to
//! the same node completes.

#![allow(clippy::unwrap_used)]

mod common;

use std::io;
use std::time::Duration;

use common::*;
use datamesh_core::Cid;
use datamesh_net::protocol::{PROTOCOL, WIRE_VERSION, encode_request_frame};
use datamesh_net::{NetClient, PeerId, Request, Response, Tuning};
use futures::prelude::*;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::SwarmEvent;
use libp2p::{StreamProtocol, Swarm, noise, tcp, yamux};

const T: Duration = Duration::from_secs(20);

/// Writes requests verbatim; reads whatever comes back (bounded).
#[derive(Clone, Default)]
struct RawCodec;

impl request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
    ) -> io::Result<Vec<u8>> {
        Err(io::Error::other("the raw client serves nothing"))
    }
    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        io.take(1 << 20).read_to_end(&mut v).await?;
        Ok(v)
    }
    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        io.write_all(&req).await?;
        io.flush().await
    }
    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        _: &mut T,
        _: Vec<u8>,
    ) -> io::Result<()> {
        Ok(())
    }
}

type Raw = request_response::Behaviour<RawCodec>;

fn raw_swarm() -> Swarm<Raw> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(tcp::Config::default(), noise::Config::new, yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                RawCodec,
                [(PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(10)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

/// What the raw client has observed.
#[derive(Default, Debug)]
struct Seen {
    connected: bool,
    closed: bool,
    finished: Vec<OutboundRequestId>,
    dial_failed: bool,
}

/// Polls the raw swarm until `cond` holds on the server (checked every 20 ms).
async fn drive_until<F, Fut>(swarm: &mut Swarm<Raw>, seen: &mut Seen, what: &str, mut cond: F)
where
    F: FnMut(&Seen) -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    loop {
        if cond(seen).await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}; seen {seen:?}");
        tokio::select! {
            ev = swarm.select_next_some() => match ev {
                SwarmEvent::ConnectionEstablished { .. } => seen.connected = true,
                SwarmEvent::ConnectionClosed { num_established: 0, .. } => seen.closed = true,
                SwarmEvent::OutgoingConnectionError { .. } => seen.dial_failed = true,
                SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Response { request_id, .. }, ..
                }) => seen.finished.push(request_id),
                SwarmEvent::Behaviour(request_response::Event::OutboundFailure { request_id, .. }) => {
                    seen.finished.push(request_id)
                }
                _ => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

async fn strikes(s: &NetClient, p: PeerId) -> u32 {
    info(s, p).await.map_or(0, |i| i.strikes)
}

/// The scene of both tests: a server that bans at 3 strikes, an honest
/// peer connected to it and putting a 4 MiB shard on it, and a raw client
/// connected to it that the test drives.
struct Arena {
    server: Node,
    sid: PeerId,
    saddr: libp2p::Multiaddr,
    honest: Node,
    raw: Swarm<Raw>,
    hid: PeerId,
    seen: Seen,
    big: Vec<u8>,
    big_cid: Cid,
    transfer: tokio::task::JoinHandle<Result<(), datamesh_net::NetError>>,
}

async fn arena(handler: MapHandler, fill_mod: u32) -> Arena {
    let server = node_handled(config(), Tuning { max_strikes: 3, ..Tuning::default() }, handler).await;
    let sid = server.net.local_peer_id();
    let saddr = server.net.listen_addrs().await[0].clone();

    // The honest peer, connected first.
    let mut hc = config();
    hc.bootstrap = vec![p2p_addr(&server.net).await];
    let honest = node(hc).await;
    wait_for("honest peer connected", T, || async {
        info(&server.net, honest.net.local_peer_id()).await.is_some_and(|i| i.connected)
    })
    .await;

    let mut raw = raw_swarm();
    let hid = *raw.local_peer_id();
    let mut seen = Seen::default();
    raw.dial(saddr.clone()).unwrap();
    drive_until(&mut raw, &mut seen, "raw client connected", |s| std::future::ready(s.connected)).await;

    // The honest 4 MiB transfer runs while the attack goes on.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % fill_mod) as u8).collect();
    let big_cid = Cid::raw_blake3(&big);
    let transfer = {
        let net = honest.net.clone();
        let big = big.clone();
        tokio::spawn(async move { net.put_shard(sid, big_cid, big).await })
    };
    Arena { server, sid, saddr, honest, raw, hid, seen, big, big_cid, transfer }
}

impl Arena {
    /// Sends `wire` from the raw client and waits until the server has
    /// answered it and struck the client `n` times in all.
    async fn expect_strikes(&mut self, wire: Vec<u8>, n: u32, what: &str) {
        let id = self.raw.behaviour_mut().send_request(&self.sid, wire);
        let (net, hid) = (self.server.net.clone(), self.hid);
        drive_until(&mut self.raw, &mut self.seen, what, |s| {
            let done = s.finished.contains(&id);
            let net = net.clone();
            async move { done && strikes(&net, hid).await == n }
        })
        .await;
    }

    /// Sends `wire` (the third violation) and waits until the raw client is
    /// banned and cut off.
    async fn expect_ban(&mut self, wire: Vec<u8>) {
        self.raw.behaviour_mut().send_request(&self.sid, wire);
        let (net, hid) = (self.server.net.clone(), self.hid);
        drive_until(&mut self.raw, &mut self.seen, "the hostile peer cut off", |s| {
            let closed = s.closed;
            let net = net.clone();
            async move { closed && info(&net, hid).await.is_some_and(|i| i.strikes == 3 && i.banned && !i.connected) }
        })
        .await;
    }

    /// The honest transfer completed and the honest peer is in good standing.
    async fn honest_transfer_completed(&mut self) {
        (&mut self.transfer).await.unwrap().expect("the honest transfer completes");
        let hi = info(&self.server.net, self.honest.net.local_peer_id()).await.unwrap();
        assert_eq!((hi.strikes, hi.banned, hi.connected), (0, false, true));
    }

    async fn shutdown(self) {
        self.server.net.shutdown().await;
        self.honest.net.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peer_is_cut_off_while_an_honest_transfer_completes() {
    let mut a = arena(MapHandler::default(), 253).await;

    // (a) A length prefix far beyond the frame limit (the server reads the
    // 4 bytes, refuses, and never allocates for it).
    let mut oversized = u32::MAX.to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    a.expect_strikes(oversized, 1, "strike 1 (oversized frame)").await;

    // (b) A well-framed body of garbage.
    let mut garbage = 12u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[1, 0xee, 0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3, 4, 5]);
    a.expect_strikes(garbage, 2, "strike 2 (garbage)").await;
    assert!(!a.seen.closed, "two strikes: still connected");

    // (c) A shard whose bytes do not match its CID: the third strike bans.
    a.expect_ban(encode_request_frame(&Request::PutShard { cid: a.big_cid, data: b"not the shard".to_vec() }).unwrap())
        .await;

    // It cannot come back while banned.
    a.seen.connected = false;
    a.seen.closed = false;
    a.raw.dial(a.saddr.clone()).unwrap();
    drive_until(&mut a.raw, &mut a.seen, "the redial refused", |s| std::future::ready(s.dial_failed || s.closed)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!info(&a.server.net, a.hid).await.unwrap().connected);

    // Nothing the hostile peer sent reached the handler; the honest shard did.
    a.honest_transfer_completed().await;
    assert_eq!(a.server.store.shards.lock().unwrap().get(&a.big_cid), Some(&a.big));
    assert!(a.server.store.seen.lock().unwrap().iter().all(|(p, _)| *p != a.hid));
    a.shutdown().await;
}

/// A PUT_SHARD frame announcing `len` body bytes for `cid`, then `body`.
fn put_with_body(cid: &Cid, len: u32, body: &[u8]) -> Vec<u8> {
    let c = cid.to_bytes();
    let mut frame = vec![WIRE_VERSION, 0x01, c.len() as u8];
    frame.extend_from_slice(&c);
    frame.extend_from_slice(&len.to_be_bytes());
    let mut wire = (frame.len() as u32).to_be_bytes().to_vec();
    wire.extend_from_slice(&frame);
    wire.extend_from_slice(body);
    wire
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_bodies_are_refused_and_cut_off_while_an_honest_transfer_completes() {
    let mut a = arena(MapHandler { streaming: true, ..Default::default() }, 247).await;
    let abandoned = |a: &Arena| a.server.store.abandoned.load(std::sync::atomic::Ordering::Relaxed);

    // (a) A body far beyond the shard limit, refused from its header: no
    // sink is ever made for it.
    let target = Cid::raw_blake3(&[7u8; 256 * 1024]);
    a.expect_strikes(put_with_body(&target, u32::MAX, &[0; 64]), 1, "strike 1 (huge body announced)").await;
    // (The honest transfer may be writing into its own sink meanwhile.)
    assert_eq!(abandoned(&a), 0, "no sink was made for it");

    // (b) A body that stops half way (the stream ends): not the peer's
    // fault as far as we can tell, so no strike, but nothing is kept.
    let b = a.raw.behaviour_mut().send_request(&a.sid, put_with_body(&target, 256 * 1024, &[7u8; 100 * 1024]));
    let store = a.server.store.clone();
    drive_until(&mut a.raw, &mut a.seen, "the cut body abandoned", |s| {
        let done = s.finished.contains(&b);
        std::future::ready(done && store.abandoned.load(std::sync::atomic::Ordering::Relaxed) == 1)
    })
    .await;
    assert_eq!(strikes(&a.server.net, a.hid).await, 1);

    // (c) A whole body whose bytes do not match the CID: refused, struck.
    let forged = put_with_body(&target, 256 * 1024, &[8u8; 256 * 1024]);
    a.expect_strikes(forged, 2, "strike 2 (bytes not matching the CID)").await;
    assert!(!a.seen.closed, "two strikes: still connected");

    // (d) The right bytes and one more than announced: the third strike bans.
    let mut longer = [7u8; 256 * 1024].to_vec();
    longer.push(7);
    a.expect_ban(put_with_body(&target, 256 * 1024, &longer)).await;

    // None of it was kept; the honest shard was, and went through the sink.
    a.honest_transfer_completed().await;
    let shards = a.server.store.shards.lock().unwrap().clone();
    assert_eq!(shards.get(&a.big_cid), Some(&a.big));
    assert!(!shards.contains_key(&target), "nothing of the hostile bodies was kept");
    assert!(a.server.store.seen.lock().unwrap().is_empty(), "bodies never reach `handle`");
    // And it serves the shard back.
    assert_eq!(a.honest.net.get_shard(a.sid, a.big_cid).await.unwrap(), a.big);
    let r = a.honest.net.request(a.sid, Request::GetShard { cid: target }).await.unwrap();
    assert_eq!(r, Response::NotFound);
    a.shutdown().await;
}
