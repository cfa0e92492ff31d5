//! Users: sign-up, roles, passwords, password login, disable and delete.
//!
//! **Passwords** are hashed with Argon2id at OWASP's first recommended
//! setting, m = 19 MiB, t = 2, p = 1 (about 20-40 ms a hash on a server
//! core, run off the async threads), stored as a PHC string, so the
//! parameters can be raised later and old hashes still verify. Verification
//! compares in constant time (the `password-hash` crate), and a login for a
//! name that does not exist verifies against a dummy hash, so the time
//! taken does not tell whether the user exists. Guessing is slowed by the
//! login limiter ([`crate::LoginLimits`]), and at most two hashes per core
//! run at once, so a flood of logins queues rather than exhausting memory.
//!
//! **Roles**: `admin` is the node's operator: it creates, disables and
//! deletes users, edits tiers, reads the audit log, and passes every
//! permission check (see [`crate::perms`]), but only with a credential
//! whose scope includes `admin`. The node token of today becomes the first
//! admin's credential through [`Services::bootstrap_admin`]. `user` is
//! everyone else.
//!
//! **Deleting a user** removes, in one transaction, the account, its
//! sessions, tokens, keys, public keys, grants given to it, quota usage,
//! and the ownership records of what it owned (a bucket's with everything
//! registered inside it, whoever owned that). The data itself lives in the
//! store, which this crate never touches: [`DeletedUser::owned`] lists the
//! resources the caller (the gateway) must delete there. The audit log
//! keeps the user's history under their id and name.

use std::net::IpAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use sqlx::Row;
use zeroize::Zeroizing;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, int, uint};
use crate::keys::Scope;
use crate::login_limit::{self, Subjects};
use crate::perms::ResourceRef;
use crate::quota::Tier;
use crate::sessions::LoginGrant;
use crate::{Principal, Services, Via};

/// A user's id (never reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(pub i64);

impl std::fmt::Display for UserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "user:{}", self.0)
    }
}

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The node's operator.
    Admin,
    /// Everyone else.
    User,
}

impl Role {
    /// The role's name in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }

    fn parse(s: &str) -> Role {
        if s == "admin" { Role::Admin } else { Role::User }
    }
}

/// A user account, as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The id.
    pub id: UserId,
    /// The name, as given at sign-up (unique regardless of case).
    pub name: String,
    /// The role.
    pub role: Role,
    /// The tier's name.
    pub tier: String,
    /// Whether every credential of the user is refused.
    pub disabled: bool,
    /// Whether a password is set (a user may log in by key only).
    pub has_password: bool,
    /// When the account was created (Unix seconds).
    pub created_at: u64,
}

/// What [`Services::delete_user`] removed, and what the caller must delete
/// from the store.
#[derive(Debug, Clone)]
pub struct DeletedUser {
    /// The account as it was.
    pub user: User,
    /// The resources the user owned, whose data the caller deletes.
    pub owned: Vec<ResourceRef>,
}

/// A user name that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty.
    #[error("the name is empty: give 1 to {max} characters")]
    Empty {
        /// The limit.
        max: usize,
    },
    /// Too long (checked first, so a 10 MB name costs nothing).
    #[error("the name is too long: at most {max} characters")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error(
        "the name may contain only letters a-z, A-Z, digits, '.', '_', '-' and '@', and starts with a letter or digit"
    )]
    BadCharacter,
}

/// A password that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short to resist guessing.
    #[error("the password is too short: use at least {min} characters")]
    TooShort {
        /// The minimum.
        min: usize,
    },
    /// Longer than any password needs (bounds the hashing work).
    #[error("the password is too long: at most {max} bytes")]
    TooLong {
        /// The maximum.
        max: usize,
    },
}

/// An account operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The name is not acceptable.
    #[error("invalid user name: {0}")]
    InvalidName(#[from] NameError),
    /// The password is not acceptable.
    #[error("unacceptable password: {0}")]
    WeakPassword(#[from] PasswordError),
    /// Another user has this name (names are unique regardless of case).
    #[error("the user name is taken: choose another")]
    NameTaken,
    /// No such user.
    #[error("no such user")]
    NoSuchUser,
    /// Sign-up is closed on this node.
    #[error("sign-up is closed on this node: ask its administrator for an account")]
    SignUpClosed,
    /// The caller may not do this.
    #[error("not permitted: this needs the administrator (or the user themselves)")]
    NotPermitted,
    /// The last enabled admin cannot be removed, disabled or demoted.
    #[error("this is the last administrator: make another user admin first")]
    LastAdmin,
    /// No such tier.
    #[error("no such tier: list the tiers and pick one")]
    UnknownTier,
    /// The current password given is wrong.
    #[error("the current password is wrong")]
    WrongPassword,
    /// Hashing failed (out of memory).
    #[error("password hashing failed: {0}; retry")]
    Hashing(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for AccountError {
    fn from(e: sqlx::Error) -> Self {
        AccountError::Database(DbError(e))
    }
}

/// A login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong name or password, or an unknown key: deliberately one answer.
    #[error("wrong user name or credentials")]
    InvalidCredentials,
    /// Too many failures for this name or address: wait and retry.
    #[error("too many failed logins: retry in {} s", retry_after.as_secs())]
    TooManyAttempts {
        /// How long to wait.
        retry_after: std::time::Duration,
    },
    /// The account is disabled.
    #[error("this account is disabled: ask the node's administrator")]
    Disabled,
    /// The name is malformed (nothing was looked up).
    #[error("invalid user name: {0}")]
    MalformedName(#[from] NameError),
    /// A key-signature login's challenge or signature is refused.
    #[error("key login refused: {0}")]
    Challenge(#[from] crate::keylogin::ChallengeError),
    /// Hashing failed (out of memory).
    #[error("password hashing failed: {0}; retry")]
    Hashing(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for LoginError {
    fn from(e: sqlx::Error) -> Self {
        LoginError::Database(DbError(e))
    }
}

/// The longest user name.
pub const MAX_NAME: usize = 64;
/// The shortest password.
pub const MIN_PASSWORD: usize = 8;
/// The longest password, in bytes.
pub const MAX_PASSWORD: usize = 1024;

/// Checks a user name: 1 to 64 characters from `[A-Za-z0-9._@-]`, starting
/// with a letter or digit. A small ASCII set keeps names unambiguous (no
/// look-alike letters, no control characters, safe in paths, logs and
/// shells); the length is checked before anything is read.
pub fn validate_user_name(name: &str) -> Result<(), NameError> {
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong { max: MAX_NAME });
    }
    let Some(first) = name.bytes().next() else { return Err(NameError::Empty { max: MAX_NAME }) };
    if !first.is_ascii_alphanumeric()
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
    {
        return Err(NameError::BadCharacter);
    }
    Ok(())
}

fn validate_password(pw: &str) -> Result<(), PasswordError> {
    if pw.len() > MAX_PASSWORD {
        return Err(PasswordError::TooLong { max: MAX_PASSWORD });
    }
    if pw.chars().count() < MIN_PASSWORD {
        return Err(PasswordError::TooShort { min: MIN_PASSWORD });
    }
    Ok(())
}

fn argon2() -> Argon2<'static> {
    // OWASP: m = 19 MiB, t = 2, p = 1.
    let params = Params::new(19 * 1024, 2, 1, None).expect("constant Argon2 parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Argon2 work running at once, process-wide. Each hash holds 19 MiB for
/// tens of milliseconds: unbounded, a flood of logins would queue hundreds
/// of blocking threads and gigabytes; bounded, it queues requests instead
/// (the login limiter and rate limits shed them).
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        tokio::sync::Semaphore::new(cores * 2)
    })
}

/// Hashes `pw` off the async threads.
pub(crate) async fn hash_password(pw: &str) -> Result<String, String> {
    let pw = Zeroizing::new(pw.to_string());
    // The permit moves into the blocking task: held until the work ends,
    // even if the caller stops waiting.
    let permit = hashing_permits().acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon2().hash_password(pw.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Verifies `pw` against a PHC `hash` off the async threads, in constant
/// time for a given hash.
pub(crate) async fn verify_password(hash: String, pw: &[u8]) -> Result<bool, String> {
    let pw = Zeroizing::new(pw.to_vec());
    let permit = hashing_permits().acquire().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let parsed = PasswordHash::new(&hash).map_err(|e| e.to_string())?;
        Ok(argon2().verify_password(&pw, &parsed).is_ok())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The hash verified when a user does not exist.
pub(crate) async fn dummy_hash() -> Result<String, String> {
    hash_password(&hex::encode(crate::secret::random32())).await
}

pub(crate) fn user_from_row(row: &sqlx::any::AnyRow) -> Result<User, sqlx::Error> {
    let hash: Option<String> = row.try_get("password_hash")?;
    Ok(User {
        id: UserId(row.try_get("id")?),
        name: row.try_get("name")?,
        role: Role::parse(&row.try_get::<String, _>("role")?),
        tier: row.try_get("tier")?,
        disabled: row.try_get::<i64, _>("disabled")? != 0,
        has_password: hash.is_some(),
        created_at: uint(row.try_get("created_at")?),
    })
}

/// New account details for [`Services::create_user`].
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// The name ([`validate_user_name`]).
    pub name: &'a str,
    /// The password, or `None` for a key-only account.
    pub password: Option<&'a str>,
    /// The role.
    pub role: Role,
    /// The tier, or `None` for the default.
    pub tier: Option<&'a str>,
}

impl Services {
    /// Self-service sign-up: a `user` on the default tier. Refused when
    /// sign-up is closed ([`crate::Config::open_sign_up`]).
    pub async fn sign_up(&self, name: &str, password: &str) -> Result<User, AccountError> {
        if !self.config().open_sign_up {
            return Err(AccountError::SignUpClosed);
        }
        let new = NewUser { name, password: Some(password), role: Role::User, tier: None };
        self.insert_user(None, new, AuditAction::UserCreated).await
    }

    /// The admin creates an account (any role and tier).
    pub async fn create_user(&self, admin: &Principal, new: NewUser<'_>) -> Result<User, AccountError> {
        if !admin.is_admin() {
            return Err(AccountError::NotPermitted);
        }
        self.insert_user(Some(admin), new, AuditAction::UserCreated).await
    }

    /// The node's bootstrap credential (today's node token) acting as the
    /// admin named `name`: creates that admin (without a password) the first
    /// time, and returns it as a principal. Refused if `name` is a user
    /// who is not an admin.
    pub async fn bootstrap_admin(&self, name: &str) -> Result<Principal, AccountError> {
        validate_user_name(name)?;
        // The node token is checked on every admin request: one query (the
        // user and their tier) is all it costs once the admin exists.
        let (user, tier, perm_epoch) = match self.find_user_with_tier(name).await? {
            Some(found) => found,
            None => {
                let new = NewUser { name, password: None, role: Role::Admin, tier: Some("enterprise") };
                match self.insert_user(None, new, AuditAction::AdminBootstrap).await {
                    // Another gateway may have created it at the same moment.
                    Ok(_) | Err(AccountError::NameTaken) => {
                        self.find_user_with_tier(name).await?.ok_or(AccountError::NoSuchUser)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if user.role != Role::Admin || user.disabled {
            return Err(AccountError::NotPermitted);
        }
        Ok(Principal {
            user: user.id,
            name: user.name,
            role: Role::Admin,
            scope: Scope::full(),
            via: Via::Bootstrap,
            expires_at: None,
            tier,
            perm_epoch,
        })
    }

    /// [`Services::find_user`] with the user's tier and the permission
    /// epoch, in one query.
    async fn find_user_with_tier(&self, name: &str) -> Result<Option<(User, Tier, i64)>, DbError> {
        let row = sqlx::query(concat!(
            "SELECT u.id, u.name, u.role, u.tier, u.disabled, u.password_hash, u.created_at, ",
            tier_columns!(),
            " FROM users u JOIN tiers tr ON tr.name = u.tier WHERE lower(u.name) = lower($1)"
        ))
        .bind(name.to_string())
        .fetch_optional(&self.db().pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some((user_from_row(&r)?, crate::quota::tier_from_joined_row(&r)?, r.try_get("perm_epoch")?)))
    }

    async fn insert_user(
        &self,
        by: Option<&Principal>,
        new: NewUser<'_>,
        action: AuditAction,
    ) -> Result<User, AccountError> {
        validate_user_name(new.name)?;
        if let Some(pw) = new.password {
            validate_password(pw)?;
        }
        let tier = new.tier.unwrap_or(&self.config().default_tier).to_string();
        let hash = match new.password {
            Some(pw) => Some(hash_password(pw).await.map_err(AccountError::Hashing)?),
            None => None,
        };
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let known = sqlx::query("SELECT name FROM tiers WHERE name = $1").bind(tier.clone()).fetch_optional(&mut *tx);
        if known.await?.is_none() {
            return Err(AccountError::UnknownTier);
        }
        let inserted = sqlx::query(
            "INSERT INTO users (name, role, password_hash, tier, disabled, created_at) \
             VALUES ($1, $2, $3, $4, 0, $5) RETURNING id",
        )
        .bind(new.name.to_string())
        .bind(new.role.as_str())
        .bind(hash.clone())
        .bind(tier.clone())
        .bind(int(now))
        .fetch_one(&mut *tx)
        .await
        .map_err(DbError);
        let id: i64 = match inserted {
            Ok(row) => row.try_get("id")?,
            Err(e) if e.is_unique_violation() => return Err(AccountError::NameTaken),
            Err(e) => return Err(e.into()),
        };
        sqlx::query("INSERT INTO usage (user_id) VALUES ($1)").bind(id).execute(&mut *tx).await?;
        let detail = format!("role={} tier={}", new.role.as_str(), tier);
        let entry = match by {
            Some(p) => Entry::by(p, action, new.name, detail),
            None => Entry::anonymous(action, new.name, detail),
        };
        audit::append(&mut tx, now, entry).await?;
        tx.commit().await?;
        Ok(User {
            id: UserId(id),
            name: new.name.to_string(),
            role: new.role,
            tier,
            disabled: false,
            has_password: hash.is_some(),
            created_at: now,
        })
    }

    /// The user named `name` (any case), if any. A malformed name is
    /// simply not found.
    pub async fn find_user(&self, name: &str) -> Result<Option<User>, DbError> {
        if validate_user_name(name).is_err() {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT id, name, role, tier, disabled, password_hash, created_at FROM users WHERE lower(name) = lower($1)",
        )
        .bind(name.to_string())
        .fetch_optional(&self.db().pool)
        .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// The user with id `id`, if any.
    pub async fn get_user(&self, id: UserId) -> Result<Option<User>, DbError> {
        let row =
            sqlx::query("SELECT id, name, role, tier, disabled, password_hash, created_at FROM users WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.db().pool)
                .await?;
        Ok(row.as_ref().map(user_from_row).transpose()?)
    }

    /// Every user, by id. Admin only.
    pub async fn list_users(&self, admin: &Principal) -> Result<Vec<User>, AccountError> {
        if !admin.is_admin() {
            return Err(AccountError::NotPermitted);
        }
        let rows =
            sqlx::query("SELECT id, name, role, tier, disabled, password_hash, created_at FROM users ORDER BY id")
                .fetch_all(&self.db().pool)
                .await?;
        Ok(rows.iter().map(user_from_row).collect::<Result<_, _>>()?)
    }

    /// Password login. On success the grant is exchanged for tokens
    /// ([`Services::issue_tokens`]) or a browser session
    /// ([`Services::start_session`]). Every outcome but a malformed name is
    /// audited; failures count towards the login limiter.
    pub async fn login_password(
        &self,
        name: &str,
        password: &str,
        source: Option<IpAddr>,
    ) -> Result<LoginGrant, LoginError> {
        validate_user_name(name)?;
        let subjects = Subjects::new(name, source);
        let now = self.now();
        if let Some(until) = login_limit::locked_until(self.db(), now, &subjects).await? {
            return Err(LoginError::TooManyAttempts { retry_after: std::time::Duration::from_secs(until - now) });
        }
        let row = sqlx::query(
            "SELECT id, name, role, tier, disabled, password_hash, created_at FROM users WHERE lower(name) = lower($1)",
        )
        .bind(name.to_string())
        .fetch_optional(&self.db().pool)
        .await?;
        let (user, hash) = match &row {
            Some(r) => (Some(user_from_row(r)?), r.try_get::<Option<String>, _>("password_hash")?),
            None => (None, None),
        };
        // Oversized passwords are refused after the same work (on their
        // first bytes), not before, so that their answer takes as long as
        // any other.
        let hash_known = hash.is_some();
        let head = &password.as_bytes()[..password.len().min(MAX_PASSWORD)];
        let verified = verify_password(hash.unwrap_or_else(|| self.inner.dummy_hash.clone()), head)
            .await
            .map_err(LoginError::Hashing)?
            && hash_known
            && password.len() <= MAX_PASSWORD;
        let mut tx = self.db().begin().await?;
        match user {
            Some(user) if verified => {
                login_limit::clear_user(&mut tx, &subjects).await?;
                let (action, detail) = if user.disabled {
                    (AuditAction::LoginFailed, "disabled")
                } else {
                    (AuditAction::Login, "password")
                };
                let entry = Entry {
                    actor: (Some(user.id.0), user.name.clone()),
                    ..Entry::anonymous(action, &user.name, detail)
                };
                audit::append(&mut tx, now, entry.with_source(source)).await?;
                tx.commit().await?;
                if user.disabled {
                    return Err(LoginError::Disabled);
                }
                Ok(LoginGrant::new(user))
            }
            _ => {
                login_limit::record_failure(&mut tx, now, &self.config().login, &subjects).await?;
                // The attempted name only when it is a user's: see `audit`.
                let target = user.as_ref().map(|u| u.name.clone()).unwrap_or_else(|| "(unknown user)".into());
                let entry = Entry::anonymous(AuditAction::LoginFailed, target, "password").with_source(source);
                audit::append(&mut tx, now, entry).await?;
                tx.commit().await?;
                Err(LoginError::InvalidCredentials)
            }
        }
    }

    /// Changes `user`'s password. The user gives the current one (with an
    /// unscoped credential); the admin resets anyone else's without it. Every session and token of the user is
    /// revoked (a changed password logs out everywhere); API and S3 keys
    /// stay valid, being separate credentials the user revokes on their own.
    pub async fn change_password(
        &self,
        by: &Principal,
        user: UserId,
        current: Option<&str>,
        new: &str,
    ) -> Result<(), AccountError> {
        validate_password(new)?;
        let target = self.get_user(user).await?.ok_or(AccountError::NoSuchUser)?;
        if by.user == user {
            // One's own password needs the current one (if set), even for
            // the admin, and an unscoped credential: a scoped key must not
            // become a password.
            if !by.is_unscoped() {
                return Err(AccountError::NotPermitted);
            }
            let hash = sqlx::query("SELECT password_hash FROM users WHERE id = $1")
                .bind(user.0)
                .fetch_one(&self.db().pool)
                .await?
                .try_get::<Option<String>, _>("password_hash")?;
            let ok = match (hash, current) {
                (Some(h), Some(c)) => verify_password(h, c.as_bytes()).await.map_err(AccountError::Hashing)?,
                (None, _) => true,
                (Some(_), None) => false,
            };
            if !ok {
                return Err(AccountError::WrongPassword);
            }
        } else if !by.is_admin() {
            return Err(AccountError::NotPermitted);
        }
        let hash = hash_password(new).await.map_err(AccountError::Hashing)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(hash)
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(int(now))
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, now, Entry::by(by, AuditAction::PasswordChanged, target.name, "")).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Disables (or enables again) a user: every credential of a disabled
    /// user is refused from the next request on. Admin only.
    pub async fn set_disabled(&self, admin: &Principal, user: UserId, disabled: bool) -> Result<(), AccountError> {
        if !admin.is_admin() {
            return Err(AccountError::NotPermitted);
        }
        let target = self.get_user(user).await?.ok_or(AccountError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if disabled && target.role == Role::Admin {
            self.ensure_other_admin(&mut tx, user).await?;
        }
        sqlx::query("UPDATE users SET disabled = $1 WHERE id = $2")
            .bind(i64::from(disabled))
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        let action = if disabled { AuditAction::UserDisabled } else { AuditAction::UserEnabled };
        audit::append(&mut tx, now, Entry::by(admin, action, target.name, "")).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes a user admin or user. Admin only.
    pub async fn set_role(&self, admin: &Principal, user: UserId, role: Role) -> Result<(), AccountError> {
        if !admin.is_admin() {
            return Err(AccountError::NotPermitted);
        }
        let target = self.get_user(user).await?.ok_or(AccountError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if role != Role::Admin && target.role == Role::Admin {
            self.ensure_other_admin(&mut tx, user).await?;
        }
        sqlx::query("UPDATE users SET role = $1 WHERE id = $2")
            .bind(role.as_str())
            .bind(user.0)
            .execute(&mut *tx)
            .await?;
        audit::append(&mut tx, now, Entry::by(admin, AuditAction::RoleChanged, target.name, role.as_str())).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn ensure_other_admin(&self, tx: &mut crate::db::Tx, user: UserId) -> Result<(), AccountError> {
        let others = sqlx::query("SELECT COUNT(*) AS n FROM users WHERE role = 'admin' AND disabled = 0 AND id <> $1")
            .bind(user.0)
            .fetch_one(&mut **tx)
            .await?
            .try_get::<i64, _>("n")?;
        if others == 0 { Err(AccountError::LastAdmin) } else { Ok(()) }
    }

    /// Deletes a user (themselves with an unscoped credential, or anyone by
    /// the admin): see the module doc for what goes and what the caller must
    /// delete from the store.
    pub async fn delete_user(&self, by: &Principal, user: UserId) -> Result<DeletedUser, AccountError> {
        if !by.may_manage_account(user) {
            return Err(AccountError::NotPermitted);
        }
        let target = self.get_user(user).await?.ok_or(AccountError::NoSuchUser)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if target.role == Role::Admin {
            self.ensure_other_admin(&mut tx, user).await?;
        }
        let rows = sqlx::query("SELECT kind, name FROM resources WHERE owner_id = $1 ORDER BY id")
            .bind(user.0)
            .fetch_all(&mut *tx)
            .await?;
        let mut owned = Vec::with_capacity(rows.len());
        for r in &rows {
            if let Some(res) = ResourceRef::from_db(&r.try_get::<String, _>("kind")?, r.try_get("name")?) {
                owned.push(res);
            }
        }
        // What others registered inside the user's buckets goes with the
        // buckets: a later owner of the same bucket name must not find
        // someone else's records (and grants) waiting in it.
        sqlx::query(
            "DELETE FROM resources WHERE bucket IN (SELECT name FROM resources WHERE kind = 'bucket' AND owner_id = $1)",
        )
        .bind(user.0)
        .execute(&mut *tx)
        .await?;
        // Foreign keys cascade to tokens, keys, grants, usage, reservations
        // and owned resources (with their grants).
        sqlx::query("DELETE FROM users WHERE id = $1").bind(user.0).execute(&mut *tx).await?;
        let detail = format!("owned {} resources", owned.len());
        audit::append(&mut tx, now, Entry::by(by, AuditAction::UserDeleted, target.name.clone(), detail)).await?;
        self.commit_narrowing(tx).await?;
        Ok(DeletedUser { user: target, owned })
    }
}
