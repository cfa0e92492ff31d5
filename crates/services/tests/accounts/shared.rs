//! Two service instances on one database (two gateways on one PostgreSQL,
//! or two processes on one SQLite file) share accounts.

use datamesh_services::keys::NewKey;
use datamesh_services::sessions::AuthError;

use crate::common::{Env, full};

crate::both!(two_instances_share_accounts_keys_and_revocations);

const PW: &str = "correct horse battery";

async fn two_instances_share_accounts_keys_and_revocations(env: &Env) {
    let a = &env.svc;
    let b = env.second().await;
    let user = a.sign_up("alice", PW).await.expect("sign up on A");
    // Created on A, logs in on B.
    let grant = b.login_password("alice", PW, None).await.expect("login on B");
    let pair = b.issue_tokens(grant).await.expect("tokens on B");
    let p = a.authenticate_bearer(&pair.access_token).await.expect("B's token on A");
    // A key made on A works on B until A revokes it.
    let key = a.create_api_key(&p, user.id, NewKey { name: "ci", scope: full(), expires_at: None }).await.expect("key");
    let s3 = a.create_s3_key(&p, user.id, NewKey { name: "s3", scope: full(), expires_at: None }).await.expect("s3");
    b.authenticate_bearer(&key.token).await.expect("A's key on B");
    assert_eq!(
        b.s3_credentials(&s3.access_key_id).await.expect("A's S3 key on B").secret_access_key.as_str(),
        s3.secret_access_key.as_str()
    );
    a.revoke_key(&p, &key.info.key_id).await.expect("revoke on A");
    a.revoke_key(&p, &s3.access_key_id).await.expect("revoke on A");
    assert!(matches!(b.authenticate_bearer(&key.token).await, Err(AuthError::Invalid)));
    assert!(matches!(b.s3_credentials(&s3.access_key_id).await, Err(AuthError::Invalid)));
    // A logout on B ends the login on A.
    b.logout(&pair.refresh_token).await.expect("logout on B");
    assert!(matches!(a.authenticate_bearer(&pair.access_token).await, Err(AuthError::Invalid)));
    // Both append to one audit chain.
    let admin = b.bootstrap_admin("root").await.expect("admin");
    let report = a.audit_verify(&admin).await.expect("one chain");
    assert!(report.rows >= 6, "{report:?}");
}

crate::both!(a_narrowing_on_one_instance_holds_on_the_other_from_the_next_request);

/// Logs `name` in on `svc`, returning the access token (each request
/// authenticates with it again, as the gateway does).
async fn token_on(svc: &datamesh_services::Services, name: &str) -> zeroize::Zeroizing<String> {
    let grant = svc.login_password(name, "correct horse battery", None).await.expect("login");
    svc.issue_tokens(grant).await.expect("tokens").access_token
}

/// Permission levels are reused while the permission epoch holds (the
/// permission cache); every narrowing made on instance A, and a raw edit
/// of the rows, is seen by instance B's next request, after B has cached
/// the wider level.
async fn a_narrowing_on_one_instance_holds_on_the_other_from_the_next_request(env: &Env) {
    use datamesh_services::perms::{Action, Decision, Level, ResourceRef};
    use sqlx::Executor;
    let a = &env.svc;
    let b = env.second().await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let (alice_on_b, bob_on_b) = (token_on(&b, "alice").await, token_on(&b, "bob").await);
    let bucket = ResourceRef::bucket("shared-bucket").expect("bucket");
    let object = ResourceRef::object("shared-bucket", "x").expect("object");
    // On B, as a fresh request would: authenticate, then check.
    let check = async |token: &str, action: Action, res: &ResourceRef| {
        let p = b.authenticate_bearer(token).await.expect("authenticate on B");
        b.check(Some(&p), action, res).await.expect("check on B")
    };
    a.create_resource(&alice, &bucket).await.expect("create");
    a.grant(&alice, &bucket, bob.user(), Level::Write).await.expect("grant");
    for _ in 0..2 {
        assert_eq!(check(&bob_on_b, Action::Write, &object).await, Decision::Allow);
    }
    // A grant lowered on A.
    a.grant(&alice, &bucket, bob.user(), Level::Read).await.expect("lower");
    assert_eq!(check(&bob_on_b, Action::Write, &object).await, Decision::Deny);
    for _ in 0..2 {
        assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Allow);
    }
    // Revoked on A.
    a.revoke_grant(&alice, &bucket, bob.user()).await.expect("revoke");
    assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Deny);
    // Made public, read on B, made private again.
    a.set_public(&alice, &bucket, true).await.expect("public");
    for _ in 0..2 {
        assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Allow);
    }
    a.set_public(&alice, &bucket, false).await.expect("private");
    assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Deny);
    // Given away: the old owner's cached admin level ends.
    for _ in 0..2 {
        assert_eq!(check(&alice_on_b, Action::Admin, &bucket).await, Decision::Allow);
    }
    a.transfer(&alice, &bucket, bob.user()).await.expect("transfer");
    assert_eq!(check(&alice_on_b, Action::Read, &object).await, Decision::Deny);
    assert_eq!(check(&bob_on_b, Action::Admin, &bucket).await, Decision::Allow);
    // Deleted: the owner's cached level ends with the record.
    a.delete_resource(&env.login("bob").await, &bucket).await.expect("delete");
    assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Deny);
    // A grant removed by a raw edit of the database (no DataMesh code ran).
    a.create_resource(&alice, &bucket).await.expect("create again");
    a.grant(&alice, &bucket, bob.user(), Level::Read).await.expect("grant again");
    for _ in 0..2 {
        assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Allow);
    }
    env.raw().await.execute("DELETE FROM grants").await.expect("raw delete");
    assert_eq!(check(&bob_on_b, Action::Read, &object).await, Decision::Deny);
}
