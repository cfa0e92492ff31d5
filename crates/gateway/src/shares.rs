//! Share links: read capabilities for one file, usable without the token.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | POST | /v1/shares | `{cid, expires_in_secs?, max_downloads?, password?}` → 201 `{id, url, ...}` |
//! | GET | /v1/shares | every link, with its state |
//! | DELETE | /v1/shares/{id} | revoke |
//! | GET | /v1/s/{id} | **public**: the file's plaintext (Range supported) |
//!
//! A link's id is 192 random bits (base64url), so it cannot be guessed; the
//! id is the capability. A password, if set, is stored as an Argon2id hash
//! (PHC string) and checked with the `argon2` crate, whose comparison is
//! constant-time. It is sent in the `x-datamesh-share-password` header or,
//! for plain links, as `?password=`.
//!
//! **Guessing**: the password is checked before anything about the link's
//! state is said, so a wrong password gets 403 `wrong_password` whether the
//! link is live, expired, used up or revoked. Wrong passwords count in the
//! services' login limiter, per link and per source address (5 and 20 free
//! failures, then a doubling lockout): a locked link or address answers 429
//! `rate_limited` with `Retry-After` before any hashing, even to the right
//! password. Each check takes tens of milliseconds and ~19 MiB on a
//! blocking thread; at most half the cores' worth run at once and a check
//! waits at most [`PASSWORD_QUEUE_WAIT`] for its turn (then 429), so
//! guessers queue among themselves and never hold up a link that needs no
//! password.
//!
//! **Counting**: a link counts whole downloads. Every response that sends
//! content counts the bytes it sends (a 304, 416 or HEAD counts none), and
//! each file's worth of bytes is one download: two halves by Range are one
//! download, as is a transfer resumed after a cut (a cut-off transfer gives
//! its unsent bytes back). A request is let through while fewer downloads
//! than `max_downloads` were counted, in one SQL `UPDATE` under the index's
//! lock, so concurrent downloads can never pass the limit. A dead link
//! answers JSON errors: 404 `share_not_found`, 410 `share_revoked`,
//! `share_expired` or `share_exhausted`; a missing password 401
//! `password_required`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use datamesh_api::{ErrorBody, ErrorCode, NewShare, Share, ShareList, ShareQuery, ShareState};
use datamesh_core::clock::unix_secs;

use crate::accounts::Source;
use crate::auth::accounts_unavailable;
use crate::download::{Via, open, serve};
use crate::error::{ApiError, ApiResult, parse_cid};
use crate::index::{ShareRefusal, ShareRow};
use crate::ownership;
use crate::state::AppState;
use datamesh_services::Principal;
use datamesh_services::perms::{Action, ResourceRef};

/// Longest link lifetime: ten years.
pub const MAX_EXPIRES_IN: u64 = 10 * 365 * 24 * 3600;
/// Most downloads a link may allow.
pub const MAX_DOWNLOADS: u64 = 1_000_000_000;
/// Longest password.
pub const MAX_PASSWORD: usize = 1024;
/// The header a password may come in.
pub const PASSWORD_HEADER: &str = "x-datamesh-share-password";
/// Longest a password check waits for its turn before answering 429.
pub const PASSWORD_QUEUE_WAIT: Duration = Duration::from_secs(2);

fn state(r: Option<ShareRefusal>) -> ShareState {
    match r {
        None => ShareState::Active,
        Some(ShareRefusal::Expired) => ShareState::Expired,
        Some(ShareRefusal::Exhausted) => ShareState::Exhausted,
        Some(ShareRefusal::Revoked) => ShareState::Revoked,
        Some(ShareRefusal::Unknown) => ShareState::Unknown,
    }
}

fn refused(r: ShareRefusal) -> ApiError {
    match r {
        ShareRefusal::Unknown => ApiError::new(ErrorCode::ShareNotFound, "no such share link"),
        ShareRefusal::Revoked => ApiError::new(ErrorCode::ShareRevoked, "this share link was revoked by its owner"),
        ShareRefusal::Expired => ApiError::new(ErrorCode::ShareExpired, "this share link has expired"),
        ShareRefusal::Exhausted => {
            ApiError::new(ErrorCode::ShareExhausted, "this share link has been downloaded as many times as it allows")
        }
    }
}

fn base_url(gw: &crate::Gateway, headers: &HeaderMap) -> String {
    match &gw.config().public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .filter(|h| h.bytes().all(|b| b.is_ascii_graphic()))
                .unwrap_or("localhost");
            format!("http://{host}")
        }
    }
}

fn view(r: ShareRow, base: &str) -> Share {
    let path = format!("/v1/s/{}", r.id);
    Share {
        url: format!("{base}{path}"),
        path,
        state: state(r.refusal(unix_secs() as i64)),
        has_password: r.password_hash.is_some(),
        id: r.id,
        cid: r.cid,
        created_at: r.created,
        expires_at: r.expires_at,
        max_downloads: r.max_downloads,
        downloads: r.downloads,
    }
}

#[utoipa::path(
    post,
    path = "/v1/shares",
    tag = "shares",
    request_body(content = NewShare, content_type = "application/json"),
    responses(
        (status = 201, description = "The link", body = Share),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The gateway cannot decrypt this file", body = ErrorBody),
        (status = 404, description = "No such file", body = ErrorBody),
    )
)]
pub(crate) async fn create_share(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    headers: HeaderMap,
    body: Result<Json<NewShare>, JsonRejection>,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let Json(req) = body.map_err(|e| ApiError::bad(format!("share request: {}", e.body_text())))?;
    let cid = parse_cid(&req.cid)?;
    // Only the file's owner (or the administrator) shares it.
    ownership::require_file(&st, &p, Action::Admin, cid).await?;
    if let Some(e) = req.expires_in_secs
        && !(1..=MAX_EXPIRES_IN).contains(&e)
    {
        return Err(ApiError::bad(format!("expires_in_secs must be 1 to {MAX_EXPIRES_IN}")));
    }
    if let Some(m) = req.max_downloads
        && !(1..=MAX_DOWNLOADS).contains(&m)
    {
        return Err(ApiError::bad(format!("max_downloads must be 1 to {MAX_DOWNLOADS}")));
    }
    if let Some(p) = &req.password
        && (p.is_empty() || p.len() > MAX_PASSWORD)
    {
        return Err(ApiError::bad(format!("password must be 1 to {MAX_PASSWORD} bytes")));
    }
    // Only a file the gateway can serve can be shared.
    let (file, _) = open(gw, cid).await?;
    let password_hash = match req.password {
        None => None,
        Some(p) => {
            let permit =
                gw.password_checks().clone().acquire_owned().await.map_err(|e| ApiError::internal(e.to_string()))?;
            Some(
                tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())?;
                    argon2::Argon2::default().hash_password(p.as_bytes(), &salt).map(|h| h.to_string())
                })
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(|e| ApiError::internal(format!("cannot hash the password: {e}")))?,
            )
        }
    };
    let now = unix_secs() as i64;
    let row = ShareRow {
        id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>()),
        cid: file.cid.to_string(),
        created: now,
        expires_at: req.expires_in_secs.map(|e| now + e as i64),
        max_downloads: req.max_downloads,
        downloads: 0,
        partial: 0,
        password_hash,
        revoked: false,
    };
    let link = ResourceRef::share_link(&row.id).map_err(|e| ApiError::internal(e.to_string()))?;
    st.services.create_resource(&p, &link).await.map_err(ownership::perm_error)?;
    let r2 = row.clone();
    gw.index().run(move |ix| ix.create_share(&r2)).await.map_err(ApiError::index)?;
    let share = view(row, &base_url(gw, &headers));
    let location = share.path.clone();
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(share)).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/shares",
    tag = "shares",
    responses(
        (status = 200, description = "Every link", body = ShareList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn list_shares(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let all = gw.index().run(|ix| ix.shares(10_000)).await.map_err(ApiError::index)?;
    // The caller's own links (the administrator sees every link).
    let mut rows = Vec::with_capacity(all.len());
    for r in all {
        if p.is_admin() || owns_link(&st, &p, &r.id).await {
            rows.push(r);
        }
    }
    let base = base_url(gw, &headers);
    Ok(Json(ShareList { shares: rows.into_iter().map(|r| view(r, &base)).collect() }).into_response())
}

#[utoipa::path(
    delete,
    path = "/v1/shares/{id}",
    tag = "shares",
    params(("id" = String, Path, description = "The link's id")),
    responses(
        (status = 204, description = "Revoked: the link answers 410 from now on"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
    )
)]
pub(crate) async fn revoke_share(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    if !p.is_admin() && !owns_link(&st, &p, &id).await {
        return Err(ownership::denied());
    }
    if gw.index().run(move |ix| ix.revoke_share(&id)).await.map_err(ApiError::index)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(refused(ShareRefusal::Unknown))
    }
}

#[utoipa::path(
    get,
    path = "/v1/s/{id}",
    tag = "shares",
    security(()),
    params(
        ("id" = String, Path, description = "The link's id"),
        ShareQuery,
        ("x-datamesh-share-password" = Option<String>, Header, description = "The link's password"),
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or `bytes=-n`"),
    ),
    responses(
        (status = 200, description = "The file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 401, description = "The link needs a password", body = ErrorBody),
        (status = 403, description = "Wrong password", body = ErrorBody),
        (status = 404, description = "No such link", body = ErrorBody),
        (status = 410, description = "Revoked, expired or used up", body = ErrorBody),
        (status = 416, description = "Range not satisfiable", body = ErrorBody),
    )
)]
pub(crate) async fn download_share(
    State(st): State<Arc<AppState>>,
    Source(source): Source,
    method: Method,
    Path(id): Path<String>,
    query: Result<Query<ShareQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let r = download(&st, source, method == Method::HEAD, id, query, headers).await;
    if let Err(e) = &r
        && e.status() != StatusCode::NOT_FOUND
    {
        gw.metrics().share_download(false);
    }
    r
}

async fn download(
    st: &AppState,
    source: Option<IpAddr>,
    head: bool,
    id: String,
    query: Result<Query<ShareQuery>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let i = id.clone();
    let row = gw.index().run(move |ix| ix.share(&i)).await.map_err(ApiError::index)?;
    let row = row.ok_or_else(|| refused(ShareRefusal::Unknown))?;
    // The password first: its answer must not depend on the link's state.
    if let Some(hash) = row.password_hash.clone() {
        let given =
            headers.get(PASSWORD_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned).or(q.password).ok_or_else(
                || {
                    ApiError::new(
                        ErrorCode::PasswordRequired,
                        format!("this share link needs its password: send it in {PASSWORD_HEADER} or as ?password="),
                    )
                },
            )?;
        check_password(st, &row.id, source, hash, given).await?;
    }
    if let Some(r) = row.refusal(unix_secs() as i64) {
        return Err(refused(r));
    }
    let cid = parse_cid(&row.cid)?;
    let (file, meta) = open(gw, cid).await?;
    let metrics = gw.metrics().clone();
    // The link's owner pays for what its visitors download, as a signed-in
    // reader pays for their own: the monthly transfer is charged before a
    // byte is sent. Links made before accounts belong to the administrator.
    // The owner is looked up in `count`, which runs only once the answer is
    // known to send content (not for a 304 or a 416).
    let link = ResourceRef::share_link(&row.id).map_err(|_| refused(ShareRefusal::Unknown))?;
    let services = &st.services;
    let count = async move |bytes: u64, size: u64| {
        let owner = services.owner_of(&link).await.map_err(|e| accounts_unavailable(&e))?;
        let now = unix_secs() as i64;
        let i = id.clone();
        let completed = match gw
            .index()
            .run(move |ix| ix.count_share_download(&i, now, bytes, size))
            .await
            .map_err(ApiError::index)?
        {
            Ok((_, completed)) => completed,
            Err(r) => return Err(refused(r)),
        };
        if let Some(owner) = owner {
            let charged =
                crate::quota_alerts::charge_owner_download(gw.events(), services, owner, bytes.min(size)).await;
            if let Err(e) = charged {
                // Nothing is sent: the link gets its bytes back.
                let i = id.clone();
                gw.index().run(move |ix| ix.refund_share_bytes(&i, bytes, size)).await.ok();
                return Err(crate::accounts::quota_error(e));
            }
        }
        // The metric counts whole downloads, as the link does.
        for _ in 0..completed {
            metrics.share_download(true);
        }
        Ok(())
    };
    serve(gw, file, meta, &headers, head, Via { share: Some(row.id.clone()) }, count).await
}

/// Checks `given` against link `id`'s password `hash`, through the login
/// limiter (per link and per `source` address): 429 while locked, 403
/// `wrong_password` (counted) when wrong.
async fn check_password(st: &AppState, id: &str, source: Option<IpAddr>, hash: String, given: String) -> ApiResult<()> {
    let gw = st.gateway()?;
    let given = zeroize::Zeroizing::new(given);
    let locked = |wait| {
        ApiError::rate_limited("too many wrong passwords for this share link or from this address; retry later", wait)
    };
    if let Some(wait) = st.services.share_password_locked(id, source).await.map_err(|e| accounts_unavailable(&e))? {
        return Err(locked(wait));
    }
    let permit = tokio::time::timeout(PASSWORD_QUEUE_WAIT, gw.password_checks().clone().acquire_owned())
        .await
        .map_err(|_| {
            ApiError::rate_limited(
                "too many share passwords are being checked now; retry shortly",
                Duration::from_secs(1),
            )
        })?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    // Again once its turn came: guesses queued together must not all be
    // checked after the first few locked the link.
    if let Some(wait) = st.services.share_password_locked(id, source).await.map_err(|e| accounts_unavailable(&e))? {
        return Err(locked(wait));
    }
    let ok = tokio::task::spawn_blocking(move || {
        // The permit moves here: held until the hash is done, even if the
        // client has gone.
        let _permit = permit;
        PasswordHash::new(&hash).is_ok_and(|h| argon2::Argon2::default().verify_password(given.as_bytes(), &h).is_ok())
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))?;
    if ok {
        st.services.share_password_succeeded(id).await.map_err(|e| accounts_unavailable(&e))?;
        Ok(())
    } else {
        st.services.share_password_failed(id, source).await.map_err(|e| accounts_unavailable(&e))?;
        Err(ApiError::new(ErrorCode::WrongPassword, "wrong password for this share link"))
    }
}

/// Whether `p` owns share link `id` (false on any doubt).
async fn owns_link(st: &AppState, p: &Principal, id: &str) -> bool {
    let Ok(res) = ResourceRef::share_link(id) else { return false };
    matches!(st.services.check(Some(p), Action::Delete, &res).await, Ok(datamesh_services::perms::Decision::Allow))
}
