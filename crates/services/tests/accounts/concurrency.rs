//! Races between requests, on one instance and across two (two gateways):
//! single-use things are used once, and the audit chain stays one chain.

use datamesh_services::keylogin::SignedChallenge;
use datamesh_services::sessions::AuthError;
use ed25519_dalek::{Signer, SigningKey};

use crate::common::Env;

crate::both!(
    a_refresh_token_rotates_once_under_a_race,
    a_challenge_logs_in_once_under_a_race,
    concurrent_writers_keep_one_audit_chain
);

const PW: &str = "correct horse battery";

async fn a_refresh_token_rotates_once_under_a_race(env: &Env) {
    let b = env.second().await;
    env.svc.sign_up("alice", PW).await.expect("sign up");
    let pair = env.svc.issue_tokens(env.svc.login_password("alice", PW, None).await.expect("login")).await.expect("t");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = if i % 2 == 0 { env.svc.clone() } else { b.clone() };
        let token = pair.refresh_token.clone();
        tasks.push(tokio::spawn(async move { svc.refresh(&token).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("join") {
            Ok(_) => ok += 1,
            // The losers present a used token: the family is revoked (the
            // rotation rule cannot tell a retry from a thief).
            Err(AuthError::RefreshReused | AuthError::Invalid) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(ok, 1, "exactly one refresh wins");
}

async fn a_challenge_logs_in_once_under_a_race(env: &Env) {
    let b = env.second().await;
    let p = env.user("bob").await;
    let k = SigningKey::from_bytes(&[5; 32]);
    env.svc.add_public_key(&p, p.user(), "laptop", k.verifying_key().to_bytes()).await.expect("key");
    let c = env.svc.login_challenge().await.expect("challenge");
    let answer = SignedChallenge {
        challenge: c.clone(),
        user: "bob".into(),
        public_key: k.verifying_key().to_bytes(),
        signature: k.sign(&c.message("bob")).to_bytes(),
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        let svc = if i % 2 == 0 { env.svc.clone() } else { b.clone() };
        let answer = answer.clone();
        tasks.push(tokio::spawn(async move { svc.login_signature(&answer, None).await.is_ok() }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.expect("join"));
    }
    assert_eq!(ok, 1, "a challenge logs in once");
}

async fn concurrent_writers_keep_one_audit_chain(env: &Env) {
    let b = env.second().await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let svc = if i % 2 == 0 { env.svc.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move { svc.sign_up(&format!("user{i}"), PW).await.map(|_| ()) }));
    }
    for t in tasks {
        t.await.expect("join").expect("sign up");
    }
    let admin = env.admin().await;
    let report = b.audit_verify(&admin).await.expect("one unbroken chain");
    assert_eq!(report.rows, 21);
}
