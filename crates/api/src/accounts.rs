//! Accounts: sign-up, logins (password or key signature), tokens, the
//! caller's own account and usage, and the administrator's users, tiers and
//! audit log.

use serde::{Deserialize, Serialize};

/// `POST /v1/accounts` (sign-up, when the node allows it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignUp {
    /// The user name (letters, digits, `.`, `-`, `_`; no control characters).
    pub name: String,
    /// The password.
    pub password: String,
}

/// `POST /v1/login`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordLogin {
    /// The user name.
    pub name: String,
    /// The password.
    pub password: String,
    /// `true` for a browser session (a cookie and a CSRF token) instead of
    /// bearer tokens.
    #[serde(default)]
    pub session: bool,
}

/// A login challenge (`POST /v1/login/challenge`): sign
/// `datamesh-login-v1\naudience=A\nnonce=N\nexpires=E\nuser=U\n` with the
/// user's Ed25519 key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Challenge {
    /// 32 random bytes, hex.
    pub nonce: String,
    /// The node the challenge is for.
    pub audience: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// `POST /v1/login/signature`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignatureLogin {
    /// The challenge as it was received.
    pub challenge: Challenge,
    /// The user logging in.
    pub name: String,
    /// The Ed25519 public key that signed, hex (32 bytes).
    pub public_key: String,
    /// The signature over the challenge's message, hex (64 bytes).
    pub signature: String,
    /// `true` for a browser session instead of bearer tokens.
    #[serde(default)]
    pub session: bool,
}

/// What a login answers: bearer tokens, or (with `session`) the CSRF token
/// of the session whose cookie the answer sets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LoginAnswer {
    /// Who logged in.
    pub user: Account,
    /// The bearer token (`Authorization: Bearer ...`); absent for a session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<crate::Secret>,
    /// When the access token expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_expires_at: Option<u64>,
    /// The single-use token for `POST /v1/token/refresh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<crate::Secret>,
    /// When the refresh token expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_expires_at: Option<u64>,
    /// For a session: send it back in `x-csrf-token` on unsafe requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csrf_token: Option<crate::Secret>,
    /// For a session: when it expires (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_expires_at: Option<u64>,
}

/// `POST /v1/token/refresh`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The refresh token of the last pair (each is used once).
    pub refresh_token: crate::Secret,
}

/// A new token pair (`POST /v1/token/refresh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenPair {
    /// The bearer token.
    pub access_token: crate::Secret,
    /// When it expires (Unix seconds).
    pub access_expires_at: u64,
    /// The next refresh token.
    pub refresh_token: crate::Secret,
    /// When it expires (Unix seconds).
    pub refresh_expires_at: u64,
}

/// A user account as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// `admin` or `user`.
    pub role: String,
    /// The tier's name.
    pub tier: String,
    /// Whether every credential of the user is refused.
    pub disabled: bool,
    /// Whether the user has a password (otherwise key login only).
    pub has_password: bool,
    /// When the account was created (Unix seconds).
    pub created_at: u64,
}

/// `GET /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccountList {
    /// Every user.
    pub users: Vec<Account>,
}

/// `POST /v1/admin/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// The user name.
    pub name: String,
    /// The password; absent for a key-login-only account.
    #[serde(default)]
    pub password: Option<String>,
    /// `user` (default) or `admin`.
    #[serde(default)]
    pub role: Option<String>,
    /// The tier; the node's default when absent.
    #[serde(default)]
    pub tier: Option<String>,
}

/// `PATCH /v1/admin/users/{name}`: what to change (absent: unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountPatch {
    /// A tier's name.
    #[serde(default)]
    pub tier: Option<String>,
    /// Disable (every credential refused from the next request) or enable.
    #[serde(default)]
    pub disabled: Option<bool>,
    /// `admin` or `user`.
    #[serde(default)]
    pub role: Option<String>,
}

/// `PUT /v1/me/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password (the administrator resetting it may omit it).
    #[serde(default)]
    pub current: Option<String>,
    /// The new password.
    pub new: String,
}

/// A tier's limits (`null`: unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The name.
    pub name: String,
    /// Logical bytes stored.
    pub max_stored_bytes: Option<u64>,
    /// Bytes downloaded per calendar month.
    pub max_transfer_bytes: Option<u64>,
    /// API calls per hour.
    pub max_calls_per_hour: Option<u32>,
    /// Size of one file in bytes.
    pub max_file_bytes: Option<u64>,
    /// Number of files.
    pub max_files: Option<u64>,
    /// Whether the tier comes with a service-level agreement.
    #[serde(default)]
    pub sla: bool,
}

/// `GET /v1/admin/tiers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TierList {
    /// Every tier.
    pub tiers: Vec<Tier>,
}

/// `GET /v1/me/usage`: what the user uses, as they see it, with their
/// tier's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Usage {
    /// The user's tier and its limits.
    pub tier: Tier,
    /// Logical bytes stored.
    pub stored_bytes: u64,
    /// Files stored.
    pub files: u64,
    /// Bytes held by uploads in progress.
    pub reserved_bytes: u64,
    /// Files held by uploads in progress.
    pub reserved_files: u64,
    /// Bytes downloaded this calendar month.
    pub downloaded_bytes: u64,
    /// Quotas at or above 80 % (`storage`, `files`, `file_size`, `transfer`).
    pub warnings: Vec<String>,
}

/// `GET /v1/admin/audit?after=&limit=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Rows after this sequence number (0: from the start).
    pub after: Option<u64>,
    /// At most this many rows (1 to 1000; 100 by default).
    pub limit: Option<u32>,
}

/// One row of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditRecord {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// When (Unix seconds).
    pub at: u64,
    /// The acting user's name (empty if anonymous).
    pub actor: String,
    /// What happened (`login`, `login_failed`, `user_created`, ...).
    pub action: String,
    /// What it happened to.
    pub target: String,
    /// Details (never a secret).
    pub detail: String,
    /// The source address, if known.
    pub source: String,
    /// This row's chain hash, hex.
    pub hash: String,
}

/// `GET /v1/admin/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Rows, oldest first.
    pub records: Vec<AuditRecord>,
    /// Pass as `after` for the next page; absent at the end.
    pub next: Option<u64>,
}

/// `GET /v1/admin/audit/verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditVerdict {
    /// Whether every row verifies.
    pub ok: bool,
    /// Rows checked (when `ok`).
    pub rows: u64,
    /// The chain's head hash, hex (when `ok`): publish it to anchor the log.
    pub head: Option<String>,
    /// The first row that does not verify (when not `ok`).
    pub broken_at: Option<u64>,
    /// What does not match there.
    pub problem: Option<String>,
}
