//! The node's HTTP API, v1 (REST, JSON).
//!
//! **Architecture invariant:** every route needs the node's API token
//! (`Authorization: Bearer <token>`) except those listed in
//! [`PUBLIC_ROUTES`]. Requests are parsed into typed handlers; errors map to
//! HTTP status codes in one place ([`ApiError`]) and are JSON
//! `{"code": ..., "message": ...}`.
//!
//! Routes (all under `/v1`):
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | /health | liveness (public) |
//! | GET | /status | node status and store usage |
//! | POST | /uploads | open an upload session `{k?, m?}` → `{upload_id}` |
//! | PUT | /uploads/{id}/chunks | one chunk's stored form → `{cid, shards}` |
//! | POST | /uploads/{id}/complete?name= | the manifest (DAG-CBOR) → `{cid}` |
//! | DELETE | /uploads/{id} | abort |
//! | GET | /files | pinned files |
//! | GET | /files/{cid} | stat, live shards per chunk |
//! | DELETE | /files/{cid} | delete (owner-signed: `x-datamesh-timestamp`, `x-datamesh-signature`) |
//! | GET | /files/{cid}/manifest | manifest bytes; `x-datamesh-manifest` names its CID |
//! | GET | /files/{cid}/chunks/{index} | a chunk's stored form, verified |
//! | POST/DELETE | /pins/{cid} | pin / unpin |
//! | POST | /gc | collect garbage |
//! | GET | /peers | peers with health state; k-bucket fill |
//! | POST | /keys | create an S3 access key pair |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use datamesh_core::{Cid, Erasure, limits};
use datamesh_node::{Node, NodeError};
use serde::Deserialize;
use serde_json::json;

/// Routes reachable without the API token.
pub const PUBLIC_ROUTES: &[&str] = &["/v1/health", "/metrics"];

pub(crate) struct AppState {
    pub(crate) node: Node,
    pub(crate) token: String,
    pub(crate) gateway: Option<crate::Gateway>,
    pub(crate) metrics: crate::metrics::Metrics,
}

/// Builds the API router for `node`, guarded by `token`. Without a
/// `gateway`, the routes that need one (`POST /v1/keys`) answer 503.
pub fn router(node: Node, token: String, gateway: Option<crate::Gateway>) -> Router {
    let metrics = gateway.as_ref().map(|g| g.metrics().clone()).unwrap_or_default();
    let state = Arc::new(AppState { node, token, gateway, metrics });
    let api = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/uploads", post(begin_upload))
        .route("/v1/uploads/{id}", axum::routing::delete(abort_upload))
        .route("/v1/uploads/{id}/chunks", put(put_chunk).layer(DefaultBodyLimit::max(limits::MAX_STORED_CHUNK_SIZE)))
        .route(
            "/v1/uploads/{id}/complete",
            post(complete_upload).layer(DefaultBodyLimit::max(limits::MAX_MANIFEST_SIZE)),
        )
        .route("/v1/files", get(list_files))
        .route("/v1/files/{cid}", get(stat_file).delete(remove_file))
        .route("/v1/files/{cid}/manifest", get(get_manifest))
        .route("/v1/files/{cid}/chunks/{index}", get(get_chunk))
        .route("/v1/pins/{cid}", post(pin).delete(unpin))
        .route("/v1/gc", post(gc))
        .route("/v1/peers", get(peers))
        .route("/v1/keys", post(create_key))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .merge(api)
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route; see /v1 routes in the docs")
        })
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

/// Counts and times every request by its route template.
async fn count_request(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let bytes_in = content_length(req.headers());
    let resp = next.run(req).await;
    let bytes_out =
        content_length(resp.headers()).max(axum::body::HttpBody::size_hint(resp.body()).exact().unwrap_or(0));
    st.metrics.request("rest", &route, &method, resp.status().as_u16(), started, bytes_in, bytes_out);
    resp
}

fn content_length(h: &HeaderMap) -> u64 {
    h.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// OpenMetrics when the scraper asks for it, else the classic text format.
async fn metrics_text(State(st): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let text = st.metrics.render(&st.node, st.gateway.as_ref()).await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::to_classic(&text))
    }
}

async fn require_token(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant-time comparison: the token must not leak through timing.
    let ok: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), st.token.as_bytes()).into();
    if !ok || given.is_empty() {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong API token: send `Authorization: Bearer <token>` with the token from the node's data dir (api.token)",
        )
        .into_response();
    }
    next.run(req).await
}

/// An error answer: status plus JSON `{code, message}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let (status, code) = match &e {
            NodeError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            NodeError::UploadNotFound(_) => (StatusCode::NOT_FOUND, "upload_not_found"),
            NodeError::TooManyUploads(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_uploads"),
            NodeError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            NodeError::Manifest(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_manifest"),
            NodeError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            NodeError::NoSpace(_) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage"),
            NodeError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "data_unavailable"),
            NodeError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            NodeError::Network(_) => (StatusCode::SERVICE_UNAVAILABLE, "network_unavailable"),
        };
        if status.is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Self::new(status, code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"code": self.code, "message": self.message}))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse_cid(s: &str) -> ApiResult<Cid> {
    s.parse::<Cid>().map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_cid", e.to_string()))
}

async fn status(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.node.status().await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BeginUpload {
    k: Option<u16>,
    m: Option<u16>,
}

async fn begin_upload(State(st): State<Arc<AppState>>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: BeginUpload = if body.is_empty() {
        BeginUpload::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("upload request is not valid JSON: {e}")))?
    };
    let d = st.node.config().erasure();
    let erasure = Erasure { k: req.k.unwrap_or(d.k), m: req.m.unwrap_or(d.m) };
    let id = st.node.begin_upload(Some(erasure))?;
    Ok((StatusCode::CREATED, Json(json!({"upload_id": id, "k": erasure.k, "m": erasure.m}))))
}

async fn put_chunk(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.node.put_chunk(&id, body).await?))
}

#[derive(Deserialize)]
struct CompleteQuery {
    name: Option<String>,
}

async fn complete_upload(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(q): Query<CompleteQuery>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    if q.name.as_ref().is_some_and(|n| n.len() > 1024) {
        return Err(ApiError::bad("name is longer than 1024 bytes"));
    }
    let cid = st.node.complete_upload(&id, body.to_vec(), q.name).await?;
    Ok((StatusCode::CREATED, Json(json!({"cid": cid}))))
}

async fn abort_upload(State(st): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<impl IntoResponse> {
    st.node.abort_upload(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_files(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let files: Vec<_> = st
        .node
        .list()
        .await?
        .into_iter()
        .map(|(cid, p, unixfs)| {
            // A public file is known by its UnixFS CID; `manifest` is always given.
            json!({"cid": unixfs.unwrap_or(cid), "manifest": cid, "name": p.name, "size": p.size, "created_at": p.created_at})
        })
        .collect();
    Ok(Json(json!({ "files": files })))
}

async fn stat_file(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.node.stat(parse_cid(&cid)?).await?))
}

async fn remove_file(
    State(st): State<Arc<AppState>>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<impl IntoResponse> {
    let cid = parse_cid(&cid)?;
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signed = match (h("x-datamesh-timestamp"), h("x-datamesh-signature")) {
        (Some(ts), Some(sig)) => Some((
            ts.parse::<u64>().map_err(|_| ApiError::bad("x-datamesh-timestamp is not a unix time"))?,
            hex::decode(sig).map_err(|_| ApiError::bad("x-datamesh-signature is not hex"))?,
        )),
        _ => None,
    };
    let report = st.node.remove(cid, signed).await?;
    Ok(Json(json!({"removed": cid, "gc": report})))
}

async fn get_manifest(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<impl IntoResponse> {
    let (cid, bytes) = st.node.manifest_bytes(parse_cid(&cid)?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/cbor".to_string()),
            (header::HeaderName::from_static("x-datamesh-manifest"), cid.to_string()),
        ],
        bytes,
    ))
}

async fn get_chunk(
    State(st): State<Arc<AppState>>,
    Path((cid, index)): Path<(String, usize)>,
) -> ApiResult<impl IntoResponse> {
    let data = st.node.chunk(parse_cid(&cid)?, index).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data))
}

async fn pin(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"pinned": st.node.pin(parse_cid(&cid)?).await?})))
}

async fn unpin(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<impl IntoResponse> {
    Ok(Json(json!({"unpinned": st.node.unpin(parse_cid(&cid)?).await?})))
}

async fn gc(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    Ok(Json(st.node.gc().await?))
}

async fn peers(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let peers: Vec<_> = st
        .node
        .peers()
        .await
        .into_iter()
        .map(|p| {
            json!({
                "peer": p.peer.to_string(),
                "state": format!("{:?}", p.state).to_uppercase(),
                "connected": p.connected,
                "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
                "since_last_seen_secs": p.since_last_seen.as_secs_f64(),
                "free_bytes": p.last_heartbeat.as_ref().map(|h| h.free_bytes),
                "shards": p.last_heartbeat.as_ref().map(|h| h.shards),
                "strikes": p.strikes,
            })
        })
        .collect();
    let buckets: Vec<_> =
        st.node.routing_table().await.into_iter().map(|(b, n)| json!({"bucket": b, "entries": n})).collect();
    Ok(Json(json!({"peers": peers, "routing_table": buckets})))
}

async fn create_key(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    let keys = st.gateway.as_ref().map(|g| g.keys().clone()).ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "gateway_unavailable", "this node runs without the S3 gateway")
    })?;
    let p = tokio::task::spawn_blocking(move || keys.create())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "key_store_error", e.to_string()))?;
    Ok((StatusCode::CREATED, Json(json!({"access_key_id": p.id, "secret_access_key": p.secret}))))
}
