//! Sessions and tokens: what a login turns into, and how every request
//! proves who it is.
//!
//! # Opaque tokens, not JWTs
//! A token is 256 random bits that mean nothing by themselves; the database
//! row says whose it is, until when, and whether it was revoked. Every
//! request looks it up (one indexed read of a 32-byte key), so:
//! - revocation (logout, a disabled user, a changed password, a reused
//!   refresh token) takes effect on the **next request**, not when a
//!   signed token would expire;
//! - several gateways on one PostgreSQL share sessions with nothing to
//!   distribute but the database: no signing key to share or rotate, no
//!   clock-skew rules;
//! - nothing about the user (role, scope) is frozen into a token that
//!   outlives a change of it.
//!
//! The price, one read per request, is what the gateway pays already to
//! check permissions. Only SHA-256 hashes are stored (`secret.rs`).
//!
//! # Programs: access and refresh tokens
//! A login issues a short-lived access token (15 min) and a refresh token
//! (30 days) of one *family*. A refresh token is single-use: refreshing
//! marks it used and issues a new pair of the same family. Presenting a
//! used refresh token again means it was copied (the holder or a thief
//! already used it), so the whole family is revoked and both must log in
//! again (OAuth 2.0 Security BCP, refresh token rotation).
//!
//! # Browsers: sessions with a CSRF token
//! A browser session is a session token (for an HttpOnly, SameSite=Strict
//! cookie, which the gateway sets) and a CSRF token (for the page, sent
//! back in a header). A request with an unsafe method must present both
//! ([`Csrf::Token`]): a cross-site form can make the browser send the
//! cookie, but cannot read the CSRF token.

use sqlx::Row;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::audit::{self, AuditAction, Entry};
use crate::db::{DbError, Tx, int, uint};
use crate::keys::Scope;
use crate::quota::Tier;
use crate::secret::{self, TokenKind};
use crate::users::{Role, User, UserId};
use crate::{Principal, Services, Via};

/// Proof of a successful login (by password or key signature), to exchange
/// for tokens or a session. Only this crate makes one.
#[derive(Debug)]
pub struct LoginGrant {
    user: User,
    method: &'static str,
}

impl LoginGrant {
    pub(crate) fn new(user: User) -> LoginGrant {
        LoginGrant { user, method: "password" }
    }

    pub(crate) fn by_key(user: User) -> LoginGrant {
        LoginGrant { user, method: "key" }
    }

    /// The user who logged in.
    pub fn user(&self) -> &User {
        &self.user
    }
}

/// An access token and its refresh token.
#[derive(Clone)]
pub struct TokenPair {
    /// The bearer token for requests (`Authorization: Bearer ...`).
    pub access_token: Zeroizing<String>,
    /// When the access token expires (Unix seconds).
    pub access_expires_at: u64,
    /// The single-use token for [`Services::refresh`].
    pub refresh_token: Zeroizing<String>,
    /// When the refresh token expires (Unix seconds).
    pub refresh_expires_at: u64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .finish_non_exhaustive()
    }
}

/// A browser session.
#[derive(Clone)]
pub struct BrowserSession {
    /// For the session cookie (HttpOnly, SameSite=Strict, Secure over TLS).
    pub session_token: Zeroizing<String>,
    /// For the page, which sends it back on unsafe requests.
    pub csrf_token: Zeroizing<String>,
    /// When the session expires (Unix seconds).
    pub expires_at: u64,
}

impl std::fmt::Debug for BrowserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSession").field("expires_at", &self.expires_at).finish_non_exhaustive()
    }
}

/// The CSRF evidence a session request carries.
#[derive(Debug, Clone, Copy)]
pub enum Csrf<'a> {
    /// A safe method (GET, HEAD, OPTIONS): no CSRF token needed.
    SafeMethod,
    /// An unsafe method, with the CSRF token the request presented.
    Token(&'a str),
}

/// A credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// Not a token of the expected kind (wrong length, prefix or alphabet):
    /// nothing was looked up.
    #[error("malformed credential: not a DataMesh token of this kind; check what was sent")]
    Malformed,
    /// Unknown or revoked.
    #[error("invalid credential: log in again or use another key")]
    Invalid,
    /// Expired.
    #[error("the credential has expired: refresh it or log in again")]
    Expired,
    /// The user is disabled.
    #[error("this account is disabled: ask the node's administrator")]
    Disabled,
    /// The CSRF token is missing or does not match the session.
    #[error("CSRF check failed: reload the page and retry")]
    CsrfMismatch,
    /// A used refresh token came back: the whole login is revoked.
    #[error(
        "this refresh token was already used, so it may have been copied: every token of this login is revoked; log in again"
    )]
    RefreshReused,
    /// The caller may not end another user's sessions, or used a scoped
    /// key for it.
    #[error("not permitted: only the user (with a login, not a scoped key) or the administrator")]
    NotPermitted,
    /// The database failed.
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<sqlx::Error> for AuthError {
    fn from(e: sqlx::Error) -> Self {
        AuthError::Database(DbError(e))
    }
}

struct TokenRow {
    kind: String,
    user: UserId,
    name: String,
    role: Role,
    disabled: bool,
    family: Vec<u8>,
    csrf_hash: Option<Vec<u8>>,
    expires_at: u64,
    used: bool,
    revoked: bool,
    tier: Tier,
    perm_epoch: i64,
}

impl Services {
    async fn token_row(&self, hash: &[u8; 32]) -> Result<Option<TokenRow>, AuthError> {
        let row = sqlx::query(concat!(
            "SELECT t.kind, t.family, t.csrf_hash, t.expires_at, t.used_at, t.revoked_at, \
                    u.id, u.name, u.role, u.disabled, ",
            tier_columns!(),
            " FROM tokens t JOIN users u ON u.id = t.user_id JOIN tiers tr ON tr.name = u.tier WHERE t.hash = $1",
        ))
        .bind(hash.to_vec())
        .fetch_optional(&self.db().pool)
        .await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(TokenRow {
            kind: r.try_get("kind")?,
            user: UserId(r.try_get("id")?),
            name: r.try_get("name")?,
            role: if r.try_get::<String, _>("role")? == "admin" { Role::Admin } else { Role::User },
            disabled: r.try_get::<i64, _>("disabled")? != 0,
            family: r.try_get("family")?,
            csrf_hash: r.try_get("csrf_hash")?,
            expires_at: uint(r.try_get("expires_at")?),
            used: r.try_get::<Option<i64>, _>("used_at")?.is_some(),
            revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
            tier: crate::quota::tier_from_joined_row(&r)?,
            perm_epoch: r.try_get("perm_epoch")?,
        }))
    }

    /// Checks a token row of `kind`, returning its principal.
    fn principal_of(&self, row: TokenRow, kind: &str, via: Via) -> Result<Principal, AuthError> {
        if row.kind != kind || row.revoked {
            return Err(AuthError::Invalid);
        }
        if row.expires_at <= self.now() {
            return Err(AuthError::Expired);
        }
        if row.disabled {
            return Err(AuthError::Disabled);
        }
        Ok(Principal {
            user: row.user,
            name: row.name,
            role: row.role,
            scope: Scope::full(),
            via,
            expires_at: None,
            tier: row.tier,
            perm_epoch: row.perm_epoch,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn insert_token(
        tx: &mut Tx,
        hash: &[u8; 32],
        kind: &str,
        user: UserId,
        family: &[u8],
        csrf_hash: Option<&[u8; 32]>,
        via: &str,
        now: u64,
        expires_at: u64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO tokens (hash, kind, user_id, family, csrf_hash, via, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(hash.to_vec())
        .bind(kind.to_string())
        .bind(user.0)
        .bind(family.to_vec())
        .bind(csrf_hash.map(|h| h.to_vec()))
        .bind(via.to_string())
        .bind(int(now))
        .bind(int(expires_at))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    async fn insert_pair(&self, tx: &mut Tx, user: UserId, family: &[u8], via: &str) -> Result<TokenPair, DbError> {
        let now = self.now();
        let (access, ah) = secret::mint(TokenKind::Access);
        let (refresh, rh) = secret::mint(TokenKind::Refresh);
        let access_expires_at = now + self.config().access_ttl.as_secs();
        let refresh_expires_at = now + self.config().refresh_ttl.as_secs();
        Self::insert_token(tx, &ah, "access", user, family, None, via, now, access_expires_at).await?;
        Self::insert_token(tx, &rh, "refresh", user, family, None, via, now, refresh_expires_at).await?;
        Ok(TokenPair { access_token: access, access_expires_at, refresh_token: refresh, refresh_expires_at })
    }

    /// Exchanges a login for an access token and a refresh token (programs,
    /// the CLI).
    pub async fn issue_tokens(&self, grant: LoginGrant) -> Result<TokenPair, AuthError> {
        let mut tx = self.db().begin().await?;
        let pair = self.insert_pair(&mut tx, grant.user.id, &secret::random32(), grant.method).await?;
        tx.commit().await?;
        Ok(pair)
    }

    /// Exchanges a login for a browser session.
    pub async fn start_session(&self, grant: LoginGrant) -> Result<BrowserSession, AuthError> {
        let now = self.now();
        let (session, sh) = secret::mint(TokenKind::Session);
        let (csrf, ch) = secret::mint(TokenKind::Csrf);
        let expires_at = now + self.config().session_ttl.as_secs();
        let mut tx = self.db().begin().await?;
        let family = secret::random32();
        Self::insert_token(&mut tx, &sh, "session", grant.user.id, &family, Some(&ch), grant.method, now, expires_at)
            .await?;
        tx.commit().await?;
        Ok(BrowserSession { session_token: session, csrf_token: csrf, expires_at })
    }

    /// Rotates a refresh token: marks it used and returns a new pair of the
    /// same family. A used token presented again revokes the family
    /// ([`AuthError::RefreshReused`]).
    pub async fn refresh(&self, refresh_token: &str) -> Result<TokenPair, AuthError> {
        let hash = secret::parse(TokenKind::Refresh, refresh_token).ok_or(AuthError::Malformed)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        // One statement claims the token, so two concurrent refreshes
        // cannot both succeed.
        let claimed = sqlx::query(
            "UPDATE tokens SET used_at = $1 WHERE hash = $2 AND kind = 'refresh' AND used_at IS NULL \
             AND revoked_at IS NULL AND expires_at > $1 RETURNING user_id, family, via",
        )
        .bind(int(now))
        .bind(hash.to_vec())
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = claimed {
            let user = UserId(r.try_get("user_id")?);
            let family: Vec<u8> = r.try_get("family")?;
            let via: String = r.try_get("via")?;
            let disabled = sqlx::query("SELECT disabled FROM users WHERE id = $1")
                .bind(user.0)
                .fetch_one(&mut *tx)
                .await?
                .try_get::<i64, _>("disabled")?;
            if disabled != 0 {
                return Err(AuthError::Disabled);
            }
            let pair = self.insert_pair(&mut tx, user, &family, &via).await?;
            tx.commit().await?;
            return Ok(pair);
        }
        drop(tx);
        let Some(row) = self.token_row(&hash).await? else { return Err(AuthError::Invalid) };
        if row.kind != "refresh" || row.revoked {
            return Err(AuthError::Invalid);
        }
        if row.used {
            let mut tx = self.db().begin().await?;
            sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
                .bind(int(now))
                .bind(row.family.clone())
                .execute(&mut *tx)
                .await?;
            let entry = Entry {
                actor: (Some(row.user.0), row.name.clone()),
                ..Entry::anonymous(AuditAction::RefreshReuse, row.name.clone(), "token family revoked")
            };
            audit::append(&mut tx, now, entry).await?;
            tx.commit().await?;
            return Err(AuthError::RefreshReused);
        }
        Err(AuthError::Expired)
    }

    /// Authenticates a bearer credential: an access token (`dmat_...`) or
    /// an API key (`dmak_...`). The one call a request makes; see the
    /// module doc for why it reads the database each time.
    pub async fn authenticate_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        match secret::TokenKind::of(token) {
            Some(TokenKind::Access) => {
                let hash = secret::parse(TokenKind::Access, token).ok_or(AuthError::Malformed)?;
                let row = self.token_row(&hash).await?.ok_or(AuthError::Invalid)?;
                self.principal_of(row, "access", Via::AccessToken)
            }
            Some(TokenKind::ApiKey) => self.authenticate_api_key(token).await,
            _ => Err(AuthError::Malformed),
        }
    }

    /// Authenticates a browser session; unsafe methods must present the
    /// session's CSRF token.
    pub async fn authenticate_session(&self, session_token: &str, csrf: Csrf<'_>) -> Result<Principal, AuthError> {
        let hash = secret::parse(TokenKind::Session, session_token).ok_or(AuthError::Malformed)?;
        let row = self.token_row(&hash).await?.ok_or(AuthError::Invalid)?;
        if let Csrf::Token(given) = csrf {
            let given = secret::parse(TokenKind::Csrf, given).ok_or(AuthError::CsrfMismatch)?;
            let stored = row.csrf_hash.clone().unwrap_or_default();
            if !bool::from(stored.as_slice().ct_eq(&given)) {
                return Err(AuthError::CsrfMismatch);
            }
        }
        self.principal_of(row, "session", Via::Session)
    }

    /// Logs out: revokes the family of `token` (an access, refresh or
    /// session token), so every token of that login stops working.
    pub async fn logout(&self, token: &str) -> Result<(), AuthError> {
        let hash = [TokenKind::Access, TokenKind::Refresh, TokenKind::Session]
            .into_iter()
            .find_map(|k| secret::parse(k, token))
            .ok_or(AuthError::Malformed)?;
        let row = self.token_row(&hash).await?.ok_or(AuthError::Invalid)?;
        let now = self.now();
        let mut tx = self.db().begin().await?;
        sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE family = $2 AND revoked_at IS NULL")
            .bind(int(now))
            .bind(row.family)
            .execute(&mut *tx)
            .await?;
        let entry = Entry {
            actor: (Some(row.user.0), row.name.clone()),
            ..Entry::anonymous(AuditAction::Logout, row.name.clone(), row.kind)
        };
        audit::append(&mut tx, now, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes every session and token of `user` (the user themselves, or
    /// the admin): "log out everywhere".
    pub async fn revoke_all_sessions(&self, by: &Principal, user: UserId) -> Result<u64, AuthError> {
        if !by.may_manage_account(user) {
            return Err(AuthError::NotPermitted);
        }
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let n = sqlx::query("UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(int(now))
            .bind(user.0)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        audit::append(&mut tx, now, Entry::by(by, AuditAction::Logout, user.to_string(), "all sessions")).await?;
        tx.commit().await?;
        Ok(n)
    }

    /// Deletes expired tokens and challenges (housekeeping; a worker calls
    /// it now and then). Returns the rows removed.
    pub async fn purge_expired(&self) -> Result<u64, DbError> {
        let now = int(self.now());
        let a = sqlx::query("DELETE FROM tokens WHERE expires_at < $1").bind(now).execute(&self.db().pool).await?;
        let b = sqlx::query("DELETE FROM challenges WHERE expires_at < $1").bind(now).execute(&self.db().pool).await?;
        Ok(a.rows_affected() + b.rows_affected())
    }
}
