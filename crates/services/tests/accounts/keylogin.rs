//! Login by Ed25519 signature over a server challenge.

use datamesh_services::keylogin::{ChallengeError, PublicKeyError, SignedChallenge};
use datamesh_services::users::LoginError;
use ed25519_dalek::{Signer, SigningKey};

use crate::common::Env;

crate::both!(a_signed_challenge_logs_in_once, stale_foreign_and_forged_answers_are_refused, public_keys_are_managed);

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn answer(c: &datamesh_services::keylogin::LoginChallenge, user: &str, k: &SigningKey) -> SignedChallenge {
    SignedChallenge {
        challenge: c.clone(),
        user: user.into(),
        public_key: k.verifying_key().to_bytes(),
        signature: k.sign(&c.message(user)).to_bytes(),
    }
}

fn refused(r: Result<datamesh_services::sessions::LoginGrant, LoginError>) -> Option<ChallengeError> {
    match r {
        Err(LoginError::Challenge(e)) => Some(e),
        other => panic!("expected a challenge error, got {other:?}"),
    }
}

async fn a_signed_challenge_logs_in_once(env: &Env) {
    let p = env.user("alice").await;
    let k = key(1);
    env.svc.add_public_key(&p, p.user(), "laptop", k.verifying_key().to_bytes()).await.expect("add key");
    let c = env.svc.login_challenge().await.expect("challenge");
    assert_eq!(c.audience, crate::common::AUDIENCE);
    let grant = env.svc.login_signature(&answer(&c, "alice", &k), None).await.expect("key login");
    assert_eq!(grant.user().name, "alice");
    let pair = env.svc.issue_tokens(grant).await.expect("tokens");
    env.svc.authenticate_bearer(&pair.access_token).await.expect("authenticated");
    // Replayed, here or on another gateway.
    assert_eq!(refused(env.svc.login_signature(&answer(&c, "alice", &k), None).await), Some(ChallengeError::Replayed));
    let second = env.second().await;
    assert_eq!(refused(second.login_signature(&answer(&c, "alice", &k), None).await), Some(ChallengeError::Replayed));
}

async fn stale_foreign_and_forged_answers_are_refused(env: &Env) {
    let p = env.user("bob").await;
    let k = key(2);
    env.svc.add_public_key(&p, p.user(), "laptop", k.verifying_key().to_bytes()).await.expect("add key");
    let mallory = key(3);

    // Stale.
    let c = env.svc.login_challenge().await.expect("challenge");
    env.advance(env.config.challenge_ttl.as_secs() + 1);
    assert_eq!(refused(env.svc.login_signature(&answer(&c, "bob", &k), None).await), Some(ChallengeError::Stale));

    // Foreign audience: a challenge of another node, signed by the right key.
    let c = env.svc.login_challenge().await.expect("challenge");
    let mut foreign = c.clone();
    foreign.audience = "https://node-b.example:8080".into();
    let r = env.svc.login_signature(&answer(&foreign, "bob", &k), None).await;
    assert_eq!(refused(r), Some(ChallengeError::ForeignAudience));

    // A challenge this node never issued.
    let mut made_up = c.clone();
    made_up.nonce = [9; 32];
    assert_eq!(
        refused(env.svc.login_signature(&answer(&made_up, "bob", &k), None).await),
        Some(ChallengeError::Unknown)
    );
    // An extended expiry.
    let mut extended = c.clone();
    extended.expires_at += 3600;
    assert_eq!(
        refused(env.svc.login_signature(&answer(&extended, "bob", &k), None).await),
        Some(ChallengeError::Unknown)
    );

    // Forged: bob's key, but the signature is mallory's.
    let mut forged = answer(&c, "bob", &k);
    forged.signature = mallory.sign(&c.message("bob")).to_bytes();
    assert_eq!(refused(env.svc.login_signature(&forged, None).await), Some(ChallengeError::BadSignature));
    // Signed for another user name.
    let mut renamed = answer(&c, "alice", &k);
    renamed.user = "bob".into();
    assert_eq!(refused(env.svc.login_signature(&renamed, None).await), Some(ChallengeError::BadSignature));
    // Mallory's own key is not bob's.
    let r = env.svc.login_signature(&answer(&c, "bob", &mallory), None).await;
    assert!(matches!(r, Err(LoginError::InvalidCredentials)), "{r:?}");
    // An unknown user.
    let r = env.svc.login_signature(&answer(&c, "nobody", &k), None).await;
    assert!(matches!(r, Err(LoginError::InvalidCredentials)), "{r:?}");
    // None of that consumed the challenge: the real answer still works.
    env.svc.login_signature(&answer(&c, "bob", &k), None).await.expect("the genuine answer");
}

async fn public_keys_are_managed(env: &Env) {
    let p = env.user("carol").await;
    let q = env.user("dan").await;
    let k = key(4);
    let info = env.svc.add_public_key(&p, p.user(), "laptop", k.verifying_key().to_bytes()).await.expect("add");
    let r = env.svc.add_public_key(&q, q.user(), "mine now", k.verifying_key().to_bytes()).await;
    assert!(matches!(r, Err(PublicKeyError::Taken)), "{r:?}");
    let r = env.svc.add_public_key(&q, p.user(), "for carol", key(5).verifying_key().to_bytes()).await;
    assert!(matches!(r, Err(PublicKeyError::NotPermitted)), "{r:?}");
    // The identity point is a weak key; not every 32 bytes are a point.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let r = env.svc.add_public_key(&p, p.user(), "weak", identity).await;
    assert!(matches!(r, Err(PublicKeyError::InvalidKey)), "{r:?}");
    let r = env.svc.add_public_key(&p, p.user(), "bad\nname", key(6).verifying_key().to_bytes()).await;
    assert!(matches!(r, Err(PublicKeyError::InvalidName)), "{r:?}");
    let keys = env.svc.list_public_keys(&p, p.user()).await.expect("list");
    assert_eq!(keys, vec![info.clone()]);
    assert!(matches!(env.svc.remove_public_key(&q, q.user(), info.id).await, Err(PublicKeyError::NotFound)));
    env.svc.remove_public_key(&p, p.user(), info.id).await.expect("remove");
    let c = env.svc.login_challenge().await.expect("challenge");
    let r = env.svc.login_signature(&answer(&c, "carol", &k), None).await;
    assert!(matches!(r, Err(LoginError::InvalidCredentials)), "a removed key logs in: {r:?}");
}
