//! The password login limiter, against guessing: failures are counted per
//! user name and per source address, in the database (so gateways sharing
//! one PostgreSQL share the count). Past a few free failures every further
//! failure locks that subject out for twice as long as the last (1 s, 2 s,
//! 4 s, ... up to [`crate::LoginLimits::max_lockout`]); a success clears the
//! user's counter, and a counter left alone for
//! [`crate::LoginLimits::forget_after`] starts again from zero.
//!
//! Share links' passwords go through the same limiter: failures count per
//! link (kind `share`, with the user's free failures) and per source
//! address, the same address counter as logins: guesses are guesses.
//!
//! Names that match no user are counted too, so the limiter's answers do
//! not tell which names exist. The lockout of a user name can be provoked
//! by anyone who knows it: it is capped (15 minutes by default), and login
//! by key signature is not subject to it.

use std::net::IpAddr;
use std::time::Duration;

use sqlx::Row;

use crate::db::{Db, DbError, Tx, int, uint};
use crate::{LoginLimits, Services};

/// Who a failure counts against: what the password opens (a user name or
/// a share link), and where the guess came from.
pub(crate) struct Subjects {
    kind: &'static str,
    pub(crate) user: String,
    pub(crate) address: Option<String>,
}

impl Subjects {
    pub(crate) fn new(name: &str, address: Option<IpAddr>) -> Subjects {
        Subjects { kind: "user", user: name.to_ascii_lowercase(), address: address.map(|a| a.to_string()) }
    }

    fn share(link: &str, address: Option<IpAddr>) -> Subjects {
        Subjects { kind: "share", user: link.to_string(), address: address.map(|a| a.to_string()) }
    }

    fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((self.kind, self.user.as_str())).chain(self.address.as_deref().map(|a| ("addr", a)))
    }
}

impl Services {
    /// How long share link `link`'s password may not be tried from
    /// `source`, if it is locked now (by the link's or the address's
    /// failures). Ask before checking the password, and answer 429.
    pub async fn share_password_locked(&self, link: &str, source: Option<IpAddr>) -> Result<Option<Duration>, DbError> {
        let now = self.now();
        Ok(locked_until(self.db(), now, &Subjects::share(link, source)).await?.map(|t| Duration::from_secs(t - now)))
    }

    /// Counts a wrong password for share link `link` from `source`.
    pub async fn share_password_failed(&self, link: &str, source: Option<IpAddr>) -> Result<(), DbError> {
        let mut tx = self.db().begin().await?;
        record_failure(&mut tx, self.now(), &self.config().login, &Subjects::share(link, source)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Clears share link `link`'s failures after its right password.
    pub async fn share_password_succeeded(&self, link: &str) -> Result<(), DbError> {
        let mut tx = self.db().begin().await?;
        clear_user(&mut tx, &Subjects::share(link, None)).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Until when the subjects are locked out, if they are now.
pub(crate) async fn locked_until(db: &Db, now: u64, s: &Subjects) -> Result<Option<u64>, DbError> {
    let mut until = None;
    for (kind, subject) in s.each() {
        let row = sqlx::query("SELECT locked_until FROM login_failures WHERE kind = $1 AND subject = $2")
            .bind(kind)
            .bind(subject.to_string())
            .fetch_optional(&db.pool)
            .await?;
        if let Some(row) = row {
            let t = uint(row.try_get("locked_until")?);
            if t > now {
                until = until.max(Some(t));
            }
        }
    }
    Ok(until)
}

/// Counts one failure against each subject and sets its lockout.
pub(crate) async fn record_failure(tx: &mut Tx, now: u64, limits: &LoginLimits, s: &Subjects) -> Result<(), DbError> {
    let forget_before = now.saturating_sub(limits.forget_after.as_secs());
    for (kind, subject) in s.each() {
        // One atomic statement: concurrent failures each count.
        let row = sqlx::query(
            "INSERT INTO login_failures (kind, subject, failures, locked_until, last_failure) \
             VALUES ($1, $2, 1, 0, $3) \
             ON CONFLICT (kind, subject) DO UPDATE SET \
               failures = CASE WHEN login_failures.last_failure < $4 THEN 1 ELSE login_failures.failures + 1 END, \
               last_failure = $3 \
             RETURNING failures",
        )
        .bind(kind)
        .bind(subject.to_string())
        .bind(int(now))
        .bind(int(forget_before))
        .fetch_one(&mut **tx)
        .await?;
        let failures = uint(row.try_get("failures")?);
        let free =
            u64::from(if kind == "addr" { limits.free_failures_per_address } else { limits.free_failures_per_user });
        if failures > free {
            let exp = (failures - free - 1).min(30) as u32;
            let lock = (1u64 << exp).min(limits.max_lockout.as_secs().max(1));
            sqlx::query("UPDATE login_failures SET locked_until = $1 WHERE kind = $2 AND subject = $3")
                .bind(int(now + lock))
                .bind(kind)
                .bind(subject.to_string())
                .execute(&mut **tx)
                .await?;
        }
    }
    Ok(())
}

/// Clears the user's (or link's) counter after a successful login (the
/// address's counter is left to decay: an attacker's own account must not
/// reset it).
pub(crate) async fn clear_user(tx: &mut Tx, s: &Subjects) -> Result<(), DbError> {
    sqlx::query("DELETE FROM login_failures WHERE kind = $1 AND subject = $2")
        .bind(s.kind)
        .bind(s.user.clone())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
