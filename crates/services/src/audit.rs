//! The audit log: an append-only, hash-chained record of security-relevant
//! actions (logins and failed logins, keys created and revoked, permissions
//! granted and revoked, ownership transferred, deletions, quota and tier
//! changes, admin actions).
//!
//! # The chain
//! Row `n` stores `hash_n = SHA-256("datamesh-audit-v1" ‖ hash_{n-1} ‖
//! seq ‖ at ‖ actor_id ‖ actor ‖ action ‖ target ‖ detail ‖ source)`, with
//! integers big-endian and each string length-prefixed (u32), so no two
//! different rows encode alike; `hash_0` is 32 zero bytes. A one-row table
//! `audit_head` holds the last sequence number and hash, and every append
//! updates it in the transaction of the action it records (the `UPDATE`
//! also serialises appends across gateways on one PostgreSQL).
//! [`Services::audit_verify`] recomputes the chain: an edited row breaks
//! its own hash, a removed row breaks the sequence and the next row's link,
//! and a removed tail no longer reaches the head. Someone able to rewrite
//! the whole table *and* the head can forge a consistent chain; publishing
//! the head hash ([`AuditReport::head`]) elsewhere anchors it.
//!
//! # No secrets
//! Rows are written only by this crate, from names and ids: never a
//! password, token, key secret or key material. A failed login records the
//! attempted name only when such a user exists (people type passwords into
//! name fields).

use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::Principal;
use crate::db::{DbError, Tx, int, uint};
use crate::services::Services;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuditAction {
    /// A successful login (detail: the method).
    Login,
    /// A failed login (detail: why).
    LoginFailed,
    /// A token family or session ended by its holder.
    Logout,
    /// A rotated refresh token was presented again: its family is revoked.
    RefreshReuse,
    /// A user signed up or was created.
    UserCreated,
    /// A user was disabled.
    UserDisabled,
    /// A user was enabled again.
    UserEnabled,
    /// A user was deleted.
    UserDeleted,
    /// A password was changed or reset.
    PasswordChanged,
    /// A user's role changed.
    RoleChanged,
    /// A login public key was added.
    PublicKeyAdded,
    /// A login public key was removed.
    PublicKeyRemoved,
    /// An API or S3 key was created.
    KeyCreated,
    /// An API or S3 key was revoked.
    KeyRevoked,
    /// A resource was registered with its owner.
    ResourceCreated,
    /// A resource was deleted.
    ResourceDeleted,
    /// A permission was granted.
    PermissionGranted,
    /// A permission was revoked.
    PermissionRevoked,
    /// A resource's public-read flag changed.
    PublicReadChanged,
    /// A resource changed owner.
    OwnershipTransferred,
    /// A tier's limits were edited.
    TierChanged,
    /// A user was moved to another tier.
    UserTierChanged,
    /// The bootstrap admin was created.
    AdminBootstrap,
}

impl AuditAction {
    /// The action's stable name in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Login => "login",
            AuditAction::LoginFailed => "login_failed",
            AuditAction::Logout => "logout",
            AuditAction::RefreshReuse => "refresh_reuse",
            AuditAction::UserCreated => "user_created",
            AuditAction::UserDisabled => "user_disabled",
            AuditAction::UserEnabled => "user_enabled",
            AuditAction::UserDeleted => "user_deleted",
            AuditAction::PasswordChanged => "password_changed",
            AuditAction::RoleChanged => "role_changed",
            AuditAction::PublicKeyAdded => "public_key_added",
            AuditAction::PublicKeyRemoved => "public_key_removed",
            AuditAction::KeyCreated => "key_created",
            AuditAction::KeyRevoked => "key_revoked",
            AuditAction::ResourceCreated => "resource_created",
            AuditAction::ResourceDeleted => "resource_deleted",
            AuditAction::PermissionGranted => "permission_granted",
            AuditAction::PermissionRevoked => "permission_revoked",
            AuditAction::PublicReadChanged => "public_read_changed",
            AuditAction::OwnershipTransferred => "ownership_transferred",
            AuditAction::TierChanged => "tier_changed",
            AuditAction::UserTierChanged => "user_tier_changed",
            AuditAction::AdminBootstrap => "admin_bootstrap",
        }
    }
}

/// One row to append.
pub(crate) struct Entry {
    pub(crate) actor: (Option<i64>, String),
    pub(crate) action: AuditAction,
    pub(crate) target: String,
    pub(crate) detail: String,
    pub(crate) source: String,
}

impl Entry {
    /// An entry by `principal`.
    pub(crate) fn by(
        p: &Principal,
        action: AuditAction,
        target: impl Into<String>,
        detail: impl Into<String>,
    ) -> Entry {
        Entry { actor: p.actor(), action, target: target.into(), detail: detail.into(), source: String::new() }
    }

    /// An entry with no authenticated actor (a login attempt, a sign-up).
    pub(crate) fn anonymous(action: AuditAction, target: impl Into<String>, detail: impl Into<String>) -> Entry {
        Entry {
            actor: (None, String::new()),
            action,
            target: target.into(),
            detail: detail.into(),
            source: String::new(),
        }
    }

    /// The same entry from a source address.
    pub(crate) fn with_source(mut self, source: Option<std::net::IpAddr>) -> Entry {
        self.source = source.map(|a| a.to_string()).unwrap_or_default();
        self
    }
}

/// One row of the log, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// The acting user's id, if authenticated.
    pub actor_id: Option<i64>,
    /// The acting user's name at the time (empty if anonymous).
    pub actor: String,
    /// What happened ([`AuditAction::as_str`]).
    pub action: String,
    /// What it happened to.
    pub target: String,
    /// Details (never a secret).
    pub detail: String,
    /// The source address, if known.
    pub source: String,
    /// This row's chain hash.
    pub hash: [u8; 32],
}

/// One page of the log.
#[derive(Debug, Clone)]
pub struct AuditPage {
    /// The rows, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` to get the next page; `None` at the end.
    pub next: Option<u64>,
}

/// The result of a successful verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Rows checked.
    pub rows: u64,
    /// The chain's head hash: publish it elsewhere to anchor the log.
    pub head: [u8; 32],
}

/// Reading or verifying the log failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Only an admin reads the audit log.
    #[error("only an administrator may read the audit log")]
    NotAdmin,
    /// The chain is broken at `seq`: a row was edited or removed.
    #[error("the audit log is broken at row {seq}: {what}; restore the database from a backup and investigate")]
    Broken {
        /// The first row that does not verify.
        seq: u64,
        /// What does not match.
        what: &'static str,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for AuditError {
    fn from(e: sqlx::Error) -> Self {
        AuditError::Database(DbError(e))
    }
}

#[allow(clippy::too_many_arguments)]
fn chain_hash(
    prev: &[u8],
    seq: u64,
    at: u64,
    actor_id: Option<i64>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    source: &str,
) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"datamesh-audit-v1");
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(at.to_be_bytes());
    match actor_id {
        Some(id) => {
            h.update([1]);
            h.update(id.to_be_bytes());
        }
        None => h.update([0]),
    }
    for s in [actor, action, target, detail, source] {
        h.update((s.len() as u32).to_be_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().into()
}

/// Appends `e` in `tx`, the transaction of the action it records.
pub(crate) async fn append(tx: &mut Tx, at: u64, e: Entry) -> Result<(), DbError> {
    let head = sqlx::query("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
        .fetch_one(&mut **tx)
        .await?;
    let seq = uint(head.try_get::<i64, _>("seq")?);
    let prev: Vec<u8> = head.try_get("hash")?;
    let (actor_id, actor) = e.actor;
    let action = e.action.as_str();
    let hash = chain_hash(&prev, seq, at, actor_id, &actor, action, &e.target, &e.detail, &e.source);
    sqlx::query(
        "INSERT INTO audit_log (seq, at, actor_id, actor, action, target, detail, source, prev_hash, hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(int(seq))
    .bind(int(at))
    .bind(actor_id)
    .bind(actor)
    .bind(action)
    .bind(e.target)
    .bind(e.detail)
    .bind(e.source)
    .bind(prev)
    .bind(hash.to_vec())
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1").bind(hash.to_vec()).execute(&mut **tx).await?;
    Ok(())
}

fn record(row: &sqlx::any::AnyRow) -> Result<(AuditRecord, Vec<u8>), sqlx::Error> {
    let hash: Vec<u8> = row.try_get("hash")?;
    let rec = AuditRecord {
        seq: uint(row.try_get("seq")?),
        at: uint(row.try_get("at")?),
        actor_id: row.try_get("actor_id")?,
        actor: row.try_get("actor")?,
        action: row.try_get("action")?,
        target: row.try_get("target")?,
        detail: row.try_get("detail")?,
        source: row.try_get("source")?,
        hash: hash.as_slice().try_into().unwrap_or([0; 32]),
    };
    Ok((rec, row.try_get("prev_hash")?))
}

const SELECT: &str = "SELECT seq, at, actor_id, actor, action, target, detail, source, prev_hash, hash FROM audit_log \
     WHERE seq > $1 ORDER BY seq LIMIT $2";

impl Services {
    /// Up to `limit` rows (at most 1,000) after sequence number `after`
    /// (0 for the start). Admin only.
    pub async fn audit_list(&self, admin: &Principal, after: u64, limit: u32) -> Result<AuditPage, AuditError> {
        if !admin.is_admin() {
            return Err(AuditError::NotAdmin);
        }
        self.audit_page(after, limit).await
    }

    async fn audit_page(&self, after: u64, limit: u32) -> Result<AuditPage, AuditError> {
        let limit = limit.clamp(1, 1000);
        let rows = sqlx::query(SELECT).bind(int(after)).bind(i64::from(limit)).fetch_all(&self.db().pool).await?;
        let records = rows.iter().map(|r| record(r).map(|(rec, _)| rec)).collect::<Result<Vec<_>, _>>()?;
        let next = if records.len() == limit as usize { records.last().map(|r| r.seq) } else { None };
        Ok(AuditPage { records, next })
    }

    /// Recomputes the whole chain and compares it with the head. Admin
    /// only. `Err(Broken)` names the first row that does not verify.
    pub async fn audit_verify(&self, admin: &Principal) -> Result<AuditReport, AuditError> {
        if !admin.is_admin() {
            return Err(AuditError::NotAdmin);
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.db().pool).await?;
        let head_seq = uint(head.try_get("seq")?);
        let head_hash: Vec<u8> = head.try_get("hash")?;
        let mut running = vec![0u8; 32];
        let mut expected = 1u64;
        loop {
            let rows = sqlx::query(SELECT).bind(int(expected - 1)).bind(1000i64).fetch_all(&self.db().pool).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let (r, prev) = record(row)?;
                if r.seq != expected {
                    return Err(AuditError::Broken { seq: expected, what: "row missing" });
                }
                if prev != running {
                    return Err(AuditError::Broken { seq: r.seq, what: "link to the previous row does not match" });
                }
                let h =
                    chain_hash(&prev, r.seq, r.at, r.actor_id, &r.actor, &r.action, &r.target, &r.detail, &r.source);
                if h != r.hash {
                    return Err(AuditError::Broken { seq: r.seq, what: "row content does not match its hash" });
                }
                running = h.to_vec();
                expected += 1;
            }
        }
        if expected - 1 != head_seq || running != head_hash {
            return Err(AuditError::Broken { seq: expected, what: "rows missing at the end of the log" });
        }
        Ok(AuditReport { rows: head_seq, head: running.as_slice().try_into().unwrap_or([0; 32]) })
    }
}
