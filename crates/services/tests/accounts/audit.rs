//! The audit log: what is recorded, paging, verification against edited
//! and removed rows, and no secrets.

use datamesh_services::audit::AuditError;
use datamesh_services::keys::NewKey;
use datamesh_services::perms::{Level, ResourceRef};
use sqlx::Executor;

use crate::common::{Env, full};

crate::both!(security_actions_are_recorded_without_secrets, verify_detects_edited_and_removed_rows);

const PW: &str = "correct horse battery";

async fn security_actions_are_recorded_without_secrets(env: &Env) {
    let admin = env.admin().await;
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    let _ = env.svc.login_password("alice", "my secret guess", None).await;
    let _ = env.svc.login_password("hunter2-typed-as-a-name", PW, None).await;
    let key =
        env.svc.create_api_key(&alice, alice.user(), NewKey { name: "ci", scope: full(), expires_at: None }).await;
    let key = key.expect("key");
    let s3 = env.svc.create_s3_key(&alice, alice.user(), NewKey { name: "s3", scope: full(), expires_at: None }).await;
    let s3 = s3.expect("s3");
    env.svc.revoke_key(&alice, &key.info.key_id).await.expect("revoke");
    let bucket = ResourceRef::bucket("audited").expect("name");
    env.svc.create_resource(&alice, &bucket).await.expect("bucket");
    env.svc.grant(&alice, &bucket, bob.user(), Level::Read).await.expect("grant");
    env.svc.revoke_grant(&alice, &bucket, bob.user()).await.expect("revoke grant");
    env.svc.transfer(&alice, &bucket, bob.user()).await.expect("transfer");
    env.svc.set_user_tier(&admin, alice.user(), "premium").await.expect("tier");
    let pair = env.svc.issue_tokens(env.svc.login_password("alice", PW, None).await.expect("login")).await.expect("t");
    env.svc.change_password(&alice, alice.user(), Some(PW), "another long password").await.expect("change");
    env.svc.delete_user(&admin, bob.user()).await.expect("delete");

    let page = env.svc.audit_list(&admin, 0, 1000).await.expect("list");
    let actions: Vec<&str> = page.records.iter().map(|r| r.action.as_str()).collect();
    for expected in [
        "admin_bootstrap",
        "user_created",
        "login",
        "login_failed",
        "key_created",
        "key_revoked",
        "resource_created",
        "permission_granted",
        "permission_revoked",
        "ownership_transferred",
        "user_tier_changed",
        "password_changed",
        "user_deleted",
    ] {
        assert!(actions.contains(&expected), "{expected} missing from {actions:?}");
    }
    let failed: Vec<_> = page.records.iter().filter(|r| r.action == "login_failed").collect();
    assert_eq!(failed.len(), 2);
    assert_eq!(failed[0].target, "alice");
    assert_eq!(failed[1].target, "(unknown user)", "an unknown name may be a password typed in the wrong field");
    // No secret anywhere in the log.
    let secrets = [
        PW,
        "my secret guess",
        "hunter2",
        "another long password",
        key.token.as_str(),
        s3.secret_access_key.as_str(),
        pair.access_token.as_str(),
        pair.refresh_token.as_str(),
    ];
    for r in &page.records {
        let row = format!("{} {} {} {} {}", r.actor, r.action, r.target, r.detail, r.source);
        for s in secrets {
            assert!(!row.contains(s), "a secret in the audit log: {row}");
        }
    }
    // Paging.
    let first = env.svc.audit_list(&admin, 0, 3).await.expect("page");
    assert_eq!(first.records.len(), 3);
    let next = env.svc.audit_list(&admin, first.next.expect("more"), 3).await.expect("page");
    assert_eq!(next.records[0].seq, 4);
    assert!(matches!(env.svc.audit_list(&alice, 0, 10).await, Err(AuditError::NotAdmin)));
    assert!(matches!(env.svc.audit_verify(&alice).await, Err(AuditError::NotAdmin)));
    let report = env.svc.audit_verify(&admin).await.expect("verify");
    assert_eq!(report.rows, page.records.len() as u64);
    assert_eq!(report.head, page.records.last().expect("rows").hash);
}

async fn verify_detects_edited_and_removed_rows(env: &Env) {
    let admin = env.admin().await;
    for name in ["u1", "u2", "u3", "u4", "u5"] {
        env.svc.sign_up(name, PW).await.expect("sign up");
    }
    let n = env.svc.audit_verify(&admin).await.expect("intact").rows;
    assert_eq!(n, 6);
    let mut raw = env.raw().await;

    // An edited row.
    raw.execute("UPDATE audit_log SET target = 'someone-else' WHERE seq = 3").await.expect("tamper");
    let r = env.svc.audit_verify(&admin).await;
    assert!(matches!(r, Err(AuditError::Broken { seq: 3, .. })), "{r:?}");
    raw.execute("UPDATE audit_log SET target = 'u2' WHERE seq = 3").await.expect("restore");
    env.svc.audit_verify(&admin).await.expect("restored");

    // An edited time.
    raw.execute("UPDATE audit_log SET at = at + 1 WHERE seq = 2").await.expect("tamper");
    assert!(matches!(env.svc.audit_verify(&admin).await, Err(AuditError::Broken { seq: 2, .. })));
    raw.execute("UPDATE audit_log SET at = at - 1 WHERE seq = 2").await.expect("restore");

    // The last row removed.
    raw.execute("DELETE FROM audit_log WHERE seq = 6").await.expect("remove the tail");
    let r = env.svc.audit_verify(&admin).await;
    assert!(matches!(r, Err(AuditError::Broken { seq: 6, .. })), "{r:?}");

    // A row in the middle removed.
    raw.execute("DELETE FROM audit_log WHERE seq = 4").await.expect("remove");
    let r = env.svc.audit_verify(&admin).await;
    assert!(matches!(r, Err(AuditError::Broken { seq: 4, .. })), "{r:?}");
}
