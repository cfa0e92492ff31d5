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
