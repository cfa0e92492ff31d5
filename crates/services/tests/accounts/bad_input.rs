//! Bad input: control characters, 10 MB names and tokens, malformed
//! tokens, SQL metacharacters in every string field. Each is a typed
//! error (or, where the field may hold them, stored verbatim) and changes
//! nothing else.

use datamesh_services::keys::{KeyError, NewKey, Op, Ops, Scope, ScopeTarget};
use datamesh_services::perms::{Action, Decision, PermError, ResourceError, ResourceRef};
use datamesh_services::sessions::{AuthError, Csrf};
use datamesh_services::users::{AccountError, LoginError, NameError};

use crate::common::{Env, full};

crate::both!(bad_user_names_change_nothing, malformed_tokens_are_refused_before_lookup, sql_metacharacters_are_data);

const PW: &str = "correct horse battery";
const SQL: [&str; 6] = [
    "x'; DROP TABLE users; --",
    "\" OR \"1\"=\"1",
    "a' OR 'a'='a",
    "%_\\",
    "$1 $2 ?1 :name @p",
    "); DELETE FROM audit_log; --",
];

async fn bad_user_names_change_nothing(env: &Env) {
    let admin = env.admin().await;
    let users = env.svc.list_users(&admin).await.expect("users").len();
    let audit = env.audit_len().await;
    let huge = "a".repeat(10 << 20);
    let cases: Vec<(&str, NameError)> = vec![
        ("", NameError::Empty { max: 64 }),
        (&huge, NameError::TooLong { max: 64 }),
        ("alice\n", NameError::BadCharacter),
        ("al\u{0}ice", NameError::BadCharacter),
        ("\u{1b}[31mred", NameError::BadCharacter),
        ("al\u{7f}ice", NameError::BadCharacter),
        ("аlice", NameError::BadCharacter), // Cyrillic а
        (".hidden", NameError::BadCharacter),
        ("a b", NameError::BadCharacter),
    ];
    for (name, err) in cases.iter().cloned().chain(SQL.iter().map(|s| (*s, NameError::BadCharacter))) {
        let shown: String = name.chars().take(20).collect();
        match env.svc.sign_up(name, PW).await {
            Err(AccountError::InvalidName(e)) => assert_eq!(e, err, "{shown:?}"),
            other => panic!("{shown:?}: {other:?}"),
        }
        match env.svc.login_password(name, PW, None).await {
            Err(LoginError::MalformedName(e)) => assert_eq!(e, err, "{shown:?}"),
            other => panic!("{shown:?}: {other:?}"),
        }
        assert!(env.svc.find_user(name).await.expect("find").is_none());
    }
    assert_eq!(env.svc.list_users(&admin).await.expect("users").len(), users);
    assert_eq!(env.audit_len().await, audit, "refused input leaves no trace but the refusal");
    env.svc.audit_verify(&admin).await.expect("chain intact");
}

async fn malformed_tokens_are_refused_before_lookup(env: &Env) {
    let p = env.user("alice").await;
    let s = env.svc.start_session(env.svc.login_password("alice", PW, None).await.expect("login")).await.expect("s");
    let huge = format!("dmat_{}", "A".repeat(10 << 20));
    let bad_alphabet = format!("dmat_{}", "!".repeat(43));
    let wrong_length = format!("dmat_{}", "A".repeat(42));
    let sql = format!("dmat_{}", "' OR 1=1 --                                ");
    for t in ["", "Bearer x", "dmat_", huge.as_str(), &bad_alphabet, &wrong_length, &sql, "dmxx_AAAA"] {
        let shown: String = t.chars().take(20).collect();
        assert!(matches!(env.svc.authenticate_bearer(t).await, Err(AuthError::Malformed)), "{shown}");
        assert!(matches!(env.svc.refresh(t).await, Err(AuthError::Malformed)), "{shown}");
        assert!(matches!(env.svc.logout(t).await, Err(AuthError::Malformed)), "{shown}");
        assert!(matches!(env.svc.authenticate_session(t, Csrf::SafeMethod).await, Err(AuthError::Malformed)));
        let r = env.svc.authenticate_session(&s.session_token, Csrf::Token(t)).await;
        assert!(matches!(r, Err(AuthError::CsrfMismatch)), "{shown}");
    }
    // Well-formed but unknown.
    let unknown = format!("dmat_{}", "A".repeat(43));
    assert!(matches!(env.svc.authenticate_bearer(&unknown).await, Err(AuthError::Invalid)));
    let unknown_key = format!("dmak_{}", "A".repeat(43));
    assert!(matches!(env.svc.authenticate_bearer(&unknown_key).await, Err(AuthError::Invalid)));
    env.svc.authenticate_session(&s.session_token, Csrf::Token(&s.csrf_token)).await.expect("still fine");
    assert_eq!(p.name(), "alice");
}

async fn sql_metacharacters_are_data(env: &Env) {
    let admin = env.admin().await;
    // In a password: just bytes.
    for (i, pw) in SQL.iter().enumerate() {
        let pw = format!("{pw} and more");
        let name = format!("sql{i}");
        env.svc.sign_up(&name, &pw).await.expect("sign up");
        env.svc.login_password(&name, &pw, None).await.expect("login with metacharacters");
        assert!(matches!(env.svc.login_password(&name, PW, None).await, Err(LoginError::InvalidCredentials)));
    }
    let mut who = Vec::new();
    for (i, pw) in SQL.iter().take(2).enumerate() {
        let grant = env.svc.login_password(&format!("sql{i}"), &format!("{pw} and more"), None).await;
        let pair = env.svc.issue_tokens(grant.expect("login")).await.expect("tokens");
        who.push(env.svc.authenticate_bearer(&pair.access_token).await.expect("auth"));
    }
    let (p, q) = (who[0].clone(), who[1].clone());
    // In key names and scope prefixes: stored and listed back verbatim.
    for name in SQL {
        let scope = Scope {
            ops: Ops::of(&[Op::Read]),
            targets: Some(vec![ScopeTarget { bucket: "b-1.x".into(), prefix: Some(name.into()) }]),
        };
        let k = env.svc.create_api_key(&p, p.user(), NewKey { name, scope: scope.clone(), expires_at: None }).await;
        let k = k.expect("key");
        assert_eq!((k.info.name.as_str(), &k.info.scope), (name, &scope));
        let who = env.svc.authenticate_bearer(&k.token).await.expect("auth");
        assert!(who.scope().allows(Op::Read, Some("b-1.x"), Some(&format!("{name}/x"))));
        assert!(!who.scope().allows(Op::Read, Some("b-1.x"), Some("other")));
        assert!(matches!(env.svc.revoke_key(&p, name).await, Err(KeyError::NotFound)));
        let r = env.svc.add_public_key(&p, p.user(), name, [0u8; 32]).await;
        assert!(r.is_err(), "{r:?}");
    }
    let listed = env.svc.list_keys(&p, p.user()).await.expect("list");
    assert_eq!(listed.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), SQL);
    // In bucket names: refused; in object keys: literal.
    for name in SQL {
        assert!(matches!(ResourceRef::bucket(name), Err(ResourceError::BadBucket)));
        assert!(matches!(ResourceRef::file(name), Err(ResourceError::BadName)));
    }
    let bucket = ResourceRef::bucket("meta").expect("name");
    env.svc.create_resource(&p, &bucket).await.expect("bucket");
    for key in SQL {
        let obj = ResourceRef::object("meta", key).expect("object key");
        env.svc.create_resource(&p, &obj).await.expect("object");
        assert_eq!(env.svc.check(Some(&q), Action::Read, &obj).await.expect("c"), Decision::Deny);
        assert_eq!(env.svc.check(Some(&p), Action::Delete, &obj).await.expect("c"), Decision::Allow);
        let r = env.svc.create_resource(&q, &ResourceRef::prefix("meta", key).expect("prefix")).await;
        assert!(matches!(r, Err(PermError::Denied)));
    }
    assert_eq!(env.svc.list_owned(&p, p.user()).await.expect("owned").len(), 1 + SQL.len());
    // Everything still stands.
    assert_eq!(env.svc.list_users(&admin).await.expect("users").len(), 1 + SQL.len());
    env.svc.audit_verify(&admin).await.expect("chain intact");
    let _ = full();
}
