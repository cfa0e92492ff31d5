//! `/v1/keys`: API keys and S3 access keys, each a user's.
//!
//! Any authenticated principal may call these: the accounts service decides
//! (a user manages their own keys, the administrator anyone's; a scoped key
//! can never mint a key broader than itself or outliving it). An S3 key
//! made here is usable on the next S3 request; a revoked one is refused on
//! the next request.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use datamesh_api::keys::{CreatedKey, KeyEntry, KeyList, KeyListQuery, NewKey};
use datamesh_api::{ErrorBody, ErrorCode};
use datamesh_services::Principal;
use datamesh_services::keys::{KeyError, KeyInfo, KeyKind, Op, Ops, Scope, ScopeTarget};
use datamesh_services::users::UserId;

use crate::auth::accounts_unavailable;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn key_error(e: KeyError) -> ApiError {
    match e {
        KeyError::Database(db) => accounts_unavailable(&db),
        KeyError::NotFound | KeyError::NoSuchUser => ApiError::new(ErrorCode::NotFound, e.to_string()),
        KeyError::NotPermitted | KeyError::Broader | KeyError::OutOfScope => {
            ApiError::new(ErrorCode::Forbidden, e.to_string())
        }
        other => ApiError::bad(other.to_string()),
    }
}

/// The user named `name` (the caller when `None`); only the administrator
/// names another.
async fn user_of(st: &AppState, p: &Principal, name: Option<&str>) -> ApiResult<UserId> {
    let Some(name) = name.filter(|n| *n != p.name()) else { return Ok(p.user()) };
    if !p.is_admin() {
        return Err(ApiError::new(ErrorCode::Forbidden, "only the administrator manages other users' keys"));
    }
    match st.services.find_user(name).await {
        Ok(Some(u)) => Ok(u.id),
        Ok(None) => Err(ApiError::new(ErrorCode::NotFound, format!("no user named {name}"))),
        Err(e) => Err(accounts_unavailable(&e)),
    }
}

/// The scope asked for: the given operations (default: the caller's) and
/// targets (default: the caller's).
fn scope_of(p: &Principal, req: &NewKey) -> ApiResult<Scope> {
    let ops = match &req.ops {
        None => p.scope().ops,
        Some(list) => {
            let mut ops = Vec::new();
            for o in list.iter().flat_map(|o| o.split(',')).map(str::trim).filter(|o| !o.is_empty()) {
                ops.push(Op::parse(o).ok_or_else(|| {
                    ApiError::bad(format!("unknown operation {o:?}: use read, write, delete, list, admin"))
                })?);
            }
            Ops::of(&ops)
        }
    };
    let targets = match &req.buckets {
        None if req.prefix.is_some() => return Err(ApiError::bad("`prefix` needs `buckets`")),
        None => p.scope().targets.clone(),
        Some(list) => Some(
            list.iter()
                .map(|b| match b.split_once('/') {
                    Some((b, pre)) => ScopeTarget { bucket: b.to_string(), prefix: Some(pre.to_string()) },
                    None => ScopeTarget { bucket: b.clone(), prefix: req.prefix.clone() },
                })
                .collect(),
        ),
    };
    Ok(Scope { ops, targets })
}

fn entry(info: &KeyInfo, user: &str) -> KeyEntry {
    KeyEntry {
        key_id: info.key_id.clone(),
        kind: match info.kind {
            KeyKind::S3 => "s3".into(),
            KeyKind::Api => "api".into(),
        },
        user: user.to_string(),
        name: info.name.clone(),
        ops: info.scope.ops.iter().map(|o| o.as_str().to_string()).collect(),
        buckets: info.scope.targets.as_ref().map(|ts| {
            ts.iter()
                .map(|t| match &t.prefix {
                    Some(p) => format!("{}/{}", t.bucket, p),
                    None => t.bucket.clone(),
                })
                .collect()
        }),
        created_at: info.created_at,
        expires_at: info.expires_at,
        revoked: info.revoked,
    }
}

/// Creates an S3 access key (default) or an API key for the caller, or
/// for `user` by the administrator. The secret is shown once.
#[utoipa::path(post, path = "/v1/keys", tag = "keys", request_body(content = NewKey, description = "Optional: an empty body makes an S3 key with the caller's scope"), responses((status = 201, description = "The key and its secret (`access_key_id`, `secret_access_key` for S3; `token` for API keys)", body = CreatedKey), (status = 400, description = "Bad request", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Another user's key, or broader than the credential creating it", body = ErrorBody), (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn create_key(
    State(st): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let req: NewKey = if body.iter().all(u8::is_ascii_whitespace) {
        NewKey::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("bad key request: {e}")))?
    };
    let owner = user_of(&st, &p, req.user.as_deref()).await?;
    let owner_name = match req.user.as_deref() {
        Some(n) => n.to_string(),
        None => p.name().to_string(),
    };
    let scope = scope_of(&p, &req)?;
    let now = datamesh_core::clock::unix_secs();
    let expires_at = req.expires_in.map(|s| now.saturating_add(s));
    let kind = req.kind.as_deref().unwrap_or("s3");
    let default_name = format!("{kind} key");
    let new = datamesh_services::keys::NewKey { name: req.name.as_deref().unwrap_or(&default_name), scope, expires_at };
    let created = match kind {
        "s3" => {
            let k = st.services.create_s3_key(&p, owner, new).await.map_err(key_error)?;
            // The secret moves into the answer: no second copy to wipe.
            let key = entry(&k.info, &owner_name);
            CreatedKey {
                access_key_id: Some(k.access_key_id),
                secret_access_key: Some(k.secret_access_key.into()),
                token: None,
                key,
            }
        }
        "api" => {
            let k = st.services.create_api_key(&p, owner, new).await.map_err(key_error)?;
            let key = entry(&k.info, &owner_name);
            CreatedKey { access_key_id: None, secret_access_key: None, token: Some(k.token.into()), key }
        }
        other => return Err(ApiError::bad(format!("unknown key kind {other:?}: use s3 or api"))),
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// The caller's keys (the administrator: `?user=`'s), revoked included.
#[utoipa::path(get, path = "/v1/keys", tag = "keys", params(KeyListQuery), responses((status = 200, description = "The keys, without secrets", body = KeyList), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Another user's keys", body = ErrorBody), (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn list_keys(
    State(st): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Query(q): Query<KeyListQuery>,
) -> ApiResult<Json<KeyList>> {
    let owner = user_of(&st, &p, q.user.as_deref()).await?;
    let name = q.user.clone().unwrap_or_else(|| p.name().to_string());
    let keys = st.services.list_keys(&p, owner).await.map_err(key_error)?;
    Ok(Json(KeyList { keys: keys.iter().map(|k| entry(k, &name)).collect() }))
}

/// Revokes a key: refused from the next request on. Another user's key
/// answers 404, as if it did not exist.
#[utoipa::path(delete, path = "/v1/keys/{id}", tag = "keys", params(("id" = String, Path, description = "The key id (S3 access key id or API key id)")), responses((status = 204, description = "Revoked"), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Broader than the key revoking it", body = ErrorBody), (status = 404, description = "No such key", body = ErrorBody)))]
pub(crate) async fn revoke_key(
    State(st): State<Arc<AppState>>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    st.services.revoke_key(&p, &id).await.map_err(key_error)?;
    Ok(StatusCode::NO_CONTENT)
}
