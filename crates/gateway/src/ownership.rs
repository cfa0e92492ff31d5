//! Who owns the files of the REST API, and the checks every file route
//! makes.
//!
//! A file is the resource `file:<manifest CID>` in the services: whoever
//! completes its upload owns it. When another user already owns the same
//! CID (identical bytes, identical manifest), the uploader is granted read
//! on it instead: the bytes are stored once, and each user counts them in
//! their own usage. Files stored before accounts existed are adopted by the
//! bootstrap administrator ([`adopt_existing`]) when the gateway starts.
//!
//! **Architecture invariant:** a refusal says nothing about existence: a
//! CID nobody may read, one that does not exist and one that does not
//! resolve all answer the same 403 ([`require_file`]), and the node
//! makes no network lookup for a CID before its permission is checked.
//!
//! Uploads over the chunk routes belong to the principal that opened them
//! ([`UploadOwners`]): their quota is reserved at the start, extended per
//! chunk, committed on completion and released on abort.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datamesh_api::ErrorCode;
use datamesh_core::Cid;
use datamesh_services::perms::{Action, Decision, Level, PermError, ResourceRef};
use datamesh_services::quota::Reservation;
use datamesh_services::{Principal, UserId};

use crate::accounts::quota_error;
use crate::auth::{ADMIN_NAME, accounts_unavailable};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// The one answer to a file the caller may not touch (or that does not
/// exist): 403, the same either way.
pub(crate) fn denied() -> ApiError {
    ApiError::new(
        ErrorCode::Forbidden,
        "access denied: this file is not yours and nobody shared it with you (or it does not exist)",
    )
}

/// The file resource for `cid` (a manifest or UnixFS CID), by its manifest
/// CID; `None` when the CID resolves to nothing on this node. Resolved
/// locally only: the permission is checked before the node does anything
/// a caller could point at the network (a UnixFS CID this node has no
/// alias for is refused to anyone but the administrator; its manifest CID
/// works anywhere).
pub(crate) async fn file_ref(st: &AppState, cid: Cid) -> Option<(Cid, ResourceRef)> {
    let manifest = st.node.resolve_local(cid).await.ok()??;
    let res = ResourceRef::file(&manifest.to_string()).ok()?;
    Some((manifest, res))
}

/// Whether `p` may do `action` to file `cid`; the answer is 403 whether or
/// not the file exists. Returns the manifest CID.
pub(crate) async fn require_file(st: &AppState, p: &Principal, action: Action, cid: Cid) -> ApiResult<Cid> {
    let Some((manifest, res)) = file_ref(st, cid).await else {
        // The administrator hears the node's own answer (404, 410).
        return if p.is_admin() { Ok(cid) } else { Err(denied()) };
    };
    match st.services.check(Some(p), action, &res).await.map_err(|e| accounts_unavailable(&e))? {
        Decision::Allow => Ok(manifest),
        Decision::Deny => Err(denied()),
    }
}

/// Whether `p` may read file `cid` (for listings: false on any doubt).
pub(crate) async fn may_read(st: &AppState, p: &Principal, manifest: Cid) -> bool {
    if p.is_admin() {
        return true;
    }
    let Ok(res) = ResourceRef::file(&manifest.to_string()) else { return false };
    matches!(st.services.check(Some(p), Action::Read, &res).await, Ok(Decision::Allow))
}

/// The bootstrap administrator, as the gateway's own hand (grants on
/// behalf of the node, adoption).
async fn admin(st: &AppState) -> ApiResult<Principal> {
    st.services.bootstrap_admin(ADMIN_NAME).await.map_err(|e| accounts_unavailable(&e))
}

/// Records that `p` stored file `manifest`: it becomes theirs, or, when
/// another user owns the same bytes already, `p` gets read on it.
pub(crate) async fn record_owner(st: &AppState, p: &Principal, manifest: Cid) -> ApiResult<()> {
    let res = ResourceRef::file(&manifest.to_string()).map_err(|e| ApiError::internal(e.to_string()))?;
    match st.services.create_resource(p, &res).await {
        Ok(()) => Ok(()),
        Err(PermError::NameTaken) => {
            if matches!(st.services.check(Some(p), Action::Read, &res).await, Ok(Decision::Allow)) {
                return Ok(());
            }
            let by = admin(st).await?;
            st.services.grant(&by, &res, p.user(), Level::Read).await.map_err(perm_error)
        }
        Err(e) => Err(perm_error(e)),
    }
}

/// A [`PermError`] as an answer.
pub(crate) fn perm_error(e: PermError) -> ApiError {
    match e {
        PermError::Denied => denied(),
        PermError::InvalidResource(_) | PermError::BadInput(_) => ApiError::bad(e.to_string()),
        PermError::NameTaken => ApiError::new(ErrorCode::NameTaken, e.to_string()),
        PermError::NoSuchUser => ApiError::new(ErrorCode::NotFound, e.to_string()),
        PermError::Database(db) => accounts_unavailable(&db),
    }
}

/// Files on the node with no owner yet (stored before accounts existed)
/// become the bootstrap administrator's. Runs once at start; idempotent.
pub(crate) async fn adopt_existing(gw: &crate::Gateway) {
    let services = gw.services();
    let admin = match services.bootstrap_admin(ADMIN_NAME).await {
        Ok(a) => a,
        Err(e) => return tracing::warn!(error = %e, "cannot adopt existing files: no administrator"),
    };
    let files = match gw.node().list().await {
        Ok(f) => f,
        Err(e) => return tracing::warn!(error = %e, "cannot list files to adopt"),
    };
    let mut adopted = 0u64;
    for (cid, _, _) in files {
        let Ok(res) = ResourceRef::file(&cid.to_string()) else { continue };
        match services.adopt_resource(&admin, &res, admin.user()).await {
            Ok(true) => adopted += 1,
            Ok(false) => {}
            Err(e) => tracing::warn!(file = %cid, error = %e, "cannot adopt a file"),
        }
    }
    if adopted > 0 {
        tracing::info!(files = adopted, owner = ADMIN_NAME, "files stored before accounts now have an owner");
    }
}

/// An upload session over the chunk routes: whose, and the quota it holds
/// (locked only while it is extended, so chunks still upload in parallel).
pub(crate) struct UploadOwner {
    pub(crate) user: UserId,
    pub(crate) reservation: tokio::sync::Mutex<Option<Reservation>>,
}

/// The open chunk-route uploads by session id.
#[derive(Default)]
pub(crate) struct UploadOwners(Mutex<HashMap<String, Arc<UploadOwner>>>);

impl UploadOwners {
    /// Records a new session.
    pub(crate) fn insert(&self, id: String, user: UserId, reservation: Reservation) {
        let owner = Arc::new(UploadOwner { user, reservation: tokio::sync::Mutex::new(Some(reservation)) });
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(id, owner);
    }

    /// Session `id` if `p` owns it (the administrator may use any); None
    /// otherwise, answered like an unknown session.
    pub(crate) fn get(&self, id: &str, p: &Principal) -> Option<Arc<UploadOwner>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(id).filter(|o| o.user == p.user() || p.is_admin()).cloned()
    }

    /// Takes session `id` out (it completed or was aborted), if `p` owns it.
    pub(crate) fn remove(&self, id: &str, p: &Principal) -> Option<Arc<UploadOwner>> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mine = map.get(id).is_some_and(|o| o.user == p.user() || p.is_admin());
        if mine { map.remove(id) } else { None }
    }
}

/// The open session `id` as `p` may use it: `Some` when it is theirs (or
/// the administrator's use of anyone's); `None` for the administrator and
/// a session this gateway does not track (the node answers, 404 if it does
/// not exist). Anyone else gets 403 whether or not it exists.
pub(crate) fn session(st: &AppState, id: &str, p: &Principal, take: bool) -> ApiResult<Option<Arc<UploadOwner>>> {
    let found = if take { st.uploads.remove(id, p) } else { st.uploads.get(id, p) };
    match found {
        Some(o) => Ok(Some(o)),
        None if p.is_admin() => Ok(None),
        None => Err(ApiError::new(
            ErrorCode::Forbidden,
            "access denied: no upload session of yours has this id (finished, aborted, expired, or not yours); open one with POST /v1/uploads",
        )),
    }
}

/// Whose upload slots `p`'s uploads take on the node (its per-owner cap);
/// None for the administrator, whom only the node's cap limits (the node's
/// own tooling runs as it, as with rate limits).
pub(crate) fn upload_owner(p: &Principal) -> Option<String> {
    (!p.is_admin()).then(|| p.user().to_string())
}

/// Reserves quota for `p`'s upload of `bytes` (one file).
pub(crate) async fn reserve(st: &AppState, p: &Principal, bytes: u64) -> ApiResult<Reservation> {
    match st.gateway() {
        Ok(gw) => crate::quota_alerts::reserve(gw.events(), &st.services, p.user(), bytes, 1).await,
        // No gateway yet: no event bus to warn on.
        Err(_) => st.services.reserve(p.user(), bytes, 1).await,
    }
    .map_err(quota_error)
}

/// Returns an upload's quota.
pub(crate) async fn release(st: &AppState, r: Reservation) {
    if let Err(e) = st.services.release(r).await {
        tracing::warn!(error = %e, "could not release an upload's quota reservation (it expires on its own)");
    }
}

/// After a file's deletion: its record goes, and its size leaves its
/// owner's usage (the owner's, not the caller's, when the administrator
/// deletes it).
pub(crate) async fn forget_file(st: &AppState, p: &Principal, manifest: Cid, size: Option<u64>) {
    let Ok(res) = ResourceRef::file(&manifest.to_string()) else { return };
    let owner = match admin(st).await {
        Ok(a) => st.services.resource_info(&a, &res).await.ok().map(|i| i.owner),
        Err(_) => None,
    };
    if let Err(e) = st.services.delete_resource(p, &res).await {
        tracing::warn!(file = %manifest, error = %e, "could not forget a deleted file's owner");
    }
    if let (Some(owner), Some(size)) = (owner, size)
        && let Err(e) = st.services.record_deleted(owner, size, 1).await
    {
        tracing::warn!(file = %manifest, error = %e, "could not take a deleted file out of its owner's usage");
    }
}
