//! The node's HTTP API, v1 (REST, JSON).
//!
//! **Architecture invariant:** every route needs a credential
//! ([`crate::auth`]: the node token, an access token, an API key or a
//! session cookie) except those listed in [`PUBLIC_ROUTES`]. Node-wide
//! routes are the administrator's; file, upload and share routes check the
//! caller's permission on what they touch ([`crate::ownership`]). Requests are parsed into typed handlers; every body,
//! in or out, is a type of [`datamesh_api`], from which the OpenAPI document
//! is generated. Errors map to HTTP status codes in one place
//! ([`crate::error`]) and are JSON `{"code": ..., "message": ...}`.
//!
//! Modules point one way: this router -> [`crate::files`], [`crate::shares`]
//! -> [`crate::download`] -> [`crate::error`], [`crate::state`].
//!
//! Routes (all under `/v1`):
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | /health | liveness (public) |
//! | GET | /ready | readiness: 200 when the store answers and a file can be placed, else 503 with the reason (public) |
//! | GET | /openapi.json | this table as an OpenAPI 3.1 document, generated from the handlers (public) |
//! | GET | /metrics (no /v1) | Prometheus metrics (public) |
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
//! | POST | /drain | start draining: move this node's shards away before it leaves (idempotent) → progress |
//! | GET | /drain | drain progress, with `safe_to_stop` |
//! | POST/GET | /keys | create (an S3 key by default, `{access_key_id, secret_access_key}`) / list the caller's keys ([`crate::key_routes`]) |
//! | DELETE | /keys/{id} | revoke a key |
//! | POST | /files?name=&k=&m= | one-request upload, encrypted server-side ([`crate::files`]) |
//! | GET | /files/{cid}/content | the plaintext, with Range ([`crate::files`]) |
//! | GET/PATCH | /files/{cid}/metadata | name, content type, tags ([`crate::files`]) |
//! | POST/GET | /shares | create / list share links ([`crate::shares`]) |
//! | DELETE | /shares/{id} | revoke a share link |
//! | GET | /s/{id} | a share link's file (public; [`crate::shares`]) |
//! | GET | /events?types=&token= | the WebSocket event stream ([`crate::events`]) |
//! | POST | /accounts | sign up (public; [`crate::accounts`]) |
//! | POST | /login, /login/challenge, /login/signature | password or key login → tokens or a session (public) |
//! | POST | /token/refresh | a new token pair (public) |
//! | POST | /logout | revoke this login |
//! | GET | /me, /me/usage | the caller's account; usage with the tier's limits |
//! | PUT | /me/password | change the password |
//! | POST | /me/login-keys | register an Ed25519 key for key login |
//! | GET/POST | /admin/users | users ([`crate::admin`]) |
//! | PATCH/DELETE | /admin/users/{name} | tier, disabled, role; delete |
//! | GET | /admin/tiers; PUT /admin/tiers/{name} | the tier table |
//! | GET | /admin/audit?after=&limit=, /admin/audit/verify | the audit log and its verification |

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use datamesh_api::{
    BeginUpload, Bucket, ChunkReceipt, CompleteQuery, Completed, DrainProgress, ErrorBody, ErrorCode, EventsQuery,
    FileEntry, FileList, FileStat, GcReport, Health, NodeStatus, NotReady, Peers, Pinned, Ready, Removed, Unpinned,
    UploadSession,
};
use datamesh_core::{Cid, Erasure, limits};
use datamesh_node::NodeError;
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, parse_cid};
use crate::events::Event;
use crate::state::AppState;
use crate::{accounts, admin, bodies, files, ownership, shares};
use datamesh_services::Principal;
use datamesh_services::perms::Action;

/// Routes reachable without the API token.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/v1/health",
    "/v1/ready",
    "/metrics",
    "/v1/openapi.json",
    "/v1/s/{id}",
    "/v1/accounts",
    "/v1/login",
    "/v1/login/challenge",
    "/v1/login/signature",
    "/v1/token/refresh",
];

pub use crate::auth::QUERY_TOKEN_ROUTE;

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "DataMesh node API", version = "1", description = "The node's HTTP API v1. Every route needs `Authorization: Bearer <token>` (the data dir's api.token) except /v1/health, /v1/ready, /metrics, share links (/v1/s/{id}) and this document. /v1/events also takes `?token=`. The event stream's messages are `EventMessage` (components)."),
    components(schemas(ErrorBody, crate::events::EventMessage, crate::events::Event, crate::events::MetricsSummary)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = api.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Routes and the OpenAPI document, built from the same annotated handlers
/// so that neither can list a route the other lacks.
fn routes() -> Routes {
    let limit = |r: utoipa_axum::router::UtoipaMethodRouter<Arc<AppState>>, max: usize| {
        let (schemas, paths, method) = r;
        (schemas, paths, method.layer(DefaultBodyLimit::max(max)))
    };
    // Node-wide routes: the administrator only.
    let private = OpenApiRouter::new()
        .routes(routes!(status))
        .routes(routes!(pin, unpin))
        .routes(routes!(gc))
        .routes(routes!(peers))
        .routes(routes!(start_drain, drain_progress))
        .routes(routes!(events_stream))
        .routes(limit(routes!(admin::list_users, admin::create_user), accounts::ACCOUNT_BODY_READ))
        .routes(limit(routes!(admin::patch_user, admin::delete_user), accounts::ACCOUNT_BODY_READ))
        .routes(routes!(admin::list_tiers))
        .routes(limit(routes!(admin::put_tier), accounts::ACCOUNT_BODY_READ))
        .routes(routes!(admin::audit))
        .routes(routes!(admin::audit_verify));
    // Routes that answer for the caller's own resources: authenticated, and
    // each checks what it touches.
    let account_limit =
        |r: utoipa_axum::router::UtoipaMethodRouter<Arc<AppState>>| limit(r, accounts::ACCOUNT_BODY_READ);
    let user = OpenApiRouter::new()
        .routes(routes!(begin_upload))
        .routes(routes!(abort_upload))
        .routes(limit(routes!(put_chunk), limits::MAX_STORED_CHUNK_SIZE))
        .routes(limit(routes!(complete_upload), limits::MAX_MANIFEST_SIZE))
        .routes(routes!(list_files))
        .routes(routes!(stat_file, remove_file))
        .routes(routes!(get_manifest))
        .routes(routes!(get_chunk))
        .routes(limit(routes!(files::upload_file), usize::MAX))
        .routes(routes!(files::file_content))
        .routes(limit(routes!(files::get_metadata, files::patch_metadata), files::MAX_METADATA_BODY))
        .routes(limit(routes!(shares::create_share, shares::list_shares), 64 * 1024))
        .routes(routes!(shares::revoke_share))
        .routes(account_limit(routes!(crate::sharing::share_file, crate::sharing::unshare_file)))
        .routes(routes!(crate::sharing::my_file_key))
        .routes(account_limit(routes!(crate::sharing::publish_encryption_key)))
        .routes(routes!(crate::sharing::user_encryption_keys))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::my_usage))
        .routes(account_limit(routes!(accounts::change_password)))
        .routes(account_limit(routes!(accounts::add_login_key)))
        .routes(account_limit(routes!(crate::key_routes::create_key, crate::key_routes::list_keys)))
        .routes(routes!(crate::key_routes::revoke_key));
    let public_accounts = OpenApiRouter::new()
        .routes(account_limit(routes!(accounts::sign_up)))
        .routes(account_limit(routes!(accounts::login)))
        .routes(routes!(accounts::login_challenge))
        .routes(account_limit(routes!(accounts::login_signature)))
        .routes(account_limit(routes!(accounts::refresh)));
    let public = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
        .routes(routes!(openapi_json))
        .routes(routes!(shares::download_share));
    Routes { public, public_accounts, user, admin: private }
}

/// The route groups, by what guards them.
struct Routes {
    /// No credential.
    public: OpenApiRouter<Arc<AppState>>,
    /// No credential, limited per source address.
    public_accounts: OpenApiRouter<Arc<AppState>>,
    /// Authenticated; each handler checks the resources it touches.
    user: OpenApiRouter<Arc<AppState>>,
    /// Authenticated, the administrator only.
    admin: OpenApiRouter<Arc<AppState>>,
}

/// The OpenAPI document of the API v1.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let r = routes();
    let (_, doc) = OpenApiRouter::<Arc<AppState>>::with_openapi(ApiDoc::openapi())
        .merge(r.public)
        .merge(r.public_accounts)
        .merge(r.user)
        .merge(r.admin)
        .split_for_parts();
    doc
}

/// Builds the API router over `gateway`. Private routes authenticate
/// ([`crate::auth`]); `token` is the node token, which acts as the
/// bootstrap administrator.
pub fn router(gateway: crate::Gateway, token: String) -> Router {
    let metrics = gateway.metrics().clone();
    let services = gateway.services().clone();
    let node = gateway.node().clone();
    let state = Arc::new(AppState {
        node,
        token: zeroize::Zeroizing::new(token),
        services,
        gateway: Some(gateway),
        metrics,
        uploads: Default::default(),
        openapi: std::sync::OnceLock::new(),
    });
    let r = routes();
    // Layers run outside-in from the last added: authenticate, rate-limit
    // by the user's tier, then (for routes that do not check their
    // resources themselves) require the administrator.
    let admin = r
        .admin
        .route_layer(middleware::from_fn(crate::auth::admin_only))
        .route_layer(middleware::from_fn_with_state(state.clone(), accounts::limit_principal))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::authenticate));
    let user = r
        .user
        .route_layer(middleware::from_fn_with_state(state.clone(), accounts::limit_principal))
        .route_layer(middleware::from_fn_with_state(state.clone(), crate::auth::authenticate));
    let public_accounts =
        r.public_accounts.route_layer(middleware::from_fn_with_state(state.clone(), accounts::limit_address));
    let (router, _) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(r.public)
        .merge(public_accounts)
        .merge(user)
        .merge(admin)
        .split_for_parts();
    router
        .fallback(|| async {
            ApiError::new(ErrorCode::NotFound, "no such route; the routes are listed at /v1/openapi.json")
        })
        .layer(middleware::from_fn_with_state(state.clone(), count_request))
        .with_state(state)
}

#[utoipa::path(get, path = "/v1/health", tag = "node", security(()), responses((status = 200, description = "`{status: \"ok\"}`", body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok".into() })
}

/// Readiness, as [`crate::readiness`] decides it.
#[utoipa::path(get, path = "/v1/ready", tag = "node", security(()), responses((status = 200, description = "`{status: \"ready\", mode}`", body = Ready), (status = 503, description = "`{status: \"not_ready\", code, message}`: why a file cannot be taken now", body = NotReady)))]
async fn ready(State(st): State<Arc<AppState>>) -> Response {
    match crate::readiness(&st.node).await {
        Ok(mode) => Json(Ready { status: "ready".into(), mode }).into_response(),
        Err(why) => {
            let body = NotReady { status: "not_ready".into(), code: ErrorCode::NotReady, message: why };
            (crate::error::status(ErrorCode::NotReady), Json(body)).into_response()
        }
    }
}

/// The event stream (WebSocket). See [`crate::events`].
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    params(EventsQuery),
    responses(
        (status = 101, description = "Switching to WebSocket; then one text message per event", body = crate::events::EventMessage),
        (status = 400, description = "Unknown event type", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 426, description = "Not a WebSocket handshake", body = ErrorBody),
    )
)]
async fn events_stream(
    State(st): State<Arc<AppState>>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<axum::extract::ws::WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let filter = crate::events::Filter::parse(q.types.as_deref()).map_err(ApiError::bad)?;
    let gw = st.gateway()?.clone();
    let ws = ws.map_err(|e| {
        ApiError::new(
            ErrorCode::WebsocketRequired,
            format!("/v1/events is a WebSocket: connect with a WebSocket client ({})", e.body_text()),
        )
    })?;
    let bus = gw.events().clone();
    // Subscribed before the handshake answer: nothing published after the
    // client sees 101 is missed.
    let rx = bus.subscribe();
    let node = gw.node().clone();
    Ok(ws.max_message_size(64 * 1024).on_upgrade(move |socket| bus.serve_client(socket, rx, filter, node)))
}

#[utoipa::path(get, path = "/v1/openapi.json", tag = "node", security(()), responses((status = 200, description = "This document", body = Object)))]
async fn openapi_json(State(st): State<Arc<AppState>>) -> impl IntoResponse {
    let doc =
        st.openapi.get_or_init(|| openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")));
    ([(header::CONTENT_TYPE, "application/json")], doc.clone())
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
#[utoipa::path(get, path = "/metrics", tag = "node", security(()), responses((status = 200, description = "Prometheus text format (OpenMetrics on request)", body = String, content_type = "text/plain")))]
async fn metrics_text(State(st): State<Arc<AppState>>, headers: HeaderMap) -> impl IntoResponse {
    let text = st.metrics.render(&st.node, st.gateway.as_ref()).await;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("application/openmetrics-text") {
        ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
    } else {
        ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::to_classic(&text))
    }
}

#[utoipa::path(get, path = "/v1/status", tag = "node", responses((status = 200, description = "Node status and store usage", body = NodeStatus), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn status(State(st): State<Arc<AppState>>) -> ApiResult<Json<NodeStatus>> {
    Ok(Json(bodies::status(st.node.status().await?)))
}

#[utoipa::path(post, path = "/v1/uploads", tag = "uploads", request_body(content = BeginUpload, description = "`{k?, m?}` erasure code", content_type = "application/json"), responses((status = 201, description = "Session opened: `{upload_id, k, m}`", body = UploadSession), (status = 429, description = "Too many uploads", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn begin_upload(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let req: BeginUpload = if body.is_empty() {
        BeginUpload::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("upload request is not valid JSON: {e}")))?
    };
    let d = st.node.config().erasure();
    let erasure = Erasure { k: req.k.unwrap_or(d.k), m: req.m.unwrap_or(d.m) };
    // The file counts against the caller's quota from the start; its bytes
    // are added chunk by chunk.
    let reservation = ownership::reserve(&st, &p, 0).await?;
    let id = match st.node.begin_upload_for(Some(erasure), ownership::upload_owner(&p).as_deref()) {
        Ok(id) => id,
        Err(e) => {
            if matches!(e, NodeError::TooManyUploads(_) | NodeError::TooManyUploadsForOwner(_)) {
                st.metrics.rate_limited("uploads");
            }
            ownership::release(&st, reservation).await;
            return Err(e.into());
        }
    };
    st.uploads.insert(id.clone(), p.user(), reservation);
    Ok((
        StatusCode::CREATED,
        Json(UploadSession {
            upload_id: id,
            k: erasure.k,
            m: erasure.m,
            writer: Some(hex::encode(st.node.writer_key())),
        }),
    ))
}

#[utoipa::path(put, path = "/v1/uploads/{id}/chunks", tag = "uploads", params(("id" = String, Path, description = "Upload session id")), request_body(content = Vec<u8>, description = "One chunk's stored form", content_type = "application/octet-stream"), responses((status = 200, description = "Chunk receipt `{cid, shards}`", body = ChunkReceipt), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn put_chunk(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<ChunkReceipt>> {
    let owner = ownership::session(&st, &id, &p, false)?;
    let over = match &owner {
        None => None,
        Some(o) => {
            let mut held = o.reservation.lock().await;
            match held.as_mut() {
                Some(r) => st.services.extend(r, body.len() as u64).await.err(),
                None => {
                    return Err(ApiError::new(
                        ErrorCode::UploadNotFound,
                        "this upload is completed or aborted already",
                    ));
                }
            }
        }
    };
    if let Some(e) = over {
        // Over quota: the whole upload goes, and nothing of it counts.
        if let Some(o) = st.uploads.remove(&id, &p) {
            let _ = st.node.abort_upload(&id);
            if let Some(r) = o.reservation.lock().await.take() {
                ownership::release(&st, r).await;
            }
        }
        return Err(accounts::quota_error(e));
    }
    Ok(Json(bodies::receipt(st.node.put_chunk(&id, body).await?)))
}

#[utoipa::path(post, path = "/v1/uploads/{id}/complete", tag = "uploads", params(("id" = String, Path, description = "Upload session id"), CompleteQuery), request_body(content = Vec<u8>, description = "The manifest (DAG-CBOR bytes)", content_type = "application/octet-stream"), responses((status = 201, description = "`{cid}`", body = Completed), (status = 404, description = "Not found", body = ErrorBody), (status = 422, description = "Invalid manifest", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn complete_upload(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<CompleteQuery>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    if q.name.as_ref().is_some_and(|n| n.len() > 1024) {
        return Err(ApiError::bad("name is longer than 1024 bytes"));
    }
    let owner = ownership::session(&st, &id, &p, false)?;
    let cid = st.node.complete_upload(&id, body.to_vec(), q.name.clone()).await?;
    if let Some(o) = st.uploads.remove(&id, &p).or(owner)
        && let Some(r) = o.reservation.lock().await.take()
    {
        st.services.commit(r).await.map_err(accounts::quota_error)?;
    }
    ownership::record_owner(&st, &p, cid).await?;
    if let Some(gw) = &st.gateway {
        let size = gw.node().manifest(cid).await.map(|(_, m)| m.size).unwrap_or(0);
        gw.events().publish(Event::FileAdded { cid: cid.to_string(), size, name: q.name, source: "api".into() });
    }
    Ok((StatusCode::CREATED, Json(Completed { cid })))
}

#[utoipa::path(delete, path = "/v1/uploads/{id}", tag = "uploads", params(("id" = String, Path, description = "Upload session id")), responses((status = 204, description = "Aborted"), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn abort_upload(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    if let Some(o) = ownership::session(&st, &id, &p, true)?
        && let Some(r) = o.reservation.lock().await.take()
    {
        ownership::release(&st, r).await;
    }
    st.node.abort_upload(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/files", tag = "files", responses((status = 200, description = "`{files: [...]}`", body = FileList), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn list_files(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<FileList>> {
    let mut readable = Vec::new();
    for f in st.node.list().await? {
        if ownership::may_read(&st, &p, f.0).await {
            readable.push(f);
        }
    }
    let files: Vec<_> = readable
        .into_iter()
        .map(|(cid, p, unixfs)| {
            // A public file is known by its UnixFS CID; `manifest` is always given.
            FileEntry {
                cid: unixfs.unwrap_or(cid),
                manifest: cid,
                name: p.name,
                size: p.size,
                created_at: p.created_at,
            }
        })
        .collect();
    Ok(Json(FileList { files }))
}

#[utoipa::path(get, path = "/v1/files/{cid}", tag = "files", params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")), responses((status = 200, description = "File stat", body = FileStat), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn stat_file(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
) -> ApiResult<Json<FileStat>> {
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Read, cid).await?;
    Ok(Json(bodies::stat(st.node.stat(cid).await?)))
}

#[utoipa::path(delete, path = "/v1/files/{cid}", tag = "files", params(("cid" = String, Path, description = "File CID"), ("x-datamesh-timestamp" = Option<String>, Header, description = "Unix time of the owner's signature"), ("x-datamesh-signature" = Option<String>, Header, description = "Owner's Ed25519 signature, hex")), responses((status = 200, description = "Removed", body = Removed), (status = 403, description = "Signature missing or wrong", body = ErrorBody), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn remove_file(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Json<Removed>> {
    let cid = parse_cid(&cid)?;
    let owned = ownership::require_file(&st, &p, Action::Delete, cid).await?;
    let size = st.node.manifest(cid).await.map(|(_, m)| m.size).ok();
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let signed = match (h("x-datamesh-timestamp"), h("x-datamesh-signature")) {
        (Some(ts), Some(sig)) => Some((
            ts.parse::<u64>().map_err(|_| ApiError::bad("x-datamesh-timestamp is not a unix time"))?,
            hex::decode(sig).map_err(|_| ApiError::bad("x-datamesh-signature is not hex"))?,
        )),
        _ => None,
    };
    let signed = match signed {
        Some(s) => Some(s),
        None => sign_for_gateway(&st, cid).await,
    };
    let manifest = st.node.resolve(cid).await.ok();
    let report = st.node.remove(cid, signed).await?;
    ownership::forget_file(&st, &p, owned, size).await;
    if let Some(gw) = &st.gateway {
        if let Some(m) = manifest {
            // Its metadata and share links go with it.
            let key = m.to_string();
            if let Err(e) = gw.index().run(move |ix| ix.delete_file(&key)).await {
                tracing::warn!(file = %m, error = %e, "could not forget a deleted file's metadata");
            }
        }
        gw.events().publish(Event::FileRemoved { cid: cid.to_string(), reason: "deleted".into() });
    }
    Ok(Json(Removed { removed: cid, gc: bodies::gc(report) }))
}

/// The owner's delete signature, made by the gateway for a file uploaded
/// through `POST /v1/files` (its owner is the REST key, which the gateway
/// holds). None for any other file: its owner signs, as the CLI does.
async fn sign_for_gateway(st: &AppState, cid: Cid) -> Option<(u64, Vec<u8>)> {
    use ed25519_dalek::Signer;
    let gw = st.gateway.as_ref()?;
    let (mcid, m) = st.node.manifest(cid).await.ok()?;
    let rest = gw.keys().rest();
    if m.owner.as_deref() != Some(rest.user.public().ed25519.as_slice()) {
        return None;
    }
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    let sig = rest.user.signing_key().sign(&datamesh_node::delete_message(&mcid, ts));
    Some((ts, sig.to_bytes().to_vec()))
}

#[utoipa::path(get, path = "/v1/files/{cid}/manifest", tag = "files", params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")), responses((status = 200, description = "Manifest bytes", body = Vec<u8>, content_type = "application/cbor"), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn get_manifest(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
) -> ApiResult<impl IntoResponse> {
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Read, cid).await?;
    let (cid, bytes) = st.node.manifest_bytes(cid).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/cbor".to_string()),
            (header::HeaderName::from_static("x-datamesh-manifest"), cid.to_string()),
        ],
        bytes,
    ))
}

#[utoipa::path(get, path = "/v1/files/{cid}/chunks/{index}", tag = "files", params(("cid" = String, Path, description = "File CID"), ("index" = u32, Path, description = "Chunk index")), responses((status = 200, description = "The chunk's stored form, verified", body = Vec<u8>, content_type = "application/octet-stream"), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn get_chunk(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path((cid, index)): Path<(String, usize)>,
) -> ApiResult<impl IntoResponse> {
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Read, cid).await?;
    let data = st.node.chunk(cid, index).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], data))
}

#[utoipa::path(post, path = "/v1/pins/{cid}", tag = "files", params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")), responses((status = 200, description = "`{pinned}`", body = Pinned), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn pin(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<Json<Pinned>> {
    Ok(Json(Pinned { pinned: st.node.pin(parse_cid(&cid)?).await? }))
}

#[utoipa::path(delete, path = "/v1/pins/{cid}", tag = "files", params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")), responses((status = 200, description = "`{unpinned}`", body = Unpinned), (status = 404, description = "Not found", body = ErrorBody), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn unpin(State(st): State<Arc<AppState>>, Path(cid): Path<String>) -> ApiResult<Json<Unpinned>> {
    let unpinned = st.node.unpin(parse_cid(&cid)?).await?;
    if let Some(gw) = &st.gateway {
        gw.events().publish(Event::FileRemoved { cid: unpinned.to_string(), reason: "unpinned".into() });
    }
    Ok(Json(Unpinned { unpinned }))
}

#[utoipa::path(post, path = "/v1/gc", tag = "node", responses((status = 200, description = "GC report", body = GcReport), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn gc(State(st): State<Arc<AppState>>) -> ApiResult<Json<GcReport>> {
    Ok(Json(bodies::gc(st.node.gc().await?)))
}

#[utoipa::path(get, path = "/v1/peers", tag = "network", responses((status = 200, description = "Peers with health state; k-bucket fill", body = Peers), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn peers(State(st): State<Arc<AppState>>) -> Json<Peers> {
    let peers = st.node.peers().await.into_iter().map(|p| {
        let reputation = st.node.reputation(&p.peer);
        bodies::peer(p, reputation)
    });
    let routing_table =
        st.node.routing_table().await.into_iter().map(|(bucket, entries)| Bucket { bucket, entries }).collect();
    Json(Peers { peers: peers.collect(), routing_table })
}

/// Starts draining this node: peers stop placing shards on it and it moves
/// its shards, manifests and location records to other nodes. Idempotent.
#[utoipa::path(post, path = "/v1/drain", tag = "network", responses((status = 202, description = "Draining; the progress so far", body = DrainProgress), (status = 400, description = "The node runs without the network: nowhere to drain to", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn start_drain(State(st): State<Arc<AppState>>) -> ApiResult<impl IntoResponse> {
    Ok((StatusCode::ACCEPTED, Json(bodies::drain(st.node.start_drain().await?))))
}

/// How the drain is going; `safe_to_stop` says when the node may be stopped.
#[utoipa::path(get, path = "/v1/drain", tag = "network", responses((status = 200, description = "Drain progress (all zero when not draining)", body = DrainProgress), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong token", body = ErrorBody)))]
async fn drain_progress(State(st): State<Arc<AppState>>) -> Json<DrainProgress> {
    Json(bodies::drain(st.node.drain_progress()))
}

#[cfg(test)]
mod tests {
    /// Every route is registered through the annotated `routes!` lists, so
    /// the OpenAPI document and the router cannot differ: a plain
    /// `Router::route` call here would add a path the document lacks.
    #[test]
    fn no_route_bypasses_the_openapi_document() {
        let src = include_str!("rest.rs");
        let needle = [".route", "(\""].concat();
        assert!(!src.contains(&needle), "rest.rs registers a route outside OpenApiRouter::routes");
    }
}
