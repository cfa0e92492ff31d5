//! API keys and S3 keys: creation, listing, revocation, expiry, scopes
//! that never widen, and sealed S3 secrets.

use datamesh_services::Role;
use datamesh_services::enckeys::EncryptionAlgorithm;
use datamesh_services::keylogin::PublicKeyError;
use datamesh_services::keys::{KeyError, KeyKind, NewKey, Op, Ops, Scope, ScopeTarget};
use datamesh_services::sessions::AuthError;
use datamesh_services::users::{AccountError, NewUser};
use sqlx::{Executor, Row};

use crate::common::{Env, full};

crate::both!(
    api_keys_live_until_revoked_or_expired,
    a_key_never_mints_a_broader_one,
    s3_secrets_are_sealed_and_bound,
    a_scoped_key_cannot_take_over_its_account,
);

fn bucket_scope(ops: &[Op], bucket: &str, prefix: Option<&str>) -> Scope {
    Scope {
        ops: Ops::of(ops),
        targets: Some(vec![ScopeTarget { bucket: bucket.into(), prefix: prefix.map(str::to_string) }]),
    }
}

async fn api_keys_live_until_revoked_or_expired(env: &Env) {
    let p = env.user("alice").await;
    let q = env.user("bob").await;
    let now = datamesh_services::Clock::now(&*env.clock);
    let k1 =
        env.svc.create_api_key(&p, p.user(), NewKey { name: "ci", scope: full(), expires_at: None }).await.expect("k1");
    let k2 = env
        .svc
        .create_api_key(&p, p.user(), NewKey { name: "short", scope: full(), expires_at: Some(now + 60) })
        .await
        .expect("k2");
    let who = env.svc.authenticate_bearer(&k1.token).await.expect("auth");
    assert_eq!(who.name(), "alice");
    assert_eq!(who.via(), &datamesh_services::Via::ApiKey(k1.info.key_id.clone()));
    let listed = env.svc.list_keys(&p, p.user()).await.expect("list");
    assert_eq!(listed, vec![k1.info.clone(), k2.info.clone()]);
    assert!(matches!(env.svc.list_keys(&q, p.user()).await, Err(KeyError::NotPermitted)));
    // Another user cannot revoke it, and learns nothing: "no such key".
    assert!(matches!(env.svc.revoke_key(&q, &k1.info.key_id).await, Err(KeyError::NotFound)));
    env.svc.revoke_key(&p, &k1.info.key_id).await.expect("revoke");
    assert!(matches!(env.svc.authenticate_bearer(&k1.token).await, Err(AuthError::Invalid)));
    assert!(env.svc.list_keys(&p, p.user()).await.expect("list")[0].revoked);
    env.svc.authenticate_bearer(&k2.token).await.expect("k2 before expiry");
    env.advance(61);
    assert!(matches!(env.svc.authenticate_bearer(&k2.token).await, Err(AuthError::Expired)));
    let r = env.svc.create_api_key(&p, p.user(), NewKey { name: "past", scope: full(), expires_at: Some(now) }).await;
    assert!(matches!(r, Err(KeyError::AlreadyExpired)), "{r:?}");
    // The admin creates keys for a user (`key create --user NAME`); the key acts as that user.
    let admin = env.admin().await;
    let s3 = env.svc.create_s3_key(&admin, q.user(), NewKey { name: "for bob", scope: full(), expires_at: None }).await;
    let creds = env.svc.s3_credentials(&s3.expect("s3 for bob").access_key_id).await.expect("creds");
    assert_eq!(creds.principal.name(), "bob");
    // A user cannot.
    let r = env.svc.create_api_key(&q, p.user(), NewKey { name: "x", scope: full(), expires_at: None }).await;
    assert!(matches!(r, Err(KeyError::NotPermitted)), "{r:?}");
}

async fn a_key_never_mints_a_broader_one(env: &Env) {
    let p = env.user("carol").await;
    let now = datamesh_services::Clock::now(&*env.clock);
    let narrow = bucket_scope(&[Op::Read, Op::List], "photos", Some("2024/"));
    let k = env
        .svc
        .create_api_key(&p, p.user(), NewKey { name: "narrow", scope: narrow.clone(), expires_at: Some(now + 3600) })
        .await
        .expect("narrow key");
    let as_key = env.svc.authenticate_bearer(&k.token).await.expect("auth");
    assert_eq!(as_key.scope(), &narrow);
    let broader = [
        (Scope::full(), Some(now + 60)),
        (Scope::ops(&[Op::Read]), Some(now + 60)),
        (bucket_scope(&[Op::Read, Op::Write], "photos", Some("2024/")), Some(now + 60)),
        (bucket_scope(&[Op::Read], "photos", None), Some(now + 60)),
        (bucket_scope(&[Op::Read], "photos", Some("2023/")), Some(now + 60)),
        (bucket_scope(&[Op::Read], "music", Some("2024/")), Some(now + 60)),
        (bucket_scope(&[Op::Read], "photos", Some("2024/")), None),
        (bucket_scope(&[Op::Read], "photos", Some("2024/")), Some(now + 7200)),
    ];
    for (scope, expires_at) in broader {
        let r =
            env.svc.create_api_key(&as_key, p.user(), NewKey { name: "wider", scope: scope.clone(), expires_at }).await;
        assert!(matches!(r, Err(KeyError::Broader)), "{scope:?} {expires_at:?}: {r:?}");
        let r =
            env.svc.create_s3_key(&as_key, p.user(), NewKey { name: "wider", scope: scope.clone(), expires_at }).await;
        assert!(matches!(r, Err(KeyError::Broader)), "s3 {scope:?}: {r:?}");
    }
    let within = bucket_scope(&[Op::Read], "photos", Some("2024/06/"));
    let child = env
        .svc
        .create_api_key(&as_key, p.user(), NewKey { name: "child", scope: within.clone(), expires_at: Some(now + 60) })
        .await
        .expect("a narrower key");
    let child = env.svc.authenticate_bearer(&child.token).await.expect("child auth");
    assert!(!child.scope().allows(Op::List, Some("photos"), Some("2024/06/a.jpg")));
    assert!(child.scope().allows(Op::Read, Some("photos"), Some("2024/06/a.jpg")));
    assert!(!child.scope().allows(Op::Read, Some("photos"), Some("2024/07/a.jpg")));
    // Invalid scopes are refused before anything is stored.
    let bad = [
        Scope { ops: Ops::default(), targets: None },
        Scope { ops: Ops::of(&[Op::Read]), targets: Some(vec![]) },
        bucket_scope(&[Op::Read], "Bad_Bucket", None),
        bucket_scope(&[Op::Read], "photos", Some("a\nb")),
    ];
    for scope in bad {
        let r = env.svc.create_api_key(&p, p.user(), NewKey { name: "bad", scope, expires_at: None }).await;
        assert!(matches!(r, Err(KeyError::InvalidScope(_))), "{r:?}");
    }
    assert_eq!(env.svc.list_keys(&p, p.user()).await.expect("list").len(), 2);
}

async fn s3_secrets_are_sealed_and_bound(env: &Env) {
    let p = env.user("dave").await;
    let a =
        env.svc.create_s3_key(&p, p.user(), NewKey { name: "a", scope: full(), expires_at: None }).await.expect("a");
    let b =
        env.svc.create_s3_key(&p, p.user(), NewKey { name: "b", scope: full(), expires_at: None }).await.expect("b");
    assert_eq!(a.info.kind, KeyKind::S3);
    assert_eq!((a.access_key_id.len(), a.secret_access_key.len()), (20, 40));
    let creds = env.svc.s3_credentials(&a.access_key_id).await.expect("creds");
    assert_eq!(creds.secret_access_key.as_str(), a.secret_access_key.as_str());
    assert_eq!(creds.principal.name(), "dave");
    // The database holds no secret in clear.
    let mut raw = env.raw().await;
    let rows = raw.fetch_all("SELECT sealed_secret, secret_hash FROM api_keys").await.expect("rows");
    for r in &rows {
        let sealed: Option<Vec<u8>> = r.try_get("sealed_secret").expect("col");
        let sealed = sealed.expect("S3 keys are sealed");
        assert!(
            !sealed.windows(40).any(|w| w == a.secret_access_key.as_bytes() || w == b.secret_access_key.as_bytes())
        );
        assert!(r.try_get::<Option<Vec<u8>>, _>("secret_hash").expect("col").is_none());
    }
    // A sealed blob moved onto another key's row does not open.
    let moved = raw
        .execute(sqlx::query("UPDATE api_keys SET sealed_secret = (SELECT sealed_secret FROM api_keys WHERE key_id = $1) WHERE key_id = $2")
            .bind(a.access_key_id.clone())
            .bind(b.access_key_id.clone()))
        .await
        .expect("tamper");
    assert_eq!(moved.rows_affected(), 1);
    assert!(matches!(env.svc.s3_credentials(&b.access_key_id).await, Err(AuthError::Invalid)));
    // Revoked on the next lookup; malformed ids are refused without a lookup.
    env.svc.revoke_key(&p, &a.access_key_id).await.expect("revoke");
    assert!(matches!(env.svc.s3_credentials(&a.access_key_id).await, Err(AuthError::Invalid)));
    for bad in ["", "DM' OR '1'='1", &"A".repeat(10 << 20), "DMAAAAAAAAAAAAAAAAA\u{0}"] {
        assert!(matches!(env.svc.s3_credentials(bad).await, Err(AuthError::Malformed)));
    }
    assert!(matches!(env.svc.s3_credentials("DMAAAAAAAAAAAAAAAAAA").await, Err(AuthError::Invalid)));
}

async fn a_scoped_key_cannot_take_over_its_account(env: &Env) {
    let admin = env.admin().await;
    let nu = NewUser { name: "keyonly", password: None, role: Role::User, tier: None };
    let user = env.svc.create_user(&admin, nu).await.expect("a key-only account");
    let full_key = env
        .svc
        .create_api_key(&admin, user.id, NewKey { name: "full", scope: full(), expires_at: None })
        .await
        .expect("full key");
    let ro = NewKey { name: "ro", scope: Scope::ops(&[Op::Read, Op::List]), expires_at: None };
    let ro = env.svc.create_api_key(&admin, user.id, ro).await.expect("read-only key");
    let k = env.svc.authenticate_bearer(&ro.token).await.expect("auth");
    assert!(!k.is_unscoped());
    // Every way a key could become a full login is closed.
    let pk = ed25519_dalek::SigningKey::from_bytes(&[11; 32]).verifying_key().to_bytes();
    let r = env.svc.add_public_key(&k, user.id, "mine", pk).await;
    assert!(matches!(r, Err(PublicKeyError::NotPermitted)), "{r:?}");
    let r = env.svc.change_password(&k, user.id, None, "a password of my own").await;
    assert!(matches!(r, Err(AccountError::NotPermitted)), "{r:?}");
    let r = env.svc.publish_encryption_key(&k, user.id, EncryptionAlgorithm::X25519, &[3; 32]).await;
    assert!(matches!(r, Err(PublicKeyError::NotPermitted)), "{r:?}");
    // Nor does it delete the account, log it out everywhere, or revoke broader keys.
    assert!(matches!(env.svc.delete_user(&k, user.id).await, Err(AccountError::NotPermitted)));
    assert!(matches!(env.svc.revoke_all_sessions(&k, user.id).await, Err(AuthError::NotPermitted)));
    assert!(matches!(env.svc.revoke_key(&k, &full_key.info.key_id).await, Err(KeyError::OutOfScope)));
    env.svc.authenticate_bearer(&full_key.token).await.expect("the full key lives");
    // It revokes itself, or narrower keys.
    env.svc.revoke_key(&k, &ro.info.key_id).await.expect("a key revokes itself");
    assert!(matches!(env.svc.authenticate_bearer(&ro.token).await, Err(AuthError::Invalid)));
    // The full key (unscoped) manages the account.
    let f = env.svc.authenticate_bearer(&full_key.token).await.expect("auth");
    env.svc.add_public_key(&f, user.id, "mine", pk).await.expect("an unscoped credential adds a login key");
}
