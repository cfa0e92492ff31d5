//! Ownership, grants, public read, transfer, and `check`.

use datamesh_services::keys::{NewKey, Op, Ops, Scope, ScopeTarget};
use datamesh_services::perms::{Action, Decision, Level, PermError, ResourceRef};

use crate::common::Env;

crate::both!(
    owners_grant_and_others_are_denied,
    public_read_and_transfer,
    prefix_grants_cover_their_objects_only,
    scopes_narrow_everyone_even_the_admin,
    data_from_before_accounts_is_adopted,
);

fn b(name: &str) -> ResourceRef {
    ResourceRef::bucket(name).expect("bucket name")
}

fn o(bucket: &str, key: &str) -> ResourceRef {
    ResourceRef::object(bucket, key).expect("object name")
}

async fn owners_grant_and_others_are_denied(env: &Env) {
    let alice = env.user("alice").await;
    let bob = env.user("bob").await;
    env.svc.create_resource(&alice, &b("alpha")).await.expect("create");
    // Bucket names are global, and a taken one says so.
    assert!(matches!(env.svc.create_resource(&bob, &b("alpha")).await, Err(PermError::NameTaken)));
    for action in [Action::Read, Action::List, Action::Write, Action::Delete, Action::Admin] {
        assert_eq!(env.svc.check(Some(&alice), action, &o("alpha", "x")).await.expect("check"), Decision::Allow);
        assert_eq!(env.svc.check(Some(&bob), action, &b("alpha")).await.expect("check"), Decision::Deny);
        assert_eq!(env.svc.check(Some(&bob), action, &o("alpha", "x")).await.expect("check"), Decision::Deny);
        // A missing resource is denied alike: nothing is revealed.
        assert_eq!(env.svc.check(Some(&bob), action, &b("nothing-here")).await.expect("check"), Decision::Deny);
        assert_eq!(env.svc.check(None, action, &b("alpha")).await.expect("check"), Decision::Deny);
    }
    env.svc.grant(&alice, &b("alpha"), bob.user(), Level::Read).await.expect("grant read");
    assert_eq!(env.svc.check(Some(&bob), Action::Read, &o("alpha", "x")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&bob), Action::List, &b("alpha")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&bob), Action::Write, &o("alpha", "x")).await.expect("c"), Decision::Deny);
    // A reader cannot grant, make public or transfer.
    assert!(matches!(env.svc.grant(&bob, &b("alpha"), bob.user(), Level::Admin).await, Err(PermError::Denied)));
    assert!(matches!(env.svc.set_public(&bob, &b("alpha"), true).await, Err(PermError::Denied)));
    assert!(matches!(env.svc.transfer(&bob, &b("alpha"), bob.user()).await, Err(PermError::Denied)));
    env.svc.grant(&alice, &b("alpha"), bob.user(), Level::Delete).await.expect("upgrade");
    assert_eq!(env.svc.check(Some(&bob), Action::Delete, &o("alpha", "x")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&bob), Action::Admin, &o("alpha", "x")).await.expect("c"), Decision::Deny);
    let info = env.svc.resource_info(&alice, &b("alpha")).await.expect("info");
    assert_eq!(info.grants, vec![(bob.user(), Level::Delete)]);
    assert!(matches!(env.svc.resource_info(&bob, &b("alpha")).await, Err(PermError::Denied)));
    env.svc.revoke_grant(&alice, &b("alpha"), bob.user()).await.expect("revoke");
    assert_eq!(env.svc.check(Some(&bob), Action::Read, &o("alpha", "x")).await.expect("c"), Decision::Deny);
    // Granting on a resource that does not exist is just denied.
    assert!(matches!(env.svc.grant(&alice, &b("nothing-here"), bob.user(), Level::Read).await, Err(PermError::Denied)));
    // Per-object grants.
    env.svc.grant(&alice, &o("alpha", "shared.txt"), bob.user(), Level::Write).await.expect("object grant");
    assert_eq!(env.svc.check(Some(&bob), Action::Write, &o("alpha", "shared.txt")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&bob), Action::Read, &o("alpha", "other.txt")).await.expect("c"), Decision::Deny);
    // Deleting the bucket's record takes its objects' records.
    assert!(matches!(env.svc.delete_resource(&bob, &b("alpha")).await, Err(PermError::Denied)));
    env.svc.delete_resource(&alice, &b("alpha")).await.expect("delete");
    assert_eq!(env.svc.check(Some(&bob), Action::Write, &o("alpha", "shared.txt")).await.expect("c"), Decision::Deny);
    assert!(env.svc.list_owned(&alice, alice.user()).await.expect("owned").is_empty());
}

async fn public_read_and_transfer(env: &Env) {
    let alice = env.user("carol").await;
    let bob = env.user("dan").await;
    let file = ResourceRef::file("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").expect("cid");
    env.svc.create_resource(&alice, &file).await.expect("file");
    env.svc.create_resource(&alice, &b("pub")).await.expect("bucket");
    env.svc.set_public(&alice, &b("pub"), true).await.expect("public");
    env.svc.set_public(&alice, &file, true).await.expect("public");
    for r in [&file, &o("pub", "a"), &b("pub")] {
        assert_eq!(env.svc.check(None, Action::Read, r).await.expect("c"), Decision::Allow, "{r}");
        assert_eq!(env.svc.check(Some(&bob), Action::Read, r).await.expect("c"), Decision::Allow, "{r}");
        assert_eq!(env.svc.check(None, Action::Write, r).await.expect("c"), Decision::Deny, "{r}");
        assert_eq!(env.svc.check(Some(&bob), Action::Delete, r).await.expect("c"), Decision::Deny, "{r}");
    }
    env.svc.set_public(&alice, &file, false).await.expect("private");
    assert_eq!(env.svc.check(None, Action::Read, &file).await.expect("c"), Decision::Deny);
    env.svc.grant(&alice, &file, bob.user(), Level::Read).await.expect("grant");
    env.svc.transfer(&alice, &file, bob.user()).await.expect("transfer");
    assert_eq!(env.svc.check(Some(&bob), Action::Admin, &file).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&alice), Action::Read, &file).await.expect("c"), Decision::Deny);
    assert!(matches!(env.svc.transfer(&alice, &file, alice.user()).await, Err(PermError::Denied)));
    assert_eq!(env.svc.resource_info(&bob, &file).await.expect("info").grants, vec![]);
    assert_eq!(env.svc.list_owned(&bob, bob.user()).await.expect("owned"), vec![file.clone()]);
    assert!(matches!(env.svc.list_owned(&alice, bob.user()).await, Err(PermError::Denied)));
    // The admin passes every check and transfers anything.
    let admin = env.admin().await;
    assert_eq!(env.svc.check(Some(&admin), Action::Delete, &file).await.expect("c"), Decision::Allow);
    env.svc.transfer(&admin, &file, alice.user()).await.expect("admin transfer");
    assert_eq!(env.svc.check(Some(&alice), Action::Read, &file).await.expect("c"), Decision::Allow);
}

async fn prefix_grants_cover_their_objects_only(env: &Env) {
    let alice = env.user("erin").await;
    let bob = env.user("fred").await;
    env.svc.create_resource(&alice, &b("docs")).await.expect("bucket");
    let prefix = ResourceRef::prefix("docs", "team%_/").expect("prefix");
    env.svc.grant(&alice, &prefix, bob.user(), Level::Write).await.expect("prefix grant");
    assert_eq!(
        env.svc.check(Some(&bob), Action::Write, &o("docs", "team%_/plan.md")).await.expect("c"),
        Decision::Allow
    );
    // LIKE metacharacters in the prefix are literal.
    for key in ["teamXY/plan.md", "team%/plan.md", "team", "other/team%_/x"] {
        assert_eq!(env.svc.check(Some(&bob), Action::Read, &o("docs", key)).await.expect("c"), Decision::Deny, "{key}");
    }
    assert_eq!(env.svc.check(Some(&bob), Action::List, &b("docs")).await.expect("c"), Decision::Deny);
    // Someone with write on a bucket registers an object they own.
    env.svc.create_resource(&bob, &o("docs", "team%_/mine.md")).await.expect("object");
    assert_eq!(
        env.svc.check(Some(&bob), Action::Admin, &o("docs", "team%_/mine.md")).await.expect("c"),
        Decision::Allow
    );
    assert!(matches!(env.svc.create_resource(&bob, &o("docs", "elsewhere.md")).await, Err(PermError::Denied)));
}

async fn scopes_narrow_everyone_even_the_admin(env: &Env) {
    let alice = env.user("gail").await;
    env.svc.create_resource(&alice, &b("one")).await.expect("bucket");
    env.svc.create_resource(&alice, &b("two")).await.expect("bucket");
    let scope = Scope {
        ops: Ops::of(&[Op::Read, Op::List]),
        targets: Some(vec![ScopeTarget { bucket: "one".into(), prefix: None }]),
    };
    let key = env.svc.create_api_key(&alice, alice.user(), NewKey { name: "one-ro", scope, expires_at: None }).await;
    let k = env.svc.authenticate_bearer(&key.expect("key").token).await.expect("auth");
    assert_eq!(env.svc.check(Some(&k), Action::Read, &o("one", "x")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&k), Action::Write, &o("one", "x")).await.expect("c"), Decision::Deny);
    assert_eq!(env.svc.check(Some(&k), Action::Read, &o("two", "x")).await.expect("c"), Decision::Deny);
    let file = ResourceRef::file("somefile").expect("id");
    assert!(matches!(env.svc.create_resource(&k, &file).await, Err(PermError::Denied)));
    // The admin's read-only key administers nothing.
    let admin = env.admin().await;
    let ro = Scope::ops(&[Op::Read]);
    let key =
        env.svc.create_api_key(&admin, admin.user(), NewKey { name: "backup", scope: ro, expires_at: None }).await;
    let backup = env.svc.authenticate_bearer(&key.expect("key").token).await.expect("auth");
    assert!(!backup.is_admin());
    assert_eq!(env.svc.check(Some(&backup), Action::Delete, &o("one", "x")).await.expect("c"), Decision::Deny);
    assert!(env.svc.list_users(&backup).await.is_err());
}

async fn data_from_before_accounts_is_adopted(env: &Env) {
    let admin = env.admin().await;
    let alice = env.user("hana").await;
    let bob = env.user("ivan").await;
    let old = b("from-before");
    let file = ResourceRef::file("bafkreiold").expect("id");
    assert!(matches!(env.svc.adopt_resource(&alice, &old, alice.user()).await, Err(PermError::Denied)));
    assert!(env.svc.adopt_resource(&admin, &old, alice.user()).await.expect("adopt"));
    assert!(env.svc.adopt_resource(&admin, &file, alice.user()).await.expect("adopt"));
    // Adopting twice changes nothing (a restart runs it again).
    assert!(!env.svc.adopt_resource(&admin, &old, bob.user()).await.expect("again"));
    assert_eq!(env.svc.check(Some(&alice), Action::Delete, &o("from-before", "k")).await.expect("c"), Decision::Allow);
    assert_eq!(env.svc.check(Some(&bob), Action::Read, &file).await.expect("c"), Decision::Deny);
    assert_eq!(env.svc.list_owned(&alice, alice.user()).await.expect("owned").len(), 2);
}
