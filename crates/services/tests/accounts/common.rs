//! The test bench: each test body runs against SQLite (a temp dir) and a
//! real PostgreSQL (a fresh database on the server `DATAMESH_TEST_POSTGRES`
//! names; `scripts/with-postgres` starts a throwaway one).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use datamesh_services::keys::Scope;
use datamesh_services::users::NewUser;
use datamesh_services::{Clock, Config, Principal, Role, SealingKey, Services, UserId};
use sqlx::{AnyConnection, Connection, Executor};

/// A clock the test moves.
#[derive(Debug)]
pub struct TestClock(AtomicU64);

impl Clock for TestClock {
    fn now(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One backend under test.
pub struct Env {
    pub svc: Services,
    pub clock: Arc<TestClock>,
    pub url: String,
    pub sealing: [u8; 32],
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
}

pub const AUDIENCE: &str = "https://node-a.example:8080";

pub fn config() -> Config {
    Config { audience: AUDIENCE.into(), ..Config::default() }
}

impl Env {
    async fn open(url: String, dir: Option<tempfile::TempDir>) -> Env {
        let clock = Arc::new(TestClock(AtomicU64::new(datamesh_core::clock::unix_secs())));
        let sealing = [42u8; 32];
        let config = config();
        let svc = Services::open_with_clock(&url, SealingKey::new("k1", sealing), config.clone(), clock.clone())
            .await
            .expect("open services");
        Env { svc, clock, url, sealing, config, _dir: dir }
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: u64) {
        self.clock.0.fetch_add(secs, Ordering::SeqCst);
    }

    /// Another service instance on the same database (a second gateway),
    /// sharing the clock.
    pub async fn second(&self) -> Services {
        Services::open_with_clock(
            &self.url,
            SealingKey::new("k1", self.sealing),
            self.config.clone(),
            self.clock.clone(),
        )
        .await
        .expect("open second instance")
    }

    /// A raw connection, to tamper with rows as an attacker with database
    /// access would.
    pub async fn raw(&self) -> AnyConnection {
        sqlx::any::install_default_drivers();
        AnyConnection::connect(&self.url).await.expect("raw connection")
    }

    /// The bootstrap admin.
    pub async fn admin(&self) -> Principal {
        self.svc.bootstrap_admin("root").await.expect("bootstrap admin")
    }

    /// A user with a password, logged in with an access token; returns the
    /// principal.
    pub async fn user(&self, name: &str) -> Principal {
        let admin = self.admin().await;
        let u = self
            .svc
            .create_user(
                &admin,
                NewUser { name, password: Some("correct horse battery"), role: Role::User, tier: None },
            )
            .await
            .expect("create user");
        self.login(&u.name).await
    }

    /// Logs `name` in with the test password, returning its principal.
    pub async fn login(&self, name: &str) -> Principal {
        let grant = self.svc.login_password(name, "correct horse battery", None).await.expect("login");
        let pair = self.svc.issue_tokens(grant).await.expect("tokens");
        self.svc.authenticate_bearer(&pair.access_token).await.expect("authenticate")
    }

    /// How many audit rows there are.
    pub async fn audit_len(&self) -> u64 {
        let admin = self.admin().await;
        let mut n = 0;
        let mut after = 0;
        loop {
            let page = self.svc.audit_list(&admin, after, 1000).await.expect("audit list");
            n += page.records.len() as u64;
            match page.next {
                Some(next) => after = next,
                None => return n,
            }
        }
    }
}

/// The principal's user.
pub fn id(p: &Principal) -> UserId {
    p.user()
}

/// A full-scope check helper.
pub fn full() -> Scope {
    Scope::full()
}

pub async fn sqlite() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("accounts.db").display());
    Env::open(url, Some(dir)).await
}

/// A fresh database on the PostgreSQL server, or `None` (with a loud
/// message) when no server is configured and none is required.
pub async fn postgres() -> Option<Env> {
    let Ok(admin_url) = std::env::var("DATAMESH_TEST_POSTGRES") else {
        if std::env::var("DATAMESH_REQUIRE_POSTGRES").as_deref() == Ok("1") {
            panic!("DATAMESH_REQUIRE_POSTGRES=1 but DATAMESH_TEST_POSTGRES is unset: run under scripts/with-postgres");
        }
        eprintln!(
            "\n!!!!! SKIPPED: the PostgreSQL case of this test did not run: DATAMESH_TEST_POSTGRES is unset \
             (run `scripts/with-postgres cargo nextest run --release -p datamesh-services`) !!!!!\n"
        );
        return None;
    };
    sqlx::any::install_default_drivers();
    let name = format!("dm_test_{}", hex::encode(rand_bytes()));
    let mut conn = AnyConnection::connect(&admin_url).await.expect("connect to the test PostgreSQL");
    // The name is ours (hex), never input: safe to splice.
    conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).await.expect("create database");
    conn.close().await.ok();
    Some(Env::open(with_db(&admin_url, &name), None).await)
}

fn rand_bytes() -> [u8; 8] {
    rand::random()
}

/// `url` with its database replaced by `db`.
fn with_db(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let after_scheme = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[after_scheme..].find('/').map(|i| i + after_scheme).unwrap_or(base.len());
    let mut out = format!("{}/{}", &base[..host_end], db);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Drops a test's PostgreSQL database (best effort: the cluster is
/// throwaway anyway).
pub async fn drop_db(env: Env) {
    if env.url.starts_with("sqlite:") {
        return;
    }
    env.svc.close().await;
    let Ok(admin_url) = std::env::var("DATAMESH_TEST_POSTGRES") else { return };
    let db = env.url.rsplit('/').next().unwrap_or_default().split('?').next().unwrap_or_default().to_string();
    drop(env);
    if let Ok(mut conn) = AnyConnection::connect(&admin_url).await {
        let _ = conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))).await;
    }
}

/// Runs `$f(env)` against SQLite and PostgreSQL, as two tests.
#[macro_export]
macro_rules! both {
    ($($f:ident),* $(,)?) => {
        $(
            mod $f {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    let env = $crate::common::sqlite().await;
                    super::$f(&env).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    if let Some(env) = $crate::common::postgres().await {
                        super::$f(&env).await;
                        $crate::common::drop_db(env).await;
                    }
                }
            }
        )*
    };
}
