//! Encrypted files shared with people: published public encryption keys and
//! a file's data key wrapped for each recipient.
//!
//! | method | path | who |
//! | --- | --- | --- |
//! | POST | /v1/me/encryption-keys `{algorithm, public_key}` | the user: publish an X25519 or X-Wing public key |
//! | GET | /v1/users/{name}/encryption-keys | any authenticated user (a sender wraps for them) |
//! | PUT | /v1/files/{cid}/recipients/{user} `{wrapped_keys}` | the file's owner: share (stores the wrap, grants read) |
//! | DELETE | /v1/files/{cid}/recipients/{user} | the file's owner: unshare (deletes the wrap and the grant) |
//! | GET | /v1/files/{cid}/key | a reader: the wrap made for them, 404 if none |
//!
//! Only public keys and wraps cross: the owner's CLI unwraps the file's data
//! key with the owner's key and wraps it for the recipient's public key; the
//! recipient's CLI opens it with theirs. The gateway stores the wrap as
//! opaque bytes ([`datamesh_services::wraps`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use datamesh_api::{EncryptionKey, EncryptionKeyList, ErrorBody, ErrorCode, FileKey, NewEncryptionKey};
use datamesh_services::Principal;
use datamesh_services::enckeys::EncryptionAlgorithm;
use datamesh_services::perms::{Action, ResourceRef};
use datamesh_services::users::User;
use datamesh_services::wraps::MAX_WRAP_BYTES;

use crate::accounts::json_body;
use crate::auth::accounts_unavailable;
use crate::error::{ApiError, ApiResult, parse_cid};
use crate::ownership;
use crate::state::AppState;

/// The user named `name`, or 404 saying so.
async fn user_named(st: &AppState, name: &str) -> ApiResult<User> {
    st.services
        .find_user(name)
        .await
        .map_err(|e| accounts_unavailable(&e))?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no user named {name:?} on this node")))
}

#[utoipa::path(
    post,
    path = "/v1/me/encryption-keys",
    tag = "accounts",
    request_body(content = NewEncryptionKey, content_type = "application/json"),
    responses(
        (status = 204, description = "Published (or it already was)"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
    )
)]
pub(crate) async fn publish_encryption_key(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    use datamesh_services::keylogin::PublicKeyError as E;
    let req: NewEncryptionKey = json_body(body, "encryption key")?;
    let algorithm = EncryptionAlgorithm::parse(&req.algorithm)
        .ok_or_else(|| ApiError::bad("algorithm must be `x25519` or `x-wing`"))?;
    let key = hex::decode(&req.public_key).map_err(|_| ApiError::bad("public_key must be hex"))?;
    match st.services.publish_encryption_key(&p, p.user(), algorithm, &key).await {
        Ok(_) | Err(E::Taken) => Ok(StatusCode::NO_CONTENT),
        Err(e @ (E::InvalidKey | E::InvalidName | E::NotFound)) => Err(ApiError::bad(format!(
            "{e}: an {} public key is {} bytes",
            algorithm.as_str(),
            algorithm.public_key_len()
        ))),
        Err(e @ E::NotPermitted) => Err(ApiError::new(ErrorCode::Forbidden, e.to_string())),
        Err(E::Database(db)) => Err(accounts_unavailable(&db)),
    }
}

#[utoipa::path(
    get,
    path = "/v1/users/{name}/encryption-keys",
    tag = "accounts",
    params(("name" = String, Path, description = "The user")),
    responses(
        (status = 200, description = "Their published public encryption keys", body = EncryptionKeyList),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(crate) async fn user_encryption_keys(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<Json<EncryptionKeyList>> {
    let user = user_named(&st, &name).await?;
    let keys = st.services.encryption_keys(&p, user.id).await.map_err(|e| accounts_unavailable(&e))?;
    Ok(Json(EncryptionKeyList {
        user: user.name,
        keys: keys
            .into_iter()
            .map(|k| EncryptionKey {
                algorithm: k.algorithm.as_str().into(),
                public_key: hex::encode(k.public_key),
                created_at: k.created_at,
            })
            .collect(),
    }))
}

#[utoipa::path(
    put,
    path = "/v1/files/{cid}/recipients/{user}",
    tag = "files",
    params(("cid" = String, Path, description = "The file's CID"), ("user" = String, Path, description = "The recipient")),
    request_body(content = FileKey, content_type = "application/json"),
    responses(
        (status = 204, description = "Shared: the recipient may read the file and open it with their key"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not the file's owner", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
    )
)]
pub(crate) async fn share_file(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path((cid, name)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<StatusCode> {
    let cid = parse_cid(&cid)?;
    let manifest = ownership::require_file(&st, &p, Action::Admin, cid).await?;
    let req: FileKey = json_body(body, "file key")?;
    let wrapped = hex::decode(&req.wrapped_keys).map_err(|_| ApiError::bad("wrapped_keys must be hex"))?;
    if wrapped.is_empty() || wrapped.len() > MAX_WRAP_BYTES {
        return Err(ApiError::bad(format!("wrapped_keys must be 1 to {MAX_WRAP_BYTES} bytes")));
    }
    let user = user_named(&st, &name).await?;
    let res = ResourceRef::file(&manifest.to_string()).map_err(|e| ApiError::internal(e.to_string()))?;
    st.services.share_file_key(&p, &res, user.id, &wrapped).await.map_err(ownership::perm_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    delete,
    path = "/v1/files/{cid}/recipients/{user}",
    tag = "files",
    params(("cid" = String, Path, description = "The file's CID"), ("user" = String, Path, description = "The recipient")),
    responses(
        (status = 204, description = "Unshared: the wrap and the read grant are gone"),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Not the file's owner", body = ErrorBody),
        (status = 404, description = "No such user, or not shared with them", body = ErrorBody),
    )
)]
pub(crate) async fn unshare_file(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path((cid, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let cid = parse_cid(&cid)?;
    let manifest = ownership::require_file(&st, &p, Action::Admin, cid).await?;
    let user = user_named(&st, &name).await?;
    let res = ResourceRef::file(&manifest.to_string()).map_err(|e| ApiError::internal(e.to_string()))?;
    if st.services.unshare_file_key(&p, &res, user.id).await.map_err(ownership::perm_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(ErrorCode::NotFound, format!("this file's key was not shared with {name}")))
    }
}

#[utoipa::path(
    get,
    path = "/v1/files/{cid}/key",
    tag = "files",
    params(("cid" = String, Path, description = "The file's CID")),
    responses(
        (status = 200, description = "The file's data key wrapped for the caller", body = FileKey),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "The caller may not read the file", body = ErrorBody),
        (status = 404, description = "Not shared with the caller", body = ErrorBody),
    )
)]
pub(crate) async fn my_file_key(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
) -> ApiResult<Json<FileKey>> {
    let cid = parse_cid(&cid)?;
    let manifest = ownership::require_file(&st, &p, Action::Read, cid).await?;
    let res = ResourceRef::file(&manifest.to_string()).map_err(|e| ApiError::internal(e.to_string()))?;
    match st.services.shared_file_key(&p, &res).await.map_err(ownership::perm_error)? {
        Some(w) => Ok(Json(FileKey { wrapped_keys: hex::encode(w) })),
        None => Err(ApiError::new(ErrorCode::NotFound, "this file's key was not shared with you")),
    }
}
