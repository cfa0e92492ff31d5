//! Helpers shared by the integration tests: a HashMap-backed handler, node
//! construction on loopback, and waiting on conditions with a deadline.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datamesh_core::Cid;
use datamesh_net::{
    BodyError, BodyKind, BodySink, Handler, Multiaddr, NetClient, NetConfig, PeerId, PeerInfo, Request, Response,
    Tuning,
};

/// A node's storage in a test: three maps.
#[derive(Default)]
pub struct MapHandler {
    pub shards: Arc<Mutex<HashMap<Cid, Vec<u8>>>>,
    /// Take shard bodies through a [`BodySink`] (as the node does) instead
    /// of whole through `handle`.
    pub streaming: bool,
    /// Sinks dropped without being finished (bodies cut short or refused).
    pub abandoned: Arc<AtomicU64>,
    pub manifests: Mutex<HashMap<Cid, Vec<u8>>>,
    pub records: Mutex<HashMap<Vec<u8>, Vec<u8>>>,
    /// Requests seen, by kind.
    pub seen: Mutex<Vec<(PeerId, &'static str)>>,
    /// Answer GET_SHARD with these bytes instead of the stored ones (a liar).
    pub lie_with: Mutex<Option<Vec<u8>>>,
    /// Sleep this long in every request (to fill the inbound slots).
    pub delay: Mutex<Duration>,
}

#[async_trait::async_trait]
impl Handler for MapHandler {
    async fn handle(&self, from: PeerId, req: Request) -> Response {
        self.seen.lock().unwrap().push((from, req.kind()));
        let delay = *self.delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        match req {
            Request::PutShard { cid, data } => {
                self.shards.lock().unwrap().insert(cid, data);
                Response::Ok
            }
            Request::GetShard { cid } => {
                if let Some(lie) = self.lie_with.lock().unwrap().clone() {
                    return Response::Data(lie);
                }
                match self.shards.lock().unwrap().get(&cid) {
                    Some(d) => Response::Data(d.clone()),
                    None => Response::NotFound,
                }
            }
            Request::ShardExists { cids } => {
                let s = self.shards.lock().unwrap();
                Response::Exists(cids.iter().map(|c| s.contains_key(c)).collect())
            }
            Request::DeleteShard { cid, authorization } => {
                if authorization != b"let me" {
                    return Response::Refused("bad authorization".into());
                }
                match self.shards.lock().unwrap().remove(&cid) {
                    Some(_) => Response::Ok,
                    None => Response::NotFound,
                }
            }
            Request::PutManifest { cid, data } => {
                self.manifests.lock().unwrap().insert(cid, data);
                Response::Ok
            }
            Request::GetManifest { cid } => match self.manifests.lock().unwrap().get(&cid) {
                Some(d) => Response::Data(d.clone()),
                None => Response::NotFound,
            },
            Request::PutRecord { key, value } => {
                self.records.lock().unwrap().insert(key, value);
                Response::Ok
            }
            Request::GetRecord { key } => Response::Record(self.records.lock().unwrap().get(&key).cloned()),
            Request::Heartbeat(_) => Response::Refused("heartbeats never reach the handler".into()),
            Request::Audit { cid, start, len } => {
                // A liar proves from the bytes it kept instead.
                let bytes = match self.lie_with.lock().unwrap().clone() {
                    Some(lie) => Some(lie),
                    None => self.shards.lock().unwrap().get(&cid).cloned(),
                };
                match bytes {
                    Some(d) => Response::Data(datamesh_core::proof::prove(&d, start, len).unwrap()),
                    None => Response::NotFound,
                }
            }
            // Rebuilding is the node's business (erasure coding, its store).
            Request::RebuildShard { .. } => Response::Refused("this test handler rebuilds nothing".into()),
        }
    }

    fn body_sink(&self, kind: BodyKind, cid: Cid, _len: u64) -> Option<Result<Box<dyn BodySink>, Response>> {
        if !self.streaming || kind != BodyKind::Shard {
            return None;
        }
        Some(Ok(Box::new(MapSink {
            cid,
            buf: Vec::new(),
            shards: self.shards.clone(),
            abandoned: self.abandoned.clone(),
            finished: false,
        })))
    }
}

/// A shard sink that keeps the bytes in memory and checks them on finish.
struct MapSink {
    cid: Cid,
    buf: Vec<u8>,
    shards: Arc<Mutex<HashMap<Cid, Vec<u8>>>>,
    abandoned: Arc<AtomicU64>,
    finished: bool,
}

impl BodySink for MapSink {
    fn write(&mut self, piece: &[u8]) -> Result<(), BodyError> {
        self.buf.extend_from_slice(piece);
        Ok(())
    }
    fn finish(mut self: Box<Self>) -> Result<(), BodyError> {
        self.finished = true;
        if !self.cid.verifies(&self.buf) {
            return Err(BodyError::Mismatch(format!("data does not match {}", self.cid)));
        }
        self.shards.lock().unwrap().insert(self.cid, std::mem::take(&mut self.buf));
        Ok(())
    }
}

impl Drop for MapSink {
    fn drop(&mut self) {
        if !self.finished {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

static SEED: AtomicU64 = AtomicU64::new(1);

/// A fresh identity seed, distinct per call and per process.
pub fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&SEED.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    s[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    s[12..16].copy_from_slice(&nanos.to_le_bytes());
    s
}

pub fn tcp() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()]
}

pub fn quic() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()]
}

/// A config on loopback TCP with fresh identity.
pub fn config() -> NetConfig {
    let mut c = NetConfig::new(seed());
    c.listen = tcp();
    c
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub struct Node {
    pub net: NetClient,
    pub store: Arc<MapHandler>,
}

pub async fn node(cfg: NetConfig) -> Node {
    node_with(cfg, Tuning::default()).await
}

pub async fn node_with(cfg: NetConfig, tuning: Tuning) -> Node {
    node_handled(cfg, tuning, MapHandler::default()).await
}

pub async fn node_handled(cfg: NetConfig, tuning: Tuning, handler: MapHandler) -> Node {
    init_tracing();
    let store = Arc::new(handler);
    let net = datamesh_net::start_with(cfg, tuning, store.clone()).await.expect("node starts");
    Node { net, store }
}

/// `addr/p2p/<id>` of the node's first listen address.
pub async fn p2p_addr(n: &NetClient) -> Multiaddr {
    let a = n.listen_addrs().await.into_iter().next().expect("a listen address");
    a.with(libp2p::multiaddr::Protocol::P2p(n.local_peer_id()))
}

/// Waits until `cond` holds, polling every 20 ms; panics with `what` after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What `of` looks like from `at`.
pub async fn info(at: &NetClient, of: PeerId) -> Option<PeerInfo> {
    at.peers().await.into_iter().find(|p| p.peer == of)
}
