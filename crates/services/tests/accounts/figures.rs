//! Figures for the report, by hand (`#[ignore]`d):
//! `scripts/with-postgres cargo nextest run --release -p datamesh-services
//! --run-ignored only figures --no-capture`. Prints the p50 of a password
//! login, and of what an authenticated request adds: authenticate, check,
//! and both plus the tier's rate limit.

use std::time::{Duration, Instant};

use datamesh_services::keys::NewKey;
use datamesh_services::perms::{Action, ResourceRef};
use datamesh_services::ratelimit::RouteClass;

use crate::common::{Env, full};

async fn p50<F, Fut>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f().await;
        v.push(t.elapsed());
    }
    v.sort();
    v[n / 2]
}

async fn figures(env: &Env, db: &str) {
    let p = env.user("alice").await;
    let admin = env.admin().await;
    env.svc.set_user_tier(&admin, p.user(), "premium").await.expect("tier");
    let key = env.svc.create_api_key(&p, p.user(), NewKey { name: "k", scope: full(), expires_at: None }).await;
    let token = key.expect("key").token;
    let bucket = ResourceRef::bucket("bench").expect("name");
    env.svc.create_resource(&p, &bucket).await.expect("bucket");
    let obj = ResourceRef::object("bench", "a/b/c.bin").expect("name");
    let svc = &env.svc;
    let login = p50(20, || async {
        svc.login_password("alice", "correct horse battery", None).await.expect("login");
    })
    .await;
    let auth = p50(500, || async {
        svc.authenticate_bearer(&token).await.expect("auth");
    })
    .await;
    let check = p50(500, || async {
        svc.check(Some(&p), Action::Read, &obj).await.expect("check");
    })
    .await;
    let all = p50(500, || async {
        let who = svc.authenticate_bearer(&token).await.expect("auth");
        svc.rate_limit(&who, RouteClass::Read).ok();
        svc.check(Some(&who), Action::Read, &obj).await.expect("check");
    })
    .await;
    println!(
        "FIGURES {db}: login p50 {login:?}; authenticate p50 {auth:?}; check p50 {check:?}; \
         authenticate + rate limit + check p50 {all:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures, run by hand"]
async fn figures_sqlite() {
    figures(&crate::common::sqlite().await, "SQLite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "figures, run by hand"]
async fn figures_postgres() {
    if let Some(env) = crate::common::postgres().await {
        figures(&env, "PostgreSQL").await;
        crate::common::drop_db(env).await;
    }
}
