//! Files shared with people: a file's data key wrapped for a user it was
//! shared with (`datamesh share CID --to USER`).
//!
//! The owner's client unwraps the file's data key with the owner's own key,
//! wraps it for the recipient's published public key ([`crate::enckeys`])
//! and stores the result here, next to the read grant the recipient needs.
//! The wrap is opaque bytes to the services (the recipient's client opens
//! it): neither the data key nor any private key ever reaches the server.
//! Manifests are content addressed, so wraps made after a put live in this
//! side table rather than in the manifest.
//!
//! Unsharing deletes the wrap and the grant. It cannot take back what the
//! recipient already read (or the data key, if they kept it).

use sqlx::Row;

use crate::audit::{self, AuditAction, Entry};
use crate::db::int;
use crate::perms::{Action, Decision, Level, PermError, ResourceKind, ResourceRef};
use crate::users::UserId;
use crate::{Principal, Services};

/// The largest wrap accepted: an X-Wing wrap is about 1.2 KiB, an X25519
/// one under 100 bytes; a few of them fit with room to spare.
pub const MAX_WRAP_BYTES: usize = 16 * 1024;

impl Services {
    /// Shares file `res` with `recipient`: stores `wrapped` (the data key
    /// wrapped for them, replacing an earlier one) and grants them read
    /// (a higher grant they have is kept). Only the file's owner (or the
    /// administrator): `admin` on the file.
    pub async fn share_file_key(
        &self,
        by: &Principal,
        res: &ResourceRef,
        recipient: UserId,
        wrapped: &[u8],
    ) -> Result<(), PermError> {
        if res.kind() != ResourceKind::File || wrapped.is_empty() || wrapped.len() > MAX_WRAP_BYTES {
            return Err(PermError::BadInput(format!("a shared file key is 1 to {MAX_WRAP_BYTES} bytes, for a file")));
        }
        if self.check(Some(by), Action::Admin, res).await? != Decision::Allow {
            return Err(PermError::Denied);
        }
        self.get_user(recipient).await?.ok_or(PermError::NoSuchUser)?;
        let (level, _) = self.level(Some(recipient), res).await?;
        if level < Level::Read {
            self.grant(by, res, recipient, Level::Read).await?;
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let id = self.record_id(&mut tx, res).await?.ok_or(PermError::Denied)?;
        sqlx::query(
            "INSERT INTO file_wraps (resource_id, recipient_id, wrapped, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (resource_id, recipient_id) DO UPDATE SET wrapped = excluded.wrapped, \
             created_at = excluded.created_at",
        )
        .bind(id)
        .bind(recipient.0)
        .bind(wrapped.to_vec())
        .bind(int(now))
        .execute(&mut *tx)
        .await?;
        let detail = format!("file key wrapped for {recipient}");
        audit::append(&mut tx, now, Entry::by(by, AuditAction::PermissionGranted, res.to_string(), detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The data key of file `res` wrapped for the caller, if it was shared
    /// with them. Needs read on the file (so an unshared recipient, whose
    /// grant went with the wrap, is refused).
    pub async fn shared_file_key(&self, by: &Principal, res: &ResourceRef) -> Result<Option<Vec<u8>>, PermError> {
        if self.check(Some(by), Action::Read, res).await? != Decision::Allow {
            return Err(PermError::Denied);
        }
        let row = sqlx::query(
            "SELECT w.wrapped FROM file_wraps w JOIN resources r ON r.id = w.resource_id \
             WHERE r.kind = $1 AND r.name = $2 AND w.recipient_id = $3",
        )
        .bind(res.kind().as_str())
        .bind(res.name().to_string())
        .bind(by.user.0)
        .fetch_optional(&self.db().pool)
        .await?;
        Ok(match row {
            Some(r) => Some(r.try_get("wrapped")?),
            None => None,
        })
    }

    /// Stops sharing file `res` with `recipient`: deletes their wrap and
    /// their grant. Says whether there was a wrap. Only the file's owner
    /// (or the administrator).
    pub async fn unshare_file_key(
        &self,
        by: &Principal,
        res: &ResourceRef,
        recipient: UserId,
    ) -> Result<bool, PermError> {
        if self.check(Some(by), Action::Admin, res).await? != Decision::Allow {
            return Err(PermError::Denied);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let Some(id) = self.record_id(&mut tx, res).await? else { return Ok(false) };
        let n = sqlx::query("DELETE FROM file_wraps WHERE resource_id = $1 AND recipient_id = $2")
            .bind(id)
            .bind(recipient.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n > 0 {
            let detail = format!("file key of {recipient} deleted");
            audit::append(&mut tx, now, Entry::by(by, AuditAction::PermissionRevoked, res.to_string(), detail)).await?;
        }
        tx.commit().await?;
        self.revoke_grant(by, res, recipient).await?;
        Ok(n > 0)
    }
}
