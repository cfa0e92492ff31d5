//! Public encryption keys: what a user's account publishes so that others
//! can share encrypted files with them (`datamesh share CID --to USER`
//! wraps the file key for each of the recipient's keys). X25519 for the
//! classic wrap, X-Wing (ML-KEM-768 + X25519) when the user works with
//! `--pq`.
//!
//! Only public halves are stored; any authenticated user may read them (a
//! sender must), only the user or the admin changes them. Removing a key
//! does not take back what was already wrapped for it: a recipient who read
//! a file has it.

use sqlx::Row;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, int, uint};
use crate::keylogin::{KeyTable, PublicKeyError, insert_key};
use crate::users::UserId;
use crate::{Principal, Services};

/// The kinds of public encryption keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptionAlgorithm {
    /// X25519: a 32-byte public key.
    X25519,
    /// X-Wing: a 1,216-byte public key (ML-KEM-768's 1,184 and X25519's 32).
    XWing,
}

impl EncryptionAlgorithm {
    /// The algorithm's name (`x25519`, `x-wing`).
    pub fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::X25519 => "x25519",
            EncryptionAlgorithm::XWing => "x-wing",
        }
    }

    /// Parses an algorithm's name.
    pub fn parse(s: &str) -> Option<EncryptionAlgorithm> {
        [EncryptionAlgorithm::X25519, EncryptionAlgorithm::XWing].into_iter().find(|a| a.as_str() == s)
    }

    /// The length of a public key.
    pub fn public_key_len(self) -> usize {
        match self {
            EncryptionAlgorithm::X25519 => 32,
            EncryptionAlgorithm::XWing => 1216,
        }
    }
}

/// A published encryption key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncryptionKeyInfo {
    /// Its id, to remove it.
    pub id: i64,
    /// Whose.
    pub user: UserId,
    /// The algorithm.
    pub algorithm: EncryptionAlgorithm,
    /// The public key.
    pub public_key: Vec<u8>,
    /// When it was published (Unix seconds).
    pub created_at: u64,
}

impl Services {
    /// Publishes a public encryption key on `user`'s account (the user, or
    /// the admin). Refuses a key of the wrong length, and an all-zero
    /// X25519 key (a low-order point: every shared secret would be zero).
    pub async fn publish_encryption_key(
        &self,
        by: &Principal,
        user: UserId,
        algorithm: EncryptionAlgorithm,
        public_key: &[u8],
    ) -> Result<EncryptionKeyInfo, PublicKeyError> {
        if !by.may_manage_account(user) {
            return Err(PublicKeyError::NotPermitted);
        }
        if public_key.len() != algorithm.public_key_len() || public_key.iter().all(|b| *b == 0) {
            return Err(PublicKeyError::InvalidKey);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let insert = sqlx::query(
            "INSERT INTO encryption_keys (user_id, algorithm, public_key, created_at) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(user.0)
        .bind(algorithm.as_str())
        .bind(public_key.to_vec())
        .bind(int(now));
        let id = insert_key(&mut tx, insert).await?;
        let detail = format!("{} encryption key", algorithm.as_str());
        audit::append(&mut tx, now, Entry::by(by, AuditAction::PublicKeyAdded, user.to_string(), detail)).await?;
        tx.commit().await?;
        Ok(EncryptionKeyInfo { id, user, algorithm, public_key: public_key.to_vec(), created_at: now })
    }

    /// The encryption keys `user` published, for any authenticated caller
    /// (a sender wraps a file key for them).
    pub async fn encryption_keys(&self, _by: &Principal, user: UserId) -> Result<Vec<EncryptionKeyInfo>, DbError> {
        let rows = sqlx::query(
            "SELECT id, algorithm, public_key, created_at FROM encryption_keys WHERE user_id = $1 ORDER BY id",
        )
        .bind(user.0)
        .fetch_all(&self.db().pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let Some(algorithm) = EncryptionAlgorithm::parse(&r.try_get::<String, _>("algorithm")?) else { continue };
            out.push(EncryptionKeyInfo {
                id: r.try_get("id")?,
                user,
                algorithm,
                public_key: r.try_get("public_key")?,
                created_at: uint(r.try_get("created_at")?),
            });
        }
        Ok(out)
    }

    /// Withdraws a published encryption key (the user, or the admin).
    pub async fn remove_encryption_key(&self, by: &Principal, user: UserId, id: i64) -> Result<(), PublicKeyError> {
        self.remove_key(by, user, KeyTable::Encryption, id, format!("encryption key {id}")).await
    }
}
