//! The event stream: what happens on the node, pushed as JSON to WebSocket
//! clients at `GET /v1/events`.
//!
//! # Protocol
//! - `GET /v1/events` with `Upgrade: websocket`, authenticated like every
//!   private route (`Authorization: Bearer <token>`), or with
//!   `?token=<token>` because browsers cannot set headers on a WebSocket.
//! - `?types=file.added,peer.state` keeps only those event types; unknown
//!   names are refused (400) so that a typo is not a silent empty stream.
//! - The server sends one text message per event, an [`EventMessage`]:
//!   `{"seq": 7, "time_ms": 1700000000000, "type": "file.added", ...}`.
//!   `seq` grows by one per event published on the node, so a gap shows
//!   events this client did not get (filtered out, or missed before it
//!   connected). A `metrics` event is sent at once on connect, then every
//!   `metrics_interval`.
//! - Client messages are ignored (pings are answered); a close frame ends
//!   the stream.
//!
//! # Bounds
//! Events go through one `tokio::sync::broadcast` ring of `buffer` events;
//! each client reads it at its own pace, so the memory is the ring's,
//! whatever the number or speed of clients. A client that falls more than
//! `buffer` events behind is disconnected with close code 1013 (try again
//! later) and a reason. The server pings every `client_timeout / 3`; a
//! client that answers nothing (no pong: it is not reading) for
//! `client_timeout`, or whose socket accepts nothing for that long, is
//! dropped — the kernel's socket buffers would otherwise let a client that
//! never reads hold megabytes for minutes. No close frame can reach such a
//! client. Others never wait for it.
//!
//! # Sources
//! Uploads, downloads and file events come from the gateway's handlers
//! (REST and S3). Peer events come from watching the network's health table
//! every `peer_poll` (connect, disconnect, ONLINE/WARNING/OFFLINE changes).
//! `metrics` and `alert` come from a ticker: alerts are raised when a
//! condition starts (a peer OFFLINE, the store ≥ 90 % full, too few nodes
//! to place a file, chunks the repair worker could not rebuild) and again,
//! with `resolved: true`, when it ends.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, close_code};
use futures::{SinkExt, StreamExt};
use serde::Serialize;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use datamesh_node::workers::{Worker, WorkerCtx};

use crate::metrics::Metrics;

/// How the event stream runs.
#[derive(Debug, Clone, Copy)]
pub struct EventsConfig {
    /// Events held for clients to read; a client further behind is dropped.
    pub buffer: usize,
    /// Period of the `metrics` event.
    pub metrics_interval: Duration,
    /// A client that answers no ping, or whose socket accepts nothing, for
    /// this long is dropped. Pings go every third of it.
    pub client_timeout: Duration,
    /// How often the peer table is compared with the last one seen.
    pub peer_poll: Duration,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            buffer: 1024,
            metrics_interval: Duration::from_secs(5),
            client_timeout: Duration::from_secs(30),
            peer_poll: Duration::from_millis(250),
        }
    }
}

/// One event. Serialized with its `type` tag beside the fields.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(tag = "type")]
pub enum Event {
    /// Bytes of a `POST /v1/files` body received so far (at most one
    /// event per 4 MiB or per half second).
    #[serde(rename = "upload.progress")]
    UploadProgress {
        /// The upload's id (also in the upload's response).
        upload: String,
        /// The `?name=` given.
        name: Option<String>,
        /// Bytes received.
        bytes: u64,
        /// Content-Length, when the client sent one.
        total: Option<u64>,
    },
    /// A `POST /v1/files` upload is stored and pinned.
    #[serde(rename = "upload.completed")]
    UploadCompleted {
        /// The upload's id.
        upload: String,
        /// The file's CID.
        cid: String,
        /// Plaintext bytes.
        size: u64,
        /// The name given.
        name: Option<String>,
    },
    /// Bytes of a file download sent so far: every 4 MiB, and once at the end.
    #[serde(rename = "download.progress")]
    DownloadProgress {
        /// The file's CID.
        cid: String,
        /// The share link's id, for downloads through `/v1/s/{id}`.
        share: Option<String>,
        /// Bytes sent.
        bytes: u64,
        /// Bytes this response carries (the range's length).
        total: u64,
        /// Whether every byte was sent.
        done: bool,
    },
    /// A file was stored and pinned on this node.
    #[serde(rename = "file.added")]
    FileAdded {
        /// The file's (manifest) CID.
        cid: String,
        /// Plaintext bytes.
        size: u64,
        /// Its name, if any.
        name: Option<String>,
        /// `rest` (POST /v1/files), `api` (an upload session, e.g. the CLI) or `s3`.
        source: String,
    },
    /// A file was deleted or unpinned on this node (GC may reclaim it).
    #[serde(rename = "file.removed")]
    FileRemoved {
        /// The file's CID.
        cid: String,
        /// `deleted` or `unpinned`.
        reason: String,
    },
    /// A connection to a peer opened.
    #[serde(rename = "peer.connected")]
    PeerConnected {
        /// Peer id.
        peer: String,
        /// Its health state now.
        state: String,
    },
    /// The last connection to a peer closed (or it was forgotten).
    #[serde(rename = "peer.disconnected")]
    PeerDisconnected {
        /// Peer id.
        peer: String,
    },
    /// A peer's health changed.
    #[serde(rename = "peer.state")]
    PeerState {
        /// Peer id.
        peer: String,
        /// Previous state: ONLINE, WARNING or OFFLINE (None for a new peer).
        from: Option<String>,
        /// New state.
        to: String,
    },
    /// A periodic summary.
    #[serde(rename = "metrics")]
    Metrics(MetricsSummary),
    /// A user reached 80 % of a quota (`resolved`: back under it). Raised
    /// once per episode, with an `alert` (code `quota_nearly_reached`)
    /// beside it; the user sees the same in `GET /v1/me/usage`'s warnings.
    #[serde(rename = "quota.warning")]
    QuotaWarning {
        /// The user's name.
        user: String,
        /// `storage`, `files` or `transfer`.
        quota: String,
        /// The user went back under 80 %.
        resolved: bool,
    },
    /// Something an operator should look at.
    #[serde(rename = "alert")]
    Alert {
        /// `warning` or `critical`.
        severity: String,
        /// Stable code: `peer_offline`, `store_nearly_full`, `cannot_place`, `chunks_unrecoverable`,
        /// `quota_nearly_reached`.
        code: String,
        /// What happened and what to do.
        message: String,
        /// The condition ended.
        resolved: bool,
    },
}

/// The `metrics` event's numbers.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct MetricsSummary {
    /// Disk budget.
    pub capacity_bytes: u64,
    /// Bytes of shards and manifests.
    pub used_bytes: u64,
    /// Shards stored here.
    pub shards: u64,
    /// Files pinned here.
    pub pins: u64,
    /// Open upload sessions.
    pub upload_sessions: u64,
    /// Connected ONLINE peers.
    pub peers_online: u64,
    /// Peers known.
    pub peers_total: u64,
    /// Shards the repair worker rebuilt since start.
    pub repair_shards_rebuilt: u64,
    /// Whether the node can place a file with its default code (`/v1/ready`).
    pub ready: bool,
    /// Event stream clients.
    pub subscribers: u64,
}

impl Event {
    /// The `type` tag.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::UploadProgress { .. } => EventKind::UploadProgress,
            Event::UploadCompleted { .. } => EventKind::UploadCompleted,
            Event::DownloadProgress { .. } => EventKind::DownloadProgress,
            Event::FileAdded { .. } => EventKind::FileAdded,
            Event::FileRemoved { .. } => EventKind::FileRemoved,
            Event::PeerConnected { .. } => EventKind::PeerConnected,
            Event::PeerDisconnected { .. } => EventKind::PeerDisconnected,
            Event::PeerState { .. } => EventKind::PeerState,
            Event::Metrics(_) => EventKind::Metrics,
            Event::QuotaWarning { .. } => EventKind::QuotaWarning,
            Event::Alert { .. } => EventKind::Alert,
        }
    }
}

/// What each message on the stream is.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct EventMessage {
    /// Position in the node's sequence of events.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The event, its `type` tag and fields inline.
    #[serde(flatten)]
    pub event: Event,
}

/// The event types, for filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum EventKind {
    UploadProgress,
    UploadCompleted,
    DownloadProgress,
    FileAdded,
    FileRemoved,
    PeerConnected,
    PeerDisconnected,
    PeerState,
    Metrics,
    QuotaWarning,
    Alert,
}

impl EventKind {
    /// Every type.
    pub const ALL: [EventKind; 11] = [
        EventKind::UploadProgress,
        EventKind::UploadCompleted,
        EventKind::DownloadProgress,
        EventKind::FileAdded,
        EventKind::FileRemoved,
        EventKind::PeerConnected,
        EventKind::PeerDisconnected,
        EventKind::PeerState,
        EventKind::Metrics,
        EventKind::QuotaWarning,
        EventKind::Alert,
    ];

    /// The `type` tag.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::UploadProgress => "upload.progress",
            EventKind::UploadCompleted => "upload.completed",
            EventKind::DownloadProgress => "download.progress",
            EventKind::FileAdded => "file.added",
            EventKind::FileRemoved => "file.removed",
            EventKind::PeerConnected => "peer.connected",
            EventKind::PeerDisconnected => "peer.disconnected",
            EventKind::PeerState => "peer.state",
            EventKind::Metrics => "metrics",
            EventKind::QuotaWarning => "quota.warning",
            EventKind::Alert => "alert",
        }
    }

    /// The type named `s`.
    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// Which types a client wants.
#[derive(Debug, Clone, Copy)]
pub struct Filter(u16);

impl Filter {
    /// Every type.
    pub const ALL: Filter = Filter(u16::MAX);

    /// Parses `a,b,c`; an empty list means every type. Err names the unknown one.
    pub fn parse(list: Option<&str>) -> Result<Filter, String> {
        let Some(list) = list.map(str::trim).filter(|l| !l.is_empty()) else { return Ok(Filter::ALL) };
        let mut bits = 0u16;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let k = EventKind::parse(name).ok_or_else(|| {
                let all: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
                format!("unknown event type `{name}`; the types are {}", all.join(", "))
            })?;
            bits |= 1 << k as u16;
        }
        Ok(Filter(bits))
    }

    /// Whether `k` passes.
    pub fn allows(self, k: EventKind) -> bool {
        self.0 & (1 << k as u16) != 0
    }
}

/// An event as published: serialized once for every client.
#[derive(Clone)]
pub struct Published {
    kind: EventKind,
    text: Utf8Bytes,
}

struct BusInner {
    tx: broadcast::Sender<Published>,
    seq: AtomicU64,
    subscribers: AtomicUsize,
    cfg: EventsConfig,
    metrics: Metrics,
    shutdown: CancellationToken,
    /// Each user's quotas at or above 80 % now, so each crossing is raised
    /// once, and its end once. In memory: a restarted gateway raises a
    /// standing warning again at the user's next request, which is what an
    /// operator who restarted wants to see.
    quota_warned: std::sync::Mutex<std::collections::HashMap<datamesh_services::UserId, Vec<&'static str>>>,
}

/// The node's event bus. Cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl EventBus {
    /// A bus holding `cfg.buffer` events.
    pub fn new(cfg: EventsConfig, metrics: Metrics) -> Self {
        let (tx, _) = broadcast::channel(cfg.buffer.max(1));
        let shutdown = CancellationToken::new();
        EventBus {
            inner: Arc::new(BusInner {
                tx,
                seq: AtomicU64::new(0),
                subscribers: AtomicUsize::new(0),
                cfg,
                metrics,
                shutdown,
                quota_warned: Default::default(),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &EventsConfig {
        &self.inner.cfg
    }

    /// Publishes an event to every client. Never waits.
    pub fn publish(&self, event: Event) {
        let kind = event.kind();
        self.inner.metrics.event_published(kind.as_str());
        if self.inner.tx.receiver_count() == 0 {
            return;
        }
        let _ = self.inner.tx.send(self.render(event));
    }

    fn render(&self, event: Event) -> Published {
        let kind = event.kind();
        let msg = EventMessage { seq: self.inner.seq.fetch_add(1, Ordering::Relaxed), time_ms: now_ms(), event };
        let text =
            serde_json::to_string(&msg).unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"{e}\"}}"));
        Published { kind, text: text.into() }
    }

    /// Records which quotas of `user` are at or above 80 % `now` (the
    /// services answer the full list after each request) and returns the
    /// changes: each quota newly reached (`false`) or left (`true`).
    pub(crate) fn quota_changes(
        &self,
        user: datamesh_services::UserId,
        now: &[datamesh_services::quota::Quota],
    ) -> Vec<(&'static str, bool)> {
        let mut warned = self.inner.quota_warned.lock().unwrap_or_else(|e| e.into_inner());
        // Every download and upload asks: the common answer (nothing near,
        // nothing was) costs one map lookup.
        if now.is_empty() && !warned.contains_key(&user) {
            return Vec::new();
        }
        let now: Vec<&'static str> = now.iter().map(|q| q.as_str()).collect();
        let was = warned.remove(&user).unwrap_or_default();
        let mut changes: Vec<(&'static str, bool)> =
            now.iter().filter(|q| !was.contains(q)).map(|&q| (q, false)).collect();
        changes.extend(was.iter().filter(|q| !now.contains(q)).map(|&q| (q, true)));
        if !now.is_empty() {
            warned.insert(user, now);
        }
        changes
    }

    /// Clients connected now.
    pub fn subscribers(&self) -> usize {
        self.inner.subscribers.load(Ordering::Relaxed)
    }

    /// Tells every client the node is stopping (close code 1001).
    pub fn shutdown(&self) {
        self.inner.shutdown.cancel();
    }

    /// A new client's receiver, subscribed now (before the handshake
    /// completes, so it misses nothing published after it).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Published> {
        self.inner.tx.subscribe()
    }

    /// Serves one client until it leaves, lags or stalls. A `metrics`
    /// snapshot of `node` goes first.
    pub(crate) async fn serve_client(
        self,
        socket: WebSocket,
        mut rx: broadcast::Receiver<Published>,
        filter: Filter,
        node: datamesh_node::Node,
    ) {
        let n = self.inner.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
        self.inner.metrics.events_subscribers(n);
        let _gone = Unsubscribe(self.clone());
        let timeout = self.inner.cfg.client_timeout.max(Duration::from_millis(30));
        let stop = self.inner.shutdown.clone();
        let (mut sink, mut stream) = socket.split();
        if filter.allows(EventKind::Metrics) {
            let p = self.render(Event::Metrics(summary(&node, &self).await.0));
            if !matches!(tokio::time::timeout(timeout, sink.send(Message::Text(p.text))).await, Ok(Ok(()))) {
                return;
            }
        }
        enum End {
            Gone,
            Lagged(u64),
            Stalled,
            Unresponsive,
            Shutdown,
        }
        let every = timeout / 3;
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut heard = tokio::time::Instant::now();
        let end = loop {
            tokio::select! {
                _ = ping.tick() => {
                    if heard.elapsed() >= timeout {
                        break End::Unresponsive;
                    }
                    match tokio::time::timeout(timeout, sink.send(Message::Ping(PING.into()))).await {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break End::Gone,
                        Err(_) => break End::Stalled,
                    }
                }
                r = rx.recv() => match r {
                    Ok(p) => {
                        if !filter.allows(p.kind) {
                            continue;
                        }
                        match tokio::time::timeout(timeout, sink.send(Message::Text(p.text))).await {
                            Ok(Ok(())) => {}
                            Ok(Err(_)) => break End::Gone,
                            Err(_) => break End::Stalled,
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => break End::Lagged(n),
                    Err(broadcast::error::RecvError::Closed) => break End::Shutdown,
                },
                m = stream.next() => match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break End::Gone,
                    // A pong, or anything else: the client is reading.
                    Some(Ok(_)) => heard = tokio::time::Instant::now(),
                },
                () = stop.cancelled() => break End::Shutdown,
            }
        };
        let close = |code, reason: String| Message::Close(Some(CloseFrame { code, reason: reason.into() }));
        match end {
            End::Gone => {}
            End::Lagged(n) => {
                self.inner.metrics.events_client_dropped("lagged");
                tracing::info!(missed = n, "event stream client too slow; disconnected");
                // A close reason is at most 123 bytes.
                let why = format!("too slow: {n} events missed (buffer {}); reconnect", self.inner.cfg.buffer);
                let _ = tokio::time::timeout(timeout, sink.send(close(close_code::AGAIN, why))).await;
            }
            End::Stalled => {
                self.inner.metrics.events_client_dropped("stalled");
                tracing::info!("event stream client accepted nothing for {timeout:?}; dropped");
            }
            End::Unresponsive => {
                self.inner.metrics.events_client_dropped("unresponsive");
                tracing::info!("event stream client answered no ping for {timeout:?}; dropped");
            }
            End::Shutdown => {
                let _ = tokio::time::timeout(timeout, sink.send(close(close_code::AWAY, "node stopping".into()))).await;
            }
        }
    }
}

/// The payload of the server's pings.
const PING: &[u8] = b"datamesh";

struct Unsubscribe(EventBus);

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        let n = self.0.inner.subscribers.fetch_sub(1, Ordering::Relaxed).saturating_sub(1);
        self.0.inner.metrics.events_subscribers(n);
    }
}

/// A peer as last seen: connected, state.
type PeerView = HashMap<String, (bool, String)>;

/// Compares two views of the peer table; the events that lead from `old` to `new`.
pub fn peer_changes(old: &PeerView, new: &PeerView) -> Vec<Event> {
    let mut out = Vec::new();
    let mut peers: Vec<&String> = new.keys().chain(old.keys()).collect();
    peers.sort();
    peers.dedup();
    for p in peers {
        let before = old.get(p);
        let after = new.get(p);
        let was_connected = before.is_some_and(|b| b.0);
        let is_connected = after.is_some_and(|a| a.0);
        if is_connected && !was_connected {
            let state = after.map(|a| a.1.clone()).unwrap_or_default();
            out.push(Event::PeerConnected { peer: p.clone(), state });
        }
        if let Some((_, to)) = after
            && before.map(|b| &b.1) != Some(to)
        {
            out.push(Event::PeerState { peer: p.clone(), from: before.map(|b| b.1.clone()), to: to.clone() });
        }
        if was_connected && !is_connected {
            out.push(Event::PeerDisconnected { peer: p.clone() });
        }
    }
    out
}

/// Publishes peer events by comparing the health table every `poll`, and
/// raises a `peer_offline` alert when a peer that was up turns OFFLINE
/// (resolved when it is ONLINE again). Runs until its worker is stopped.
async fn watch_peers(node: &datamesh_node::Node, bus: &EventBus, ctx: &WorkerCtx) {
    let mut seen = PeerView::new();
    let mut alerted = std::collections::HashSet::new();
    let every = bus.config().peer_poll.max(Duration::from_millis(10));
    ctx.set(format!("diffing the health table every {} ms into peer events", every.as_millis()));
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.stopped() => return,
            _ = t.tick() => {}
        }
        let now: PeerView = node
            .peers()
            .await
            .into_iter()
            .map(|p| (p.peer.to_string(), (p.connected, format!("{:?}", p.state).to_uppercase())))
            .collect();
        for e in peer_changes(&seen, &now) {
            let alert = match &e {
                Event::PeerState { peer, from: Some(from), to } if to == "OFFLINE" && from != "OFFLINE" => {
                    alerted.insert(peer.clone());
                    let m =
                        format!("peer {peer} is OFFLINE: the repair worker rebuilds the shards it held on other nodes");
                    Some((m, false))
                }
                Event::PeerState { peer, to, .. } if to == "ONLINE" && alerted.remove(peer) => {
                    Some((format!("peer {peer} is ONLINE again"), true))
                }
                _ => None,
            };
            bus.publish(e);
            if let Some((message, resolved)) = alert {
                bus.publish(Event::Alert {
                    severity: "warning".into(),
                    code: "peer_offline".into(),
                    message,
                    resolved,
                });
            }
        }
        // Peers the health table forgot need no resolution.
        alerted.retain(|p| now.contains_key(p));
        seen = now;
    }
}

/// One alert condition's state, so an alert is raised once per episode.
#[derive(Default)]
struct Condition(bool);

impl Condition {
    /// Publishes an alert when `active` changes.
    fn update(&mut self, bus: &EventBus, active: bool, severity: &str, code: &str, message: impl FnOnce() -> String) {
        if active != self.0 {
            self.0 = active;
            bus.publish(Event::Alert {
                severity: severity.into(),
                code: code.into(),
                message: if active { message() } else { format!("{code}: resolved") },
                resolved: !active,
            });
        }
    }
}

/// The numbers of a `metrics` event, read now.
pub(crate) async fn summary(node: &datamesh_node::Node, bus: &EventBus) -> (MetricsSummary, Result<String, String>) {
    let mut s = MetricsSummary { subscribers: bus.subscribers() as u64, ..Default::default() };
    if let Ok(st) = node.status().await {
        s.capacity_bytes = st.store.capacity_bytes;
        s.used_bytes = st.store.used_bytes;
        s.shards = st.store.shards;
        s.pins = st.store.pins;
        s.upload_sessions = st.uploads as u64;
        s.repair_shards_rebuilt = st.repair.shards_rebuilt;
    }
    let peers = node.peers().await;
    s.peers_total = peers.len() as u64;
    s.peers_online =
        peers.iter().filter(|p| p.connected && datamesh_node::network::can_receive(p.state)).count() as u64;
    let ready = crate::readiness(node).await;
    s.ready = ready.is_ok();
    (s, ready)
}

/// Publishes a `metrics` event every `metrics_interval` while anyone
/// listens, and raises the store, placement and repair alerts. Runs until
/// its worker is stopped.
async fn tick(node: &datamesh_node::Node, bus: &EventBus, ctx: &WorkerCtx) {
    let every = bus.config().metrics_interval.max(Duration::from_millis(10));
    ctx.set(format!("metrics events and alerts every {} ms", every.as_millis()));
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut full, mut place, mut lost) = (Condition::default(), Condition::default(), Condition::default());
    loop {
        tokio::select! {
            () = ctx.stopped() => return,
            _ = t.tick() => {}
        }
        let (s, ready) = summary(node, bus).await;
        let repair = node.repair_totals();
        if bus.subscribers() > 0 {
            bus.publish(Event::Metrics(s.clone()));
        }
        let used = if s.capacity_bytes == 0 { 0.0 } else { s.used_bytes as f64 / s.capacity_bytes as f64 };
        full.update(bus, used >= 0.9, "warning", "store_nearly_full", || {
            format!(
                "the store is {:.0}% full ({} of {} bytes): raise --capacity or free space (datamesh gc)",
                used * 100.0,
                s.used_bytes,
                s.capacity_bytes
            )
        });
        let why = ready.as_ref().err().cloned().unwrap_or_default();
        place.update(bus, ready.is_err(), "critical", "cannot_place", || why);
        lost.update(bus, repair.chunks_unrecoverable_last > 0, "critical", "chunks_unrecoverable", || {
            format!(
                "the last repair pass found {} chunks with fewer than k live shards: their files cannot be read until holders come back",
                repair.chunks_unrecoverable_last
            )
        });
    }
}

/// The event stream's peer watcher: turns changes in the network's health
/// table into `peer.*` events and `peer_offline` alerts.
pub struct PeerWatcher {
    pub(crate) node: datamesh_node::Node,
    pub(crate) bus: EventBus,
}

#[async_trait::async_trait]
impl Worker for PeerWatcher {
    fn name(&self) -> &'static str {
        "events-peers"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        watch_peers(&self.node, &self.bus, ctx).await
    }
}

/// The event stream's ticker: `metrics` events and the store, placement and
/// repair alerts.
pub struct MetricsTicker {
    pub(crate) node: datamesh_node::Node,
    pub(crate) bus: EventBus,
}

#[async_trait::async_trait]
impl Worker for MetricsTicker {
    fn name(&self) -> &'static str {
        "events-metrics"
    }

    async fn run(&self, ctx: &WorkerCtx) {
        tick(&self.node, &self.bus, ctx).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_their_type_tag() {
        let bus = EventBus::new(EventsConfig::default(), Metrics::new());
        let p = bus.render(Event::FileAdded { cid: "c".into(), size: 3, name: None, source: "rest".into() });
        let v: serde_json::Value = serde_json::from_str(p.text.as_str()).unwrap();
        assert_eq!(v["type"], "file.added");
        assert_eq!(v["cid"], "c");
        assert_eq!(v["seq"], 0);
        let p = bus.render(Event::Metrics(MetricsSummary::default()));
        let v: serde_json::Value = serde_json::from_str(p.text.as_str()).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["seq"].as_u64(), v["ready"].as_bool()),
            (Some("metrics"), Some(1), Some(false))
        );
    }

    #[test]
    fn filters_parse_and_refuse_unknown_types() {
        let f = Filter::parse(Some("file.added, peer.state")).unwrap();
        assert!(f.allows(EventKind::FileAdded) && f.allows(EventKind::PeerState));
        assert!(!f.allows(EventKind::Metrics));
        assert!(Filter::parse(None).unwrap().allows(EventKind::Alert));
        assert!(Filter::parse(Some("file.add")).unwrap_err().contains("file.added"));
    }

    #[test]
    fn peer_changes_name_connects_disconnects_and_state_changes() {
        let v = |list: &[(&str, bool, &str)]| -> PeerView {
            list.iter().map(|(p, c, s)| (p.to_string(), (*c, s.to_string()))).collect()
        };
        let kinds = |e: Vec<Event>| e.iter().map(|e| e.kind().as_str()).collect::<Vec<_>>();
        assert_eq!(kinds(peer_changes(&v(&[]), &v(&[("a", true, "ONLINE")]))), vec!["peer.connected", "peer.state"]);
        assert_eq!(
            kinds(peer_changes(&v(&[("a", true, "ONLINE")]), &v(&[("a", false, "WARNING")]))),
            vec!["peer.state", "peer.disconnected"]
        );
        assert_eq!(kinds(peer_changes(&v(&[("a", false, "OFFLINE")]), &v(&[]))), Vec::<&str>::new());
        assert_eq!(kinds(peer_changes(&v(&[("a", true, "ONLINE")]), &v(&[]))), vec!["peer.disconnected"]);
    }
}
