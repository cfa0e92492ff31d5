//! Tiers and quotas.
//!
//! The tier table is data the admin edits ([`Services::set_tier`]); a tier
//! limits logical bytes stored, bytes downloaded per calendar month (UTC),
//! API calls per hour (enforced by [`crate::ratelimit`]), the size of one
//! file, and the number of files; `None` is unlimited. Sizes are decimal
//! (5 GB = 5,000,000,000 bytes). The defaults: free 5 GB / 50 GB a month /
//! 100 calls an hour / 100 MB a file / 1,000 files; premium 100 GB / 1 TB /
//! 10,000 calls; enterprise unlimited with the SLA flag.
//!
//! # Reservations: refused before accepted
//! An upload first [`Services::reserve`]s its bytes and files: one
//! conditional `UPDATE` adds them to the user's reserved counters only if
//! stored + reserved + requested stays within every limit, so concurrent
//! uploads (on any gateway) cannot together exceed a quota, and a refusal
//! names the quota ([`QuotaError::Exceeded`]). When the upload is stored,
//! [`Services::commit`] moves the reservation to the stored counters; when
//! it fails, [`Services::release`] returns it, so a failed upload counts
//! nothing. A multipart upload reserves as its parts arrive
//! ([`Services::extend`]). A reservation a crashed gateway never settled
//! is returned by [`Services::expire_reservations`] after
//! [`crate::Config::reservation_ttl`].
//!
//! At 80 % of a limit the answer carries a warning
//! ([`Reservation::warnings`], [`Usage::warnings`]) for the gateway to
//! raise its event and alert.

use sqlx::Row;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, Tx, int, uint};
use crate::users::UserId;
use crate::{Principal, Services};

/// A tier's limits (`None`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The name (`free`, `premium`, `enterprise`, or the admin's own).
    pub name: String,
    /// Logical bytes stored.
    pub max_stored_bytes: Option<u64>,
    /// Bytes downloaded per calendar month.
    pub max_transfer_bytes: Option<u64>,
    /// API calls per hour.
    pub max_calls_per_hour: Option<u32>,
    /// Size of one file.
    pub max_file_bytes: Option<u64>,
    /// Number of files.
    pub max_files: Option<u64>,
    /// Whether the tier comes with a service-level agreement.
    pub sla: bool,
}

/// A quota a request can exceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Bytes stored.
    Storage,
    /// Number of files.
    Files,
    /// Size of one file.
    FileSize,
    /// Bytes downloaded this month.
    Transfer,
}

impl Quota {
    /// The quota's name, as the API reports it.
    pub fn as_str(self) -> &'static str {
        match self {
            Quota::Storage => "storage",
            Quota::Files => "files",
            Quota::FileSize => "file_size",
            Quota::Transfer => "transfer",
        }
    }
}

/// A user's usage and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// The user's tier.
    pub tier: Tier,
    /// Logical bytes stored.
    pub stored_bytes: u64,
    /// Files stored.
    pub files: u64,
    /// Bytes reserved by uploads in progress.
    pub reserved_bytes: u64,
    /// Files reserved by uploads in progress.
    pub reserved_files: u64,
    /// Bytes downloaded this calendar month.
    pub downloaded_bytes: u64,
    /// Quotas at or above 80 %.
    pub warnings: Vec<Quota>,
}

/// Bytes and files held for an upload until it is committed or released.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "a reservation must be committed or released"]
pub struct Reservation {
    /// Its id.
    pub id: i64,
    /// Whose.
    pub user: UserId,
    /// Bytes held.
    pub bytes: u64,
    /// Files held.
    pub files: u64,
    /// Quotas at or above 80 % once this reservation is counted.
    pub warnings: Vec<Quota>,
    /// The tier it was made under, which holds for the whole upload (its
    /// parts and chunks are checked against it without reading it again).
    tier: Tier,
}

/// A quota operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    /// The request would exceed a quota: nothing was counted.
    #[error("quota exceeded: {} (limit {limit}, used {used}, requested {requested}); delete data or move to a larger tier", quota.as_str())]
    Exceeded {
        /// Which quota.
        quota: Quota,
        /// Its limit.
        limit: u64,
        /// What is used (stored + reserved, or downloaded this month).
        used: u64,
        /// What the request asked for.
        requested: u64,
    },
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// No such tier.
    #[error("no such tier")]
    UnknownTier,
    /// No such reservation (already settled or expired).
    #[error("no such reservation: it was already committed, released or expired")]
    NoSuchReservation,
    /// The tier's name or limits are not acceptable.
    #[error("invalid tier: a name of 1 to 32 characters a-z, 0-9, '-', '_'")]
    InvalidTier,
    /// Only the admin edits tiers and moves users.
    #[error("not permitted: tiers are the administrator's")]
    NotPermitted,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for QuotaError {
    fn from(e: sqlx::Error) -> Self {
        QuotaError::Database(DbError(e))
    }
}

/// The month of a Unix time as `year * 12 + month0` (UTC), for the monthly
/// transfer counter.
pub(crate) fn month_of(unix_secs: u64) -> i64 {
    // Howard Hinnant's days-to-civil.
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    y * 12 + (m - 1)
}

fn opt(v: Option<i64>) -> Option<u64> {
    v.map(uint)
}

fn tier_from_row(r: &sqlx::any::AnyRow) -> Result<Tier, sqlx::Error> {
    tier_from_columns(r, &TIER_COLUMNS)
}

/// A tier's columns, in `Tier`'s field order: as the `tiers` table names
/// them, and as [`tier_columns!`] names them in a joined query.
const TIER_COLUMNS: [&str; 7] =
    ["name", "max_stored_bytes", "max_transfer_bytes", "max_calls_per_hour", "max_file_bytes", "max_files", "sla"];
const JOINED_TIER_COLUMNS: [&str; 7] = [
    "tier_name",
    "tier_max_stored_bytes",
    "tier_max_transfer_bytes",
    "tier_max_calls_per_hour",
    "tier_max_file_bytes",
    "tier_max_files",
    "tier_sla",
];

/// The tier of a row whose tier columns are named `c` (every
/// authenticated request reads one: no name is built at run time).
fn tier_from_columns(r: &sqlx::any::AnyRow, c: &[&str; 7]) -> Result<Tier, sqlx::Error> {
    Ok(Tier {
        name: r.try_get(c[0])?,
        max_stored_bytes: opt(r.try_get(c[1])?),
        max_transfer_bytes: opt(r.try_get(c[2])?),
        max_calls_per_hour: r.try_get::<Option<i64>, _>(c[3])?.map(|v| u32::try_from(v).unwrap_or(u32::MAX)),
        max_file_bytes: opt(r.try_get(c[4])?),
        max_files: opt(r.try_get(c[5])?),
        sla: r.try_get::<i64, _>(c[6])? != 0,
    })
}

/// The tier of a row selected with [`tier_columns!`].
pub(crate) fn tier_from_joined_row(r: &sqlx::any::AnyRow) -> Result<Tier, sqlx::Error> {
    tier_from_columns(r, &JOINED_TIER_COLUMNS)
}

fn near(used: u64, limit: Option<u64>) -> bool {
    limit.is_some_and(|l| used.saturating_mul(5) >= l.saturating_mul(4))
}

const TIER_COLUMNS_OF_USER: &str = "SELECT t.name, t.max_stored_bytes, t.max_transfer_bytes, t.max_calls_per_hour, \
     t.max_file_bytes, t.max_files, t.sla FROM tiers t JOIN users u ON u.tier = t.name WHERE u.id = $1";

impl Services {
    /// Every tier.
    pub async fn list_tiers(&self) -> Result<Vec<Tier>, DbError> {
        let rows = sqlx::query(
            "SELECT name, max_stored_bytes, max_transfer_bytes, max_calls_per_hour, max_file_bytes, max_files, sla \
             FROM tiers ORDER BY name",
        )
        .fetch_all(&self.db().pool)
        .await?;
        Ok(rows.iter().map(tier_from_row).collect::<Result<_, _>>()?)
    }

    /// `user`'s tier.
    pub async fn tier_of(&self, user: UserId) -> Result<Tier, QuotaError> {
        let row = sqlx::query(TIER_COLUMNS_OF_USER).bind(user.0).fetch_optional(&self.db().pool).await?;
        Ok(tier_from_row(&row.ok_or(QuotaError::NoSuchUser)?)?)
    }

    /// Creates or edits a tier. Admin only.
    pub async fn set_tier(&self, admin: &Principal, tier: &Tier) -> Result<(), QuotaError> {
        if !admin.is_admin() {
            return Err(QuotaError::NotPermitted);
        }
        let ok_name = !tier.name.is_empty()
            && tier.name.len() <= 32
            && tier.name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok_name {
            return Err(QuotaError::InvalidTier);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        sqlx::query(
            "INSERT INTO tiers (name, max_stored_bytes, max_transfer_bytes, max_calls_per_hour, max_file_bytes, \
             max_files, sla) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO UPDATE SET \
             max_stored_bytes = excluded.max_stored_bytes, max_transfer_bytes = excluded.max_transfer_bytes, \
             max_calls_per_hour = excluded.max_calls_per_hour, max_file_bytes = excluded.max_file_bytes, \
             max_files = excluded.max_files, sla = excluded.sla",
        )
        .bind(tier.name.clone())
        .bind(tier.max_stored_bytes.map(int))
        .bind(tier.max_transfer_bytes.map(int))
        .bind(tier.max_calls_per_hour.map(i64::from))
        .bind(tier.max_file_bytes.map(int))
        .bind(tier.max_files.map(int))
        .bind(i64::from(tier.sla))
        .execute(&mut *tx)
        .await?;
        let detail = format!("{tier:?}");
        audit::append(&mut tx, now, Entry::by(admin, AuditAction::TierChanged, tier.name.clone(), detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Moves `user` to `tier`. Admin only.
    pub async fn set_user_tier(&self, admin: &Principal, user: UserId, tier: &str) -> Result<(), QuotaError> {
        if !admin.is_admin() {
            return Err(QuotaError::NotPermitted);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let known =
            sqlx::query("SELECT name FROM tiers WHERE name = $1").bind(tier.to_string()).fetch_optional(&mut *tx);
        if known.await?.is_none() {
            return Err(QuotaError::UnknownTier);
        }
        let n = sqlx::query("UPDATE users SET tier = $1 WHERE id = $2")
            .bind(tier.to_string())
            .bind(user.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(QuotaError::NoSuchUser);
        }
        audit::append(&mut tx, now, Entry::by(admin, AuditAction::UserTierChanged, user.to_string(), tier)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// `user`'s usage, limits and warnings.
    pub async fn usage(&self, user: UserId) -> Result<Usage, QuotaError> {
        let tier = self.tier_of(user).await?;
        let r = sqlx::query(
            "SELECT stored_bytes, files, reserved_bytes, reserved_files, downloaded_bytes, download_month \
             FROM usage WHERE user_id = $1",
        )
        .bind(user.0)
        .fetch_optional(&self.db().pool)
        .await?
        .ok_or(QuotaError::NoSuchUser)?;
        let mut u = usage_of(&r, tier, month_of(self.now()))?;
        u.warnings = warnings(&u, 0, 0);
        Ok(u)
    }

    /// Holds `bytes` and `files` for an upload, or refuses with the quota it
    /// would exceed (see the module doc). `files` is 1 for a file or object,
    /// and `bytes` is then also checked against the per-file limit.
    pub async fn reserve(&self, user: UserId, bytes: u64, files: u64) -> Result<Reservation, QuotaError> {
        let tier = self.tier_of(user).await?;
        if files > 0
            && let Some(max) = tier.max_file_bytes
            && bytes > max
        {
            return Err(QuotaError::Exceeded { quota: Quota::FileSize, limit: max, used: 0, requested: bytes });
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let warnings = self.hold(&mut tx, user, &tier, bytes, files).await?;
        let id: i64 = sqlx::query(
            "INSERT INTO reservations (user_id, bytes, files, created_at, expires_at) VALUES ($1, $2, $3, $4, $5) \
             RETURNING id",
        )
        .bind(user.0)
        .bind(int(bytes))
        .bind(int(files))
        .bind(int(now))
        .bind(int(now + self.config().reservation_ttl.as_secs()))
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        tx.commit().await?;
        Ok(Reservation { id, user, bytes, files, warnings, tier })
    }

    /// Adds `bytes` and `files` to `user`'s reserved counters if every
    /// limit still holds, and answers the quotas then at or above 80 % (from
    /// the same statement); otherwise names the quota that would not hold.
    async fn hold(
        &self,
        tx: &mut Tx,
        user: UserId,
        tier: &Tier,
        bytes: u64,
        files: u64,
    ) -> Result<Vec<Quota>, QuotaError> {
        let max_bytes = tier.max_stored_bytes.map(int).unwrap_or(i64::MAX);
        let max_files = tier.max_files.map(int).unwrap_or(i64::MAX);
        let held = sqlx::query(
            "UPDATE usage SET reserved_bytes = reserved_bytes + $1, reserved_files = reserved_files + $2 \
             WHERE user_id = $3 AND stored_bytes + reserved_bytes <= $4 - $1 AND files + reserved_files <= $5 - $2 \
             RETURNING stored_bytes, files, reserved_bytes, reserved_files, downloaded_bytes, download_month",
        )
        .bind(int(bytes))
        .bind(int(files))
        .bind(user.0)
        .bind(max_bytes)
        .bind(max_files)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = held {
            return Ok(warnings(&usage_of(&r, tier.clone(), month_of(self.now()))?, 0, 0));
        }
        let r = sqlx::query("SELECT stored_bytes, files, reserved_bytes, reserved_files FROM usage WHERE user_id = $1")
            .bind(user.0)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(QuotaError::NoSuchUser)?;
        let used_bytes = uint(r.try_get("stored_bytes")?) + uint(r.try_get("reserved_bytes")?);
        let used_files = uint(r.try_get("files")?) + uint(r.try_get("reserved_files")?);
        if let Some(limit) = tier.max_stored_bytes
            && used_bytes.saturating_add(bytes) > limit
        {
            return Err(QuotaError::Exceeded { quota: Quota::Storage, limit, used: used_bytes, requested: bytes });
        }
        let limit = tier.max_files.unwrap_or(u64::MAX);
        Err(QuotaError::Exceeded { quota: Quota::Files, limit, used: used_files, requested: files })
    }

    /// Adds `bytes` to a reservation (a multipart upload's next part),
    /// checking the storage quota and, for a one-file reservation, the
    /// per-file limit on the total.
    /// One transaction of two statements: an upload pays this per chunk.
    pub async fn extend(&self, res: &mut Reservation, bytes: u64) -> Result<(), QuotaError> {
        let total = res.bytes.saturating_add(bytes);
        if res.files > 0
            && let Some(max) = res.tier.max_file_bytes
            && total > max
        {
            return Err(QuotaError::Exceeded { quota: Quota::FileSize, limit: max, used: res.bytes, requested: bytes });
        }
        let mut tx = self.db().begin().await?;
        let n = sqlx::query("UPDATE reservations SET bytes = bytes + $1 WHERE id = $2 AND user_id = $3")
            .bind(int(bytes))
            .bind(res.id)
            .bind(res.user.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(QuotaError::NoSuchReservation);
        }
        let warnings = self.hold(&mut tx, res.user, &res.tier, bytes, 0).await?;
        tx.commit().await?;
        res.bytes = total;
        res.warnings = warnings;
        Ok(())
    }

    /// Takes the reservation's row and returns its bytes and files.
    async fn settle(&self, tx: &mut Tx, res: &Reservation) -> Result<(i64, i64), QuotaError> {
        let row = sqlx::query("DELETE FROM reservations WHERE id = $1 AND user_id = $2 RETURNING bytes, files")
            .bind(res.id)
            .bind(res.user.0)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(QuotaError::NoSuchReservation)?;
        Ok((row.try_get("bytes")?, row.try_get("files")?))
    }

    /// The upload is stored: its reservation becomes usage.
    pub async fn commit(&self, res: Reservation) -> Result<(), QuotaError> {
        let mut tx = self.db().begin().await?;
        let (bytes, files) = self.settle(&mut tx, &res).await?;
        sqlx::query(
            "UPDATE usage SET reserved_bytes = reserved_bytes - $1, reserved_files = reserved_files - $2, \
             stored_bytes = stored_bytes + $1, files = files + $2 WHERE user_id = $3",
        )
        .bind(bytes)
        .bind(files)
        .bind(res.user.0)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The upload failed: its reservation is returned and nothing counts.
    pub async fn release(&self, res: Reservation) -> Result<(), QuotaError> {
        let mut tx = self.db().begin().await?;
        let (bytes, files) = self.settle(&mut tx, &res).await?;
        release_counters(&mut tx, res.user, bytes, files).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Returns reservations older than their expiry (uploads whose gateway
    /// died). Returns how many.
    pub async fn expire_reservations(&self) -> Result<u64, QuotaError> {
        let mut tx = self.db().begin().await?;
        let rows = sqlx::query("DELETE FROM reservations WHERE expires_at < $1 RETURNING user_id, bytes, files")
            .bind(int(self.now()))
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let user = UserId(r.try_get("user_id")?);
            release_counters(&mut tx, user, r.try_get("bytes")?, r.try_get("files")?).await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    /// Stored data was deleted: `bytes` and `files` no longer count.
    pub async fn record_deleted(&self, user: UserId, bytes: u64, files: u64) -> Result<(), QuotaError> {
        sqlx::query(
            "UPDATE usage SET stored_bytes = CASE WHEN stored_bytes > $1 THEN stored_bytes - $1 ELSE 0 END, \
             files = CASE WHEN files > $2 THEN files - $2 ELSE 0 END WHERE user_id = $3",
        )
        .bind(int(bytes))
        .bind(int(files))
        .bind(user.0)
        .execute(&self.db().pool)
        .await?;
        Ok(())
    }

    /// Counts a download of `bytes` against this month's transfer quota,
    /// before it is served; refuses if it would exceed it. Returns the
    /// quotas at or above 80 %.
    /// The tier is the one `who` authenticated with, so this is one
    /// statement.
    pub async fn charge_download(&self, who: &Principal, bytes: u64) -> Result<Vec<Quota>, QuotaError> {
        self.charge(who.user, who.tier.clone(), bytes).await
    }

    /// [`Services::charge_download`] for a download made on `owner`'s
    /// behalf by someone who is not signed in as them (a share link's
    /// visitor): the owner pays, as the one who published the link.
    pub async fn charge_owner_download(&self, owner: UserId, bytes: u64) -> Result<Vec<Quota>, QuotaError> {
        let tier = self.tier_of(owner).await?;
        self.charge(owner, tier, bytes).await
    }

    async fn charge(&self, user: UserId, tier: Tier, bytes: u64) -> Result<Vec<Quota>, QuotaError> {
        let month = month_of(self.now());
        let limit = tier.max_transfer_bytes.map(int).unwrap_or(i64::MAX);
        // One statement charges and answers the counters the warnings are
        // computed from (RETURNING: SQLite 3.35+ and PostgreSQL), so a
        // download costs this one statement on the hot path.
        let row = sqlx::query(
            "UPDATE usage SET downloaded_bytes = \
               (CASE WHEN download_month = $1 THEN downloaded_bytes ELSE 0 END) + $2, download_month = $1 \
             WHERE user_id = $3 AND (CASE WHEN download_month = $1 THEN downloaded_bytes ELSE 0 END) <= $4 - $2 \
             RETURNING stored_bytes, files, reserved_bytes, reserved_files, downloaded_bytes, download_month",
        )
        .bind(month)
        .bind(int(bytes))
        .bind(user.0)
        .bind(limit)
        .fetch_optional(&self.db().pool)
        .await?;
        let Some(r) = row else {
            let u = self.usage(user).await?;
            return Err(QuotaError::Exceeded {
                quota: Quota::Transfer,
                limit: tier.max_transfer_bytes.unwrap_or(u64::MAX),
                used: u.downloaded_bytes,
                requested: bytes,
            });
        };
        Ok(warnings(&usage_of(&r, tier, month)?, 0, 0))
    }
}

async fn release_counters(tx: &mut Tx, user: UserId, bytes: i64, files: i64) -> Result<(), DbError> {
    sqlx::query(
        "UPDATE usage SET reserved_bytes = reserved_bytes - $1, reserved_files = reserved_files - $2 WHERE user_id = $3",
    )
    .bind(bytes)
    .bind(files)
    .bind(user.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The usage in a row of `usage` (its counters and `download_month`);
/// bytes downloaded in another month than `month` count as none.
fn usage_of(r: &sqlx::any::AnyRow, tier: Tier, month: i64) -> Result<Usage, sqlx::Error> {
    let this_month = r.try_get::<i64, _>("download_month")? == month;
    Ok(Usage {
        stored_bytes: uint(r.try_get("stored_bytes")?),
        files: uint(r.try_get("files")?),
        reserved_bytes: uint(r.try_get("reserved_bytes")?),
        reserved_files: uint(r.try_get("reserved_files")?),
        downloaded_bytes: if this_month { uint(r.try_get("downloaded_bytes")?) } else { 0 },
        warnings: Vec::new(),
        tier,
    })
}

fn warnings(u: &Usage, extra_bytes: u64, extra_files: u64) -> Vec<Quota> {
    let mut w = Vec::new();
    if near(u.stored_bytes + u.reserved_bytes + extra_bytes, u.tier.max_stored_bytes) {
        w.push(Quota::Storage);
    }
    if near(u.files + u.reserved_files + extra_files, u.tier.max_files) {
        w.push(Quota::Files);
    }
    if near(u.downloaded_bytes, u.tier.max_transfer_bytes) {
        w.push(Quota::Transfer);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_are_civil() {
        assert_eq!(month_of(0), 1970 * 12);
        // 2024-02-29T12:00:00Z
        assert_eq!(month_of(1_709_208_000), 2024 * 12 + 1);
        // 2026-12-31T23:59:59Z and a second later.
        assert_eq!(month_of(1_798_761_599), 2026 * 12 + 11);
        assert_eq!(month_of(1_798_761_600), 2027 * 12);
    }
}
