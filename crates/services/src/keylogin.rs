//! Login by key signature: a user's DataMesh key is Ed25519, so the CLI
//! signs a server challenge and no password is needed.
//!
//! 1. The client asks for a challenge ([`Services::login_challenge`]): 32
//!    random bytes, this node's audience ([`crate::Config::audience`]) and
//!    an expiry (2 minutes). The server stores it.
//! 2. The client signs [`LoginChallenge::message`] for its user name with
//!    its Ed25519 key and sends a [`SignedChallenge`].
//! 3. The server ([`Services::login_signature`]) refuses a foreign audience
//!    (a signature made for another node), an unknown, expired or already
//!    used challenge (a replay), a key that is not the user's, and a
//!    signature that does not verify (`verify_strict`: no malleable or
//!    small-order forgeries); then it consumes the challenge, atomically,
//!    so a challenge logs in at most once across every gateway.
//!
//! The signed message names its purpose, version, audience, nonce, expiry
//! and user, so a signature can be used for nothing else.

use std::net::IpAddr;

use ed25519_dalek::{Signature, VerifyingKey};
use sqlx::Row;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, Tx, int, uint};
use crate::sessions::LoginGrant;
use crate::users::{LoginError, UserId, validate_user_name};
use crate::{Principal, Services};

/// A login challenge, as the server issues it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginChallenge {
    /// 32 random bytes.
    pub nonce: [u8; 32],
    /// The node it is for.
    pub audience: String,
    /// Until when it may be answered (Unix seconds).
    pub expires_at: u64,
}

impl LoginChallenge {
    /// The bytes `user` signs to answer this challenge.
    pub fn message(&self, user: &str) -> Vec<u8> {
        format!(
            "datamesh-login-v1\naudience={}\nnonce={}\nexpires={}\nuser={}\n",
            self.audience,
            hex::encode(self.nonce),
            self.expires_at,
            user
        )
        .into_bytes()
    }
}

/// A client's answer to a challenge.
#[derive(Debug, Clone)]
pub struct SignedChallenge {
    /// The challenge as the client received it.
    pub challenge: LoginChallenge,
    /// The user logging in.
    pub user: String,
    /// The Ed25519 public key that signed.
    pub public_key: [u8; 32],
    /// The signature over [`LoginChallenge::message`].
    pub signature: [u8; 64],
}

/// A challenge or signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// The challenge names another node.
    #[error("the challenge was issued for another node: ask this node for a challenge")]
    ForeignAudience,
    /// Not a challenge this service issued (or already purged).
    #[error("unknown challenge: ask for a new one")]
    Unknown,
    /// Past its expiry.
    #[error("the challenge has expired: ask for a new one and answer within its lifetime")]
    Stale,
    /// Already answered once.
    #[error("the challenge was already used: ask for a new one")]
    Replayed,
    /// The signature does not verify with the given key.
    #[error("the signature does not verify: sign the challenge's message with the key you name")]
    BadSignature,
}

/// A login public key on an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// Its id, to remove it.
    pub id: i64,
    /// The user's label for it.
    pub name: String,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
    /// When it was added (Unix seconds).
    pub created_at: u64,
}

/// Adding or removing a public key failed.
#[derive(Debug, thiserror::Error)]
pub enum PublicKeyError {
    /// Not a usable Ed25519 public key (not a point, or of small order).
    #[error("not a valid Ed25519 public key")]
    InvalidKey,
    /// The label is empty, too long or has control characters.
    #[error("invalid key name: 1 to 64 characters, no control characters")]
    InvalidName,
    /// The key already belongs to an account (one key, one account).
    #[error("this public key is already registered to an account")]
    Taken,
    /// No such key on this account.
    #[error("no such public key on this account")]
    NotFound,
    /// Only the user (or the admin) manages their keys.
    #[error("not permitted: only the user or the administrator manages these keys")]
    NotPermitted,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for PublicKeyError {
    fn from(e: sqlx::Error) -> Self {
        PublicKeyError::Database(DbError(e))
    }
}

/// A label (key names, public key names): 1 to 64 characters, no control
/// characters.
pub(crate) fn valid_label(name: &str) -> bool {
    !name.is_empty() && name.len() <= 256 && name.chars().count() <= 64 && !name.chars().any(char::is_control)
}

/// The two tables of public keys on an account, which share their
/// insertion and removal: login keys and published encryption keys. SQL is
/// `'static` (see `db`), so each table's statements are spelled out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum KeyTable {
    /// `user_keys`: Ed25519 keys that log in.
    Login,
    /// `encryption_keys`: keys others wrap file keys for.
    Encryption,
}

impl KeyTable {
    fn delete_sql(self) -> &'static str {
        match self {
            KeyTable::Login => "DELETE FROM user_keys WHERE id = $1 AND user_id = $2",
            KeyTable::Encryption => "DELETE FROM encryption_keys WHERE id = $1 AND user_id = $2",
        }
    }
}

/// Runs `insert` (an `INSERT ... RETURNING id` of a public key) in `tx`:
/// the new row's id, or [`PublicKeyError::Taken`] when the key is already
/// registered (the column is unique: one key, one account).
pub(crate) async fn insert_key(
    tx: &mut Tx,
    insert: sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments>,
) -> Result<i64, PublicKeyError> {
    match insert.fetch_one(&mut **tx).await.map_err(DbError) {
        Ok(r) => Ok(r.try_get("id")?),
        Err(e) if e.is_unique_violation() => Err(PublicKeyError::Taken),
        Err(e) => Err(e.into()),
    }
}

impl Services {
    /// Removes key `id` from `user`'s account in `table` (the user, or the
    /// admin), with an audit entry saying `detail`.
    pub(crate) async fn remove_key(
        &self,
        by: &Principal,
        user: UserId,
        table: KeyTable,
        id: i64,
        detail: String,
    ) -> Result<(), PublicKeyError> {
        if !by.may_manage_account(user) {
            return Err(PublicKeyError::NotPermitted);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let n = sqlx::query(table.delete_sql()).bind(id).bind(user.0).execute(&mut *tx).await?.rows_affected();
        if n == 0 {
            return Err(PublicKeyError::NotFound);
        }
        audit::append(&mut tx, now, Entry::by(by, AuditAction::PublicKeyRemoved, user.to_string(), detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Adds a login public key to `user`'s account (the user, or the admin).
    pub async fn add_public_key(
        &self,
        by: &Principal,
        user: UserId,
        name: &str,
        public_key: [u8; 32],
    ) -> Result<PublicKeyInfo, PublicKeyError> {
        if !by.may_manage_account(user) {
            return Err(PublicKeyError::NotPermitted);
        }
        if !valid_label(name) {
            return Err(PublicKeyError::InvalidName);
        }
        let vk = VerifyingKey::from_bytes(&public_key).map_err(|_| PublicKeyError::InvalidKey)?;
        if vk.is_weak() {
            return Err(PublicKeyError::InvalidKey);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let insert = sqlx::query(
            "INSERT INTO user_keys (user_id, name, public_key, created_at) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(user.0)
        .bind(name.to_string())
        .bind(public_key.to_vec())
        .bind(int(now));
        let id = insert_key(&mut tx, insert).await?;
        let entry = Entry::by(by, AuditAction::PublicKeyAdded, user.to_string(), hex::encode(public_key));
        audit::append(&mut tx, now, entry).await?;
        tx.commit().await?;
        Ok(PublicKeyInfo { id, name: name.to_string(), public_key, created_at: now })
    }

    /// The login public keys of `user` (the user, or the admin).
    pub async fn list_public_keys(&self, by: &Principal, user: UserId) -> Result<Vec<PublicKeyInfo>, PublicKeyError> {
        if by.user != user && !by.is_admin() {
            return Err(PublicKeyError::NotPermitted);
        }
        let rows = sqlx::query("SELECT id, name, public_key, created_at FROM user_keys WHERE user_id = $1 ORDER BY id")
            .bind(user.0)
            .fetch_all(&self.db().pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let pk: Vec<u8> = r.try_get("public_key")?;
            out.push(PublicKeyInfo {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                public_key: pk.as_slice().try_into().unwrap_or([0; 32]),
                created_at: uint(r.try_get("created_at")?),
            });
        }
        Ok(out)
    }

    /// Removes a login public key from `user`'s account.
    pub async fn remove_public_key(&self, by: &Principal, user: UserId, id: i64) -> Result<(), PublicKeyError> {
        self.remove_key(by, user, KeyTable::Login, id, id.to_string()).await
    }

    /// Issues a login challenge for this node.
    pub async fn login_challenge(&self) -> Result<LoginChallenge, DbError> {
        let c = LoginChallenge {
            nonce: crate::secret::random32(),
            audience: self.config().audience.clone(),
            expires_at: self.now() + self.config().challenge_ttl.as_secs(),
        };
        sqlx::query("INSERT INTO challenges (nonce, audience, expires_at) VALUES ($1, $2, $3)")
            .bind(c.nonce.to_vec())
            .bind(c.audience.clone())
            .bind(int(c.expires_at))
            .execute(&self.db().pool)
            .await?;
        Ok(c)
    }

    /// Key-signature login (see the module doc for what is refused). Not
    /// subject to the password limiter, but failures are audited.
    pub async fn login_signature(&self, s: &SignedChallenge, source: Option<IpAddr>) -> Result<LoginGrant, LoginError> {
        validate_user_name(&s.user)?;
        let now = self.now();
        if s.challenge.audience != self.config().audience {
            return Err(ChallengeError::ForeignAudience.into());
        }
        let row = sqlx::query("SELECT audience, expires_at, used_at FROM challenges WHERE nonce = $1")
            .bind(s.challenge.nonce.to_vec())
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or(ChallengeError::Unknown)?;
        let expires_at = uint(row.try_get("expires_at")?);
        if row.try_get::<String, _>("audience")? != s.challenge.audience || expires_at != s.challenge.expires_at {
            // The client altered what it was issued.
            return Err(ChallengeError::Unknown.into());
        }
        if row.try_get::<Option<i64>, _>("used_at")?.is_some() {
            return Err(ChallengeError::Replayed.into());
        }
        if expires_at <= now {
            return Err(ChallengeError::Stale.into());
        }
        let user = self.find_user(&s.user).await?;
        let owns_key = match &user {
            Some(u) => sqlx::query("SELECT id FROM user_keys WHERE user_id = $1 AND public_key = $2")
                .bind(u.id.0)
                .bind(s.public_key.to_vec())
                .fetch_optional(&self.db().pool)
                .await?
                .is_some(),
            None => false,
        };
        let verified = owns_key
            && VerifyingKey::from_bytes(&s.public_key)
                .map(|vk| vk.verify_strict(&s.challenge.message(&s.user), &Signature::from_bytes(&s.signature)).is_ok())
                .unwrap_or(false);
        let mut tx = self.db().begin().await?;
        let (Some(user), true) = (user, verified) else {
            let target = self.find_user(&s.user).await?.map(|u| u.name).unwrap_or_else(|| "(unknown user)".into());
            let entry = Entry::anonymous(AuditAction::LoginFailed, target, "key signature").with_source(source);
            audit::append(&mut tx, now, entry).await?;
            tx.commit().await?;
            return Err(if owns_key { ChallengeError::BadSignature.into() } else { LoginError::InvalidCredentials });
        };
        let claimed = sqlx::query("UPDATE challenges SET used_at = $1 WHERE nonce = $2 AND used_at IS NULL")
            .bind(int(now))
            .bind(s.challenge.nonce.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if claimed == 0 {
            return Err(ChallengeError::Replayed.into());
        }
        let (action, detail) =
            if user.disabled { (AuditAction::LoginFailed, "disabled") } else { (AuditAction::Login, "key signature") };
        let entry =
            Entry { actor: (Some(user.id.0), user.name.clone()), ..Entry::anonymous(action, &user.name, detail) };
        audit::append(&mut tx, now, entry.with_source(source)).await?;
        tx.commit().await?;
        if user.disabled {
            return Err(LoginError::Disabled);
        }
        Ok(LoginGrant::by_key(user))
    }
}
