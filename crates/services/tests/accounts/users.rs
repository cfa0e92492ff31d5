//! Users: sign-up, password login, the login limiter, change password,
//! roles, disable and delete.

use std::net::IpAddr;

use datamesh_services::Role;
use datamesh_services::keys::NewKey;
use datamesh_services::perms::{Action, Decision, Level, ResourceRef};
use datamesh_services::sessions::AuthError;
use datamesh_services::users::{AccountError, LoginError, NewUser};

use crate::common::{Env, full, id};

crate::both!(
    sign_up_then_login,
    wrong_passwords_are_one_answer,
    the_limiter_backs_off_per_user_and_per_address,
    changing_the_password_logs_out_everywhere,
    disabled_users_are_refused_on_the_next_request,
    deleting_a_user_returns_what_they_owned,
    only_the_admin_administers,
);

const PW: &str = "correct horse battery";

async fn sign_up_then_login(env: &Env) {
    let u = env.svc.sign_up("Alice", PW).await.expect("sign up");
    assert_eq!(u.role, Role::User);
    assert_eq!(u.tier, "free");
    assert!(u.has_password);
    // Names are unique regardless of case, and log in regardless of case.
    assert!(matches!(env.svc.sign_up("alice", PW).await, Err(AccountError::NameTaken)));
    let grant = env.svc.login_password("ALICE", PW, None).await.expect("login");
    assert_eq!(grant.user().id, u.id);
    let pair = env.svc.issue_tokens(grant).await.expect("tokens");
    let p = env.svc.authenticate_bearer(&pair.access_token).await.expect("authenticate");
    assert_eq!((p.user(), p.name(), p.role()), (u.id, "Alice", Role::User));
    assert!(matches!(env.svc.sign_up("bob", "short").await, Err(AccountError::WeakPassword(_))));
    assert!(env.svc.find_user("bob").await.expect("find").is_none());
}

async fn wrong_passwords_are_one_answer(env: &Env) {
    env.svc.sign_up("carol", PW).await.expect("sign up");
    let wrong = env.svc.login_password("carol", "correct horse batterY", None).await;
    assert!(matches!(wrong, Err(LoginError::InvalidCredentials)), "{wrong:?}");
    let unknown = env.svc.login_password("nobody", PW, None).await;
    assert!(matches!(unknown, Err(LoginError::InvalidCredentials)), "{unknown:?}");
    let huge = "x".repeat(10 << 20);
    let big = env.svc.login_password("carol", &huge, None).await;
    assert!(matches!(big, Err(LoginError::InvalidCredentials)), "{big:?}");
    // A key-only account has no password to guess.
    let admin = env.admin().await;
    let nu = NewUser { name: "keyonly", password: None, role: Role::User, tier: None };
    env.svc.create_user(&admin, nu).await.expect("create");
    assert!(matches!(env.svc.login_password("keyonly", "", None).await, Err(LoginError::InvalidCredentials)));
    env.svc.login_password("carol", PW, None).await.expect("the right password still works");
}

async fn the_limiter_backs_off_per_user_and_per_address(env: &Env) {
    env.svc.sign_up("dave", PW).await.expect("sign up");
    let a: IpAddr = "192.0.2.1".parse().expect("ip");
    for _ in 0..5 {
        let r = env.svc.login_password("dave", "wrong password", Some(a)).await;
        assert!(matches!(r, Err(LoginError::InvalidCredentials)), "{r:?}");
    }
    // The sixth failure locks the name for 1 s, the seventh for 2 s, ...
    let _ = env.svc.login_password("dave", "wrong password", Some(a)).await;
    let locked = env.svc.login_password("dave", PW, Some(a)).await;
    let Err(LoginError::TooManyAttempts { retry_after }) = locked else { panic!("not locked: {locked:?}") };
    assert!(retry_after.as_secs() >= 1);
    // Even the right password from another address waits: the name is locked.
    let b: IpAddr = "192.0.2.2".parse().expect("ip");
    assert!(matches!(env.svc.login_password("dave", PW, Some(b)).await, Err(LoginError::TooManyAttempts { .. })));
    env.advance(2);
    env.svc.login_password("dave", PW, Some(a)).await.expect("after the lockout");
    // A success clears the name's counter.
    assert!(matches!(env.svc.login_password("dave", "nope nope", Some(b)).await, Err(LoginError::InvalidCredentials)));

    // One address guessing across many names is limited too.
    let c: IpAddr = "2001:db8::7".parse().expect("ip");
    for i in 0..21 {
        let _ = env.svc.login_password(&format!("victim{i}"), "guess guess", Some(c)).await;
    }
    let r = env.svc.login_password("dave", PW, Some(c)).await;
    assert!(matches!(r, Err(LoginError::TooManyAttempts { .. })), "{r:?}");
    env.svc.login_password("dave", PW, Some(b)).await.expect("other addresses are not locked");
    // The lockout is capped.
    env.advance(16 * 60);
    env.svc.login_password("dave", PW, Some(c)).await.expect("after the longest lockout");
}

async fn changing_the_password_logs_out_everywhere(env: &Env) {
    let u = env.svc.sign_up("erin", PW).await.expect("sign up");
    let pair = env.svc.issue_tokens(env.svc.login_password("erin", PW, None).await.expect("login")).await.expect("t");
    let p = env.svc.authenticate_bearer(&pair.access_token).await.expect("auth");
    let key =
        env.svc.create_api_key(&p, u.id, NewKey { name: "ci", scope: full(), expires_at: None }).await.expect("key");
    let r = env.svc.change_password(&p, u.id, Some("not the password"), "a new long password").await;
    assert!(matches!(r, Err(AccountError::WrongPassword)), "{r:?}");
    env.svc.change_password(&p, u.id, Some(PW), "a new long password").await.expect("change");
    assert!(matches!(env.svc.authenticate_bearer(&pair.access_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.refresh(&pair.refresh_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.login_password("erin", PW, None).await, Err(LoginError::InvalidCredentials)));
    env.svc.login_password("erin", "a new long password", None).await.expect("new password");
    // Keys are separate credentials.
    env.svc.authenticate_bearer(&key.token).await.expect("keys survive a password change");
    // Another user may not change it; the admin resets it without the old one.
    let other = env.user("frank").await;
    let r = env.svc.change_password(&other, u.id, None, "hijacked password").await;
    assert!(matches!(r, Err(AccountError::NotPermitted)), "{r:?}");
    env.svc.change_password(&env.admin().await, u.id, None, "reset by the admin").await.expect("reset");
    env.svc.login_password("erin", "reset by the admin", None).await.expect("reset password");
}

async fn disabled_users_are_refused_on_the_next_request(env: &Env) {
    let p = env.user("gina").await;
    let admin = env.admin().await;
    let pair = env.svc.issue_tokens(env.svc.login_password("gina", PW, None).await.expect("login")).await.expect("t");
    let key =
        env.svc.create_api_key(&p, p.user(), NewKey { name: "k", scope: full(), expires_at: None }).await.expect("k");
    env.svc.set_disabled(&admin, p.user(), true).await.expect("disable");
    assert!(matches!(env.svc.authenticate_bearer(&pair.access_token).await, Err(AuthError::Disabled)));
    assert!(matches!(env.svc.authenticate_bearer(&key.token).await, Err(AuthError::Disabled)));
    assert!(matches!(env.svc.refresh(&pair.refresh_token).await, Err(AuthError::Disabled)));
    assert!(matches!(env.svc.login_password("gina", PW, None).await, Err(LoginError::Disabled)));
    env.svc.set_disabled(&admin, p.user(), false).await.expect("enable");
    env.svc.authenticate_bearer(&key.token).await.expect("enabled again");
    // The last admin cannot lock the node out.
    let r = env.svc.set_disabled(&admin, admin.user(), true).await;
    assert!(matches!(r, Err(AccountError::LastAdmin)), "{r:?}");
    let r = env.svc.set_role(&admin, admin.user(), Role::User).await;
    assert!(matches!(r, Err(AccountError::LastAdmin)), "{r:?}");
}

async fn deleting_a_user_returns_what_they_owned(env: &Env) {
    let p = env.user("hank").await;
    let other = env.user("ivy").await;
    let bucket = ResourceRef::bucket("hanks-bucket").expect("name");
    env.svc.create_resource(&p, &bucket).await.expect("bucket");
    let file = ResourceRef::file("bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku").expect("cid");
    env.svc.create_resource(&p, &file).await.expect("file");
    let key =
        env.svc.create_api_key(&p, p.user(), NewKey { name: "k", scope: full(), expires_at: None }).await.expect("k");
    // Ivy registers an object in hank's bucket, with his leave.
    env.svc.grant(&p, &bucket, other.user(), Level::Write).await.expect("grant");
    let obj = ResourceRef::object("hanks-bucket", "ivys.txt").expect("name");
    env.svc.create_resource(&other, &obj).await.expect("object");
    assert_eq!(env.svc.list_owned(&other, other.user()).await.expect("owned"), vec![obj.clone()]);
    let r = env.svc.delete_user(&other, p.user()).await;
    assert!(matches!(r, Err(AccountError::NotPermitted)), "{r:?}");
    let gone = env.svc.delete_user(&p, p.user()).await.expect("delete self");
    assert_eq!(gone.user.name, "hank");
    assert_eq!(gone.owned.len(), 2);
    assert!(gone.owned.contains(&bucket) && gone.owned.contains(&file));
    assert!(matches!(env.svc.authenticate_bearer(&key.token).await, Err(AuthError::Invalid)));
    assert!(env.svc.get_user(id(&p)).await.expect("get").is_none());
    // The name and the bucket name are free again.
    env.svc.sign_up("hank", PW).await.expect("the name is free");
    // Ivy's record went with the bucket: a later owner of the bucket name
    // finds no one else's records (or grants) waiting in it.
    assert!(env.svc.list_owned(&other, other.user()).await.expect("owned").is_empty());
    let mallory = env.user("mallory").await;
    env.svc.create_resource(&mallory, &bucket).await.expect("the bucket name is free");
    assert_eq!(env.svc.check(Some(&other), Action::Read, &obj).await.expect("check"), Decision::Deny);
}

async fn only_the_admin_administers(env: &Env) {
    let p = env.user("jack").await;
    let nu = NewUser { name: "sneaky", password: Some(PW), role: Role::Admin, tier: None };
    assert!(matches!(env.svc.create_user(&p, nu.clone()).await, Err(AccountError::NotPermitted)));
    assert!(matches!(env.svc.list_users(&p).await, Err(AccountError::NotPermitted)));
    assert!(matches!(env.svc.set_disabled(&p, p.user(), true).await, Err(AccountError::NotPermitted)));
    let admin = env.admin().await;
    let created = env.svc.create_user(&admin, nu).await.expect("admin creates an admin");
    assert_eq!(created.role, Role::Admin);
    let names: Vec<_> = env.svc.list_users(&admin).await.expect("list").into_iter().map(|u| u.name).collect();
    assert_eq!(names, ["root", "jack", "sneaky"]);
    // The bootstrap credential names an admin; a user's name is refused.
    assert!(matches!(env.svc.bootstrap_admin("jack").await, Err(AccountError::NotPermitted)));
    let tier = NewUser { name: "t", password: None, role: Role::User, tier: Some("platinum") };
    assert!(matches!(env.svc.create_user(&admin, tier).await, Err(AccountError::UnknownTier)));
}
