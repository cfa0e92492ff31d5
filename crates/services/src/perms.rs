//! Ownership and permissions.
//!
//! Every resource (a bucket, an object, an object prefix, an upload
//! session, a file by CID, a share link) has one owner, who may grant
//! another user a level (`read` < `write` < `delete` < `admin`, each
//! including the ones before it), make it public (anyone may read and
//! list), and transfer it. Objects, prefixes and uploads live in a bucket
//! and inherit from it: the level a user has on an object is the highest of
//! what they have on the object's own record (if any), on every prefix
//! record that contains it, and on its bucket. A resource with no record
//! (and no bucket record) has no owner and is denied to everyone but the
//! admin.
//!
//! [`Services::check`] answers allow or deny. A denial says nothing more:
//! the same [`Decision::Deny`] whether the resource is missing or
//! forbidden, so a caller learns nothing about names it may not see
//! (creating a bucket whose name is taken does say so, as S3 does: bucket
//! names are global).
//!
//! **The admin role** passes every check, with a credential whose scope
//! includes `admin` ([`Principal::is_admin`]); a credential's scope
//! narrows everyone, the admin included.

use sqlx::Row;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, int};
use crate::keys::{Op, valid_bucket};
use crate::users::UserId;
use crate::{Principal, Services};

/// The kinds of owned resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    /// An S3 bucket (globally named).
    Bucket,
    /// An object in a bucket.
    Object,
    /// A key prefix in a bucket (grants on it cover its objects).
    Prefix,
    /// A multipart upload session in a bucket.
    Upload,
    /// A file put through the REST API or CLI, by CID.
    File,
    /// A share link, by id.
    ShareLink,
}

impl ResourceKind {
    /// The kind's stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceKind::Bucket => "bucket",
            ResourceKind::Object => "object",
            ResourceKind::Prefix => "prefix",
            ResourceKind::Upload => "upload",
            ResourceKind::File => "file",
            ResourceKind::ShareLink => "share",
        }
    }

    fn parse(s: &str) -> Option<ResourceKind> {
        use ResourceKind::*;
        [Bucket, Object, Prefix, Upload, File, ShareLink].into_iter().find(|k| k.as_str() == s)
    }

    fn in_bucket(self) -> bool {
        matches!(self, ResourceKind::Object | ResourceKind::Prefix | ResourceKind::Upload)
    }
}

/// A resource's name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceError {
    /// A bucket name outside S3's rules.
    #[error("invalid bucket name: 3 to 63 characters a-z, 0-9, '.', '-'")]
    BadBucket,
    /// An empty or oversized key, or one with control characters.
    #[error("invalid name: 1 to 1024 bytes, no control characters")]
    BadName,
}

/// A resource, by kind and name (validated at construction).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResourceRef {
    pub(crate) kind: ResourceKind,
    pub(crate) name: String,
}

fn valid_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= 1024 && !key.chars().any(char::is_control)
}

impl ResourceRef {
    /// A bucket.
    pub fn bucket(name: &str) -> Result<ResourceRef, ResourceError> {
        if !valid_bucket(name) {
            return Err(ResourceError::BadBucket);
        }
        Ok(ResourceRef { kind: ResourceKind::Bucket, name: name.to_string() })
    }

    fn in_bucket(kind: ResourceKind, bucket: &str, key: &str) -> Result<ResourceRef, ResourceError> {
        if !valid_bucket(bucket) {
            return Err(ResourceError::BadBucket);
        }
        if !valid_key(key) {
            return Err(ResourceError::BadName);
        }
        Ok(ResourceRef { kind, name: format!("{bucket}/{key}") })
    }

    /// An object of a bucket.
    pub fn object(bucket: &str, key: &str) -> Result<ResourceRef, ResourceError> {
        ResourceRef::in_bucket(ResourceKind::Object, bucket, key)
    }

    /// A key prefix of a bucket.
    pub fn prefix(bucket: &str, prefix: &str) -> Result<ResourceRef, ResourceError> {
        ResourceRef::in_bucket(ResourceKind::Prefix, bucket, prefix)
    }

    /// A multipart upload of a bucket.
    pub fn upload(bucket: &str, upload_id: &str) -> Result<ResourceRef, ResourceError> {
        ResourceRef::in_bucket(ResourceKind::Upload, bucket, upload_id)
    }

    /// A file by CID (or any id the gateway gives files).
    pub fn file(cid: &str) -> Result<ResourceRef, ResourceError> {
        ResourceRef::simple(ResourceKind::File, cid)
    }

    /// A share link by id.
    pub fn share_link(id: &str) -> Result<ResourceRef, ResourceError> {
        ResourceRef::simple(ResourceKind::ShareLink, id)
    }

    fn simple(kind: ResourceKind, id: &str) -> Result<ResourceRef, ResourceError> {
        if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
            return Err(ResourceError::BadName);
        }
        Ok(ResourceRef { kind, name: id.to_string() })
    }

    pub(crate) fn from_db(kind: &str, name: String) -> Option<ResourceRef> {
        Some(ResourceRef { kind: ResourceKind::parse(kind)?, name })
    }

    /// The kind.
    pub fn kind(&self) -> ResourceKind {
        self.kind
    }

    /// The full name (`bucket/key` for resources in a bucket).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket, for a bucket or a resource in one.
    pub fn bucket_name(&self) -> Option<&str> {
        match self.kind {
            ResourceKind::Bucket => Some(&self.name),
            k if k.in_bucket() => self.name.split_once('/').map(|(b, _)| b),
            _ => None,
        }
    }

    /// The key within the bucket, for a resource in one.
    pub fn key(&self) -> Option<&str> {
        if self.kind.in_bucket() { self.name.split_once('/').map(|(_, k)| k) } else { None }
    }
}

impl std::fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.name)
    }
}

/// A permission level; each includes those before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing (granting it revokes).
    None = 0,
    /// Read and list.
    Read = 1,
    /// Also write.
    Write = 2,
    /// Also delete.
    Delete = 3,
    /// Also grant, make public; what the owner has.
    Admin = 4,
}

impl Level {
    fn from_i64(v: i64) -> Level {
        match v {
            1 => Level::Read,
            2 => Level::Write,
            3 => Level::Delete,
            v if v >= 4 => Level::Admin,
            _ => Level::None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Level::None => "none",
            Level::Read => "read",
            Level::Write => "write",
            Level::Delete => "delete",
            Level::Admin => "admin",
        }
    }
}

/// What a request wants to do to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read content or metadata.
    Read,
    /// List contents.
    List,
    /// Write (create or overwrite).
    Write,
    /// Delete.
    Delete,
    /// Manage grants and the public flag.
    Admin,
}

impl Action {
    fn op(self) -> Op {
        match self {
            Action::Read => Op::Read,
            Action::List => Op::List,
            Action::Write => Op::Write,
            Action::Delete => Op::Delete,
            Action::Admin => Op::Admin,
        }
    }

    fn level(self) -> Level {
        match self {
            Action::Read | Action::List => Level::Read,
            Action::Write => Level::Write,
            Action::Delete => Level::Delete,
            Action::Admin => Level::Admin,
        }
    }
}

/// A permission check's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refuse (403, S3 `AccessDenied`), saying nothing more.
    Deny,
}

/// Who may do what to a resource, for its owner and the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceInfo {
    /// The resource.
    pub resource: ResourceRef,
    /// The owner.
    pub owner: UserId,
    /// Whether anyone may read it.
    pub public_read: bool,
    /// Grants to other users.
    pub grants: Vec<(UserId, Level)>,
}

/// A permission operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PermError {
    /// The resource's name is invalid.
    #[error("{0}")]
    InvalidResource(#[from] ResourceError),
    /// The name is taken (buckets are globally named).
    #[error("the name is already taken: choose another")]
    NameTaken,
    /// Denied, or no such resource: deliberately one answer.
    #[error("access denied")]
    Denied,
    /// The user to grant or transfer to does not exist.
    #[error("no such user to grant or transfer to")]
    NoSuchUser,
    /// A value given with the operation is not acceptable (says what to fix).
    #[error("{0}")]
    BadInput(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for PermError {
    fn from(e: sqlx::Error) -> Self {
        PermError::Database(DbError(e))
    }
}

const LEVEL_QUERY: &str = "SELECT r.owner_id, r.public_read, g.level FROM resources r \
     LEFT JOIN grants g ON g.resource_id = r.id AND g.grantee_id = $1 \
     WHERE (r.kind = $2 AND r.name = $3) OR (r.kind = 'bucket' AND r.name = $4)";
const LEVEL_QUERY_WITH_PREFIXES: &str = "SELECT r.owner_id, r.public_read, g.level FROM resources r \
     LEFT JOIN grants g ON g.resource_id = r.id AND g.grantee_id = $1 \
     WHERE (r.kind = $2 AND r.name = $3) OR (r.kind = 'bucket' AND r.name = $4) \
        OR (r.kind = 'prefix' AND r.bucket = $4 AND substr($3, 1, length(r.name)) = r.name)";

impl Services {
    /// The level `user` (or anyone, for `None`) has on `res`, and whether
    /// any record of it or its bucket exists.
    pub(crate) async fn level(&self, user: Option<UserId>, res: &ResourceRef) -> Result<(Level, bool), DbError> {
        let q = if matches!(res.kind, ResourceKind::Object | ResourceKind::Prefix) {
            LEVEL_QUERY_WITH_PREFIXES
        } else {
            LEVEL_QUERY
        };
        let uid = user.map(|u| u.0).unwrap_or(-1);
        let rows = sqlx::query(q)
            .bind(uid)
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .bind(res.bucket_name().unwrap_or("").to_string())
            .fetch_all(&self.db().pool)
            .await?;
        let mut level = Level::None;
        for r in &rows {
            if r.try_get::<i64, _>("owner_id")? == uid {
                level = Level::Admin;
            }
            if let Some(g) = r.try_get::<Option<i64>, _>("level")? {
                level = level.max(Level::from_i64(g));
            }
            if r.try_get::<i64, _>("public_read")? != 0 {
                level = level.max(Level::Read);
            }
        }
        Ok((level, !rows.is_empty()))
    }

    /// May `who` (or an anonymous caller, for `None`) do `action` to `res`?
    /// See the module doc. Only a database failure is an error.
    pub async fn check(&self, who: Option<&Principal>, action: Action, res: &ResourceRef) -> Result<Decision, DbError> {
        if let Some(p) = who {
            if !p.scope.allows(action.op(), res.bucket_name(), res.key()) {
                return Ok(Decision::Deny);
            }
            if p.is_admin() {
                return Ok(Decision::Allow);
            }
        } else if !matches!(action, Action::Read | Action::List) {
            return Ok(Decision::Deny);
        }
        // A level read under the caller's permission epoch still holds (see
        // `perm_cache`); one too low for this action is read again, since
        // levels widen without moving the epoch.
        if let Some(p) = who
            && self.inner.perm_cache.get(p.perm_epoch, p.user, res).is_some_and(|l| l >= action.level())
        {
            self.inner.perm_cache.count(true);
            return Ok(Decision::Allow);
        }
        let (level, _) = self.level(who.map(|p| p.user), res).await?;
        if let Some(p) = who {
            self.inner.perm_cache.count(false);
            self.inner.perm_cache.put(p.perm_epoch, p.user, res, level);
        }
        Ok(if level >= action.level() { Decision::Allow } else { Decision::Deny })
    }

    /// Users' permission checks answered from the permission cache and
    /// from the database so far (for `/metrics`).
    pub fn permission_checks(&self) -> (u64, u64) {
        self.inner.perm_cache.counts()
    }

    async fn require(&self, who: &Principal, action: Action, res: &ResourceRef) -> Result<(), PermError> {
        match self.check(Some(who), action, res).await? {
            Decision::Allow => Ok(()),
            Decision::Deny => Err(PermError::Denied),
        }
    }

    /// Registers `res` as owned by the caller. A bucket needs only `write`
    /// in the caller's scope (names are global: a taken one is
    /// [`PermError::NameTaken`]); a resource in a bucket needs `write` where
    /// it would be (its bucket, or a prefix containing it); a file or share link needs `write` in the scope.
    pub async fn create_resource(&self, by: &Principal, res: &ResourceRef) -> Result<(), PermError> {
        if !by.scope.allows(Op::Write, res.bucket_name(), res.key()) {
            return Err(PermError::Denied);
        }
        if res.kind.in_bucket() {
            // Write on the resource as it stands: from its bucket, or a
            // prefix that contains it.
            self.require(by, Action::Write, res).await?;
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let bucket = if res.kind.in_bucket() { res.bucket_name().map(str::to_string) } else { None };
        let inserted = sqlx::query(
            "INSERT INTO resources (kind, name, bucket, owner_id, public_read, created_at) VALUES ($1, $2, $3, $4, 0, $5)",
        )
        .bind(res.kind.as_str())
        .bind(res.name.clone())
        .bind(bucket)
        .bind(by.user.0)
        .bind(int(now))
        .execute(&mut *tx)
        .await
        .map_err(DbError);
        match inserted {
            Ok(_) => {}
            Err(e) if e.is_unique_violation() => return Err(PermError::NameTaken),
            Err(e) => return Err(e.into()),
        }
        audit::append(&mut tx, now, Entry::by(by, AuditAction::ResourceCreated, res.to_string(), "")).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers `res` as owned by `owner` if it has no record yet, and says
    /// whether it did. Admin only: this is how data put before accounts
    /// existed gets an owner (the gateway, at its first start with
    /// accounts, adopts every existing bucket and file for the user it maps
    /// the old credential to).
    pub async fn adopt_resource(&self, admin: &Principal, res: &ResourceRef, owner: UserId) -> Result<bool, PermError> {
        if !admin.is_admin() {
            return Err(PermError::Denied);
        }
        self.get_user(owner).await?.ok_or(PermError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let bucket = if res.kind.in_bucket() { res.bucket_name().map(str::to_string) } else { None };
        let n = sqlx::query(
            "INSERT INTO resources (kind, name, bucket, owner_id, public_read, created_at) VALUES ($1, $2, $3, $4, 0, $5) \
             ON CONFLICT (kind, name) DO NOTHING",
        )
        .bind(res.kind.as_str())
        .bind(res.name.clone())
        .bind(bucket)
        .bind(owner.0)
        .bind(int(now))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let detail = format!("adopted for {owner}");
        audit::append(&mut tx, now, Entry::by(admin, AuditAction::ResourceCreated, res.to_string(), detail)).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The id of `res`'s record; a resource in a bucket without one gets a
    /// record owned by the bucket's owner (so it can carry its own grants).
    pub(crate) async fn record_id(&self, tx: &mut crate::db::Tx, res: &ResourceRef) -> Result<Option<i64>, PermError> {
        let found = sqlx::query("SELECT id FROM resources WHERE kind = $1 AND name = $2")
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(r) = found {
            return Ok(Some(r.try_get("id")?));
        }
        let Some(bucket) = res.bucket_name().filter(|_| res.kind.in_bucket()) else { return Ok(None) };
        let owner = sqlx::query("SELECT owner_id FROM resources WHERE kind = 'bucket' AND name = $1")
            .bind(bucket.to_string())
            .fetch_optional(&mut **tx)
            .await?;
        let Some(owner) = owner else { return Ok(None) };
        let row = sqlx::query(
            "INSERT INTO resources (kind, name, bucket, owner_id, public_read, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5) RETURNING id",
        )
        .bind(res.kind.as_str())
        .bind(res.name.clone())
        .bind(bucket.to_string())
        .bind(owner.try_get::<i64, _>("owner_id")?)
        .bind(int(self.now()))
        .fetch_one(&mut **tx)
        .await?;
        Ok(Some(row.try_get("id")?))
    }

    /// Grants `grantee` a level on `res` (replacing any earlier grant;
    /// [`Level::None`] revokes). Needs `admin` on `res`.
    pub async fn grant(
        &self,
        by: &Principal,
        res: &ResourceRef,
        grantee: UserId,
        level: Level,
    ) -> Result<(), PermError> {
        self.require(by, Action::Admin, res).await?;
        self.get_user(grantee).await?.ok_or(PermError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let id = self.record_id(&mut tx, res).await?.ok_or(PermError::Denied)?;
        let action = if level == Level::None {
            sqlx::query("DELETE FROM grants WHERE resource_id = $1 AND grantee_id = $2")
                .bind(id)
                .bind(grantee.0)
                .execute(&mut *tx)
                .await?;
            AuditAction::PermissionRevoked
        } else {
            sqlx::query(
                "INSERT INTO grants (resource_id, grantee_id, level, granted_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (resource_id, grantee_id) DO UPDATE SET level = excluded.level, granted_at = excluded.granted_at",
            )
            .bind(id)
            .bind(grantee.0)
            .bind(level as i64)
            .bind(int(now))
            .execute(&mut *tx)
            .await?;
            AuditAction::PermissionGranted
        };
        let detail = format!("{} to {}", level.as_str(), grantee);
        audit::append(&mut tx, now, Entry::by(by, action, res.to_string(), detail)).await?;
        self.commit_narrowing(tx).await?;
        Ok(())
    }

    /// Commits `tx`, which may have narrowed a permission (the database's
    /// triggers moved the permission epoch), and tells this process's
    /// permission cache at once: a principal held across the change in
    /// this process sees it too, not only the next request's (other
    /// processes see it from their next authentication).
    pub(crate) async fn commit_narrowing(&self, mut tx: crate::db::Tx) -> Result<(), sqlx::Error> {
        let epoch: i64 = sqlx::query_scalar("SELECT n FROM perm_epoch WHERE id = 0").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        self.inner.perm_cache.narrowed(epoch);
        Ok(())
    }

    /// Revokes `grantee`'s grant on `res`.
    pub async fn revoke_grant(&self, by: &Principal, res: &ResourceRef, grantee: UserId) -> Result<(), PermError> {
        self.grant(by, res, grantee, Level::None).await
    }

    /// Makes `res` public (anyone may read and list it) or private. Needs
    /// `admin` on `res`.
    pub async fn set_public(&self, by: &Principal, res: &ResourceRef, public: bool) -> Result<(), PermError> {
        self.require(by, Action::Admin, res).await?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let id = self.record_id(&mut tx, res).await?.ok_or(PermError::Denied)?;
        sqlx::query("UPDATE resources SET public_read = $1 WHERE id = $2")
            .bind(i64::from(public))
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let detail = if public { "public" } else { "private" };
        audit::append(&mut tx, now, Entry::by(by, AuditAction::PublicReadChanged, res.to_string(), detail)).await?;
        self.commit_narrowing(tx).await?;
        Ok(())
    }

    /// Gives `res` to `new_owner`. Only its owner (or the admin) may; the
    /// new owner's own grant, now redundant, is dropped.
    pub async fn transfer(&self, by: &Principal, res: &ResourceRef, new_owner: UserId) -> Result<(), PermError> {
        if !by.scope.allows(Op::Admin, res.bucket_name(), res.key()) {
            return Err(PermError::Denied);
        }
        self.get_user(new_owner).await?.ok_or(PermError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let row = sqlx::query("SELECT id, owner_id FROM resources WHERE kind = $1 AND name = $2")
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(PermError::Denied)?;
        let id: i64 = row.try_get("id")?;
        if row.try_get::<i64, _>("owner_id")? != by.user.0 && !by.is_admin() {
            return Err(PermError::Denied);
        }
        sqlx::query("UPDATE resources SET owner_id = $1 WHERE id = $2")
            .bind(new_owner.0)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM grants WHERE resource_id = $1 AND grantee_id = $2")
            .bind(id)
            .bind(new_owner.0)
            .execute(&mut *tx)
            .await?;
        let detail = format!("to {new_owner}");
        audit::append(&mut tx, now, Entry::by(by, AuditAction::OwnershipTransferred, res.to_string(), detail)).await?;
        self.commit_narrowing(tx).await?;
        Ok(())
    }

    /// Deletes `res`'s record (a bucket's takes the records of everything in
    /// it). Needs `delete` on `res`. The caller deletes the data.
    pub async fn delete_resource(&self, by: &Principal, res: &ResourceRef) -> Result<(), PermError> {
        self.require(by, Action::Delete, res).await?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if res.kind == ResourceKind::Bucket {
            sqlx::query("DELETE FROM resources WHERE bucket = $1").bind(res.name.clone()).execute(&mut *tx).await?;
        }
        sqlx::query("DELETE FROM resources WHERE kind = $1 AND name = $2")
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, now, Entry::by(by, AuditAction::ResourceDeleted, res.to_string(), "")).await?;
        self.commit_narrowing(tx).await?;
        Ok(())
    }

    /// Owner, public flag and grants of `res`. Needs `admin` on it.
    pub async fn resource_info(&self, by: &Principal, res: &ResourceRef) -> Result<ResourceInfo, PermError> {
        self.require(by, Action::Admin, res).await?;
        let row = sqlx::query("SELECT id, owner_id, public_read FROM resources WHERE kind = $1 AND name = $2")
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or(PermError::Denied)?;
        let grants = sqlx::query("SELECT grantee_id, level FROM grants WHERE resource_id = $1 ORDER BY grantee_id")
            .bind(row.try_get::<i64, _>("id")?)
            .fetch_all(&self.db().pool)
            .await?
            .iter()
            .map(|g| Ok((UserId(g.try_get("grantee_id")?), Level::from_i64(g.try_get("level")?))))
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(ResourceInfo {
            resource: res.clone(),
            owner: UserId(row.try_get("owner_id")?),
            public_read: row.try_get::<i64, _>("public_read")? != 0,
            grants,
        })
    }

    /// Who owns `res`, if it is registered: for the gateway to charge a
    /// download made through a resource of someone not signed in as its
    /// owner (a share link's visitor). Says nothing to a caller: the
    /// gateway asks it of a resource it already resolved.
    pub async fn owner_of(&self, res: &ResourceRef) -> Result<Option<UserId>, DbError> {
        let row = sqlx::query("SELECT owner_id FROM resources WHERE kind = $1 AND name = $2")
            .bind(res.kind.as_str())
            .bind(res.name.clone())
            .fetch_optional(&self.db().pool)
            .await?;
        Ok(row.map(|r| r.try_get::<i64, _>("owner_id").map(UserId)).transpose()?)
    }

    /// The resources `user` owns (the user, or the admin).
    pub async fn list_owned(&self, by: &Principal, user: UserId) -> Result<Vec<ResourceRef>, PermError> {
        if by.user != user && !by.is_admin() {
            return Err(PermError::Denied);
        }
        let rows = sqlx::query("SELECT kind, name FROM resources WHERE owner_id = $1 ORDER BY kind, name")
            .bind(user.0)
            .fetch_all(&self.db().pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(res) = ResourceRef::from_db(&r.try_get::<String, _>("kind")?, r.try_get("name")?) {
                out.push(res);
            }
        }
        Ok(out)
    }
}
