//! The node's side of the network: serving peers' requests from the local
//! store ([`NodeHandler`]), and starting the peer-to-peer network with the
//! node's identity ([`Node::start_network`]).
//!
//! Shards and manifests peers send go to disk as they arrive (a
//! [`BodySink`] over the store's streaming writer), and those peers ask for
//! are streamed from their files ([`BodySource`] over the store's verified
//! reader), so a transfer never sits whole in memory.
//!
//! **Architecture invariant:** everything received is verified before use:
//! shards and manifests against their CIDs (hashed as they are written,
//! committed only on a match), location records by signature, against
//! their manifest and by the rewrite rules of `admit.rs`.

// Store calls return `StoreError`, which carries CIDs inline; boxing it on
// this path would buy nothing.
#![allow(clippy::result_large_err)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datamesh_core::tombstone::Tombstone;
use datamesh_core::{Cid, Manifest};
use datamesh_net::{BodyError, BodyKind, BodySink, BodySource, Handler, NetClient, PeerId, Request, Response};
use datamesh_store::{ObjectWriter, PinInfo, ShardMeta, Store, StoreError, UploadGuard};
use tokio::task::block_in_place;

use crate::context::{Inner, Node};
use crate::error::{InvalidRequest, NetworkError, NodeError, StorageError};
pub use crate::placement::{can_receive, is_draining};
use crate::records::{LocationStore, TombstoneStore, dht_key};
use crate::workers::{Worker, WorkerCtx};

/// How long shards received ahead of their manifest are protected from GC.
const REMOTE_SHARD_GRACE: Duration = Duration::from_secs(24 * 3600);

/// How long a `REBUILD_SHARD` waits for one of the node's rebuild slots
/// before it is answered busy.
const REBUILD_SLOT_WAIT: Duration = Duration::from_secs(10);

/// Serves inbound peer requests from the local store.
pub struct NodeHandler {
    pub(crate) store: Store,
    pub(crate) locations: LocationStore,
    pub(crate) tombstones: TombstoneStore,
    /// The node's manifest cache, to forget deleted files.
    pub(crate) manifests: Arc<quick_cache::sync::Cache<Cid, Arc<Manifest>>>,
    /// Shards received from peers whose manifest has not arrived yet: kept
    /// from GC until it does (then the replica pin keeps them) or the grace
    /// period ends.
    pub(crate) pending: Mutex<(Arc<UploadGuard>, Instant)>,
    pub(crate) on_manifest: Arc<dyn Fn(Cid) + Send + Sync>,
    /// The node, for a `REBUILD_SHARD` (it fetches shards like a read).
    /// Weak: the node holds the network, whose actor holds this handler.
    pub(crate) node: std::sync::Weak<Inner>,
    /// Peers' `REBUILD_SHARD`s running at once (see
    /// `repair::REBUILDS_IN_FLIGHT`); beyond, the answer is busy.
    pub(crate) rebuilds: Arc<tokio::sync::Semaphore>,
}

impl NodeHandler {
    /// The current grace guard; a fresh one replaces it when the grace
    /// period is over, so shards whose manifest never came become garbage.
    fn guard(&self) -> Arc<UploadGuard> {
        let mut g = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if g.1.elapsed() > REMOTE_SHARD_GRACE {
            *g = (Arc::new(self.store.protect()), Instant::now());
        }
        g.0.clone()
    }
}

/// A refusal to send a peer: what it can act on, never this node's file
/// system paths (the full error is logged here).
fn refused(e: impl ForPeer) -> Response {
    Response::Refused(e.for_peer())
}

/// An error as a peer may read it.
pub(crate) trait ForPeer: std::fmt::Display {
    /// The message for the peer; by default the error's own.
    fn for_peer(&self) -> String {
        self.to_string()
    }
}

impl ForPeer for &str {}
impl ForPeer for String {}
impl ForPeer for datamesh_core::proof::ProofError {}

impl ForPeer for StoreError {
    fn for_peer(&self) -> String {
        let local = match self {
            StoreError::DiskFull { .. } => "this node's disk is full",
            StoreError::Io { .. } | StoreError::Index { .. } | StoreError::BadRecord { .. } => {
                "this node's store failed"
            }
            StoreError::InUse { .. } | StoreError::FormatTooNew { .. } | StoreError::NotAStore { .. } => {
                "this node's data dir is not usable"
            }
            _ => return self.to_string(),
        };
        tracing::warn!(error = %self, "a peer's request failed on this node's store");
        format!("{local}; try another node")
    }
}

impl ForPeer for StorageError {
    fn for_peer(&self) -> String {
        match self {
            StorageError::Store(e)
            | StorageError::Open { source: e, .. }
            | StorageError::SaveTombstone { source: e, .. }
            | StorageError::SaveRecord(e) => e.for_peer(),
            StorageError::DataDir { .. } | StorageError::Identity(_) => {
                tracing::warn!(error = %self, "a peer's request failed on this node's data dir");
                "this node's data dir is not usable; try another node".into()
            }
            other => other.to_string(),
        }
    }
}

impl ForPeer for NodeError {
    fn for_peer(&self) -> String {
        match self {
            NodeError::Storage(e) => e.for_peer(),
            NodeError::NoSpace(e) => e.for_peer(),
            other => other.to_string(),
        }
    }
}

impl NodeHandler {
    fn adopter(&self) -> Adopter {
        Adopter {
            store: self.store.clone(),
            tombstones: self.tombstones.clone(),
            grace: self.pending.lock().unwrap_or_else(|p| p.into_inner()).0.clone(),
            on_manifest: self.on_manifest.clone(),
        }
    }
}

/// What a node does with a peer's manifest once it is stored: keep the file
/// as a replica. Blocking.
struct Adopter {
    store: Store,
    tombstones: TombstoneStore,
    grace: Arc<UploadGuard>,
    on_manifest: Arc<dyn Fn(Cid) + Send + Sync>,
}

impl Adopter {
    fn adopt(&self, cid: Cid, m: Manifest) -> Result<(), StoreError> {
        let store = &self.store;
        // A deleted file stays deleted: its manifest is kept unpinned, and
        // only the location record of a later upload (see `admit.rs`)
        // lifts the owner's tombstone. A manifest alone, which anyone can
        // send, does not.
        if self.tombstones.get(&cid).is_some() {
            return Ok(());
        }
        // A manifest of a file this node holds no shard of is kept
        // unpinned until its location record comes and is admitted (which
        // pins it, `admit.rs`); the grace guard keeps it from GC meanwhile.
        // Pinned on arrival, any peer could pin manifests here for good.
        let mut shards = m.chunks.iter().flat_map(|c| c.shards.iter());
        if store.pin_info(&cid)?.is_none() && !shards.any(|s| store.has_shard(s).unwrap_or(false)) {
            self.grace.add(cid);
            return Ok(());
        }
        if let Some(u) = m.unixfs {
            store.set_alias(&u, &cid)?;
        }
        // A replica pin: this node keeps the manifest and the shards of it
        // that it holds.
        if store.pin_info(&cid)?.is_none() {
            store.pin(
                &cid,
                PinInfo { name: None, size: m.size, created_at: datamesh_core::clock::unix_secs(), replica: true },
            )?;
        }
        // The replica pin keeps its shards now; the grace guard lets go of
        // them, so a tombstone or a lapsed lease can reclaim them.
        self.grace.release_many(m.chunks.iter().flat_map(|c| c.shards.iter()));
        (self.on_manifest)(cid);
        Ok(())
    }
}

fn body_error(e: StoreError) -> BodyError {
    match e {
        StoreError::Corrupt { .. } => BodyError::Mismatch(e.to_string()),
        e => BodyError::Refused(e.for_peer()),
    }
}

/// A peer's shard, written to the store as it arrives; kept from GC by the
/// grace guard until its manifest comes.
struct ShardSink {
    writer: ObjectWriter,
    guard: Arc<UploadGuard>,
}

impl BodySink for ShardSink {
    fn write(&mut self, piece: &[u8]) -> Result<(), BodyError> {
        self.writer.write(piece).map_err(body_error)
    }
    fn finish(self: Box<Self>) -> Result<(), BodyError> {
        let ShardSink { writer, guard } = *self;
        writer.finish(Some(&guard)).map_err(body_error)
    }
}

/// A peer's manifest, written to the store as it arrives, then read back
/// (verified) and adopted as a replica.
struct ManifestSink {
    writer: ObjectWriter,
    adopt: Adopter,
}

impl BodySink for ManifestSink {
    fn write(&mut self, piece: &[u8]) -> Result<(), BodyError> {
        self.writer.write(piece).map_err(body_error)
    }
    fn finish(self: Box<Self>) -> Result<(), BodyError> {
        let ManifestSink { writer, adopt } = *self;
        let cid = writer.cid();
        writer.finish(None).map_err(body_error)?;
        let bytes = adopt.store.get_manifest(&cid).map_err(body_error)?;
        // Hashes to its CID but is not a manifest: left unpinned for GC.
        let Ok(m) = Manifest::decode_verified(&cid, &bytes) else {
            return Err(BodyError::Refused("not a valid manifest for this CID".into()));
        };
        drop(bytes);
        adopt.adopt(cid, m).map_err(|e| BodyError::Refused(e.for_peer()))
    }
}

#[async_trait::async_trait]
impl Handler for NodeHandler {
    async fn handle(&self, from: PeerId, req: Request) -> Response {
        let store = self.store.clone();
        match req {
            Request::PutShard { cid, data } => {
                // `net` has checked the bytes against the CID.
                let g = self.guard();
                let meta = ShardMeta { chunk: cid, index: 0 };
                match block_in_place(move || store.put_shards(&[(cid, &data, meta)], Some(&g))) {
                    Ok(()) => Response::Ok,
                    Err(e) => refused(e),
                }
            }
            Request::GetShard { cid } => match block_in_place(move || store.get_shard(&cid)) {
                Ok(d) => Response::Data(d),
                Err(StoreError::NotFound { .. }) | Err(StoreError::Corrupt { .. }) => Response::NotFound,
                Err(e) => refused(e),
            },
            Request::Audit { cid, start, len } => {
                // A verified read (a rotten shard is quarantined and so not
                // held), then the proof: one more pass over the bytes.
                match block_in_place(move || store.get_shard(&cid)) {
                    Ok(d) => match datamesh_core::proof::prove(&d, start, len) {
                        Ok(p) => Response::Data(p),
                        Err(e) => refused(e),
                    },
                    Err(StoreError::NotFound { .. }) | Err(StoreError::Corrupt { .. }) => Response::NotFound,
                    Err(e) => refused(e),
                }
            }
            Request::ShardExists { cids } => {
                match block_in_place(move || cids.iter().map(|c| store.has_shard(c)).collect::<Result<Vec<_>, _>>()) {
                    Ok(v) => Response::Exists(v),
                    Err(e) => refused(e),
                }
            }
            Request::DeleteShard { cid, authorization } => {
                // Only with the owner's tombstone of a file this shard
                // belongs to; the shard goes when no pinned file needs it.
                let Ok(t) = Tombstone::decode(&authorization) else {
                    return Response::Refused("DELETE_SHARD needs the file owner's tombstone".into());
                };
                let (locations, tombstones) = (self.locations.clone(), self.tombstones.clone());
                // Its GC may collect other unpinned manifests too.
                self.manifests.clear();
                let r = block_in_place(move || {
                    let bytes = store.get_manifest(&t.manifest).map_err(|e| e.for_peer())?;
                    let m = Manifest::decode_verified(&t.manifest, &bytes).map_err(|e| e.to_string())?;
                    if !m.chunks.iter().any(|c| c.shards.contains(&cid)) {
                        return Err(format!("{cid} is not a shard of {}", t.manifest));
                    }
                    crate::deletion::apply_tombstone(&store, &locations, &tombstones, &t, false)
                        .map_err(|e| e.for_peer())
                });
                match r {
                    Ok(()) => Response::Ok,
                    Err(why) => Response::Refused(why),
                }
            }
            Request::PutManifest { cid, data } => {
                let Ok(m) = Manifest::decode_verified(&cid, &data) else {
                    return Response::Refused("not a valid manifest for this CID".into());
                };
                let adopt = self.adopter();
                match block_in_place(move || store.put_manifest(&cid, &data).and_then(|()| adopt.adopt(cid, m))) {
                    Ok(()) => Response::Ok,
                    Err(e) => refused(e),
                }
            }
            Request::GetManifest { cid } => match block_in_place(move || store.get_manifest(&cid)) {
                Ok(d) => Response::Data(d),
                Err(StoreError::NotFound { .. }) => Response::NotFound,
                Err(e) => refused(e),
            },
            Request::PutRecord { key, value } => {
                if let Some(rest) = key.strip_prefix(b"tomb/") {
                    let t = match Tombstone::decode(&value) {
                        Ok(t) if Cid::from_bytes(rest).is_ok_and(|c| c == t.manifest) => t,
                        _ => return Response::Refused("invalid tombstone".into()),
                    };
                    let (locations, tombstones) = (self.locations.clone(), self.tombstones.clone());
                    // Its GC may collect other unpinned manifests too.
                    self.manifests.clear();
                    match block_in_place(move || {
                        crate::deletion::apply_tombstone(&store, &locations, &tombstones, &t, false)
                    }) {
                        Ok(()) => Response::Ok,
                        // Nothing of it here: nothing to delete.
                        Err(NodeError::NotFound(_)) => Response::NotFound,
                        Err(e) => refused(e),
                    }
                } else if key.starts_with(b"loc/") {
                    let Some(inner) = self.node.upgrade() else { return refused("the node is shutting down") };
                    Node { inner }.admit_location(from, &key, &value).await
                } else {
                    Response::Refused("unknown record kind".into())
                }
            }
            Request::GetRecord { key } => {
                if let Some(rest) = key.strip_prefix(b"loc/") {
                    let Ok(cid) = Cid::from_bytes(rest) else { return Response::Refused("bad key".into()) };
                    Response::Record(self.locations.get(&cid).map(|r| r.encode()))
                } else if let Some(rest) = key.strip_prefix(b"tomb/") {
                    let Ok(cid) = Cid::from_bytes(rest) else { return Response::Refused("bad key".into()) };
                    Response::Record(self.tombstones.get(&cid).map(|t| t.encode()))
                } else if let Some(rest) = key.strip_prefix(b"alias/") {
                    let Ok(cid) = Cid::from_bytes(rest) else { return Response::Refused("bad key".into()) };
                    match block_in_place(move || store.resolve_alias(&cid)) {
                        Ok(v) => Response::Record(v.map(|c| c.to_bytes())),
                        Err(e) => refused(e),
                    }
                } else {
                    Response::Refused("unknown record kind".into())
                }
            }
            Request::Heartbeat(_) => Response::Ok,
            Request::RebuildShard { chunk, k, m, want, shards } => {
                // Wait a while for a slot (a repair sends a few at once),
                // well inside the requester's timeout.
                let slot = tokio::time::timeout(REBUILD_SLOT_WAIT, self.rebuilds.clone().acquire_owned()).await;
                let Ok(Ok(_slot)) = slot else {
                    return Response::Refused("busy: rebuilding as many shards as it may at once; retry later".into());
                };
                let Some(inner) = self.node.upgrade() else { return refused("the node is shutting down") };
                let node = Node { inner };
                let e = datamesh_core::Erasure { k, m };
                match node.rebuild_for_peer(self.guard(), chunk, e, want as usize, shards).await {
                    Ok(()) => Response::Ok,
                    Err(e) => refused(e),
                }
            }
        }
    }

    fn body_sink(&self, kind: BodyKind, cid: Cid, len: u64) -> Option<Result<Box<dyn BodySink>, Response>> {
        let sink: Result<Box<dyn BodySink>, StoreError> = match kind {
            BodyKind::Shard => {
                let meta = ShardMeta { chunk: cid, index: 0 };
                self.store
                    .shard_writer(cid, len, meta)
                    .map(|writer| Box::new(ShardSink { writer, guard: self.guard() }) as Box<dyn BodySink>)
            }
            BodyKind::Manifest => self
                .store
                .manifest_writer(cid, len)
                .map(|writer| Box::new(ManifestSink { writer, adopt: self.adopter() }) as Box<dyn BodySink>),
        };
        Some(sink.map_err(refused))
    }

    fn body_source(&self, kind: BodyKind, cid: Cid) -> Option<Result<BodySource, Response>> {
        let reader = match kind {
            BodyKind::Shard => self.store.shard_reader(&cid),
            BodyKind::Manifest => self.store.manifest_reader(&cid),
        };
        Some(match reader {
            Ok(r) => Ok(BodySource { len: r.len(), reader: Box::new(r) }),
            Err(StoreError::NotFound { .. }) | Err(StoreError::Corrupt { .. }) => Err(Response::NotFound),
            Err(e) => Err(refused(e)),
        })
    }
}

impl Node {
    /// The handler that serves peers from this node's store.
    pub fn handler(&self) -> Arc<NodeHandler> {
        let net = self.inner.net.clone();
        Arc::new(NodeHandler {
            node: Arc::downgrade(&self.inner),
            rebuilds: Arc::new(tokio::sync::Semaphore::new(crate::repair::REBUILDS_IN_FLIGHT)),
            store: self.inner.store.clone(),
            locations: self.inner.locations.clone(),
            tombstones: self.inner.tombstones.clone(),
            manifests: self.inner.manifests.clone(),
            pending: Mutex::new((Arc::new(self.inner.store.protect()), Instant::now())),
            on_manifest: Arc::new(move |cid: Cid| {
                // A replica announces itself as a provider of the file.
                if let Some(n) = net.get() {
                    let n = n.clone();
                    tokio::spawn(async move {
                        if let Err(e) = n.provide(&dht_key(&cid)).await {
                            tracing::debug!(%cid, error = %e, "could not announce a replica");
                        }
                    });
                }
            }),
        })
    }

    /// Starts the peer-to-peer network this node's config describes
    /// (listen, bootstrap and announce addresses, mDNS, health timers) with
    /// the node's own identity, attaches it, and keeps what its heartbeats
    /// say (free space, shard count, draining) current for as long as it
    /// runs. The daemon and in-process test networks both come up this way.
    pub async fn start_network(&self) -> Result<NetClient, NodeError> {
        let cfg = &self.inner.cfg;
        let parse = |list: &[String], what: &'static str| -> Result<Vec<datamesh_net::Multiaddr>, NodeError> {
            list.iter()
                .map(|a| a.parse().map_err(|_| InvalidRequest::BadAddress { what, address: a.clone() }.into()))
                .collect()
        };
        let seed = self.inner.identity.secret_seed();
        let net_cfg = datamesh_net::NetConfig {
            identity_seed: seed,
            listen: parse(&cfg.listen, "listen")?,
            bootstrap: parse(&cfg.bootstrap, "bootstrap")?,
            announce: parse(&cfg.announce, "announce")?,
            mdns: cfg.mdns,
            timers: datamesh_net::HealthTimers {
                heartbeat_interval: cfg.heartbeat_interval,
                warning_after: cfg.warning_after,
                offline_after: cfg.offline_after,
            },
            state_dir: Some(cfg.data_dir.join("net")),
            // Peers place shards by the free space in our heartbeats: say it
            // from the first exchange, not after the first refresh.
            heartbeat: self.heartbeat().await,
            ..datamesh_net::NetConfig::new(seed)
        };
        let net = datamesh_net::start(net_cfg, self.handler()).await.map_err(NetworkError::Start)?;
        self.attach_net(net.clone());
        self.workers().spawn(HeartbeatWorker {
            node: self.clone(),
            net: net.clone(),
            every: (cfg.heartbeat_interval / 2).max(Duration::from_millis(100)),
        });
        Ok(net)
    }
}

/// Keeps what the node's heartbeats tell peers (free space, shard count,
/// draining) current while the network runs.
pub struct HeartbeatWorker {
    /// The node whose figures it reports.
    pub node: Node,
    /// The network the figures go to.
    pub net: NetClient,
    /// How often they are refreshed.
    pub every: Duration,
}

#[async_trait::async_trait]
impl Worker for HeartbeatWorker {
    fn name(&self) -> &'static str {
        "heartbeat"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        ctx.set(format!("refreshing heartbeat figures every {}", humantime::format_duration(self.every)));
        let mut t = tokio::time::interval(self.every);
        loop {
            tokio::select! {
                () = ctx.stopped() => return,
                () = self.net.stopped() => return,
                _ = t.tick() => self.net.set_local_heartbeat(self.node.heartbeat().await),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hole: a store failure answered a peer with the node's paths
    /// (`could not write /home/…/store/shards/…`).
    #[test]
    fn refusals_to_peers_carry_no_local_paths() {
        let io = || std::io::Error::other("boom");
        let errs = [
            StoreError::Io { op: "write", path: "/srv/secret-dir/store/x".into(), source: io() },
            StoreError::DiskFull { dir: "/srv/secret-dir".into(), source: io() },
            StoreError::NotAStore { dir: "/srv/secret-dir".into(), reason: "no".into() },
        ];
        for e in errs {
            let Response::Refused(why) = refused(e) else { panic!("not a refusal") };
            assert!(!why.contains("secret-dir"), "{why}");
        }
        let nested = NodeError::from(StorageError::Store(StoreError::Io {
            op: "rename",
            path: "/srv/secret-dir/a".into(),
            source: io(),
        }));
        let Response::Refused(why) = refused(nested) else { panic!("not a refusal") };
        assert!(!why.contains("secret-dir"), "{why}");
        let dir = NodeError::from(StorageError::DataDir { path: "/srv/secret-dir".into(), source: io() });
        let Response::Refused(why) = refused(dir) else { panic!("not a refusal") };
        assert!(!why.contains("secret-dir"), "{why}");
    }
}
