//! The database: one pool over SQLite or PostgreSQL, chosen by URL, with
//! the migrations of its dialect applied at open.
//!
//! **Why sqlx and its `Any` driver.** One code path serves both databases:
//! queries are written once with `$1`-style placeholders (PostgreSQL's, which
//! sqlx's SQLite driver also reads as positional), integers are `BIGINT`
//! (SQLite's `INTEGER` is 64-bit anyway) and bytes are `BYTEA`/`BLOB`. sqlx
//! is async on tokio (the gateway's runtime), pools connections, runs
//! versioned migrations, and only accepts `&'static str` SQL without an
//! explicit opt-out, so user input can only ever reach a query as a bound
//! parameter. Its compile-time macros are not used: they would need a live
//! database or checked-in query metadata for two dialects.
//!
//! SQLite specifics: WAL (readers do not block the writer), a busy timeout,
//! foreign keys on, and write transactions opened with `BEGIN IMMEDIATE`
//! so that two writers queue on the lock instead of one failing when it
//! upgrades a read lock.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, Executor, SqlSafeStr, Transaction};

/// A transaction on either database.
pub(crate) type Tx = Transaction<'static, Any>;

/// Which SQL dialect the pool speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Sqlite,
    Postgres,
}

/// The pool and its dialect.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    pub(crate) pool: AnyPool,
    pub(crate) dialect: Dialect,
}

/// Opening the accounts database, or preparing the service over it, failed:
/// [`crate::Services::open`]'s error. Once open, a failure is a [`DbError`].
#[derive(Debug, thiserror::Error)]
pub enum DbOpenError {
    /// The URL names neither SQLite nor PostgreSQL.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl(String),
    /// The server or file could not be reached or opened.
    #[error("cannot open the accounts database: {0}; check the URL, that the server is up, and the credentials")]
    Connect(#[source] sqlx::Error),
    /// A migration failed or the database is newer than this program.
    #[error("cannot migrate the accounts database: {0}; a database written by a newer DataMesh needs that version")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// Preparing the service's own state failed.
    #[error("cannot prepare the accounts service: {0}")]
    Setup(String),
}

/// The database failed while answering: a transient outage or a bug, never
/// the caller's input (input is validated before any SQL runs).
#[derive(Debug, thiserror::Error)]
#[error("the accounts database failed: {0}; retry, and check the database if it persists")]
pub struct DbError(#[from] pub sqlx::Error);

impl DbError {
    /// Whether this is a uniqueness violation (a name already taken).
    pub(crate) fn is_unique_violation(&self) -> bool {
        matches!(&self.0, sqlx::Error::Database(e) if e.is_unique_violation())
    }
}

/// The migrations of `dialect`, in order. A migration, once released, is
/// never edited (sqlx checks each applied one's checksum at open): a change
/// is a new version, written for both dialects.
fn migrations(dialect: Dialect) -> Migrator {
    let files: [(i64, &'static str, &'static str); 4] = match dialect {
        Dialect::Sqlite => [
            (1, "accounts", include_str!("../migrations/sqlite/0001_accounts.sql")),
            (2, "encryption keys", include_str!("../migrations/sqlite/0002_encryption_keys.sql")),
            (3, "file wraps", include_str!("../migrations/sqlite/0003_file_wraps.sql")),
            (4, "permission epoch", include_str!("../migrations/sqlite/0004_permission_epoch.sql")),
        ],
        Dialect::Postgres => [
            (1, "accounts", include_str!("../migrations/postgres/0001_accounts.sql")),
            (2, "encryption keys", include_str!("../migrations/postgres/0002_encryption_keys.sql")),
            (3, "file wraps", include_str!("../migrations/postgres/0003_file_wraps.sql")),
            (4, "permission epoch", include_str!("../migrations/postgres/0004_permission_epoch.sql")),
        ],
    };
    Migrator::with_migrations(
        files
            .into_iter()
            .map(|(v, d, sql)| Migration::new(v, Cow::Borrowed(d), MigrationType::Simple, sql.into_sql_str(), false))
            .collect(),
    )
}

impl Db {
    /// Opens `url` (`sqlite://PATH`, created if missing, or
    /// `postgres://...`) and applies the pending migrations of its dialect.
    pub(crate) async fn open(url: &str, max_connections: u32) -> Result<Db, DbOpenError> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            create_private(rest).map_err(|e| DbOpenError::Setup(format!("cannot create the database file: {e}")))?;
            // Create the file when missing, as the node creates its data dir.
            let sep = if rest.contains('?') { '&' } else { '?' };
            let url = if rest.contains("mode=") { url.to_string() } else { format!("{url}{sep}mode=rwc") };
            (Dialect::Sqlite, url)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(DbOpenError::UnsupportedUrl(url.chars().take(64).collect()));
        };
        let opts = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if dialect == Dialect::Sqlite {
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                        conn.execute("PRAGMA foreign_keys = ON").await?;
                        conn.execute("PRAGMA synchronous = NORMAL").await?;
                    }
                    Ok(())
                })
            });
        let pool = opts.connect(&url).await.map_err(DbOpenError::Connect)?;
        migrations(dialect).run(&pool).await.map_err(DbOpenError::Migrate)?;
        Ok(Db { pool, dialect })
    }

    /// Starts a write transaction (SQLite: `BEGIN IMMEDIATE`, see the
    /// module doc).
    pub(crate) async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self.dialect {
            Dialect::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Dialect::Postgres => self.pool.begin().await?,
        })
    }
}

/// Creates the SQLite file of `rest` (the URL after `sqlite:`) readable by
/// its owner only, if it does not exist: it holds password hashes and
/// sealed secrets. SQLite gives its `-wal` and `-shm` files the database
/// file's permissions.
fn create_private(rest: &str) -> std::io::Result<()> {
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path == ":memory:" || std::path::Path::new(path).exists() {
        return Ok(());
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// A `u64` as the database's `BIGINT`; values beyond `i64::MAX` (no real
/// size or time reaches them) saturate.
pub(crate) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A `BIGINT` read back as a `u64` (negative values, which we never write,
/// read as 0).
pub(crate) fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
