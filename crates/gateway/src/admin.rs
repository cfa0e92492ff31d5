//! The administrator's REST routes (`/v1/admin/*`): users, tiers and the
//! audit log. They sit behind [`crate::auth::admin_only`]; the services
//! check the administrator again on every call.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use datamesh_api::{
    Account, AccountList, AccountPatch, AuditPage, AuditQuery, AuditRecord, AuditVerdict, ErrorBody, ErrorCode,
    NewAccount, Tier, TierList,
};
use datamesh_services::audit::AuditError;
use datamesh_services::perms::ResourceKind;
use datamesh_services::users::{NewUser, User};
use datamesh_services::{Principal, Role};

use crate::accounts::{account, account_error, json_body, quota_error, tier};
use crate::auth::accounts_unavailable;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

fn role(s: &str) -> ApiResult<Role> {
    match s {
        "admin" => Ok(Role::Admin),
        "user" => Ok(Role::User),
        _ => Err(ApiError::bad(format!("unknown role {s:?}: `admin` or `user`"))),
    }
}

/// The user named `name`, or 404.
async fn user_named(st: &AppState, name: &str) -> ApiResult<User> {
    st.services
        .find_user(name)
        .await
        .map_err(|e| accounts_unavailable(&e))?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such user: `datamesh admin user list` shows them"))
}

fn audit_error(e: AuditError) -> ApiError {
    match e {
        AuditError::NotAdmin => ApiError::new(ErrorCode::Forbidden, e.to_string()),
        AuditError::Broken { .. } => ApiError::internal(e.to_string()),
        AuditError::Database(db) => accounts_unavailable(&db),
    }
}

#[utoipa::path(get, path = "/v1/admin/users", tag = "admin", responses((status = 200, description = "Every user", body = AccountList), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody)))]
pub(crate) async fn list_users(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<AccountList>> {
    let users = st.services.list_users(&p).await.map_err(account_error)?;
    Ok(Json(AccountList { users: users.iter().map(account).collect() }))
}

#[utoipa::path(post, path = "/v1/admin/users", tag = "admin", request_body(content = NewAccount, content_type = "application/json"), responses((status = 201, description = "The new account", body = Account), (status = 400, description = "Invalid name, password, role or tier", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody), (status = 409, description = "The name is taken", body = ErrorBody)))]
pub(crate) async fn create_user(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<impl IntoResponse> {
    let req: NewAccount = json_body(body, "new user")?;
    let role = role(req.role.as_deref().unwrap_or("user"))?;
    let new = NewUser { name: &req.name, password: req.password.as_deref(), role, tier: req.tier.as_deref() };
    let user = st.services.create_user(&p, new).await.map_err(account_error)?;
    Ok((StatusCode::CREATED, Json(account(&user))))
}

#[utoipa::path(patch, path = "/v1/admin/users/{name}", tag = "admin", params(("name" = String, Path, description = "User name")), request_body(content = AccountPatch, content_type = "application/json"), responses((status = 200, description = "The account as changed", body = Account), (status = 400, description = "Unknown tier or role, or the last administrator", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody), (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn patch_user(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Account>> {
    let req: AccountPatch = json_body(body, "user change")?;
    let role = req.role.as_deref().map(role).transpose()?;
    let user = user_named(&st, &name).await?;
    if let Some(t) = &req.tier {
        st.services.set_user_tier(&p, user.id, t).await.map_err(quota_error)?;
    }
    if let Some(d) = req.disabled {
        st.services.set_disabled(&p, user.id, d).await.map_err(account_error)?;
    }
    if let Some(r) = role {
        st.services.set_role(&p, user.id, r).await.map_err(account_error)?;
    }
    Ok(Json(account(&user_named(&st, &name).await?)))
}

#[utoipa::path(delete, path = "/v1/admin/users/{name}", tag = "admin", params(("name" = String, Path, description = "User name")), responses((status = 204, description = "Deleted: the account, its credentials and grants; the files it owned are unpinned (see docs/accounts.md)"), (status = 400, description = "The last administrator", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody), (status = 404, description = "No such user", body = ErrorBody)))]
pub(crate) async fn delete_user(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let user = user_named(&st, &name).await?;
    let gone = st.services.delete_user(&p, user.id).await.map_err(account_error)?;
    // The user's files leave the store's pins: garbage collection reclaims
    // them unless another user stores the same bytes (same CID).
    for res in gone.owned.iter().filter(|r| r.kind() == ResourceKind::File) {
        let Ok(cid) = res.name().parse::<datamesh_core::Cid>() else { continue };
        if let Err(e) = st.node.unpin(cid).await {
            tracing::warn!(file = %cid, error = %e, "could not unpin a deleted user's file");
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/admin/tiers", tag = "admin", responses((status = 200, description = "Every tier", body = TierList), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody)))]
pub(crate) async fn list_tiers(State(st): State<Arc<AppState>>) -> ApiResult<Json<TierList>> {
    let tiers = st.services.list_tiers().await.map_err(|e| accounts_unavailable(&e))?;
    Ok(Json(TierList { tiers: tiers.into_iter().map(tier).collect() }))
}

#[utoipa::path(put, path = "/v1/admin/tiers/{name}", tag = "admin", params(("name" = String, Path, description = "Tier name")), request_body(content = Tier, content_type = "application/json"), responses((status = 200, description = "The tier as stored", body = Tier), (status = 400, description = "Invalid tier, or the body names another tier", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody)))]
pub(crate) async fn put_tier(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Tier>> {
    let t: Tier = json_body(body, "tier")?;
    if t.name != name {
        return Err(ApiError::bad(format!("the body names tier {:?} but the path {name:?}: make them equal", t.name)));
    }
    let st_tier = datamesh_services::quota::Tier {
        name: t.name.clone(),
        max_stored_bytes: t.max_stored_bytes,
        max_transfer_bytes: t.max_transfer_bytes,
        max_calls_per_hour: t.max_calls_per_hour,
        max_file_bytes: t.max_file_bytes,
        max_files: t.max_files,
        sla: t.sla,
    };
    st.services.set_tier(&p, &st_tier).await.map_err(quota_error)?;
    Ok(Json(t))
}

#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin", params(AuditQuery), responses((status = 200, description = "A page of the audit log, oldest first", body = AuditPage), (status = 400, description = "Bad query", body = ErrorBody), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody)))]
pub(crate) async fn audit(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<AuditPage>> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let page = st.services.audit_list(&p, q.after.unwrap_or(0), q.limit.unwrap_or(100)).await.map_err(audit_error)?;
    let records = page
        .records
        .into_iter()
        .map(|r| AuditRecord {
            seq: r.seq,
            at: r.at,
            actor: r.actor,
            action: r.action,
            target: r.target,
            detail: r.detail,
            source: r.source,
            hash: hex::encode(r.hash),
        })
        .collect();
    Ok(Json(AuditPage { records, next: page.next }))
}

#[utoipa::path(get, path = "/v1/admin/audit/verify", tag = "admin", responses((status = 200, description = "`ok` with the rows checked and the head hash, or the first row that does not verify", body = AuditVerdict), (status = 401, description = "Missing or wrong credential", body = ErrorBody), (status = 403, description = "Not the administrator", body = ErrorBody)))]
pub(crate) async fn audit_verify(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
) -> ApiResult<Json<AuditVerdict>> {
    match st.services.audit_verify(&p).await {
        Ok(r) => Ok(Json(AuditVerdict {
            ok: true,
            rows: r.rows,
            head: Some(hex::encode(r.head)),
            broken_at: None,
            problem: None,
        })),
        Err(AuditError::Broken { seq, what }) => {
            tracing::error!(row = seq, what, "the audit log does not verify");
            Ok(Json(AuditVerdict { ok: false, rows: 0, head: None, broken_at: Some(seq), problem: Some(what.into()) }))
        }
        Err(e) => Err(audit_error(e)),
    }
}
