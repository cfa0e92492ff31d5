//! Prometheus metrics, served at `GET /metrics` on the API port without a
//! token (like `/v1/health`: they hold no secrets).
//!
//! Every name starts with `datamesh_` and follows Prometheus conventions
//! (base units, `_total` counters, `_seconds` and `_bytes` suffixes):
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `datamesh_http_requests_total` | counter | api (`rest`, `s3`), route, method, status |
//! | `datamesh_http_request_duration_seconds` | histogram | api, route, method |
//! | `datamesh_http_request_bytes_total` / `_response_bytes_total` | counter | api, route |
//! | `datamesh_http_rate_limited_total` | counter | api (requests answered 429 / SlowDown) |
//! | `datamesh_rate_limited_total` | counter | class (`address`, `login`, `read`, `write`, `admin`, `auth`, `uploads`: which limit refused) |
//! | `datamesh_http_connections_refused_total` | counter | reason (`connection_limit`, `address_limit`, `tls_handshake`) |
//! | `datamesh_http_timeouts_total` | counter | phase (`tls_handshake`, `header`, `idle`, `body`) |
//! | `datamesh_store_capacity_bytes`, `_used_bytes`, `_shards`, `_manifests`, `_state_records`, `_pins` | gauge | |
//! | `datamesh_peers` | gauge | state |
//! | `datamesh_dht_routing_table_entries` | gauge | |
//! | `datamesh_upload_sessions` | gauge | |
//! | `datamesh_gateway_objects`, `_object_bytes`, `_access_keys` | gauge | |
//! | `datamesh_erasure_encode_duration_seconds`, `_decode_duration_seconds` | histogram | (one chunk) |
//! | `datamesh_dht_lookup_duration_seconds` | histogram | (provider lookups) |
//! | `datamesh_repair_passes_total`, `_shards_rebuilt_total`, `_rebuilt_bytes_total`, `_rebuilt_for_peers_total` | counter | |
//! | `datamesh_repair_chunks_degraded`, `_chunks_unrecoverable` | gauge | (last pass) |
//! | `datamesh_share_downloads_total` | counter | outcome (`served`, `refused`) |
//! | `datamesh_permission_checks_total` | counter | source (`cache`: a level read under the current permission epoch; `database`) |
//! | `datamesh_events_subscribers` | gauge | |
//! | `datamesh_events_published_total` | counter | type |
//! | `datamesh_events_clients_dropped_total` | counter | reason (`lagged`, `stalled`, `unresponsive`) |
//!
//! Request metrics are counted as requests finish; node gauges are read
//! when scraped, so they are never stale. Erasure and DHT timings come
//! from the node's observer hook (`datamesh_node::observe`); repair
//! counters follow the node's `RepairTotals`.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// Labels of a finished request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `rest` or `s3`.
    pub api: &'static str,
    /// The route template (`/v1/files/{cid}`) or the S3 request kind.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// HTTP status code.
    pub status: u16,
}

/// Labels of request latency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// `rest` or `s3`.
    pub api: &'static str,
    /// Route template.
    pub route: String,
    /// HTTP method.
    pub method: String,
}

/// Labels of byte counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// `rest` or `s3`.
    pub api: &'static str,
    /// Route template.
    pub route: String,
}

/// Labels of the rate-limit counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `rest` or `s3`.
    pub api: &'static str,
}

/// Labels of the rate-limit counter by limit.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    /// Which limit refused: `address`, `login`, a route class, `uploads`.
    pub class: &'static str,
}

/// A route class as the `class` label of `datamesh_rate_limited_total`.
pub fn class_name(class: datamesh_services::ratelimit::RouteClass) -> &'static str {
    use datamesh_services::ratelimit::RouteClass;
    match class {
        RouteClass::Read => "read",
        RouteClass::Write => "write",
        RouteClass::Auth => "auth",
        RouteClass::Admin => "admin",
    }
}

/// Labels of the HTTP timeouts counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// What the connection was waiting for.
    pub phase: &'static str,
}

/// Labels of the share download counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `served` or `refused`.
    pub outcome: &'static str,
}

/// Labels of the permission checks counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `cache` or `database`.
    pub source: &'static str,
}

/// Labels of the events counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TypeLabels {
    /// The event's `type`.
    pub r#type: &'static str,
}

/// Labels of dropped event clients.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// Why it was dropped.
    pub reason: &'static str,
}

/// Labels of the peer gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    /// ONLINE, WARNING or OFFLINE.
    pub state: String,
}

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<LatencyLabels, Histogram>,
    bytes_in: Family<RouteLabels, Counter>,
    bytes_out: Family<RouteLabels, Counter>,
    rate_limited: Family<ApiLabels, Counter>,
    limited: Family<ClassLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    timeouts: Family<PhaseLabels, Counter>,
    capacity: Gauge,
    used: Gauge,
    shards: Gauge,
    manifests: Gauge,
    state_records: Gauge,
    pins: Gauge,
    peers: Family<PeerLabels, Gauge>,
    routing: Gauge,
    uploads: Gauge,
    objects: Gauge,
    object_bytes: Gauge,
    access_keys: Gauge,
    encode: Histogram,
    decode: Histogram,
    dht_lookup: Histogram,
    repair_passes: Counter,
    repair_shards: Counter,
    repair_bytes: Counter,
    repair_degraded: Gauge,
    repair_unrecoverable: Gauge,
    repair_for_peers: Counter,
    repair_seen: std::sync::Mutex<(u64, u64, u64, u64)>,
    share_downloads: Family<OutcomeLabels, Counter>,
    permission_checks: Family<SourceLabels, Counter>,
    permission_seen: std::sync::Mutex<(u64, u64)>,
    subscribers: Gauge,
    published: Family<TypeLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
}

/// The gateway's metrics. Cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric registered.
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("datamesh");
        let requests = Family::<RequestLabels, Counter>::default();
        r.register("http_requests", "HTTP requests answered", requests.clone());
        let latency = Family::<LatencyLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 18))
        });
        r.register_with_unit("http_request_duration", "Time to answer (headers sent)", Unit::Seconds, latency.clone());
        let bytes_in = Family::<RouteLabels, Counter>::default();
        r.register_with_unit("http_request", "Request body bytes declared", Unit::Bytes, bytes_in.clone());
        let bytes_out = Family::<RouteLabels, Counter>::default();
        r.register_with_unit("http_response", "Response body bytes declared", Unit::Bytes, bytes_out.clone());
        let rate_limited = Family::<ApiLabels, Counter>::default();
        r.register("http_rate_limited", "Requests refused as too many (429, SlowDown)", rate_limited.clone());
        let limited = Family::<ClassLabels, Counter>::default();
        r.register("rate_limited", "Requests refused by a rate or upload limit, by the limit", limited.clone());
        let refused = Family::<ReasonLabels, Counter>::default();
        r.register("http_connections_refused", "Connections closed at accept or handshake", refused.clone());
        let timeouts = Family::<PhaseLabels, Counter>::default();
        r.register(
            "http_timeouts",
            "Connections closed, or request bodies failed, for sending nothing",
            timeouts.clone(),
        );
        let g = |r: &mut Registry, name: &str, help: &str, unit: Option<Unit>| {
            let gauge = Gauge::default();
            match unit {
                Some(u) => r.register_with_unit(name, help, u, gauge.clone()),
                None => r.register(name, help, gauge.clone()),
            }
            gauge
        };
        let capacity =
            g(&mut r, "store_capacity", "Disk budget for shards, manifests and state records", Some(Unit::Bytes));
        let used = g(&mut r, "store_used", "Bytes used by shards, manifests and state records", Some(Unit::Bytes));
        let shards = g(&mut r, "store_shards", "Shards stored on this node", None);
        let manifests = g(&mut r, "store_manifests", "Manifests stored on this node", None);
        let state_records = g(
            &mut r,
            "store_state_records",
            "Location records, tombstones, leases and reputations kept by this node",
            None,
        );
        let pins = g(&mut r, "store_pins", "Files pinned on this node", None);
        let peers = Family::<PeerLabels, Gauge>::default();
        r.register("peers", "Known peers by health state", peers.clone());
        let routing = g(&mut r, "dht_routing_table_entries", "Entries in the Kademlia routing table", None);
        let uploads = g(&mut r, "upload_sessions", "Open upload sessions", None);
        let objects = g(&mut r, "gateway_objects", "Objects in the gateway's index", None);
        let object_bytes = g(&mut r, "gateway_object", "Plaintext bytes of the gateway's objects", Some(Unit::Bytes));
        let access_keys = g(&mut r, "gateway_access_keys", "S3 access keys", None);
        let encode = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        r.register_with_unit("erasure_encode_duration", "Erasure encoding of one chunk", Unit::Seconds, encode.clone());
        let decode = Histogram::new(exponential_buckets(0.00005, 2.0, 16));
        r.register_with_unit(
            "erasure_decode_duration",
            "Erasure decoding of one chunk, shard verification included",
            Unit::Seconds,
            decode.clone(),
        );
        let dht_lookup = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        r.register_with_unit("dht_lookup_duration", "DHT provider lookups", Unit::Seconds, dht_lookup.clone());
        let repair_passes = Counter::default();
        r.register("repair_passes", "Repair passes run", repair_passes.clone());
        let repair_shards = Counter::default();
        r.register("repair_shards_rebuilt", "Shards rebuilt by the repair worker", repair_shards.clone());
        let repair_for_peers = Counter::default();
        r.register(
            "repair_rebuilt_for_peers",
            "Shards this node rebuilt and kept at another node's request (REBUILD_SHARD)",
            repair_for_peers.clone(),
        );
        let repair_bytes = Counter::default();
        r.register_with_unit("repair_rebuilt", "Bytes of shards rebuilt", Unit::Bytes, repair_bytes.clone());
        let repair_degraded =
            g(&mut r, "repair_chunks_degraded", "Chunks missing shards at the last repair pass", None);
        let repair_unrecoverable = g(
            &mut r,
            "repair_chunks_unrecoverable",
            "Chunks with fewer than k live shards at the last repair pass",
            None,
        );
        let share_downloads = Family::<OutcomeLabels, Counter>::default();
        r.register("share_downloads", "Downloads through share links", share_downloads.clone());
        let subscribers = g(&mut r, "events_subscribers", "Event stream (WebSocket) clients", None);
        let published = Family::<TypeLabels, Counter>::default();
        r.register("events_published", "Events published", published.clone());
        let dropped = Family::<ReasonLabels, Counter>::default();
        r.register("events_clients_dropped", "Event stream clients dropped for being too slow", dropped.clone());
        // Known label values start at zero, so dashboards and alerts see the
        // series before the first event.
        for api in ["rest", "s3"] {
            let _ = rate_limited.get_or_create(&ApiLabels { api });
        }
        for class in ["address", "login", "read", "write", "admin", "auth", "uploads"] {
            let _ = limited.get_or_create(&ClassLabels { class });
        }
        for reason in ["connection_limit", "address_limit", "tls_handshake"] {
            let _ = refused.get_or_create(&ReasonLabels { reason });
        }
        for phase in ["tls_handshake", "header", "idle", "body"] {
            let _ = timeouts.get_or_create(&PhaseLabels { phase });
        }
        for outcome in ["served", "refused"] {
            let _ = share_downloads.get_or_create(&OutcomeLabels { outcome });
        }
        for reason in ["lagged", "stalled", "unresponsive"] {
            let _ = dropped.get_or_create(&ReasonLabels { reason });
        }
        let permission_checks = Family::<SourceLabels, Counter>::default();
        r.register(
            "permission_checks",
            "Permission checks of users, by where the level came from",
            permission_checks.clone(),
        );
        for source in ["cache", "database"] {
            let _ = permission_checks.get_or_create(&SourceLabels { source });
        }
        Metrics {
            inner: Arc::new(Inner {
                registry: r,
                requests,
                latency,
                bytes_in,
                bytes_out,
                rate_limited,
                limited,
                refused,
                timeouts,
                capacity,
                used,
                shards,
                manifests,
                state_records,
                pins,
                peers,
                routing,
                uploads,
                objects,
                object_bytes,
                access_keys,
                encode,
                decode,
                dht_lookup,
                repair_passes,
                repair_shards,
                repair_bytes,
                repair_degraded,
                repair_unrecoverable,
                repair_for_peers,
                repair_seen: std::sync::Mutex::new((0, 0, 0, 0)),
                share_downloads,
                permission_checks,
                permission_seen: std::sync::Mutex::new((0, 0)),
                subscribers,
                published,
                dropped,
            }),
        }
    }

    /// Records a finished request.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        api: &'static str,
        route: &str,
        method: &str,
        status: u16,
        started: Instant,
        bytes_in: u64,
        bytes_out: u64,
    ) {
        let i = &self.inner;
        i.requests.get_or_create(&RequestLabels { api, route: route.into(), method: method.into(), status }).inc();
        i.latency
            .get_or_create(&LatencyLabels { api, route: route.into(), method: method.into() })
            .observe(started.elapsed().as_secs_f64());
        let rl = RouteLabels { api, route: route.into() };
        i.bytes_in.get_or_create(&rl).inc_by(bytes_in);
        i.bytes_out.get_or_create(&rl).inc_by(bytes_out);
        if status == 429 || (status == 503 && api == "s3") {
            i.rate_limited.get_or_create(&ApiLabels { api }).inc();
        }
    }

    /// Records one of the node's timings.
    pub fn timing(&self, what: datamesh_node::observe::Timing, elapsed: std::time::Duration) {
        use datamesh_node::observe::Timing;
        let h = match what {
            Timing::ErasureEncode => &self.inner.encode,
            Timing::ErasureDecode => &self.inner.decode,
            Timing::DhtLookup => &self.inner.dht_lookup,
        };
        h.observe(elapsed.as_secs_f64());
    }

    /// Counts a request refused by the limit `class` (see [`ClassLabels`]).
    pub fn rate_limited(&self, class: &'static str) {
        self.inner.limited.get_or_create(&ClassLabels { class }).inc();
    }

    /// Counts a connection closed at accept or handshake for `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.inner.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Counts a connection or request body that timed out in `phase`.
    pub fn http_timeout(&self, phase: &'static str) {
        self.inner.timeouts.get_or_create(&PhaseLabels { phase }).inc();
    }

    /// Counts a share download, served or refused.
    pub fn share_download(&self, served: bool) {
        let outcome = if served { "served" } else { "refused" };
        self.inner.share_downloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a published event.
    pub fn event_published(&self, r#type: &'static str) {
        self.inner.published.get_or_create(&TypeLabels { r#type }).inc();
    }

    /// Sets the number of event stream clients.
    pub fn events_subscribers(&self, n: usize) {
        self.inner.subscribers.set(n as i64);
    }

    /// Counts an event stream client dropped for `reason`.
    pub fn events_client_dropped(&self, reason: &'static str) {
        self.inner.dropped.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// Brings the repair counters up to the node's totals.
    fn repair(&self, t: &datamesh_node::repair::RepairTotals) {
        let i = &self.inner;
        let mut seen = i.repair_seen.lock().unwrap_or_else(|p| p.into_inner());
        i.repair_passes.inc_by(t.passes.saturating_sub(seen.0));
        i.repair_shards.inc_by(t.shards_rebuilt.saturating_sub(seen.1));
        i.repair_bytes.inc_by(t.bytes_rebuilt.saturating_sub(seen.2));
        i.repair_for_peers.inc_by(t.rebuilt_for_peers.saturating_sub(seen.3));
        *seen = (
            seen.0.max(t.passes),
            seen.1.max(t.shards_rebuilt),
            seen.2.max(t.bytes_rebuilt),
            seen.3.max(t.rebuilt_for_peers),
        );
        i.repair_degraded.set(t.chunks_degraded_last as i64);
        i.repair_unrecoverable.set(t.chunks_unrecoverable_last as i64);
    }

    /// Reads the node's and the gateway's current numbers, then renders the
    /// OpenMetrics text.
    pub async fn render(&self, node: &datamesh_node::Node, gw: Option<&crate::Gateway>) -> String {
        let i = &self.inner;
        if let Ok(s) = node.status().await {
            i.capacity.set(s.store.capacity_bytes as i64);
            i.used.set(s.store.used_bytes as i64);
            i.shards.set(s.store.shards as i64);
            i.manifests.set(s.store.manifests as i64);
            i.state_records.set(s.store.state_records as i64);
            i.pins.set(s.store.pins as i64);
            i.uploads.set(s.uploads as i64);
            self.repair(&s.repair);
        }
        i.peers.clear();
        for state in ["ONLINE", "WARNING", "OFFLINE"] {
            i.peers.get_or_create(&PeerLabels { state: state.into() }).set(0);
        }
        for p in node.peers().await {
            i.peers.get_or_create(&PeerLabels { state: format!("{:?}", p.state).to_uppercase() }).inc();
        }
        i.routing.set(node.routing_table().await.iter().map(|(_, n)| *n as i64).sum());
        if let Some(gw) = gw {
            if let Ok((n, bytes)) = gw.index().run(|ix| ix.totals()).await {
                i.objects.set(n as i64);
                i.object_bytes.set(bytes as i64);
            }
            i.access_keys.set(gw.keys().len() as i64);
            let (cached, queried) = gw.services.permission_checks();
            let mut seen = i.permission_seen.lock().unwrap_or_else(|p| p.into_inner());
            i.permission_checks.get_or_create(&SourceLabels { source: "cache" }).inc_by(cached.saturating_sub(seen.0));
            i.permission_checks
                .get_or_create(&SourceLabels { source: "database" })
                .inc_by(queried.saturating_sub(seen.1));
            *seen = (seen.0.max(cached), seen.1.max(queried));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &i.registry) {
            tracing::error!(error = %e, "cannot render metrics");
        }
        out
    }
}

/// The S3 request kind used as the `route` label: the request's shape, not
/// its names (which would make unbounded label values).
pub fn s3_route(uri: &http::Uri) -> &'static str {
    let segments = uri.path().trim_matches('/').split('/').filter(|s| !s.is_empty()).count();
    let q = uri.query().unwrap_or("");
    let multipart = q.split('&').any(|kv| kv.starts_with("uploadId") || kv.starts_with("uploads"));
    match (segments, multipart) {
        (0, _) => "service",
        (1, false) => "bucket",
        (1, true) => "bucket_uploads",
        (_, false) => "object",
        (_, true) => "multipart",
    }
}

/// Turns OpenMetrics text into the classic Prometheus text format (0.0.4),
/// which every scraper and `promtool check metrics` read: counters are
/// described under their `_total` name, and `# UNIT` / `# EOF` go.
pub fn to_classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}
