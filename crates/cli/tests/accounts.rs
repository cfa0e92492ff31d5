//! Accounts over the real REST API of a real node: the administrator
//! creates users, users log in (password, session cookie, key signature),
//! refresh and log out; bad input is a clear 4xx, never a 5xx; the login
//! limiter answers 429 with `Retry-After`; the audit log verifies after it
//! all. Every wait is on a condition with a timeout.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

/// The node's REST API, as one credential (or none).
#[derive(Clone)]
struct Api {
    url: String,
    http: reqwest::Client,
}

impl Api {
    fn of(node: &TestNode) -> Api {
        Api { url: node.url.clone(), http: reqwest::Client::new() }
    }

    /// A request with `token` as the bearer (none when empty).
    async fn call(&self, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url));
        if !token.is_empty() {
            r = r.bearer_auth(token);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// Logs `name` in by password; returns the answer's access and refresh tokens.
    async fn login(&self, name: &str, password: &str) -> (String, String) {
        let (st, b) = self.call("", Method::POST, "/v1/login", Some(json!({"name": name, "password": password}))).await;
        assert_eq!(st, 200, "login {name}: {b}");
        (b["access_token"].as_str().unwrap().into(), b["refresh_token"].as_str().unwrap().into())
    }
}

fn code(b: &Value) -> String {
    b["code"].as_str().unwrap_or("").to_string()
}

const PW: &str = "correct horse battery staple";

/// The administrator (the node token) creates alice and bob.
async fn users(api: &Api, admin: &str) {
    for (name, tier) in [("alice", "free"), ("bob", "free")] {
        let (st, b) = api
            .call(admin, Method::POST, "/v1/admin/users", Some(json!({"name": name, "password": PW, "tier": tier})))
            .await;
        assert_eq!(st, 201, "create {name}: {b}");
        assert_eq!((b["name"].as_str(), b["role"].as_str(), b["tier"].as_str()), (Some(name), Some("user"), Some(tier)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_log_in_refresh_log_out_and_admin_manages_them() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;

    // A taken name says so; the list shows both (and the bootstrap admin).
    let (st, b) =
        api.call(&admin, Method::POST, "/v1/admin/users", Some(json!({"name": "ALICE", "password": PW}))).await;
    assert_eq!((st, code(&b)), (409, "name_taken".into()), "{b}");
    let (st, b) = api.call(&admin, Method::GET, "/v1/admin/users", None).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = b["users"].as_array().unwrap().iter().map(|u| u["name"].as_str().unwrap()).collect();
    for n in ["admin", "alice", "bob"] {
        assert!(names.contains(&n), "{names:?}");
    }

    // Password login → tokens; /v1/me and /v1/me/usage answer for alice.
    let (alice, refresh) = api.login("alice", PW).await;
    let (st, me) = api.call(&alice, Method::GET, "/v1/me", None).await;
    assert_eq!((st, me["name"].as_str(), me["tier"].as_str()), (200, Some("alice"), Some("free")), "{me}");
    let (st, u) = api.call(&alice, Method::GET, "/v1/me/usage", None).await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["tier"]["max_file_bytes"], json!(100_000_000u64), "the free tier's 100 MB per file: {u}");
    assert_eq!((u["stored_bytes"].as_u64(), u["files"].as_u64()), (Some(0), Some(0)), "{u}");

    // A user is not the administrator.
    for (m, p) in [(Method::GET, "/v1/admin/users"), (Method::GET, "/v1/admin/audit"), (Method::GET, "/v1/status")] {
        let (st, b) = api.call(&alice, m.clone(), p, None).await;
        assert_eq!((st, code(&b)), (403, "forbidden".into()), "{m} {p}: {b}");
    }

    // Refresh rotates; the used refresh token is refused after, and its
    // reuse revokes the family (the new access token stops working too).
    let (st, pair) =
        api.call("", Method::POST, "/v1/token/refresh", Some(json!({"refresh_token": refresh.clone()}))).await;
    assert_eq!(st, 200, "{pair}");
    let fresh = pair["access_token"].as_str().unwrap().to_string();
    assert_eq!(api.call(&fresh, Method::GET, "/v1/me", None).await.0, 200);
    let (st, b) = api.call("", Method::POST, "/v1/token/refresh", Some(json!({"refresh_token": refresh}))).await;
    assert_eq!((st, code(&b)), (401, "unauthorized".into()), "{b}");
    assert_eq!(api.call(&fresh, Method::GET, "/v1/me", None).await.0, 401, "a reused refresh token revokes its family");

    // Logout revokes the login's tokens.
    let (alice, _) = api.login("alice", PW).await;
    assert_eq!(api.call(&alice, Method::POST, "/v1/logout", None).await.0, 204);
    assert_eq!(api.call(&alice, Method::GET, "/v1/me", None).await.0, 401);
    // The node token is not a login: 400 saying so, nothing revoked.
    let (st, b) = api.call(&admin, Method::POST, "/v1/logout", None).await;
    assert_eq!((st, code(&b)), (400, "bad_request".into()), "{b}");

    // A browser session: an HttpOnly, SameSite=Strict cookie and a CSRF
    // token the unsafe methods need.
    let r = api
        .http
        .post(format!("{}/v1/login", api.url))
        .json(&json!({"name": "bob", "password": PW, "session": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    let b: Value = r.json().await.unwrap();
    let csrf = b["csrf_token"].as_str().unwrap().to_string();
    assert!(b.get("access_token").is_none(), "a session login gives no bearer token: {b}");
    let me = api.http.get(format!("{}/v1/me", api.url)).header("cookie", &session).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let put = |csrf: Option<&str>| {
        let mut r = api
            .http
            .put(format!("{}/v1/me/password", api.url))
            .header("cookie", &session)
            .json(&json!({"current": PW, "new": "another long password"}));
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r.send()
    };
    assert_eq!(put(None).await.unwrap().status(), 403, "an unsafe request without the CSRF token");
    assert_eq!(put(Some("wrong")).await.unwrap().status(), 403);
    assert_eq!(put(Some(&csrf)).await.unwrap().status(), 204);
    // The changed password logs out everywhere, and the new one works.
    assert_eq!(api.http.get(format!("{}/v1/me", api.url)).header("cookie", &session).send().await.unwrap().status(), 401);
    let (bob, _) = api.login("bob", "another long password").await;

    // The administrator changes tiers and disables a user.
    let (st, b) = api.call(&admin, Method::PATCH, "/v1/admin/users/alice", Some(json!({"tier": "premium"}))).await;
    assert_eq!((st, b["tier"].as_str()), (200, Some("premium")), "{b}");
    let (st, b) = api.call(&admin, Method::PATCH, "/v1/admin/users/alice", Some(json!({"tier": "gold"}))).await;
    assert_eq!(st, 400, "an unknown tier: {b}");
    let (st, b) = api.call(&admin, Method::PATCH, "/v1/admin/users/nobody", Some(json!({"disabled": true}))).await;
    assert_eq!((st, code(&b)), (404, "not_found".into()), "{b}");
    let (st, _) = api.call(&admin, Method::PATCH, "/v1/admin/users/bob", Some(json!({"disabled": true}))).await;
    assert_eq!(st, 200);
    assert_eq!(api.call(&bob, Method::GET, "/v1/me", None).await.0, 401, "a disabled user's token is refused");
    let (st, b) = api.call("", Method::POST, "/v1/login", Some(json!({"name": "bob", "password": "another long password"}))).await;
    assert_eq!(st, 401, "a disabled user cannot log in: {b}");
    let (st, _) = api.call(&admin, Method::PATCH, "/v1/admin/users/bob", Some(json!({"disabled": false}))).await;
    assert_eq!(st, 200);
    api.login("bob", "another long password").await;

    // Tiers are data the administrator edits.
    let (st, b) = api.call(&admin, Method::GET, "/v1/admin/tiers", None).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = b["tiers"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in ["free", "premium", "enterprise"] {
        assert!(names.contains(&t), "{names:?}");
    }
    let tiny = json!({"name": "tiny", "max_stored_bytes": 1000, "max_transfer_bytes": 1000, "max_calls_per_hour": 10,
        "max_file_bytes": 100, "max_files": 1, "sla": false});
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/tiny", Some(tiny.clone())).await.0, 200);
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/other", Some(tiny)).await.0, 400);

    // Deleting a user: their logins stop working; the name is free again.
    let (st, _) = api.call(&admin, Method::DELETE, "/v1/admin/users/bob", None).await;
    assert_eq!(st, 204);
    assert_eq!(api.call(&bob, Method::GET, "/v1/me", None).await.0, 401);
    assert_eq!(api.call(&admin, Method::DELETE, "/v1/admin/users/bob", None).await.0, 404);

    // The audit log recorded it all, and verifies.
    let (st, page) = api.call(&admin, Method::GET, "/v1/admin/audit?after=0&limit=1000", None).await;
    assert_eq!(st, 200);
    let actions: Vec<&str> =
        page["records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for a in ["user_created", "login", "logout", "password_changed", "user_disabled", "user_deleted", "tier_changed"] {
        assert!(actions.contains(&a), "the audit log lacks {a}: {actions:?}");
    }
    let (st, v) = api.call(&admin, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
    assert!(v["rows"].as_u64().unwrap() >= actions.len() as u64, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_clear_4xx_and_the_login_limiter_kicks_in() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;

    // Names with control characters, SQL metacharacters, or 10 MB long.
    let huge = "a".repeat(10 * 1024 * 1024);
    for name in ["al\u{0}ice", "bob\nadmin", "x'; DROP TABLE users; --", huge.as_str()] {
        for (path, body) in [
            ("/v1/accounts", json!({"name": name, "password": PW})),
            ("/v1/login", json!({"name": name, "password": PW})),
        ] {
            let (st, b) = api.call("", Method::POST, path, Some(body)).await;
            assert_eq!((st, code(&b)), (400, "bad_request".into()), "{path} {:.40}: {b}", name);
        }
        let (st, b) =
            api.call(&admin, Method::POST, "/v1/admin/users", Some(json!({"name": name, "password": PW}))).await;
        assert_eq!(st, 400, "admin create {:.40}: {b}", name);
    }
    // Malformed bodies and tokens.
    let (st, b) = api.call("", Method::POST, "/v1/login", Some(json!({"name": "alice"}))).await;
    assert_eq!(st, 400, "{b}");
    for t in ["dmat_", "dmat_zzzz", &"x".repeat(100_000)] {
        let (st, b) = api.call(t, Method::GET, "/v1/me", None).await;
        assert_eq!((st, code(&b)), (401, "unauthorized".into()), "{b}");
    }
    let (st, b) = api.call("", Method::POST, "/v1/token/refresh", Some(json!({"refresh_token": "dmrt_nope"}))).await;
    assert_eq!(st, 401, "{b}");
    // A signature over a challenge that was never issued.
    let (st, c) = api.call("", Method::POST, "/v1/login/challenge", None).await;
    assert_eq!(st, 200, "{c}");
    let mut forged = c.clone();
    forged["nonce"] = json!("00".repeat(32));
    let body = json!({"challenge": forged, "name": "alice", "public_key": "11".repeat(32), "signature": "22".repeat(64)});
    let (st, b) = api.call("", Method::POST, "/v1/login/signature", Some(body)).await;
    assert_eq!(st, 401, "{b}");

    // Wrong passwords: 401 each, then 429 with Retry-After; never a 5xx.
    let mut limited = false;
    for _ in 0..12 {
        let r = api
            .http
            .post(format!("{}/v1/login", api.url))
            .json(&json!({"name": "alice", "password": "wrong password!"}))
            .send()
            .await
            .unwrap();
        let st = r.status().as_u16();
        assert!(st == 401 || st == 429, "a wrong password answered {st}");
        if st == 429 {
            assert!(r.headers().get("retry-after").is_some(), "429 without Retry-After");
            limited = true;
            break;
        }
    }
    assert!(limited, "the login limiter never kicked in");
    // Even the right password waits out the lockout; bob is not locked.
    let (st, _) = api.call("", Method::POST, "/v1/login", Some(json!({"name": "alice", "password": PW}))).await;
    assert_eq!(st, 429);
    api.login("bob", PW).await;

    let (st, v) = api.call(&admin, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
}
