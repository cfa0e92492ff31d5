//! Tiers, usage, and reservations that refuse before anything is accepted.

use datamesh_services::quota::{Quota, QuotaError, Tier};

use crate::common::Env;

crate::both!(
    reservations_refuse_before_acceptance,
    concurrent_reservations_never_exceed_the_quota,
    multipart_uploads_reserve_as_parts_arrive,
    transfer_is_counted_per_month,
    tiers_are_data_the_admin_edits,
);

const GB: u64 = 1_000_000_000;
const MB: u64 = 1_000_000;

fn exceeded(r: Result<impl std::fmt::Debug, QuotaError>) -> Quota {
    match r {
        Err(QuotaError::Exceeded { quota, .. }) => quota,
        other => panic!("expected a quota refusal, got {other:?}"),
    }
}

async fn reservations_refuse_before_acceptance(env: &Env) {
    let p = env.user("alice").await;
    let u = p.user();
    let usage = env.svc.usage(u).await.expect("usage");
    assert_eq!((usage.tier.name.as_str(), usage.stored_bytes, usage.files), ("free", 0, 0));
    assert_eq!(usage.tier.max_stored_bytes, Some(5 * GB));
    // Per file: 100 MB on the free tier.
    assert_eq!(exceeded(env.svc.reserve(u, 100 * MB + 1, 1).await), Quota::FileSize);
    let r = env.svc.reserve(u, 100 * MB, 1).await.expect("reserve");
    assert!(r.warnings.is_empty());
    let during = env.svc.usage(u).await.expect("usage");
    assert_eq!((during.reserved_bytes, during.reserved_files, during.stored_bytes), (100 * MB, 1, 0));
    // A failed upload counts nothing.
    env.svc.release(r).await.expect("release");
    let after = env.svc.usage(u).await.expect("usage");
    assert_eq!((after.reserved_bytes, after.reserved_files, after.stored_bytes, after.files), (0, 0, 0, 0));
    // A stored one counts once.
    let r = env.svc.reserve(u, 10 * MB, 1).await.expect("reserve");
    let again = r.clone();
    env.svc.commit(r).await.expect("commit");
    assert!(matches!(env.svc.commit(again).await, Err(QuotaError::NoSuchReservation)));
    let after = env.svc.usage(u).await.expect("usage");
    assert_eq!((after.stored_bytes, after.files, after.reserved_bytes), (10 * MB, 1, 0));
    env.svc.record_deleted(u, 10 * MB, 1).await.expect("delete");
    assert_eq!(env.svc.usage(u).await.expect("usage").stored_bytes, 0);
    // An abandoned reservation is returned after its lifetime.
    let r = env.svc.reserve(u, 50 * MB, 1).await.expect("reserve");
    assert_eq!(env.svc.expire_reservations().await.expect("expire"), 0);
    env.advance(env.config.reservation_ttl.as_secs() + 1);
    assert_eq!(env.svc.expire_reservations().await.expect("expire"), 1);
    assert_eq!(env.svc.usage(u).await.expect("usage").reserved_bytes, 0);
    assert!(matches!(env.svc.commit(r).await, Err(QuotaError::NoSuchReservation)));
}

async fn concurrent_reservations_never_exceed_the_quota(env: &Env) {
    let p = env.user("bob").await;
    let admin = env.admin().await;
    let tier = Tier {
        name: "tiny".into(),
        max_stored_bytes: Some(10 * MB),
        max_transfer_bytes: None,
        max_calls_per_hour: None,
        max_file_bytes: None,
        max_files: Some(100),
        sla: false,
    };
    env.svc.set_tier(&admin, &tier).await.expect("tier");
    env.svc.set_user_tier(&admin, p.user(), "tiny").await.expect("move");
    let second = env.second().await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let svc = if i % 2 == 0 { env.svc.clone() } else { second.clone() };
        let user = p.user();
        tasks.push(tokio::spawn(async move { svc.reserve(user, 1_000_000, 1).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            Err(QuotaError::Exceeded { quota: Quota::Storage, .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 10, "exactly the quota's worth of reservations succeed");
    let u = env.svc.usage(p.user()).await.expect("usage");
    assert_eq!(u.reserved_bytes, 10 * MB);
    assert!(u.warnings.contains(&Quota::Storage));
    // Files: a tier of 2 files.
    let tier = Tier { name: "two".into(), max_files: Some(2), max_stored_bytes: None, ..tier };
    env.svc.set_tier(&admin, &tier).await.expect("tier");
    let q = env.user("carl").await;
    env.svc.set_user_tier(&admin, q.user(), "two").await.expect("move");
    let a = env.svc.reserve(q.user(), 1, 1).await.expect("1");
    let b = env.svc.reserve(q.user(), 1, 1).await.expect("2");
    assert!(b.warnings.contains(&Quota::Files));
    assert_eq!(exceeded(env.svc.reserve(q.user(), 1, 1).await), Quota::Files);
    env.svc.commit(a).await.expect("commit");
    env.svc.release(b).await.expect("release");
    let _room = env.svc.reserve(q.user(), 1, 1).await.expect("room again");
}

async fn multipart_uploads_reserve_as_parts_arrive(env: &Env) {
    let p = env.user("dora").await;
    let mut r = env.svc.reserve(p.user(), 40 * MB, 1).await.expect("first part");
    env.svc.extend(&mut r, 40 * MB).await.expect("second part");
    assert_eq!(r.bytes, 80 * MB);
    // The third part would make the file 120 MB: over the per-file limit.
    assert_eq!(exceeded(env.svc.extend(&mut r, 40 * MB).await), Quota::FileSize);
    assert_eq!(r.bytes, 80 * MB);
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").reserved_bytes, 80 * MB);
    env.svc.release(r).await.expect("abort the upload");
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").reserved_bytes, 0);
    // Storage: a multipart upload of many files' worth on a 5 GB tier.
    let mut reservations = Vec::new();
    for _ in 0..49 {
        reservations.push(env.svc.reserve(p.user(), 100 * MB, 1).await.expect("fill"));
    }
    let mut last = env.svc.reserve(p.user(), 50 * MB, 1).await.expect("almost full");
    assert!(last.warnings.contains(&Quota::Storage));
    env.svc.extend(&mut last, 50 * MB).await.expect("exactly full");
    assert_eq!(exceeded(env.svc.reserve(p.user(), 1, 1).await), Quota::Storage);
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").reserved_bytes, 5 * GB);
}

async fn transfer_is_counted_per_month(env: &Env) {
    let p = env.user("eve").await;
    assert!(env.svc.charge_download(&p, 39 * GB).await.expect("39 GB").is_empty());
    assert_eq!(env.svc.charge_download(&p, GB).await.expect("40 GB"), vec![Quota::Transfer]);
    env.svc.charge_download(&p, 10 * GB).await.expect("50 GB: the limit");
    assert_eq!(exceeded(env.svc.charge_download(&p, 1).await), Quota::Transfer);
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").downloaded_bytes, 50 * GB);
    // Next month starts from zero.
    env.advance(32 * 24 * 3600);
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").downloaded_bytes, 0);
    env.svc.charge_download(&p, GB).await.expect("a new month");
    assert_eq!(env.svc.usage(p.user()).await.expect("usage").downloaded_bytes, GB);
}

async fn tiers_are_data_the_admin_edits(env: &Env) {
    let p = env.user("fay").await;
    let tiers = env.svc.list_tiers().await.expect("tiers");
    let names: Vec<_> = tiers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["enterprise", "free", "premium"]);
    let premium = &tiers[2];
    assert_eq!(
        (premium.max_stored_bytes, premium.max_transfer_bytes, premium.max_calls_per_hour),
        (Some(100 * GB), Some(1000 * GB), Some(10_000))
    );
    assert!(tiers[0].sla && tiers[0].max_stored_bytes.is_none());
    let free = tiers[1].clone();
    assert_eq!((free.max_calls_per_hour, free.max_file_bytes, free.max_files), (Some(100), Some(100 * MB), Some(1000)));
    assert!(matches!(env.svc.set_tier(&p, &free).await, Err(QuotaError::NotPermitted)));
    assert!(matches!(env.svc.set_user_tier(&p, p.user(), "enterprise").await, Err(QuotaError::NotPermitted)));
    let admin = env.admin().await;
    env.svc.set_tier(&admin, &Tier { max_file_bytes: Some(MB), ..free }).await.expect("edit free");
    assert_eq!(exceeded(env.svc.reserve(p.user(), MB + 1, 1).await), Quota::FileSize);
    env.svc.set_user_tier(&admin, p.user(), "enterprise").await.expect("upgrade");
    let _big = env.svc.reserve(p.user(), 1000 * GB, 1).await.expect("unlimited");
    assert!(matches!(env.svc.set_user_tier(&admin, p.user(), "gold").await, Err(QuotaError::UnknownTier)));
    let bad = Tier { name: "x'; DROP TABLE tiers; --".into(), ..tiers[0].clone() };
    assert!(matches!(env.svc.set_tier(&admin, &bad).await, Err(QuotaError::InvalidTier)));
    assert_eq!(env.svc.list_tiers().await.expect("tiers").len(), 3);
}
