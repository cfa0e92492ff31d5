//! Rate limits: per user and route class at the tier's rate, per source
//! address for anonymous routes.

use std::net::IpAddr;

use datamesh_services::ratelimit::RouteClass;

use crate::common::Env;

crate::both!(users_are_limited_at_their_tiers_rate, anonymous_callers_are_limited_per_address);

async fn users_are_limited_at_their_tiers_rate(env: &Env) {
    let p = env.user("alice").await;
    // Free: 100 calls an hour, per route class.
    for i in 0..100 {
        env.svc.rate_limit(&p, RouteClass::Read).unwrap_or_else(|e| panic!("call {i}: {e}"));
    }
    let Err(limited) = env.svc.rate_limit(&p, RouteClass::Read) else { panic!("the 101st call passed") };
    // One call an hour refills every 36 s (less the time the burst took,
    // which a loaded machine stretches).
    assert!(!limited.retry_after.is_zero() && limited.retry_after.as_secs() <= 36, "{limited:?}");
    assert_eq!(env.svc.rate_limit_stats().limited_users, 1);
    env.svc.rate_limit(&p, RouteClass::Write).expect("another class has its own bucket");
    let q = env.user("bob").await;
    env.svc.rate_limit(&q, RouteClass::Read).expect("another user has their own bucket");
    // Enterprise is unlimited.
    let admin = env.admin().await;
    env.svc.set_user_tier(&admin, p.user(), "enterprise").await.expect("upgrade");
    // The tier is read when a request authenticates: the next one has it.
    let p = env.login(p.name()).await;
    assert_eq!(p.tier().name, "enterprise");
    for _ in 0..1000 {
        env.svc.rate_limit(&p, RouteClass::Read).expect("unlimited");
    }
}

async fn anonymous_callers_are_limited_per_address(env: &Env) {
    let a: IpAddr = "198.51.100.1".parse().expect("ip");
    let b: IpAddr = "198.51.100.2".parse().expect("ip");
    for _ in 0..env.config.anonymous_per_minute {
        env.svc.rate_limit_address(a, RouteClass::Auth).expect("within the rate");
    }
    let limited = env.svc.rate_limit_address(a, RouteClass::Auth).expect_err("over the rate");
    assert!(limited.retry_after.as_millis() > 0 && limited.retry_after.as_secs() <= 1, "{limited:?}");
    assert_eq!(env.svc.rate_limit_stats().limited_addresses, 1);
    env.svc.rate_limit_address(b, RouteClass::Auth).expect("another address");
    env.svc.rate_limit_address(a, RouteClass::Read).expect("another class");
}
