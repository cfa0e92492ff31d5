//! API keys and S3 access keys: credentials a user gives to programs,
//! each named, optionally expiring, listable, revocable and **scoped**.
//!
//! A [`Scope`] is a set of operations (read, write, delete, list, admin)
//! and optionally a list of buckets or bucket prefixes; a key acts as its
//! user, narrowed by its scope. A key can mint another only within its own
//! scope and expiry ([`Scope::covers`]), so a leaked narrow key never grows
//! into a broad one.
//!
//! Storage: an API key (`dmak_...`) is stored as its SHA-256 hash
//! (`secret.rs`). An S3 secret must be available in clear to verify
//! SigV4 signatures, so it is stored *sealed* with the caller's
//! [`crate::SealingKey`] (XChaCha20-Poly1305, bound to the access key id).
//! Every lookup reads the row, so a revoked key fails on the next request.

use sqlx::Row;
use zeroize::Zeroizing;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, int, uint};
use crate::keylogin::valid_label;
use crate::secret::{self, TokenKind};
use crate::sessions::AuthError;
use crate::users::{Role, UserId};
use crate::{Principal, Services, Via};

/// The query of a key with its user and the user's tier, by `$1` in the
/// key's `column`, for [`Services::live_key`].
macro_rules! key_by {
    ($column:literal) => {
        concat!(
            "SELECT k.key_id, k.kind, k.user_id, k.name, k.ops, k.targets, k.created_at, k.expires_at, \
             k.revoked_at, k.sealed_secret, u.name AS uname, u.role, u.disabled, ",
            tier_columns!(),
            " FROM api_keys k JOIN users u ON u.id = k.user_id JOIN tiers tr ON tr.name = u.tier WHERE k.",
            $column,
            " = $1"
        )
    };
}
/// One operation a key may perform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Read objects and files.
    Read,
    /// Write (put) objects and files.
    Write,
    /// Delete objects and files.
    Delete,
    /// List buckets and objects.
    List,
    /// Manage: grants, public flags, keys for others; the admin role's
    /// powers.
    Admin,
}

impl Op {
    const ALL: [Op; 5] = [Op::Read, Op::Write, Op::Delete, Op::List, Op::Admin];

    fn bit(self) -> u8 {
        match self {
            Op::Read => 1,
            Op::Write => 2,
            Op::Delete => 4,
            Op::List => 8,
            Op::Admin => 16,
        }
    }

    /// The operation's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Delete => "delete",
            Op::List => "list",
            Op::Admin => "admin",
        }
    }

    /// Parses an operation's name.
    pub fn parse(s: &str) -> Option<Op> {
        Op::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// A set of operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Ops(u8);

impl Ops {
    /// Every operation.
    pub const ALL: Ops = Ops(31);

    /// The set of `ops`.
    pub fn of(ops: &[Op]) -> Ops {
        Ops(ops.iter().fold(0, |b, o| b | o.bit()))
    }

    /// Whether `op` is in the set.
    pub fn contains(self, op: Op) -> bool {
        self.0 & op.bit() != 0
    }

    /// Whether every operation of `other` is in the set.
    pub fn covers(self, other: Ops) -> bool {
        other.0 & !self.0 == 0
    }

    /// The operations, in a fixed order.
    pub fn iter(self) -> impl Iterator<Item = Op> {
        Op::ALL.into_iter().filter(move |o| self.contains(*o))
    }
}

/// A bucket, or a prefix of keys within one, that a key is limited to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeTarget {
    /// The bucket.
    pub bucket: String,
    /// A key prefix within it, or `None` for the whole bucket.
    pub prefix: Option<String>,
}

impl ScopeTarget {
    /// Whether this target includes all of `other`.
    fn covers(&self, other: &ScopeTarget) -> bool {
        self.bucket == other.bucket
            && match (&self.prefix, &other.prefix) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.starts_with(mine.as_str()),
            }
    }

    /// Whether the object `key` of `bucket` (or the whole bucket, when
    /// `key` is `None`) is inside this target.
    pub fn includes(&self, bucket: &str, key: Option<&str>) -> bool {
        self.bucket == bucket
            && match (&self.prefix, key) {
                (None, _) => true,
                (Some(p), Some(k)) => k.starts_with(p.as_str()),
                (Some(_), None) => false,
            }
    }
}

/// What a credential allows: operations, and optionally targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// The operations.
    pub ops: Ops,
    /// The buckets or prefixes, or `None` for everything the user may reach.
    pub targets: Option<Vec<ScopeTarget>>,
}

/// A scope that cannot be stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// No operation.
    #[error("a key needs at least one operation (read, write, delete, list, admin)")]
    NoOps,
    /// A bucket name outside S3's rules.
    #[error("invalid bucket name in scope: 3 to 63 characters a-z, 0-9, '.', '-'")]
    BadBucket,
    /// A prefix too long or with control characters.
    #[error("invalid prefix in scope: at most 1024 bytes, no control characters")]
    BadPrefix,
    /// An empty target list (which would allow nothing).
    #[error("an empty target list allows nothing: omit it for all buckets")]
    NoTargets,
    /// Too many targets.
    #[error("too many targets in scope: at most 100")]
    TooManyTargets,
}

/// S3's bucket naming rules (the subset that matters here).
pub fn valid_bucket(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

impl Scope {
    /// Everything: what a session or access token carries.
    pub fn full() -> Scope {
        Scope { ops: Ops::ALL, targets: None }
    }

    /// `ops` on every bucket.
    pub fn ops(ops: &[Op]) -> Scope {
        Scope { ops: Ops::of(ops), targets: None }
    }

    /// Checks the scope can be stored.
    pub fn validate(&self) -> Result<(), ScopeError> {
        if self.ops.0 == 0 {
            return Err(ScopeError::NoOps);
        }
        if let Some(t) = &self.targets {
            if t.is_empty() {
                return Err(ScopeError::NoTargets);
            }
            if t.len() > 100 {
                return Err(ScopeError::TooManyTargets);
            }
            for t in t {
                if !valid_bucket(&t.bucket) {
                    return Err(ScopeError::BadBucket);
                }
                if let Some(p) = &t.prefix
                    && (p.len() > 1024 || p.chars().any(char::is_control))
                {
                    return Err(ScopeError::BadPrefix);
                }
            }
        }
        Ok(())
    }

    /// Whether this scope includes all of `other`: its operations, and each
    /// of its targets (a scope with targets never covers one without).
    pub fn covers(&self, other: &Scope) -> bool {
        self.ops.covers(other.ops)
            && match (&self.targets, &other.targets) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(mine), Some(theirs)) => theirs.iter().all(|t| mine.iter().any(|m| m.covers(t))),
            }
    }

    /// Whether the scope allows `op` on the object `key` of `bucket` (or
    /// the bucket itself when `key` is `None`). Resources outside buckets
    /// (files, share links) are reachable only by a scope without targets.
    pub fn allows(&self, op: Op, bucket: Option<&str>, key: Option<&str>) -> bool {
        self.ops.contains(op)
            && match (&self.targets, bucket) {
                (None, _) => true,
                (Some(_), None) => false,
                (Some(ts), Some(b)) => ts.iter().any(|t| t.includes(b, key)),
            }
    }

    /// The stored form of the targets: one per line, `bucket` or
    /// `bucket/prefix` (a bucket has no `/`, a prefix no control character,
    /// so the encoding is unambiguous).
    fn encode_targets(&self) -> Option<String> {
        self.targets.as_ref().map(|ts| {
            ts.iter()
                .map(|t| match &t.prefix {
                    Some(p) => format!("{}/{}", t.bucket, p),
                    None => t.bucket.clone(),
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
    }

    fn decode(ops: i64, targets: Option<String>) -> Scope {
        let targets = targets.map(|s| {
            s.split('\n')
                .map(|line| match line.split_once('/') {
                    Some((b, p)) => ScopeTarget { bucket: b.to_string(), prefix: Some(p.to_string()) },
                    None => ScopeTarget { bucket: line.to_string(), prefix: None },
                })
                .collect()
        });
        Scope { ops: Ops(u8::try_from(ops).unwrap_or(0) & Ops::ALL.0), targets }
    }

    /// The scope as text for listings and the audit log.
    pub fn describe(&self) -> String {
        let ops: Vec<_> = self.ops.iter().map(Op::as_str).collect();
        match self.encode_targets() {
            Some(t) => format!("{} on {}", ops.join(","), t.replace('\n', ",")),
            None => ops.join(","),
        }
    }
}

/// The kind of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// A bearer API key (`dmak_...`).
    Api,
    /// An S3 access key (id and secret, for SigV4).
    S3,
}

impl KeyKind {
    fn as_str(self) -> &'static str {
        match self {
            KeyKind::Api => "api",
            KeyKind::S3 => "s3",
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// The user's label for it.
    pub name: &'a str,
    /// What it allows.
    pub scope: Scope,
    /// When it stops working (Unix seconds), or never.
    pub expires_at: Option<u64>,
}

/// A key, as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The public id: the S3 access key id, or an API key's id.
    pub key_id: String,
    /// API or S3.
    pub kind: KeyKind,
    /// Whose it is.
    pub owner: UserId,
    /// The label.
    pub name: String,
    /// What it allows.
    pub scope: Scope,
    /// When it was created (Unix seconds).
    pub created_at: u64,
    /// When it expires, if ever.
    pub expires_at: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// A new API key: shown once, never retrievable again.
#[derive(Clone)]
pub struct CreatedApiKey {
    /// The listing.
    pub info: KeyInfo,
    /// The bearer secret (`dmak_...`).
    pub token: Zeroizing<String>,
}

/// A new S3 key.
#[derive(Clone)]
pub struct CreatedS3Key {
    /// The listing.
    pub info: KeyInfo,
    /// The access key id (also `info.key_id`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
}

// Secrets never reach a log through `{:?}`.
impl std::fmt::Debug for CreatedApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedApiKey").field("info", &self.info).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for CreatedS3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedS3Key").field("info", &self.info).finish_non_exhaustive()
    }
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Credentials").field("principal", &self.principal).finish_non_exhaustive()
    }
}

/// An S3 key's secret and whose it is, for the gateway's SigV4 check.
pub struct S3Credentials {
    /// The key's user, narrowed by the key's scope.
    pub principal: Principal,
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
}

/// A key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The label is not acceptable.
    #[error("invalid key name: 1 to 64 characters, no control characters")]
    InvalidName,
    /// The scope is not acceptable.
    #[error("invalid scope: {0}")]
    InvalidScope(#[from] ScopeError),
    /// The expiry is in the past.
    #[error("the expiry is in the past: give a future time")]
    AlreadyExpired,
    /// The new key would allow more than the credential creating it.
    #[error("a key can only create keys within its own scope and expiry: use a broader credential")]
    Broader,
    /// The key to revoke is broader than the key revoking it.
    #[error("a key can only revoke keys within its own scope: use a login or a broader key")]
    OutOfScope,
    /// Not the caller's key or user (and the caller is not the admin).
    #[error("not permitted: keys are managed by their user or the administrator")]
    NotPermitted,
    /// No such key.
    #[error("no such key")]
    NotFound,
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for KeyError {
    fn from(e: sqlx::Error) -> Self {
        KeyError::Database(DbError(e))
    }
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn key_info(r: &sqlx::any::AnyRow) -> Result<KeyInfo, sqlx::Error> {
    Ok(KeyInfo {
        key_id: r.try_get("key_id")?,
        kind: if r.try_get::<String, _>("kind")? == "s3" { KeyKind::S3 } else { KeyKind::Api },
        owner: UserId(r.try_get("user_id")?),
        name: r.try_get("name")?,
        scope: Scope::decode(r.try_get("ops")?, r.try_get("targets")?),
        created_at: uint(r.try_get("created_at")?),
        expires_at: r.try_get::<Option<i64>, _>("expires_at")?.map(uint),
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
    })
}

impl Services {
    /// Checks that `by` may create `new` for `owner`: its own user (or the
    /// admin for anyone), a scope within its own, an expiry within its own.
    async fn check_mint(&self, by: &Principal, owner: UserId, new: &NewKey<'_>) -> Result<(), KeyError> {
        if !valid_label(new.name) {
            return Err(KeyError::InvalidName);
        }
        new.scope.validate()?;
        if new.expires_at.is_some_and(|t| t <= self.now()) {
            return Err(KeyError::AlreadyExpired);
        }
        if owner != by.user && !by.is_admin() {
            return Err(KeyError::NotPermitted);
        }
        if !by.scope.covers(&new.scope) {
            return Err(KeyError::Broader);
        }
        if let Some(limit) = by.expires_at
            && new.expires_at.is_none_or(|t| t > limit)
        {
            return Err(KeyError::Broader);
        }
        self.get_user(owner).await?.ok_or(KeyError::NoSuchUser)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_key(
        &self,
        by: &Principal,
        owner: UserId,
        kind: KeyKind,
        key_id: &str,
        secret_hash: Option<Vec<u8>>,
        sealed: Option<Vec<u8>>,
        new: &NewKey<'_>,
    ) -> Result<KeyInfo, KeyError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (key_id, kind, user_id, name, secret_hash, sealed_secret, seal_key_id, ops, targets, \
             created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(key_id.to_string())
        .bind(kind.as_str())
        .bind(owner.0)
        .bind(new.name.to_string())
        .bind(secret_hash)
        .bind(sealed.clone())
        .bind(sealed.map(|_| self.inner.sealing.id().to_string()))
        .bind(i64::from(new.scope.ops.0))
        .bind(new.scope.encode_targets())
        .bind(int(now))
        .bind(new.expires_at.map(int))
        .execute(&mut *tx)
        .await?;
        let detail = format!("{} key for {}: {}", kind.as_str(), owner, new.scope.describe());
        audit::append(&mut tx, now, Entry::by(by, AuditAction::KeyCreated, key_id, detail)).await?;
        tx.commit().await?;
        Ok(KeyInfo {
            key_id: key_id.to_string(),
            kind,
            owner,
            name: new.name.to_string(),
            scope: new.scope.clone(),
            created_at: now,
            expires_at: new.expires_at,
            revoked: false,
        })
    }

    /// Creates an API key for `owner` (the caller's own user, or anyone's
    /// by the admin), within the caller's scope.
    pub async fn create_api_key(
        &self,
        by: &Principal,
        owner: UserId,
        new: NewKey<'_>,
    ) -> Result<CreatedApiKey, KeyError> {
        self.check_mint(by, owner, &new).await?;
        let (token, hash) = secret::mint(TokenKind::ApiKey);
        // The public id is a short digest of the secret: shown in listings,
        // it names the key without revealing it.
        let key_id = format!("ak_{}", &hex::encode(secret::sha256(&hash))[..16]);
        let info = self.insert_key(by, owner, KeyKind::Api, &key_id, Some(hash.to_vec()), None, &new).await?;
        Ok(CreatedApiKey { info, token })
    }

    /// Creates an S3 access key for `owner`, within the caller's scope.
    pub async fn create_s3_key(
        &self,
        by: &Principal,
        owner: UserId,
        new: NewKey<'_>,
    ) -> Result<CreatedS3Key, KeyError> {
        self.check_mint(by, owner, &new).await?;
        // AWS's shapes: a 20-character id, a 40-character secret.
        let access_key_id = format!("DM{}", secret::random_id(18, ID_ALPHABET));
        let secret_access_key = Zeroizing::new(secret::random_id(40, SECRET_ALPHABET));
        let sealed = self.inner.sealing.seal(&access_key_id, secret_access_key.as_bytes());
        let info = self.insert_key(by, owner, KeyKind::S3, &access_key_id, None, Some(sealed), &new).await?;
        Ok(CreatedS3Key { info, access_key_id, secret_access_key })
    }

    /// Registers an S3 key made before accounts existed (kept by the
    /// gateway's own index) for `owner`, keeping its id and secret so the
    /// clients configured with it go on working. Admin only. Returns false,
    /// changing nothing, when the id is already known (a second start).
    pub async fn import_s3_key(
        &self,
        admin: &Principal,
        owner: UserId,
        access_key_id: &str,
        secret_access_key: &str,
        new: NewKey<'_>,
    ) -> Result<bool, KeyError> {
        if !admin.is_admin() {
            return Err(KeyError::NotPermitted);
        }
        self.check_mint(admin, owner, &new).await?;
        let known = sqlx::query("SELECT 1 AS one FROM api_keys WHERE key_id = $1")
            .bind(access_key_id.to_string())
            .fetch_optional(&self.db().pool)
            .await?;
        if known.is_some() {
            return Ok(false);
        }
        let sealed = self.inner.sealing.seal(access_key_id, secret_access_key.as_bytes());
        self.insert_key(admin, owner, KeyKind::S3, access_key_id, None, Some(sealed), &new).await?;
        Ok(true)
    }

    /// The keys of `owner` (the user, or the admin), revoked ones included.
    pub async fn list_keys(&self, by: &Principal, owner: UserId) -> Result<Vec<KeyInfo>, KeyError> {
        if owner != by.user && !by.is_admin() {
            return Err(KeyError::NotPermitted);
        }
        let rows = sqlx::query(
            "SELECT key_id, kind, user_id, name, ops, targets, created_at, expires_at, revoked_at \
             FROM api_keys WHERE user_id = $1 ORDER BY id",
        )
        .bind(owner.0)
        .fetch_all(&self.db().pool)
        .await?;
        Ok(rows.iter().map(key_info).collect::<Result<_, _>>()?)
    }

    /// Revokes a key by its public id: refused from the next lookup on. A
    /// scoped key revokes only keys within its scope.
    pub async fn revoke_key(&self, by: &Principal, key_id: &str) -> Result<(), KeyError> {
        if key_id.len() > 64 {
            return Err(KeyError::NotFound);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let row = sqlx::query("SELECT user_id, ops, targets FROM api_keys WHERE key_id = $1")
            .bind(key_id.to_string())
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(KeyError::NotFound)?;
        let owner = UserId(row.try_get("user_id")?);
        if owner != by.user && !by.is_admin() {
            // Someone else's key: answer as if it did not exist.
            return Err(KeyError::NotFound);
        }
        // A key revokes only keys within its own scope: a leaked narrow key
        // cannot take its user's broader keys away.
        let scope = Scope::decode(row.try_get("ops")?, row.try_get("targets")?);
        if !by.is_admin() && !by.scope.covers(&scope) {
            return Err(KeyError::OutOfScope);
        }
        sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE key_id = $2 AND revoked_at IS NULL")
            .bind(int(now))
            .bind(key_id.to_string())
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, now, Entry::by(by, AuditAction::KeyRevoked, key_id, owner.to_string())).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Looks a key row up by a column ([`key_by!`]), checking it is live and its user
    /// enabled, and returns its principal and sealed secret.
    async fn live_key(
        &self,
        query: &'static str,
        kind: KeyKind,
        arg: Vec<u8>,
    ) -> Result<(Principal, Option<Vec<u8>>), AuthError> {
        let q = sqlx::query(query);
        // API keys are found by their hash (bytes), S3 keys by their id (text).
        let q = match kind {
            KeyKind::Api => q.bind(arg),
            KeyKind::S3 => q.bind(String::from_utf8(arg).map_err(|_| AuthError::Malformed)?),
        };
        let row = q.fetch_optional(&self.db().pool).await?.ok_or(AuthError::Invalid)?;
        let info = key_info(&row)?;
        if info.kind != kind || info.revoked {
            return Err(AuthError::Invalid);
        }
        if info.expires_at.is_some_and(|t| t <= self.now()) {
            return Err(AuthError::Expired);
        }
        if row.try_get::<i64, _>("disabled")? != 0 {
            return Err(AuthError::Disabled);
        }
        let via = match kind {
            KeyKind::Api => Via::ApiKey(info.key_id.clone()),
            KeyKind::S3 => Via::S3Key(info.key_id.clone()),
        };
        let role = if row.try_get::<String, _>("role")? == "admin" { Role::Admin } else { Role::User };
        let principal = Principal {
            user: info.owner,
            name: row.try_get("uname")?,
            role,
            scope: info.scope,
            via,
            expires_at: info.expires_at,
            tier: crate::quota::tier_from_joined_row(&row)?,
            perm_epoch: row.try_get("perm_epoch")?,
        };
        Ok((principal, row.try_get("sealed_secret")?))
    }

    pub(crate) async fn authenticate_api_key(&self, token: &str) -> Result<Principal, AuthError> {
        let hash = secret::parse(TokenKind::ApiKey, token).ok_or(AuthError::Malformed)?;
        let q = key_by!("secret_hash");
        Ok(self.live_key(q, KeyKind::Api, hash.to_vec()).await?.0)
    }

    /// The secret and principal of a live S3 access key, for the gateway to
    /// verify a SigV4 signature with. Unknown, revoked and expired keys,
    /// and keys of disabled users, are refused.
    pub async fn s3_credentials(&self, access_key_id: &str) -> Result<S3Credentials, AuthError> {
        if access_key_id.len() != 20 || !access_key_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(AuthError::Malformed);
        }
        let q = key_by!("key_id");
        let (principal, sealed) = self.live_key(q, KeyKind::S3, access_key_id.as_bytes().to_vec()).await?;
        let secret = sealed
            .and_then(|s| self.inner.sealing.open(access_key_id, &s))
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .ok_or(AuthError::Invalid)?;
        Ok(S3Credentials { principal, secret_access_key: Zeroizing::new(secret) })
    }
}
