//! Who is asking: every private REST request is authenticated here, once,
//! into a [`Principal`] that handlers take as an extension.
//!
//! Credentials, in the order they are looked for:
//! 1. `Authorization: Bearer <credential>`: the node token (acting as the
//!    bootstrap administrator, [`ADMIN_NAME`]), an access token from a
//!    login (`dmat_...`) or an API key (`dmak_...`);
//! 2. on `/v1/events` only, `?token=` (browsers cannot set headers on a
//!    WebSocket);
//! 3. the browser session cookie [`SESSION_COOKIE`], with the session's
//!    CSRF token in [`CSRF_HEADER`] for unsafe methods.
//!
//! **Architecture invariant:** a handler never sees a request that did not
//! authenticate, and authentication answers only *who*; what that principal
//! may do is decided per resource by [`datamesh_services::Services::check`]
//! (or [`require_admin`] for node-wide routes). Refusals say nothing about
//! whether a resource exists.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use datamesh_api::ErrorCode;
use datamesh_services::sessions::{AuthError, Csrf};
use datamesh_services::{Principal, Services};

use crate::error::ApiError;
use crate::state::AppState;

/// The administrator the node token acts as.
pub const ADMIN_NAME: &str = "admin";

/// The browser session cookie (HttpOnly, SameSite=Strict).
pub const SESSION_COOKIE: &str = "datamesh_session";

/// The header a browser page sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The one route that also takes the credential as `?token=`.
pub const QUERY_TOKEN_ROUTE: &str = "/v1/events";

/// What a refused credential answers: 401 with a message saying what to
/// do, or 403 for a CSRF mismatch, or 503 when the database failed.
pub(crate) fn auth_error(e: AuthError) -> ApiError {
    match e {
        AuthError::CsrfMismatch => ApiError::new(ErrorCode::Forbidden, e.to_string()),
        AuthError::Database(db) => accounts_unavailable(&db),
        other => ApiError::new(ErrorCode::Unauthorized, other.to_string()),
    }
}

/// The accounts database failed: 503, logged once here (the message to the
/// client does not carry the database's words).
pub(crate) fn accounts_unavailable(e: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "the accounts database failed");
    ApiError::new(ErrorCode::AccountsUnavailable, "the accounts database does not answer now; retry shortly")
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "missing or wrong credential: send `Authorization: Bearer <token>` with an access token from `datamesh account login`, an API key, or the node's api.token",
    )
}

/// The bearer credential of a request: the `Authorization` header, or on
/// [`QUERY_TOKEN_ROUTE`] the `token` query parameter.
fn bearer(req: &Request) -> Option<String> {
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string());
    header.or_else(|| {
        (req.uri().path() == QUERY_TOKEN_ROUTE)
            .then(|| req.uri().query())
            .flatten()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
            .map(str::to_string)
    })
}

/// The value of cookie `name`, if the request carries it.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find_map(|(k, v)| (k == name).then_some(v))
}

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The credential a request presents, taken out of it before any await
/// (a request's body is not `Sync`, so the request cannot be held across
/// the database lookup).
pub(crate) enum Credential {
    /// A bearer credential (header, or `?token=` on the events route).
    Bearer(String),
    /// A session cookie, with the CSRF token for unsafe methods.
    Session { token: String, csrf: Option<String> },
    /// Nothing.
    None,
}

impl Credential {
    /// The credential of `req`.
    pub(crate) fn of(req: &Request) -> Credential {
        if let Some(b) = bearer(req) {
            return Credential::Bearer(b);
        }
        if let Some(session) = cookie(req.headers(), SESSION_COOKIE) {
            let csrf = (!is_safe(req.method()))
                .then(|| req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()).unwrap_or("").to_string());
            return Credential::Session { token: session.to_string(), csrf };
        }
        Credential::None
    }
}

/// Authenticates a credential into a principal.
pub(crate) async fn principal_of(
    services: &Services,
    node_token: &str,
    cred: Credential,
) -> Result<Principal, ApiError> {
    match cred {
        Credential::Bearer(given) => {
            if given.is_empty() {
                return Err(unauthorized());
            }
            // Constant-time comparison: the node token must not leak through timing.
            let is_node_token: bool = subtle::ConstantTimeEq::ct_eq(given.as_bytes(), node_token.as_bytes()).into();
            if is_node_token {
                return services.bootstrap_admin(ADMIN_NAME).await.map_err(|e| match e {
                    datamesh_services::users::AccountError::Database(db) => accounts_unavailable(&db),
                    other => ApiError::new(
                        ErrorCode::Forbidden,
                        format!("the node token cannot act as the administrator: {other}"),
                    ),
                });
            }
            services.authenticate_bearer(&given).await.map_err(|e| match e {
                AuthError::Malformed => unauthorized(),
                other => auth_error(other),
            })
        }
        Credential::Session { token, csrf } => {
            let csrf = match &csrf {
                None => Csrf::SafeMethod,
                Some(t) => Csrf::Token(t),
            };
            services.authenticate_session(&token, csrf).await.map_err(auth_error)
        }
        Credential::None => Err(unauthorized()),
    }
}

/// Middleware on every private route: authenticates, then hands the
/// handler the [`Principal`] as a request extension.
pub(crate) async fn authenticate(State(st): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let principal = match principal_of(&st.services, &st.token, Credential::of(&req)).await {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// Node-wide routes (status, peers, pins, GC, drain, raw uploads): the
/// node's administrator only.
pub(crate) fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            "this route is for the node's administrator (the node token, or an admin's login)",
        ))
    }
}

/// Middleware for routes not yet given per-resource checks: the
/// administrator only, so no route is open to every user by default.
pub(crate) async fn admin_only(req: Request, next: Next) -> Response {
    match req.extensions().get::<Principal>().map(require_admin) {
        Some(Ok(())) => next.run(req).await,
        Some(Err(e)) => e.into_response(),
        None => unauthorized().into_response(),
    }
}
