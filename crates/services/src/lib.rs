//! DataMesh services: the layer that knows **who** is asking and what they
//! may do. Accounts, API and S3 keys, permissions, quotas and tiers, rate
//! limits and the audit log live here, over SQL (SQLite in the data dir by
//! default, PostgreSQL when configured); storage economics and governance
//! will join them.
//!
//! **Architecture invariant:** services know SQL and business rules, and
//! never the network or the store: this crate depends on `datamesh-core`
//! (vocabulary) and on database crates, never on `datamesh-net`,
//! `datamesh-store`, `datamesh-node`, libp2p or an HTTP server. A service
//! answers questions ("may this principal delete this object?", "does this
//! put fit the user's quota?") and records facts ("this key was revoked");
//! the gateway asks it before it calls the node, so the node never knows
//! SQL and never sees a user.
//!
//! **Architecture invariant:** the node never knows SQL: `datamesh-node`
//! and the crates below it depend on no SQL driver and not on this crate.
//! Both rules are checked by `tests/layering.rs` over every crate's
//! `Cargo.toml`.
//!
//! # Shape
//! One [`Services`] value (cheap to clone) is opened on a database URL
//! ([`Services::open`]) and answers every question; each module adds its
//! own `impl Services` block and its own error enum:
//!
//! - [`users`]: sign-up, roles, Argon2id passwords, the login limiter,
//!   disable and delete.
//! - [`sessions`]: opaque access and refresh tokens, browser sessions with
//!   a CSRF token, and [`Services::authenticate_bearer`], the one call a
//!   request makes to learn its [`Principal`].
//! - [`keylogin`]: login by an Ed25519 signature over a server challenge.
//! - [`enckeys`]: the public encryption keys a user publishes for sharing.
//! - [`keys`]: scoped API keys and S3 access keys (secrets sealed).
//! - [`perms`]: resource ownership, grants, public read, and
//!   [`Services::check`].
//! - [`quota`]: the tier table, usage, and reservations taken before an
//!   upload is accepted.
//! - [`ratelimit`]: GCRA buckets in memory, per user and route class, and
//!   per source address.
//! - [`audit`]: the append-only, hash-chained audit log.
//!
//! Every operation that changes something writes its audit row in the same
//! transaction, so the log never misses an action that happened nor records
//! one that did not.
//!
//! # For the HTTP wiring
//! What a gateway request does, in order, and how the answers map:
//!
//! 1. Unauthenticated routes: [`Services::rate_limit_address`].
//! 2. Authenticate: [`Services::authenticate_bearer`] (access token or API
//!    key), [`Services::authenticate_session`] (cookie + CSRF header for
//!    unsafe methods), or [`Services::s3_credentials`] (the secret to check
//!    SigV4 with). The node token maps to [`Services::bootstrap_admin`].
//!    [`sessions::AuthError`] is 401 (S3: `InvalidAccessKeyId` /
//!    `SignatureDoesNotMatch`), except `CsrfMismatch` (403).
//! 3. [`Services::rate_limit`] with the route's [`ratelimit::RouteClass`]:
//!    [`ratelimit::RateLimited`] is 429 with `Retry-After` (S3: 503
//!    `SlowDown`).
//! 4. [`Services::check`] on the resource: `Deny` is 403 (S3:
//!    `AccessDenied`), whether or not it exists.
//! 5. Uploads: [`Services::reserve`] before reading the body (and
//!    [`Services::extend`] per multipart part), then [`Services::commit`] or
//!    [`Services::release`]; downloads: [`Services::charge_download`].
//!    [`quota::QuotaError::Exceeded`] is 403 `quota_exceeded` naming the
//!    quota (S3: 403 `QuotaExceeded`); warnings raise the 80 % event.
//! 6. New buckets, files, share links, uploads:
//!    [`Services::create_resource`] (`NameTaken` is 409, S3
//!    `BucketAlreadyExists`); deletions: [`Services::delete_resource`],
//!    [`Services::record_deleted`].
//!
//! Login routes: [`Services::login_password`] or
//! [`Services::login_challenge`] + [`Services::login_signature`], then
//! [`Services::issue_tokens`] or [`Services::start_session`];
//! [`users::LoginError`] is 401, `TooManyAttempts` 429. Any [`DbError`] is
//! 503: the database, not the caller, failed. Housekeeping for a worker:
//! [`Services::purge_expired`], [`Services::expire_reservations`].

/// The columns of a user's tier for a query that joins `tiers tr`, named
/// `tier_*` so they do not collide with the user's own (read them with
/// `quota::tier_from_joined_row`), and the permission epoch (`perm_epoch`,
/// see `perm_cache`). Authentication selects them with the credential's
/// row, so the rate limiter and the quota charge of the same request need
/// no query of their own, and a tier changed by the admin holds from the
/// next request on (tiers are never cached; permission levels are, for as
/// long as the epoch read here holds).
macro_rules! tier_columns {
    () => {
        "tr.name AS tier_name, tr.max_stored_bytes AS tier_max_stored_bytes, \
         tr.max_transfer_bytes AS tier_max_transfer_bytes, tr.max_calls_per_hour AS tier_max_calls_per_hour, \
         tr.max_file_bytes AS tier_max_file_bytes, tr.max_files AS tier_max_files, tr.sla AS tier_sla, \
         (SELECT pe.n FROM perm_epoch pe WHERE pe.id = 0) AS perm_epoch"
    };
}

mod db;
mod login_limit;
mod perm_cache;
mod secret;

pub mod audit;
pub mod enckeys;
pub mod keylogin;
pub mod keys;
pub mod perms;
pub mod quota;
pub mod ratelimit;
pub mod sessions;
pub mod users;
pub mod wraps;

mod principal;
mod services;

pub use crate::db::{DbError, DbOpenError};
pub use crate::principal::{Principal, Via};
pub use crate::secret::SealingKey;
pub use crate::services::{Clock, Config, LoginLimits, Services, SystemClock};
pub use crate::users::{Role, UserId};
