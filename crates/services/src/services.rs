//! The [`Services`] handle: the database, the configuration, the sealing
//! key and the in-memory rate limiters, shared by every module's
//! `impl Services` block.

use std::sync::Arc;
use std::time::Duration;

use crate::db::{Db, DbOpenError};
use crate::ratelimit::Limiters;
use crate::secret::SealingKey;

/// Where the services read the time: the system clock, or a test's.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch.
    fn now(&self) -> u64;
}

/// The system's wall clock (`datamesh_core::clock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        datamesh_core::clock::unix_secs()
    }
}

/// The password login limiter's policy (see [`crate::users`]).
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// Failures per user name allowed before backoff starts.
    pub free_failures_per_user: u32,
    /// Failures per source address allowed before backoff starts (higher:
    /// several people may share an address).
    pub free_failures_per_address: u32,
    /// The longest lockout: backoff doubles from 1 s up to this.
    pub max_lockout: Duration,
    /// A counter with no failure for this long starts again from zero.
    pub forget_after: Duration,
}

impl Default for LoginLimits {
    fn default() -> Self {
        LoginLimits {
            free_failures_per_user: 5,
            free_failures_per_address: 20,
            max_lockout: Duration::from_secs(15 * 60),
            forget_after: Duration::from_secs(60 * 60),
        }
    }
}

/// The services' configuration, with defaults for a single node.
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's identity as login challenges name it (its URL or peer
    /// id): a signature made for another node's challenge is refused here.
    pub audience: String,
    /// Whether anyone may sign up (otherwise only the admin creates users).
    pub open_sign_up: bool,
    /// The tier a new user starts on.
    pub default_tier: String,
    /// Lifetime of a bearer access token: short, so a leaked one is soon
    /// useless even if nobody revokes it.
    pub access_ttl: Duration,
    /// Lifetime of a refresh token (each use rotates it).
    pub refresh_ttl: Duration,
    /// Lifetime of a browser session.
    pub session_ttl: Duration,
    /// Lifetime of a login challenge.
    pub challenge_ttl: Duration,
    /// How long an upload's quota reservation holds before
    /// [`Services::expire_reservations`] returns it.
    pub reservation_ttl: Duration,
    /// The password login limiter.
    pub login: LoginLimits,
    /// Requests per minute from one source address on unauthenticated
    /// routes (login, sign-up, public reads).
    pub anonymous_per_minute: u32,
    /// Database connections in the pool.
    pub max_connections: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            audience: "datamesh".into(),
            open_sign_up: true,
            default_tier: "free".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            session_ttl: Duration::from_secs(12 * 3600),
            challenge_ttl: Duration::from_secs(120),
            reservation_ttl: Duration::from_secs(24 * 3600),
            login: LoginLimits::default(),
            anonymous_per_minute: 60,
            max_connections: 8,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) db: Db,
    pub(crate) config: Config,
    pub(crate) sealing: SealingKey,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) limiters: Limiters,
    /// An Argon2id hash of a random password, verified against when the
    /// user does not exist so that a login takes as long either way.
    pub(crate) dummy_hash: String,
    /// Permission levels read under the current permission epoch.
    pub(crate) perm_cache: crate::perm_cache::PermCache,
}

/// The services: open once per process, clone freely (an `Arc` inside).
/// Several processes (gateways) may open the same PostgreSQL database and
/// share every account, key and permission; only the rate limiters are
/// per process.
#[derive(Clone)]
pub struct Services {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Services").field("dialect", &self.inner.db.dialect).finish_non_exhaustive()
    }
}

impl Services {
    /// Opens the database at `url` (`sqlite://PATH` or `postgres://...`),
    /// applies its migrations, and returns the services. `sealing` seals S3
    /// secrets at rest.
    pub async fn open(url: &str, sealing: SealingKey, config: Config) -> Result<Services, DbOpenError> {
        Services::open_with_clock(url, sealing, config, Arc::new(SystemClock)).await
    }

    /// [`Services::open`] reading the time from `clock` (tests move time).
    pub async fn open_with_clock(
        url: &str,
        sealing: SealingKey,
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Services, DbOpenError> {
        let db = Db::open(url, config.max_connections).await?;
        let dummy_hash = crate::users::dummy_hash().await.map_err(DbOpenError::Setup)?;
        let limiters = Limiters::new(config.anonymous_per_minute);
        Ok(Services {
            inner: Arc::new(Inner { db, config, sealing, clock, limiters, dummy_hash, perm_cache: Default::default() }),
        })
    }

    /// Closes the pool (waits for connections to return).
    pub async fn close(&self) {
        self.inner.db.pool.close().await;
    }

    pub(crate) fn db(&self) -> &Db {
        &self.inner.db
    }

    pub(crate) fn now(&self) -> u64 {
        self.inner.clock.now()
    }

    pub(crate) fn config(&self) -> &Config {
        &self.inner.config
    }
}
