//! The account routes of the REST API: sign-up, logins (password or key
//! signature), token refresh, logout, and the caller's own account
//! (`/v1/me*`). The administrator's routes are in [`crate::admin`].
//!
//! Public routes here (sign-up, logins, refresh) are limited per source
//! address ([`limit_address`]); every authenticated request is limited per
//! user and route class ([`limit_principal`]). Both answer 429 with
//! `Retry-After`. The node's administrator is not rate limited: the node
//! token drives the node's own tooling.
//!
//! Every services error maps to a status here, in [`account_error`],
//! [`login_error`], [`quota_error`] and [`crate::auth::auth_error`]: bad
//! input is 400 (never 5xx), a database failure 503 `accounts_unavailable`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datamesh_api::{
    Account, Challenge, ErrorBody, ErrorCode, LoginAnswer, PasswordChange, PasswordLogin, Refresh, SignUp,
    SignatureLogin, Tier, TokenPair, Usage,
};
use datamesh_services::keylogin::{LoginChallenge, SignedChallenge};
use datamesh_services::quota::QuotaError;
use datamesh_services::ratelimit::RouteClass;
use datamesh_services::sessions::LoginGrant;
use datamesh_services::users::{AccountError, LoginError, User};
use datamesh_services::{Principal, Services};
use serde::de::DeserializeOwned;

use crate::auth::{SESSION_COOKIE, accounts_unavailable, auth_error};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The largest body an account route accepts: names and passwords are
/// short, and a larger body is refused as bad input before it is parsed.
pub(crate) const MAX_ACCOUNT_BODY: usize = 64 * 1024;

/// How much of a body an account route reads before refusing it: more than
/// it accepts, so that a client sending an oversized name reads the 400
/// instead of a connection reset in the middle of its upload.
pub(crate) const ACCOUNT_BODY_READ: usize = 16 << 20;

/// The caller's source address, when the server recorded it (it does in
/// [`crate::Gateway::serve`]; a router served without connect info has
/// none, and is then limited per user only).
pub(crate) struct Source(pub(crate) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Source {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Source(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// Parses a JSON body read as bytes: an oversized or malformed body is 400
/// with what to fix, never 413 or 5xx.
pub(crate) fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>, what: &str) -> ApiResult<T> {
    let too_large =
        || ApiError::bad(format!("the {what} body is too large: at most {} KiB of JSON", MAX_ACCOUNT_BODY / 1024));
    let body = body.map_err(|_| too_large())?;
    if body.len() > MAX_ACCOUNT_BODY {
        return Err(too_large());
    }
    serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("the {what} body is not valid: {e}")))
}

/// Middleware on public account routes: limited per source address.
pub(crate) async fn limit_address(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let addr = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    if let Some(addr) = addr
        && let Err(l) = st.services.rate_limit_address(addr, RouteClass::Auth)
    {
        st.metrics.rate_limited("address");
        return ApiError::rate_limited(format!("too many requests from this address: {l}"), l.retry_after)
            .into_response();
    }
    next.run(req).await
}

/// Middleware on every authenticated route: limited per user and route
/// class by the user's tier (the administrator is not limited).
pub(crate) async fn limit_principal(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let Some(p) = req.extensions().get::<Principal>().cloned() else { return next.run(req).await };
    if !p.is_admin() {
        let class = if req.uri().path().starts_with("/v1/admin") {
            RouteClass::Admin
        } else if req.method().is_safe() {
            RouteClass::Read
        } else {
            RouteClass::Write
        };
        if let Err(l) = st.services.rate_limit(&p, class) {
            st.metrics.rate_limited(crate::metrics::class_name(class));
            let msg = format!("too many requests for your tier: {l}; wait, or ask for a larger tier");
            return ApiError::rate_limited(msg, l.retry_after).into_response();
        }
    }
    next.run(req).await
}

/// An [`AccountError`] as an answer.
pub(crate) fn account_error(e: AccountError) -> ApiError {
    match e {
        AccountError::InvalidName(_) | AccountError::WeakPassword(_) | AccountError::UnknownTier => {
            ApiError::bad(e.to_string())
        }
        AccountError::LastAdmin => ApiError::bad(e.to_string()),
        AccountError::NameTaken => ApiError::new(ErrorCode::NameTaken, e.to_string()),
        AccountError::NoSuchUser => {
            ApiError::new(ErrorCode::NotFound, "no such user: `datamesh admin user list` shows them")
        }
        AccountError::SignUpClosed | AccountError::NotPermitted | AccountError::WrongPassword => {
            ApiError::new(ErrorCode::Forbidden, e.to_string())
        }
        AccountError::Hashing(_) => ApiError::internal(e.to_string()),
        AccountError::Database(db) => accounts_unavailable(&db),
    }
}

/// A failed login as an answer, a lockout counted in `/metrics`.
fn login_refused(st: &AppState, e: LoginError) -> ApiError {
    if matches!(e, LoginError::TooManyAttempts { .. }) {
        st.metrics.rate_limited("login");
    }
    login_error(e)
}

/// A [`LoginError`] as an answer: 401, 429 with `Retry-After` when locked
/// out, 400 for a malformed name.
pub(crate) fn login_error(e: LoginError) -> ApiError {
    match e {
        LoginError::TooManyAttempts { retry_after } => ApiError::rate_limited(e.to_string(), retry_after),
        LoginError::MalformedName(_) => ApiError::bad(e.to_string()),
        LoginError::InvalidCredentials | LoginError::Disabled | LoginError::Challenge(_) => {
            ApiError::new(ErrorCode::Unauthorized, e.to_string())
        }
        LoginError::Hashing(_) => ApiError::internal(e.to_string()),
        LoginError::Database(db) => accounts_unavailable(&db),
    }
}

/// A [`QuotaError`] as an answer (`Exceeded` is 403 `quota_exceeded`).
pub(crate) fn quota_error(e: QuotaError) -> ApiError {
    match e {
        QuotaError::Exceeded { .. } => ApiError::new(ErrorCode::QuotaExceeded, e.to_string()),
        QuotaError::NoSuchUser => ApiError::new(ErrorCode::NotFound, "no such user"),
        QuotaError::UnknownTier | QuotaError::InvalidTier => {
            ApiError::bad(format!("{e} (`datamesh admin tier list` shows them)"))
        }
        QuotaError::NoSuchReservation => ApiError::new(ErrorCode::UploadNotFound, e.to_string()),
        QuotaError::NotPermitted => ApiError::new(ErrorCode::Forbidden, e.to_string()),
        QuotaError::Database(db) => accounts_unavailable(&db),
    }
}

/// A user as the API shows it.
pub(crate) fn account(u: &User) -> Account {
    Account {
        name: u.name.clone(),
        role: u.role.as_str().into(),
        tier: u.tier.clone(),
        disabled: u.disabled,
        has_password: u.has_password,
        created_at: u.created_at,
    }
}

/// A tier as the API shows it.
pub(crate) fn tier(t: datamesh_services::quota::Tier) -> Tier {
    Tier {
        name: t.name,
        max_stored_bytes: t.max_stored_bytes,
        max_transfer_bytes: t.max_transfer_bytes,
        max_calls_per_hour: t.max_calls_per_hour,
        max_file_bytes: t.max_file_bytes,
        max_files: t.max_files,
        sla: t.sla,
    }
}

/// The caller's own account.
async fn me_user(services: &Services, p: &Principal) -> ApiResult<User> {
    services
        .get_user(p.user())
        .await
        .map_err(|e| accounts_unavailable(&e))?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "this account no longer exists: log in again"))
}

#[utoipa::path(post, path = "/v1/accounts", tag = "accounts", security(()), request_body(content = SignUp, content_type = "application/json"), responses((status = 201, description = "The new account", body = Account), (status = 400, description = "Invalid name or password", body = ErrorBody), (status = 403, description = "Sign-up is closed on this node", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody), (status = 429, description = "Too many requests from this address", body = ErrorBody)))]
pub(crate) async fn sign_up(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let req: SignUp = json_body(body, "sign-up")?;
    let user = st.services.sign_up(&req.name, &req.password).await.map_err(account_error)?;
    Ok((StatusCode::CREATED, Json(account(&user))))
}

/// Turns a login grant into bearer tokens or a browser session (whose
/// cookie the answer sets: HttpOnly, SameSite=Strict).
async fn grant_answer(services: &Services, grant: LoginGrant, session: bool) -> ApiResult<Response> {
    let user = account(grant.user());
    if !session {
        let t = services.issue_tokens(grant).await.map_err(auth_error)?;
        let body = LoginAnswer {
            user,
            access_token: Some(t.access_token.into()),
            access_expires_at: Some(t.access_expires_at),
            refresh_token: Some(t.refresh_token.into()),
            refresh_expires_at: Some(t.refresh_expires_at),
            csrf_token: None,
            session_expires_at: None,
        };
        return Ok(Json(body).into_response());
    }
    let s = services.start_session(grant).await.map_err(auth_error)?;
    let max_age = s.expires_at.saturating_sub(datamesh_core::clock::unix_secs());
    let cookie =
        format!("{SESSION_COOKIE}={}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}", s.session_token.as_str());
    let body = LoginAnswer {
        user,
        access_token: None,
        access_expires_at: None,
        refresh_token: None,
        refresh_expires_at: None,
        csrf_token: Some(s.csrf_token.into()),
        session_expires_at: Some(s.expires_at),
    };
    let mut resp = Json(body).into_response();
    let value = HeaderValue::from_str(&cookie).map_err(|e| ApiError::internal(e.to_string()))?;
    resp.headers_mut().insert(header::SET_COOKIE, value);
    Ok(resp)
}

#[utoipa::path(post, path = "/v1/login", tag = "accounts", security(()), request_body(content = PasswordLogin, content_type = "application/json"), responses((status = 200, description = "Tokens, or with `session` a session cookie and its CSRF token", body = LoginAnswer), (status = 400, description = "Malformed request or user name", body = ErrorBody), (status = 401, description = "Wrong user name or password, or disabled", body = ErrorBody), (status = 429, description = "Too many failed logins: `Retry-After`", body = ErrorBody)))]
pub(crate) async fn login(
    State(st): State<Arc<AppState>>,
    Source(source): Source,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: PasswordLogin = json_body(body, "login")?;
    let grant =
        st.services.login_password(&req.name, &req.password, source).await.map_err(|e| login_refused(&st, e))?;
    grant_answer(&st.services, grant, req.session).await
}

#[utoipa::path(post, path = "/v1/login/challenge", tag = "accounts", security(()), responses((status = 200, description = "A challenge to sign with the user's Ed25519 key", body = Challenge), (status = 429, description = "Too many requests from this address", body = ErrorBody)))]
pub(crate) async fn login_challenge(State(st): State<Arc<AppState>>) -> ApiResult<Json<Challenge>> {
    let c = st.services.login_challenge().await.map_err(|e| accounts_unavailable(&e))?;
    Ok(Json(Challenge { nonce: hex::encode(c.nonce), audience: c.audience, expires_at: c.expires_at }))
}

fn hex_array<const N: usize>(s: &str, what: &str) -> ApiResult<[u8; N]> {
    hex::decode(s)
        .ok()
        .and_then(|v| <[u8; N]>::try_from(v).ok())
        .ok_or_else(|| ApiError::bad(format!("{what} must be {N} bytes in hex")))
}

#[utoipa::path(post, path = "/v1/login/signature", tag = "accounts", security(()), request_body(content = SignatureLogin, content_type = "application/json"), responses((status = 200, description = "Tokens, or with `session` a session cookie and its CSRF token", body = LoginAnswer), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Unknown key, bad signature, or a stale, replayed or foreign challenge", body = ErrorBody), (status = 429, description = "Too many requests from this address", body = ErrorBody)))]
pub(crate) async fn login_signature(
    State(st): State<Arc<AppState>>,
    Source(source): Source,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Response> {
    let req: SignatureLogin = json_body(body, "signature login")?;
    let signed = SignedChallenge {
        challenge: LoginChallenge {
            nonce: hex_array(&req.challenge.nonce, "challenge.nonce")?,
            audience: req.challenge.audience,
            expires_at: req.challenge.expires_at,
        },
        user: req.name,
        public_key: hex_array(&req.public_key, "public_key")?,
        signature: hex_array(&req.signature, "signature")?,
    };
    let grant = st.services.login_signature(&signed, source).await.map_err(|e| login_refused(&st, e))?;
    grant_answer(&st.services, grant, req.session).await
}

#[utoipa::path(post, path = "/v1/token/refresh", tag = "accounts", security(()), request_body(content = Refresh, content_type = "application/json"), responses((status = 200, description = "A new pair; the refresh token given is used up", body = TokenPair), (status = 400, description = "Malformed request", body = ErrorBody), (status = 401, description = "Unknown, expired or reused refresh token: log in again", body = ErrorBody), (status = 429, description = "Too many requests from this address", body = ErrorBody)))]
pub(crate) async fn refresh(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<TokenPair>> {
    let req: Refresh = json_body(body, "refresh")?;
    let t = st.services.refresh(req.refresh_token.expose()).await.map_err(auth_error)?;
    Ok(Json(TokenPair {
        access_token: t.access_token.into(),
        access_expires_at: t.access_expires_at,
        refresh_token: t.refresh_token.into(),
        refresh_expires_at: t.refresh_expires_at,
    }))
}

#[utoipa::path(post, path = "/v1/logout", tag = "accounts", responses((status = 204, description = "Every token of this login (or the session) is revoked; the session cookie is cleared"), (status = 400, description = "The credential is not a login (the node token or an API key: revoke keys with `datamesh key revoke`)", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody)))]
pub(crate) async fn logout(State(st): State<Arc<AppState>>, headers: HeaderMap) -> ApiResult<Response> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let token = bearer.or_else(|| crate::auth::cookie(&headers, SESSION_COOKIE)).unwrap_or("");
    st.services.logout(token).await.map_err(|e| match e {
        datamesh_services::sessions::AuthError::Malformed => ApiError::bad(
            "this credential is not a login: the node token cannot log out, and API keys are revoked with `datamesh key revoke`",
        ),
        other => auth_error(other),
    })?;
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    if let Ok(v) = HeaderValue::from_str(&clear) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[utoipa::path(get, path = "/v1/me", tag = "accounts", responses((status = 200, description = "The caller's account", body = Account), (status = 401, description = "Missing or wrong credential", body = ErrorBody)))]
pub(crate) async fn me(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<Account>> {
    Ok(Json(account(&me_user(&st.services, &p).await?)))
}

#[utoipa::path(get, path = "/v1/me/usage", tag = "accounts", responses((status = 200, description = "What the caller stores and downloads, with the tier's limits", body = Usage), (status = 401, description = "Missing or wrong credential", body = ErrorBody)))]
pub(crate) async fn my_usage(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<Usage>> {
    let u = st.services.usage(p.user()).await.map_err(quota_error)?;
    Ok(Json(Usage {
        tier: tier(u.tier),
        stored_bytes: u.stored_bytes,
        files: u.files,
        reserved_bytes: u.reserved_bytes,
        reserved_files: u.reserved_files,
        downloaded_bytes: u.downloaded_bytes,
        warnings: u.warnings.iter().map(|q| q.as_str().to_string()).collect(),
    }))
}

#[utoipa::path(put, path = "/v1/me/password", tag = "accounts", request_body(content = PasswordChange, content_type = "application/json"), responses((status = 204, description = "Changed; every session and token of the user is revoked (API keys stay)"), (status = 400, description = "Unacceptable password", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Wrong current password, or a scoped key", body = ErrorBody)))]
pub(crate) async fn change_password(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let req: PasswordChange = json_body(body, "password change")?;
    st.services.change_password(&p, p.user(), req.current.as_deref(), &req.new).await.map_err(account_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/me/login-keys`: a public key the user logs in with.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewLoginKey {
    /// A label (1 to 64 characters).
    name: String,
    /// The Ed25519 public key, hex (32 bytes).
    public_key: String,
}

#[utoipa::path(post, path = "/v1/me/login-keys", tag = "accounts", request_body(content = NewLoginKey, content_type = "application/json"), responses((status = 204, description = "Registered: the key may now answer login challenges"), (status = 400, description = "Invalid key or label", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "A scoped key may not add login keys", body = ErrorBody), (status = 409, description = "The key belongs to an account already", body = ErrorBody)))]
pub(crate) async fn add_login_key(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    use datamesh_services::keylogin::PublicKeyError as E;
    let req: NewLoginKey = json_body(body, "login key")?;
    let key = hex_array(&req.public_key, "public_key")?;
    st.services.add_public_key(&p, p.user(), &req.name, key).await.map_err(|e| match e {
        E::InvalidKey | E::InvalidName | E::NotFound => ApiError::bad(e.to_string()),
        E::Taken => ApiError::new(ErrorCode::NameTaken, e.to_string()),
        E::NotPermitted => ApiError::new(ErrorCode::Forbidden, e.to_string()),
        E::Database(db) => accounts_unavailable(&db),
    })?;
    Ok(StatusCode::NO_CONTENT)
}

/// Housekeeping for the accounts database: expired tokens and challenges
/// are purged, and reservations of uploads that never finished return
/// their quota.
pub(crate) struct Housekeeping {
    pub(crate) services: Services,
    pub(crate) every: Duration,
}

#[async_trait::async_trait]
impl datamesh_node::workers::Worker for Housekeeping {
    fn name(&self) -> &'static str {
        "accounts-housekeeping"
    }

    async fn run(&self, ctx: &datamesh_node::workers::WorkerCtx) {
        while ctx.idle(self.every).await {
            match self.services.purge_expired().await {
                Ok(n) if n > 0 => tracing::debug!(rows = n, "purged expired tokens and challenges"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not purge expired tokens"),
            }
            match self.services.expire_reservations().await {
                Ok(n) if n > 0 => tracing::info!(reservations = n, "returned the quota of abandoned uploads"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not expire quota reservations"),
            }
        }
    }
}
