//! Rate limits: GCRA token buckets (the `governor` crate), in memory and
//! per process.
//!
//! An authenticated caller has one bucket per [`RouteClass`], refilled at
//! their tier's calls per hour ([`crate::quota::Tier::max_calls_per_hour`])
//! with a burst of the same size; an unlimited tier is not limited.
//! Unauthenticated routes (login, sign-up, public reads) have one bucket per
//! source address and class at [`crate::Config::anonymous_per_minute`].
//! A refusal says when to retry ([`RateLimited::retry_after`]): REST
//! answers 429 with `Retry-After`, S3 503 `SlowDown`.
//!
//! Per process, not in the database: a bucket is consulted on every
//! request and must cost nanoseconds, and a user spread over several
//! gateways getting a few times their rate is acceptable where a database
//! write per request is not. Buckets idle long enough to be full again are
//! dropped now and then, so memory follows the active callers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::users::UserId;
use crate::{Principal, Services};

/// A class of routes with its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// Reads, lists, heads.
    Read,
    /// Puts, deletes, changes.
    Write,
    /// Logins, sign-up, token refresh.
    Auth,
    /// Admin routes.
    Admin,
}

/// A request over its rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("rate limit exceeded: retry in {} ms", retry_after.as_millis())]
pub struct RateLimited {
    /// How long until the request would be allowed.
    pub retry_after: Duration,
}

type UserLimiter = DefaultKeyedRateLimiter<(UserId, RouteClass)>;

/// The process's buckets.
pub(crate) struct Limiters {
    /// One keyed limiter per calls-per-hour rate (tiers differ in rate).
    users: Mutex<HashMap<u32, Arc<UserLimiter>>>,
    anonymous: DefaultKeyedRateLimiter<(IpAddr, RouteClass)>,
    checks: AtomicU64,
    limited_users: AtomicU64,
    limited_addresses: AtomicU64,
}

/// Counters for `/metrics`: requests refused since the process started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateLimitStats {
    /// Requests counted against a bucket (allowed or not; unlimited tiers
    /// are not counted).
    pub checked: u64,
    /// Authenticated requests refused.
    pub limited_users: u64,
    /// Unauthenticated requests refused.
    pub limited_addresses: u64,
}

impl Limiters {
    pub(crate) fn new(anonymous_per_minute: u32) -> Limiters {
        let per_minute = NonZeroU32::new(anonymous_per_minute).unwrap_or(NonZeroU32::MIN);
        Limiters {
            users: Mutex::new(HashMap::new()),
            anonymous: DefaultKeyedRateLimiter::keyed(Quota::per_minute(per_minute)),
            checks: AtomicU64::new(0),
            limited_users: AtomicU64::new(0),
            limited_addresses: AtomicU64::new(0),
        }
    }

    fn user_limiter(&self, per_hour: NonZeroU32) -> Arc<UserLimiter> {
        let mut map = self.users.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(per_hour.get())
            .or_insert_with(|| Arc::new(DefaultKeyedRateLimiter::keyed(Quota::per_hour(per_hour))))
            .clone()
    }

    /// Every 10,000 checks, drops buckets that are full again.
    fn sweep(&self) {
        if self.checks.fetch_add(1, Ordering::Relaxed) % 10_000 == 9_999 {
            self.anonymous.retain_recent();
            let map = self.users.lock().unwrap_or_else(|e| e.into_inner());
            for l in map.values() {
                l.retain_recent();
            }
        }
    }
}

fn verdict<P: governor::clock::Reference>(r: Result<(), governor::NotUntil<P>>, now: P) -> Result<(), RateLimited> {
    r.map_err(|n| RateLimited { retry_after: n.wait_time_from(now) })
}

impl Services {
    /// Counts one request of `class` by an authenticated user on
    /// `calls_per_hour` (their tier's limit, `None` for unlimited).
    pub fn rate_limit_user(
        &self,
        user: UserId,
        calls_per_hour: Option<u32>,
        class: RouteClass,
    ) -> Result<(), RateLimited> {
        let Some(rate) = calls_per_hour.and_then(NonZeroU32::new) else { return Ok(()) };
        let l = &self.inner.limiters;
        l.sweep();
        let limiter = l.user_limiter(rate);
        let v = verdict(limiter.check_key(&(user, class)), limiter.clock().now());
        if v.is_err() {
            l.limited_users.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// [`Services::rate_limit_user`] for a principal, on the tier read
    /// when it authenticated (no query).
    pub fn rate_limit(&self, who: &Principal, class: RouteClass) -> Result<(), RateLimited> {
        self.rate_limit_user(who.user, who.tier.max_calls_per_hour, class)
    }

    /// Counts one request of `class` from an unauthenticated source address.
    pub fn rate_limit_address(&self, addr: IpAddr, class: RouteClass) -> Result<(), RateLimited> {
        let l = &self.inner.limiters;
        l.sweep();
        let v = verdict(l.anonymous.check_key(&(addr, class)), l.anonymous.clock().now());
        if v.is_err() {
            l.limited_addresses.fetch_add(1, Ordering::Relaxed);
        }
        v
    }

    /// This process's rate-limit counters.
    pub fn rate_limit_stats(&self) -> RateLimitStats {
        let l = &self.inner.limiters;
        RateLimitStats {
            checked: l.checks.load(Ordering::Relaxed),
            limited_users: l.limited_users.load(Ordering::Relaxed),
            limited_addresses: l.limited_addresses.load(Ordering::Relaxed),
        }
    }
}
