//! Access and refresh tokens (rotation, reuse, expiry, logout) and browser
//! sessions with their CSRF token.

use datamesh_services::sessions::{AuthError, Csrf};

use crate::common::Env;

crate::both!(
    refresh_rotates_and_reuse_revokes_the_family,
    tokens_expire_and_logout_revokes,
    sessions_need_their_csrf_token
);

const PW: &str = "correct horse battery";

async fn refresh_rotates_and_reuse_revokes_the_family(env: &Env) {
    env.svc.sign_up("alice", PW).await.expect("sign up");
    let first = env.svc.issue_tokens(env.svc.login_password("alice", PW, None).await.expect("login")).await.expect("t");
    let second = env.svc.refresh(&first.refresh_token).await.expect("refresh");
    assert_ne!(first.refresh_token, second.refresh_token);
    assert_ne!(first.access_token, second.access_token);
    env.svc.authenticate_bearer(&second.access_token).await.expect("the new access token works");
    // An unrelated login of the same user is another family.
    let other = env.svc.issue_tokens(env.svc.login_password("alice", PW, None).await.expect("login")).await.expect("t");
    // The used refresh token comes back: someone copied it.
    assert!(matches!(env.svc.refresh(&first.refresh_token).await, Err(AuthError::RefreshReused)));
    assert!(matches!(env.svc.authenticate_bearer(&second.access_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.refresh(&second.refresh_token).await, Err(AuthError::Invalid)));
    env.svc.authenticate_bearer(&other.access_token).await.expect("other logins are untouched");
    env.svc.refresh(&other.refresh_token).await.expect("and refresh");
}

async fn tokens_expire_and_logout_revokes(env: &Env) {
    env.svc.sign_up("bob", PW).await.expect("sign up");
    let pair = env.svc.issue_tokens(env.svc.login_password("bob", PW, None).await.expect("login")).await.expect("t");
    env.advance(env.config.access_ttl.as_secs() + 1);
    assert!(matches!(env.svc.authenticate_bearer(&pair.access_token).await, Err(AuthError::Expired)));
    let fresh = env.svc.refresh(&pair.refresh_token).await.expect("refresh after the access token expired");
    env.svc.authenticate_bearer(&fresh.access_token).await.expect("fresh");
    env.svc.logout(&fresh.access_token).await.expect("logout");
    assert!(matches!(env.svc.authenticate_bearer(&fresh.access_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.refresh(&fresh.refresh_token).await, Err(AuthError::Invalid)));
    // A refresh token expires too.
    let pair = env.svc.issue_tokens(env.svc.login_password("bob", PW, None).await.expect("login")).await.expect("t");
    env.advance(env.config.refresh_ttl.as_secs() + 1);
    assert!(matches!(env.svc.refresh(&pair.refresh_token).await, Err(AuthError::Expired)));
    // A refresh token is not an access token, nor the reverse.
    assert!(matches!(env.svc.authenticate_bearer(&pair.refresh_token).await, Err(AuthError::Malformed)));
    assert!(matches!(env.svc.refresh(&pair.access_token).await, Err(AuthError::Malformed)));
    // Log out everywhere: every token and session of the user, and no one else's.
    env.svc.sign_up("bea", PW).await.expect("sign up");
    let other = env.svc.issue_tokens(env.svc.login_password("bea", PW, None).await.expect("login")).await.expect("t");
    let t = env.svc.issue_tokens(env.svc.login_password("bob", PW, None).await.expect("login")).await.expect("t");
    let s = env.svc.start_session(env.svc.login_password("bob", PW, None).await.expect("login")).await.expect("s");
    let bob = env.svc.authenticate_bearer(&t.access_token).await.expect("auth");
    let bea = env.svc.authenticate_bearer(&other.access_token).await.expect("auth");
    assert!(matches!(env.svc.revoke_all_sessions(&bea, bob.user()).await, Err(AuthError::NotPermitted)));
    assert!(env.svc.revoke_all_sessions(&bob, bob.user()).await.expect("everywhere") >= 3);
    assert!(matches!(env.svc.authenticate_bearer(&t.access_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.refresh(&t.refresh_token).await, Err(AuthError::Invalid)));
    assert!(matches!(env.svc.authenticate_session(&s.session_token, Csrf::SafeMethod).await, Err(AuthError::Invalid)));
    env.svc.authenticate_bearer(&other.access_token).await.expect("another user's login lives");
    // Housekeeping removes what has expired, and only that.
    env.advance(env.config.access_ttl.as_secs() + 1);
    assert!(env.svc.purge_expired().await.expect("purge") >= 2);
    assert!(matches!(env.svc.authenticate_bearer(&other.access_token).await, Err(AuthError::Invalid)));
    env.svc.refresh(&other.refresh_token).await.expect("the refresh token outlives the purge");
}

async fn sessions_need_their_csrf_token(env: &Env) {
    env.svc.sign_up("carol", PW).await.expect("sign up");
    let s = env.svc.start_session(env.svc.login_password("carol", PW, None).await.expect("login")).await.expect("s");
    let t = env.svc.start_session(env.svc.login_password("carol", PW, None).await.expect("login")).await.expect("s");
    let p = env.svc.authenticate_session(&s.session_token, Csrf::SafeMethod).await.expect("GET");
    assert_eq!(p.name(), "carol");
    env.svc.authenticate_session(&s.session_token, Csrf::Token(&s.csrf_token)).await.expect("POST with the token");
    for bad in [t.csrf_token.as_str(), "", "dmcs_AAAA", &s.session_token] {
        let r = env.svc.authenticate_session(&s.session_token, Csrf::Token(bad)).await;
        assert!(matches!(r, Err(AuthError::CsrfMismatch)), "{bad}: {r:?}");
    }
    // A session token is not a bearer token.
    assert!(matches!(env.svc.authenticate_bearer(&s.session_token).await, Err(AuthError::Malformed)));
    env.svc.logout(&s.session_token).await.expect("logout");
    assert!(matches!(env.svc.authenticate_session(&s.session_token, Csrf::SafeMethod).await, Err(AuthError::Invalid)));
    env.svc.authenticate_session(&t.session_token, Csrf::SafeMethod).await.expect("the other session lives");
    env.advance(env.config.session_ttl.as_secs() + 1);
    assert!(matches!(env.svc.authenticate_session(&t.session_token, Csrf::SafeMethod).await, Err(AuthError::Expired)));
}
