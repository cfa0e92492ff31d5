//! The password login limiter, against guessing: failures are counted per
//! user name and per source address, in the database (so gateways sharing
//! one PostgreSQL share the count). Past a few free failures every further
//! failure locks that subject out for twice as long as the last (1 s, 2 s,
//! 4 s, ... up to [`crate::LoginLimits::max_lockout`]); a success clears the
//! user's counter, and a counter left alone for
//! [`crate::LoginLimits::forget_after`] starts again from zero.
//!
//! Names that match no user are counted too, so the limiter's answers do
//! not tell which names exist. The lockout of a user name can be provoked
//! by anyone who knows it: it is capped (15 minutes by default), and login
//! by key signature is not subject to it.

use sqlx::Row;

use crate::LoginLimits;
use crate::db::{Db, DbError, Tx, int, uint};

/// Who a failure counts against.
pub(crate) struct Subjects {
    pub(crate) user: String,
    pub(crate) address: Option<String>,
}

impl Subjects {
    pub(crate) fn new(name: &str, address: Option<std::net::IpAddr>) -> Subjects {
        Subjects { user: name.to_ascii_lowercase(), address: address.map(|a| a.to_string()) }
    }

    fn each(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once(("user", self.user.as_str())).chain(self.address.as_deref().map(|a| ("addr", a)))
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
            u64::from(if kind == "user" { limits.free_failures_per_user } else { limits.free_failures_per_address });
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

/// Clears the user's counter after a successful login (the address's
/// counter is left to decay: an attacker's own account must not reset it).
pub(crate) async fn clear_user(tx: &mut Tx, s: &Subjects) -> Result<(), DbError> {
    sqlx::query("DELETE FROM login_failures WHERE kind = 'user' AND subject = $1")
        .bind(s.user.clone())
        .execute(&mut **tx)
        .await?;
    Ok(())
}
