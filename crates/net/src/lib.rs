//! DataMesh's network layer: the libp2p stack, the Kademlia DHT, the shard
//! protocol and peer health.
//!
//! **Architecture invariant:** this is the only crate that imports libp2p,
//! and it depends on `datamesh-core` only. The node drives it through a
//! cloneable [`NetClient`] and serves inbound requests by implementing
//! [`Handler`].
//!
//! # The stack
//! - Transports: TCP (Noise + Yamux) and QUIC v1, with DNS resolution.
//! - `identify` (announcing `/datamesh/id/1.0.0` as protocol version) and
//!   `ping`.
//! - Kademlia on its own protocol id `/datamesh/kad/1.0.0`, always in server
//!   mode (automatic mode leaves loopback- and LAN-only nodes as clients),
//!   k = 20, α = 3, 256-bit keys (SHA-256 of the key bytes, as libp2p's
//!   Kademlia does). Only provider records are kept (TTL, republished;
//!   at most `Tuning::max_providers_per_peer` keys per other peer); value
//!   records from peers are refused. The routing table is refreshed by a
//!   periodic bootstrap. The provider records are saved to
//!   `state_dir/kad-store.cbor` every minute and on shutdown, from a
//!   journal on a blocking thread, and reloaded on start ([`kad_store`]).
//! - The shard protocol `/datamesh/shard/2.0.0` ([`protocol`]): small
//!   messages in bounded frames, shards and manifests streamed as bodies.
//! - mDNS on the LAN when [`NetConfig::mdns`] is set.
//! - Bootstrap peers dialed by priority, retried with exponential backoff
//!   and reconnected when they drop ([`bootstrap`]).
//! - Peer health from heartbeats ([`health`]); strikes and bans for peers
//!   that break the protocol or send data that does not match its CID.
//!
//! # Shape
//! One actor task owns the `Swarm` ([`actor`]); everyone else holds a
//! [`NetClient`] whose calls are commands with a `oneshot` reply.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use datamesh_net::*;
//! struct MyNode;
//! #[async_trait::async_trait]
//! impl Handler for MyNode {
//!     async fn handle(&self, _from: PeerId, _req: Request) -> Response {
//!         Response::NotFound
//!     }
//! }
//! # async fn f() -> Result<(), NetError> {
//! let mut cfg = NetConfig::new([7u8; 32]);
//! cfg.listen = vec!["/ip4/0.0.0.0/tcp/4001".parse().unwrap()];
//! let net = datamesh_net::start(cfg, Arc::new(MyNode)).await?;
//! println!("{} on {:?}", net.local_peer_id(), net.listen_addrs().await);
//! # Ok(()) }
//! ```

pub mod actor;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod health;
pub mod kad_store;
pub mod protocol;

use std::sync::Arc;

use datamesh_core::Cid;
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::actor::ProviderLookup;
pub use crate::config::{HealthTimers, NetConfig, Tuning};
pub use crate::error::NetError;
pub use crate::health::{PeerInfo, PeerState};
pub use crate::protocol::{BodyError, BodyKind, BodySink, BodySource, Heartbeat, Request, Response};
pub use libp2p::{Multiaddr, PeerId};

/// The peer id of the node whose Ed25519 public key is `public_key` (32
/// bytes), as node identities and location-record signers are named.
pub fn peer_id_of_ed25519(public_key: &[u8]) -> Option<PeerId> {
    let pk = libp2p::identity::ed25519::PublicKey::try_from_bytes(public_key).ok()?;
    Some(libp2p::identity::PublicKey::from(pk).to_peer_id())
}

use crate::actor::Command;

/// Serves the requests peers send. The network layer has already checked
/// every bound and, for `PutShard`/`PutManifest`, that the bytes match the
/// CID. `Heartbeat` requests are answered by the network layer itself and
/// never reach the handler.
///
/// Bulk bytes: a handler that implements [`Handler::body_sink`] and
/// [`Handler::body_source`] takes peers' `PutShard`/`PutManifest` bodies
/// piece by piece as they arrive and answers their `GetShard`/`GetManifest`
/// from a reader, so that no transfer is held whole in memory. One that does
/// not gets them through [`Handler::handle`] (bodies buffered, bounded by
/// the inbound memory budget). Requests a node sends itself always go
/// through `handle`.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// Answers one request from `from`.
    async fn handle(&self, from: PeerId, req: Request) -> Response;

    /// Where the body of a peer's `PutShard`/`PutManifest` of `len` bytes
    /// (already checked against `kind`'s bound) should go: `Some(Ok(sink))`
    /// to take it in pieces, `Some(Err(answer))` to refuse it at once (e.g.
    /// no room; the body is read and discarded, then the peer gets
    /// `answer`), `None` (the default) to receive it whole through
    /// [`Handler::handle`]. Called on a blocking thread.
    fn body_sink(&self, kind: BodyKind, cid: Cid, len: u64) -> Option<Result<Box<dyn BodySink>, Response>> {
        let _ = (kind, cid, len);
        None
    }

    /// The bytes a peer's `GetShard`/`GetManifest` asks for, as a reader:
    /// `Some(Ok(source))` to stream them, `Some(Err(answer))` to answer
    /// otherwise (e.g. `NotFound`), `None` (the default) to answer through
    /// [`Handler::handle`]. Called on a blocking thread.
    fn body_source(&self, kind: BodyKind, cid: Cid) -> Option<Result<BodySource, Response>> {
        let _ = (kind, cid);
        None
    }
}

/// A handle on the network actor. Cheap to clone; every clone talks to the
/// same actor. When the last clone is dropped the actor stops.
#[derive(Clone)]
pub struct NetClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    local: PeerId,
    commands: mpsc::Sender<Command>,
    heartbeat: watch::Sender<Heartbeat>,
}

/// Starts the network with default [`Tuning`]: builds the swarm, binds the
/// listeners, spawns the actor on the current tokio runtime, and returns once
/// every listener has an address. Bootstrap dials start right after.
pub async fn start(cfg: NetConfig, handler: Arc<dyn Handler>) -> Result<NetClient, NetError> {
    start_with(cfg, Tuning::default(), handler).await
}

/// [`start`] with explicit [`Tuning`].
pub async fn start_with(cfg: NetConfig, tuning: Tuning, handler: Arc<dyn Handler>) -> Result<NetClient, NetError> {
    let (tx, rx) = mpsc::channel(actor::COMMAND_QUEUE);
    let (hb_tx, hb_rx) = watch::channel(cfg.heartbeat);
    let actor = actor::build(cfg, tuning, handler, rx, hb_rx).await?;
    let local = actor.local_peer_id();
    tokio::spawn(actor.run());
    Ok(NetClient { inner: Arc::new(ClientInner { local, commands: tx, heartbeat: hb_tx }) })
}

impl NetClient {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, NetError> {
        let (tx, rx) = oneshot::channel();
        self.inner.commands.send(make(tx)).await.map_err(|_| NetError::Shutdown)?;
        rx.await.map_err(|_| NetError::Shutdown)
    }

    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local
    }

    /// The bound listen addresses (real ports), without `/p2p/<id>`.
    /// Empty once the actor has stopped.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.ask(Command::ListenAddrs).await.unwrap_or_default()
    }

    /// Sets the numbers this node sends in its heartbeats and answers
    /// heartbeats with. Call it whenever they change (e.g. every few seconds).
    pub fn set_local_heartbeat(&self, hb: Heartbeat) {
        self.inner.heartbeat.send_replace(hb);
    }

    /// Resolves once the network has stopped (shut down, or its actor
    /// ended): tasks that feed it can end with it.
    pub async fn stopped(&self) {
        // The actor holds the only receiver of the heartbeat channel.
        self.inner.heartbeat.closed().await
    }

    /// Sends one request and returns the peer's response as is
    /// (`Refused`/`NotFound` included). Requests to this node's own id are
    /// served by the local handler with the same checks.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the answer; the request may still have
    /// reached the peer.
    pub async fn request(&self, peer: PeerId, req: Request) -> Result<Response, NetError> {
        self.ask(|reply| Command::Request { peer, req, reply }).await?
    }

    /// Stores a shard on `peer`. `Ok` only when the peer answered `Ok`, which
    /// means the shard is durable there.
    pub async fn put_shard(&self, peer: PeerId, cid: Cid, data: Vec<u8>) -> Result<(), NetError> {
        expect_ok(self.request(peer, Request::PutShard { cid, data }).await?, "PUT_SHARD")
    }

    /// Stores a manifest on `peer`; `Ok` only on the peer's `Ok`.
    pub async fn put_manifest(&self, peer: PeerId, cid: Cid, data: Vec<u8>) -> Result<(), NetError> {
        expect_ok(self.request(peer, Request::PutManifest { cid, data }).await?, "PUT_MANIFEST")
    }

    /// Reads a shard from `peer`, verified against `cid`. Bytes that do not
    /// match are a strike against the peer and `NetError::Corrupt`.
    pub async fn get_shard(&self, peer: PeerId, cid: Cid) -> Result<Vec<u8>, NetError> {
        let resp = self.request(peer, Request::GetShard { cid }).await?;
        self.verified(peer, cid, resp, "GET_SHARD").await
    }

    /// Reads a manifest from `peer`, verified against `cid` like shards.
    pub async fn get_manifest(&self, peer: PeerId, cid: Cid) -> Result<Vec<u8>, NetError> {
        let resp = self.request(peer, Request::GetManifest { cid }).await?;
        self.verified(peer, cid, resp, "GET_MANIFEST").await
    }

    /// Which of `cids` (at most 1024) `peer` holds, in order.
    pub async fn shard_exists(&self, peer: PeerId, cids: Vec<Cid>) -> Result<Vec<bool>, NetError> {
        let n = cids.len();
        match self.request(peer, Request::ShardExists { cids }).await? {
            Response::Exists(flags) if flags.len() == n => Ok(flags),
            Response::Exists(flags) => {
                Err(NetError::Protocol(format!("asked about {n} shards, got {} answers", flags.len())))
            }
            other => Err(unexpected(other, "SHARD_EXISTS")),
        }
    }

    /// Asks `peer` to delete a shard; the authorization is checked by the
    /// peer's node.
    pub async fn delete_shard(&self, peer: PeerId, cid: Cid, authorization: Vec<u8>) -> Result<(), NetError> {
        expect_ok(self.request(peer, Request::DeleteShard { cid, authorization }).await?, "DELETE_SHARD")
    }

    /// Audits `peer`: asks it to prove it holds bytes `start..start+len` of
    /// shard `cid`, and checks the proof against the CID (see
    /// `datamesh_core::proof`). Returns the proven segment. A proof that does
    /// not verify is a strike and `NetError::Corrupt`; a peer without the
    /// shard answers `NetError::NotFound`.
    pub async fn audit(&self, peer: PeerId, cid: Cid, start: u64, len: u32) -> Result<Vec<u8>, NetError> {
        match self.request(peer, Request::Audit { cid, start, len }).await? {
            Response::Data(proof) => {
                let checked =
                    tokio::task::spawn_blocking(move || datamesh_core::proof::verify(&cid, start, len, &proof)).await;
                match checked {
                    Ok(Ok(segment)) => Ok(segment),
                    Ok(Err(e)) => {
                        let why = e.to_string();
                        let _ = self.inner.commands.send(Command::Strike { peer, why }).await;
                        Err(NetError::Corrupt { cid, peer })
                    }
                    Err(e) => Err(NetError::Protocol(format!("verifying an audit proof: {e}"))),
                }
            }
            other => Err(unexpected(other, "AUDIT")),
        }
    }

    /// Asks `peer` to rebuild shard `want` of a chunk from any `k` of the
    /// others (`shards`: every shard's CID and a holder, see
    /// `Request::RebuildShard`) and keep it. `Ok` only when the peer
    /// answered `Ok`: the rebuilt shard is durable there.
    pub async fn rebuild_shard(
        &self,
        peer: PeerId,
        chunk: Cid,
        (k, m): (u16, u16),
        want: u16,
        shards: Vec<(Cid, Option<PeerId>)>,
    ) -> Result<(), NetError> {
        expect_ok(self.request(peer, Request::RebuildShard { chunk, k, m, want, shards }).await?, "REBUILD_SHARD")
    }

    /// Stores a node-defined record on `peer`.
    pub async fn put_record(&self, peer: PeerId, key: Vec<u8>, value: Vec<u8>) -> Result<(), NetError> {
        expect_ok(self.request(peer, Request::PutRecord { key, value }).await?, "PUT_RECORD")
    }

    /// Reads a node-defined record from `peer` (`None`: it has none).
    pub async fn get_record(&self, peer: PeerId, key: Vec<u8>) -> Result<Option<Vec<u8>>, NetError> {
        match self.request(peer, Request::GetRecord { key }).await? {
            Response::Record(r) => Ok(r),
            Response::NotFound => Ok(None),
            other => Err(unexpected(other, "GET_RECORD")),
        }
    }

    async fn verified(&self, peer: PeerId, cid: Cid, resp: Response, what: &str) -> Result<Vec<u8>, NetError> {
        match resp {
            Response::Data(data) => match actor::verify(cid, data).await {
                Ok(data) => Ok(data),
                Err(why) => {
                    let _ = self.inner.commands.send(Command::Strike { peer, why }).await;
                    Err(NetError::Corrupt { cid, peer })
                }
            },
            other => Err(unexpected(other, what)),
        }
    }

    /// The peers closest to `key` in the DHT (Kademlia `GET_CLOSEST_PEERS`),
    /// at most k = 20, closest first.
    pub async fn closest_peers(&self, key: &[u8]) -> Result<Vec<PeerId>, NetError> {
        let key = key.to_vec();
        self.ask(|reply| Command::ClosestPeers { key, reply }).await?
    }

    /// Announces this node as a provider of `key` (stored locally at once,
    /// then on the k closest peers, and republished).
    pub async fn provide(&self, key: &[u8]) -> Result<(), NetError> {
        let key = key.to_vec();
        self.ask(|reply| Command::Provide { key, reply }).await?
    }

    /// Looks up the providers of `key` in the DHT (this node included if it
    /// provides it). Empty when none were found.
    pub async fn find_providers(&self, key: &[u8]) -> Result<Vec<PeerId>, NetError> {
        Ok(self.find_providers_traced(key).await?.providers)
    }

    /// [`Self::find_providers`], also reporting how many peers the lookup
    /// contacted.
    pub async fn find_providers_traced(&self, key: &[u8]) -> Result<ProviderLookup, NetError> {
        let key = key.to_vec();
        self.ask(|reply| Command::FindProviders { key, reply }).await?
    }

    /// Providers of `key` in this node's own record store (no network).
    pub async fn local_providers(&self, key: &[u8]) -> Result<Vec<PeerId>, NetError> {
        let key = key.to_vec();
        self.ask(|reply| Command::LocalProviders { key, reply }).await
    }

    /// Every peer we know, with its health (this node excluded). Empty once
    /// the actor has stopped.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// `(bucket index, entries)` for each non-empty k-bucket; the index is
    /// ⌊log2 distance⌋ (0..=255).
    pub async fn routing_table(&self) -> Vec<(u32, usize)> {
        self.ask(Command::RoutingTable).await.unwrap_or_default()
    }

    /// Stops the actor (closing every connection) after saving the DHT
    /// store. Later calls on any clone fail with `NetError::Shutdown`.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

// `NetError::Corrupt` names a CID and a peer id (176 bytes); it is the
// documented error shape, and these results travel beside network IO.
#[allow(clippy::result_large_err)]
fn expect_ok(resp: Response, what: &str) -> Result<(), NetError> {
    match resp {
        Response::Ok => Ok(()),
        other => Err(unexpected(other, what)),
    }
}

fn unexpected(resp: Response, what: &str) -> NetError {
    match resp {
        Response::Refused(why) => NetError::Refused(why),
        Response::NotFound => NetError::NotFound,
        other => NetError::Protocol(format!("unexpected answer to {what}: {}", variant(&other))),
    }
}

fn variant(r: &Response) -> &'static str {
    match r {
        Response::Ok => "Ok",
        Response::Data(_) => "Data",
        Response::Exists(_) => "Exists",
        Response::Record(_) => "Record",
        Response::NotFound => "NotFound",
        Response::Refused(_) => "Refused",
        Response::Heartbeat(_) => "Heartbeat",
    }
}
