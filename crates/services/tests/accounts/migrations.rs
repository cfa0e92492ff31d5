//! Versioned migrations: applied once at open, and a database written by a
//! newer DataMesh is refused rather than misread.

use datamesh_services::{DbOpenError, SealingKey, Services};
use sqlx::{Executor, Row};

use crate::common::Env;

crate::both!(migrations_are_versioned_and_applied_once);

async fn migrations_are_versioned_and_applied_once(env: &Env) {
    let mut raw = env.raw().await;
    let versions: Vec<i64> = raw
        .fetch_all("SELECT version FROM _sqlx_migrations ORDER BY version")
        .await
        .expect("migrations table")
        .iter()
        .map(|r| r.try_get("version").expect("version"))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
    // Reopening applies nothing again and keeps the data.
    env.svc.sign_up("alice", "correct horse battery").await.expect("sign up");
    let again = env.second().await;
    assert!(again.find_user("alice").await.expect("find").is_some());
    // The SQLite file holds password hashes: its owner's only.
    #[cfg(unix)]
    if let Some(path) = env.url.strip_prefix("sqlite://") {
        use std::os::unix::fs::PermissionsExt;
        for suffix in ["", "-wal", "-shm"] {
            let mode = std::fs::metadata(format!("{path}{suffix}")).expect("db file").permissions().mode();
            assert_eq!(mode & 0o077, 0, "{path}{suffix} is readable by others: {mode:o}");
        }
    }
    // A migration this program does not know: a newer DataMesh wrote it.
    let future = if env.url.starts_with("sqlite:") {
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, X'00', 0)"
    } else {
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (999, 'from the future', TRUE, '\\x00'::bytea, 0)"
    };
    raw.execute(future).await.expect("insert a future migration");
    let r = Services::open(&env.url, SealingKey::generate("k"), crate::common::config()).await;
    assert!(matches!(r, Err(DbOpenError::Migrate(_))), "{r:?}");
    // And URLs that name no supported database are refused.
    for url in ["mysql://localhost/db", "", "sqlite", "http://x"] {
        let r = Services::open(url, SealingKey::generate("k"), crate::common::config()).await;
        assert!(matches!(r, Err(DbOpenError::UnsupportedUrl(_))), "{url}: {r:?}");
    }
}
