//! Who is asking and what they may do, for every S3 request: the access
//! key's secret and principal from the accounts database
//! ([`Services::s3_credentials`], so a revoked key fails on its next
//! request; looked up once per request: the signature check's lookup
//! hands its principal to the operation through [`RecentKeys`]), the
//! caller's rate limit, the permission check on the bucket or
//! object, and the quota reservations that uploads take before their body
//! is read.
//!
//! Refusals map as S3 clients expect: a denied check is `AccessDenied`
//! whether or not the resource exists, an exceeded quota 403
//! `QuotaExceeded`, a rate limit 503 `SlowDown`, and a database that does
//! not answer 503 `ServiceUnavailable`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datamesh_services::perms::{Action, Decision, ResourceError, ResourceRef};
use datamesh_services::quota::{QuotaError, Reservation};
use datamesh_services::ratelimit::RouteClass;
use datamesh_services::sessions::AuthError;
use datamesh_services::users::UserId;
use datamesh_services::{DbError, Principal, Services};
use s3s::{S3Error, S3ErrorCode, S3Request, S3Result, s3_error};

use super::S3Gateway;
use crate::keys::KeyOwner;

/// SigV4 secrets, looked up in the accounts database on every request.
pub(crate) struct S3Keys {
    pub(crate) services: Services,
    pub(crate) recent: RecentKeys,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for S3Keys {
    async fn get_secret_key(&self, access_key: &str) -> S3Result<s3s::auth::SecretKey> {
        let c = self.services.s3_credentials(access_key).await.map_err(auth_error)?;
        self.recent.put(access_key, c.principal);
        Ok(s3s::auth::SecretKey::from(c.secret_access_key.as_str()))
    }
}

/// How long a looked-up principal waits for its request's operation.
const RECENT_TTL: Duration = Duration::from_secs(5);
/// Most principals waiting at once (only keys that exist get in).
const MAX_RECENT: usize = 4096;

/// The principals of access keys whose secret was just looked up for a
/// signature check, by access key id, each taken by the same request's
/// [`S3Gateway::caller`]: one database lookup per request instead of two.
/// s3s gives the secret lookup nothing but the key id, hence a map rather
/// than the request's extensions. Every signed request looks its key up
/// afresh before its operation runs, so an entry is never older than the
/// request that takes it (or a concurrent one with the same key): a
/// revoked key still fails on its next request. A request that finds no
/// entry (a concurrent one took it) looks the key up itself.
#[derive(Clone, Default)]
pub(crate) struct RecentKeys(Arc<std::sync::Mutex<HashMap<String, (Instant, Principal)>>>);

impl RecentKeys {
    fn put(&self, id: &str, p: Principal) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_RECENT {
            m.retain(|_, (t, _)| t.elapsed() < RECENT_TTL);
        }
        if m.len() < MAX_RECENT {
            m.insert(id.to_string(), (Instant::now(), p));
        }
    }

    fn take(&self, id: &str) -> Option<Principal> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.remove(id).filter(|(t, _)| t.elapsed() < RECENT_TTL).map(|(_, p)| p)
    }
}

fn auth_error(e: AuthError) -> S3Error {
    match e {
        AuthError::Database(db) => unavailable(&db),
        AuthError::Expired => {
            s3_error!(ExpiredToken, "this access key has expired: create another with `datamesh key create`")
        }
        _ => s3_error!(
            InvalidAccessKeyId,
            "unknown, revoked or disabled access key: create one with `datamesh key create`"
        ),
    }
}

/// The accounts database failed: 503, logged here (the client is not told
/// the database's words).
pub(super) fn unavailable(e: &dyn std::fmt::Display) -> S3Error {
    tracing::warn!(error = %e, "the accounts database failed");
    S3Error::with_message(S3ErrorCode::ServiceUnavailable, "the accounts database does not answer now; retry shortly")
}

/// A database failure, as S3 answers it.
pub(super) fn db(e: DbError) -> S3Error {
    unavailable(&e)
}

/// An exceeded quota is 403 `QuotaExceeded` naming the quota; anything else
/// is the database's fault.
pub(super) fn quota_error(e: QuotaError) -> S3Error {
    match e {
        QuotaError::Exceeded { .. } => {
            let mut err = S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), e.to_string());
            err.set_status_code(http::StatusCode::FORBIDDEN);
            err
        }
        other => unavailable(&other),
    }
}

/// A name S3 would not accept as a bucket or key.
fn bad_name(e: ResourceError) -> S3Error {
    match e {
        ResourceError::BadBucket => s3_error!(InvalidBucketName, "{e}"),
        other => s3_error!(InvalidArgument, "{other}"),
    }
}

/// The authenticated caller of one request.
pub(super) struct Caller {
    /// The user, narrowed by the key's scope.
    pub(super) principal: Principal,
    /// The access key id (segments record it; its user key encrypts).
    pub(super) key_id: String,
}

/// Multipart uploads' quota reservations, by upload id. In memory: after a
/// restart an upload's next part reserves afresh, and the lost reservation
/// returns when it expires ([`Services::expire_reservations`]).
#[derive(Clone, Default)]
pub(crate) struct Reservations(Arc<std::sync::Mutex<HashMap<String, Slot>>>);

/// One upload's reservation; parts of one upload extend it one at a time.
type Slot = Arc<tokio::sync::Mutex<Option<Reservation>>>;

impl Reservations {
    pub(super) fn slot(&self, upload: &str) -> Slot {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).entry(upload.to_string()).or_default().clone()
    }

    pub(super) fn take(&self, upload: &str) -> Option<Slot> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(upload)
    }
}

impl S3Gateway {
    /// Authenticates the request's access key (again: s3s checked the
    /// signature with its secret) and counts it against the caller's rate
    /// limit.
    pub(super) async fn caller<T>(&self, req: &S3Request<T>, class: RouteClass) -> S3Result<Caller> {
        let id = req.credentials.as_ref().map(|c| c.access_key.clone()).ok_or_else(|| {
            s3_error!(AccessDenied, "anonymous requests are not accepted: sign the request with an access key")
        })?;
        let principal = match self.recent.take(&id) {
            Some(p) => p,
            None => self.services.s3_credentials(&id).await.map_err(auth_error)?.principal,
        };
        if let Err(l) = self.services.rate_limit(&principal, class) {
            self.metrics.rate_limited(crate::metrics::class_name(class));
            return Err(S3Error::with_message(
                S3ErrorCode::SlowDown,
                format!("too many requests for this user's tier: retry in {} s", l.retry_after.as_secs().max(1)),
            ));
        }
        Ok(Caller { principal, key_id: id })
    }

    /// Refuses with `AccessDenied` unless the caller may do `action` to
    /// `res` (the same answer whether or not it exists).
    pub(super) async fn allow(
        &self,
        c: &Caller,
        action: Action,
        res: Result<ResourceRef, ResourceError>,
    ) -> S3Result<()> {
        let res = res.map_err(bad_name)?;
        match self.services.check(Some(&c.principal), action, &res).await.map_err(db)? {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(s3_error!(AccessDenied, "access denied")),
        }
    }

    /// Checks `action` on the object `key` of `bucket`.
    pub(super) async fn allow_object(&self, c: &Caller, action: Action, bucket: &str, key: &str) -> S3Result<()> {
        self.allow(c, action, ResourceRef::object(bucket, key)).await
    }

    /// Checks `action` on `bucket`.
    pub(super) async fn allow_bucket(&self, c: &Caller, action: Action, bucket: &str) -> S3Result<()> {
        self.allow(c, action, ResourceRef::bucket(bucket)).await
    }

    /// Who a bucket's storage is counted against: its owner (as in S3, the
    /// bucket owner pays, whoever writes with a grant).
    pub(super) async fn bucket_owner(&self, bucket: &str) -> S3Result<UserId> {
        let res = ResourceRef::bucket(bucket).map_err(bad_name)?;
        match self.services.resource_info(&self.admin, &res).await {
            Ok(info) => Ok(info.owner),
            Err(datamesh_services::perms::PermError::Database(db)) => Err(unavailable(&db)),
            Err(_) => Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist; create it first")),
        }
    }

    /// The user name of a user, for owner fields.
    pub(super) async fn user_name(&self, user: UserId) -> S3Result<String> {
        Ok(self.services.get_user(user).await.map_err(db)?.map(|u| u.name).unwrap_or_default())
    }

    /// The encryption key of the caller's access key (made on its first write).
    pub(super) async fn user_key(&self, c: &Caller) -> S3Result<Arc<KeyOwner>> {
        let (keys, id) = (self.keys.clone(), c.key_id.clone());
        tokio::task::spawn_blocking(move || keys.ensure(&id)).await.map_err(super::internal)?.map_err(super::internal)
    }

    /// Stored data no longer counts against `owner` (best effort: a failure
    /// only over-counts, and is logged).
    pub(super) async fn uncount(&self, owner: UserId, bytes: u64, files: u64) {
        if bytes == 0 && files == 0 {
            return;
        }
        if let Err(e) = self.services.record_deleted(owner, bytes, files).await {
            tracing::warn!(error = %e, "could not count a deletion against the owner's usage");
        }
    }

    /// Returns a reservation that will not be used (best effort: an
    /// unreturned one expires).
    pub(super) async fn unreserve(&self, r: Reservation) {
        if let Err(e) = self.services.release(r).await {
            tracing::warn!(error = %e, "could not release a quota reservation");
        }
    }
}
