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
use std::time::Duration;

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
        assert_eq!(
            (b["name"].as_str(), b["role"].as_str(), b["tier"].as_str()),
            (Some(name), Some("user"), Some(tier))
        );
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
    assert_eq!(
        api.http.get(format!("{}/v1/me", api.url)).header("cookie", &session).send().await.unwrap().status(),
        401
    );
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
    let (st, b) = api
        .call("", Method::POST, "/v1/login", Some(json!({"name": "bob", "password": "another long password"})))
        .await;
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
    let body =
        json!({"challenge": forged, "name": "alice", "public_key": "11".repeat(32), "signature": "22".repeat(64)});
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

/// The OpenAPI document's private operations: (path template, method).
async fn private_routes(api: &Api) -> Vec<(String, Method)> {
    let (st, doc) = api.call("", Method::GET, "/v1/openapi.json", None).await;
    assert_eq!(st, 200);
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            if op["security"] != json!([{}]) {
                out.push((path.clone(), method.to_uppercase().parse().unwrap()));
            }
        }
    }
    out
}

/// A request with a raw body and any credential header.
async fn raw(api: &Api, method: Method, path: &str, header: Option<(&str, String)>, body: Vec<u8>) -> (u16, Value) {
    let json_body = body.first() == Some(&b'{');
    let mut r = api.http.request(method, format!("{}{path}", api.url)).body(body);
    if json_body {
        r = r.header("content-type", "application/json");
    }
    if let Some((k, v)) = header {
        r = r.header(k, v);
    }
    let r = r.send().await.unwrap();
    let st = r.status().as_u16();
    let text = r.text().await.unwrap();
    (st, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// What alice owns, for the sweep.
struct Alices {
    cid: String,
    share: String,
    upload: String,
    content: Vec<u8>,
}

/// Fills a path template with alice's resources.
fn fill(path: &str, a: &Alices) -> String {
    let id = if path.starts_with("/v1/uploads") { &a.upload } else { &a.share };
    path.replace("{cid}", &a.cid)
        .replace("{id}", id)
        .replace("{index}", "0")
        .replace("{name}", "alice")
        .replace("{user}", "bob")
}

/// A body that gets a route past its parsing, so that the permission
/// check is what answers.
fn body_for(path: &str, method: &Method, a: &Alices) -> Vec<u8> {
    match (method.as_str(), path) {
        ("POST", "/v1/shares") => json!({"cid": a.cid}).to_string().into_bytes(),
        ("PATCH", "/v1/files/{cid}/metadata") => json!({"name": "bob was here"}).to_string().into_bytes(),
        ("PATCH", "/v1/admin/users/{name}") => json!({"disabled": true}).to_string().into_bytes(),
        ("POST", "/v1/admin/users") => json!({"name": "mallory", "password": PW}).to_string().into_bytes(),
        ("PUT", "/v1/admin/tiers/{name}") => {
            json!({"name": "free", "max_stored_bytes": null, "max_transfer_bytes": null,
            "max_calls_per_hour": null, "max_file_bytes": null, "max_files": null})
            .to_string()
            .into_bytes()
        }
        ("PUT", "/v1/uploads/{id}/chunks") | ("POST", "/v1/uploads/{id}/complete") => vec![7u8; 64],
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_sweep_other_users_get_403_and_change_nothing() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;
    let (alice, _) = api.login("alice", PW).await;
    let (bob, _) = api.login("bob", PW).await;

    // Alice's file, share link and open upload session.
    let content = text_like(50_000, 16);
    let (st, up) = raw(
        &api,
        Method::POST,
        "/v1/files?name=alice.txt",
        Some(("authorization", format!("Bearer {alice}"))),
        content.clone(),
    )
    .await;
    assert_eq!(st, 201, "{up}");
    let cid = up["cid"].as_str().unwrap().to_string();
    let (st, share) = api.call(&alice, Method::POST, "/v1/shares", Some(json!({"cid": cid}))).await;
    assert_eq!(st, 201, "{share}");
    let (st, session) = api.call(&alice, Method::POST, "/v1/uploads", Some(json!({}))).await;
    assert_eq!(st, 201, "{session}");
    let a = Alices {
        cid: cid.clone(),
        share: share["id"].as_str().unwrap().into(),
        upload: session["upload_id"].as_str().unwrap().into(),
        content,
    };
    let (st, meta_before) = api.call(&alice, Method::GET, &format!("/v1/files/{cid}/metadata"), None).await;
    assert_eq!(st, 200, "{meta_before}");

    // A revoked token (logged out), a revoked API key and one past its
    // expiry (one second: waited out below, on the key's own answer).
    let (revoked, _) = api.login("bob", PW).await;
    assert_eq!(api.call(&revoked, Method::POST, "/v1/logout", None).await.0, 204);
    let api_key = async |body: Value| {
        let (st, k) = api.call(&bob, Method::POST, "/v1/keys", Some(body)).await;
        assert_eq!(st, 201, "{k}");
        (k["token"].as_str().unwrap().to_string(), k["key"]["key_id"].as_str().unwrap().to_string())
    };
    let (revoked_key, id) = api_key(json!({"kind": "api"})).await;
    assert_eq!(api.call(&revoked_key, Method::GET, "/v1/me", None).await.0, 200);
    assert_eq!(api.call(&bob, Method::DELETE, &format!("/v1/keys/{id}"), None).await.0, 204);
    let (expired_key, _) = api_key(json!({"kind": "api", "expires_in": 1})).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (st, b) =
            raw(&api, Method::GET, "/v1/me", Some(("authorization", format!("Bearer {expired_key}"))), vec![]).await;
        if st == 401 {
            assert!(b["message"].as_str().unwrap_or("").contains("expired"), "{b}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a key made to last one second still works: {st} {b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // Bob's own routes: they answer for bob, never with alice's things.
    let own: &[(&str, &str)] = &[
        ("GET", "/v1/me"),
        ("GET", "/v1/me/usage"),
        ("PUT", "/v1/me/password"),
        ("POST", "/v1/me/login-keys"),
        ("POST", "/v1/me/encryption-keys"),
        // Public keys are for every user to read: senders wrap for them.
        ("GET", "/v1/users/{name}/encryption-keys"),
        ("POST", "/v1/logout"),
        ("POST", "/v1/uploads"),
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/shares"),
    ];
    let routes = private_routes(&api).await;
    assert!(routes.len() >= 30, "the sweep sees only {} private routes", routes.len());
    let mut swept = 0;
    for (template, method) in &routes {
        let path = fill(template, &a);
        for (what, header) in [
            ("no credential", None),
            ("a wrong credential", Some(("authorization", "Bearer dmat_wrong".to_string()))),
            ("a revoked token", Some(("authorization", format!("Bearer {revoked}")))),
            ("a revoked API key", Some(("authorization", format!("Bearer {revoked_key}")))),
            ("an expired API key", Some(("authorization", format!("Bearer {expired_key}")))),
            ("a session cookie that does not exist", Some(("cookie", "datamesh_session=dmst_nope".to_string()))),
        ] {
            let (st, b) = raw(&api, method.clone(), &path, header, body_for(template, method, &a)).await;
            assert_eq!((st, code(&b)), (401, "unauthorized".into()), "{method} {path} with {what}: {b}");
        }
        // API keys are the keys routes' own (their tests sweep them).
        if template.starts_with("/v1/keys") || own.contains(&(method.as_str(), template.as_str())) {
            continue;
        }
        let (st, b) = raw(
            &api,
            method.clone(),
            &path,
            Some(("authorization", format!("Bearer {bob}"))),
            body_for(template, method, &a),
        )
        .await;
        assert_eq!((st, code(&b)), (403, "forbidden".into()), "bob: {method} {path}: {b}");
        swept += 1;
    }
    assert!(swept >= 20, "bob was refused on only {swept} routes");

    // A refusal says nothing about existence: a CID that is not on the node
    // is answered exactly as alice's.
    let absent = "bafkr4ihdjm4mk7ry2uwacenh7xn4mzwelmx4xhbq5fwevbewdcemhugu4i";
    let theirs = api.call(&bob, Method::GET, &format!("/v1/files/{cid}"), None).await;
    let nobodys = api.call(&bob, Method::GET, &format!("/v1/files/{absent}"), None).await;
    assert_eq!(theirs, nobodys);

    // Bob's own listings do not show alice's file or link.
    let (_, files) = api.call(&bob, Method::GET, "/v1/files", None).await;
    assert_eq!(files["files"], json!([]), "{files}");
    let (_, shares) = api.call(&bob, Method::GET, "/v1/shares", None).await;
    assert_eq!(shares["shares"], json!([]), "{shares}");
    let (st, b) = api.call(&bob, Method::POST, "/v1/shares", Some(json!({"cid": cid}))).await;
    assert_eq!((st, code(&b)), (403, "forbidden".into()), "{b}");

    // Nothing of alice's changed: her file, its metadata, her link, her
    // upload session, and the users.
    let r = api.http.get(format!("{}/v1/files/{cid}/content", api.url)).bearer_auth(&alice).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), a.content);
    let (_, meta_after) = api.call(&alice, Method::GET, &format!("/v1/files/{cid}/metadata"), None).await;
    assert_eq!(meta_before, meta_after);
    let (_, mine) = api.call(&alice, Method::GET, "/v1/shares", None).await;
    assert_eq!(mine["shares"][0]["state"], "active", "{mine}");
    let (_, files) = api.call(&alice, Method::GET, "/v1/files", None).await;
    assert_eq!(files["files"].as_array().unwrap().len(), 1, "{files}");
    let r = api.http.get(format!("{}/v1/s/{}", api.url, a.share)).send().await.unwrap();
    assert_eq!(r.status(), 200, "the public link still serves");
    assert_eq!(api.call(&alice, Method::DELETE, &format!("/v1/uploads/{}", a.upload), None).await.0, 204);
    let (_, users) = api.call(&admin, Method::GET, "/v1/admin/users", None).await;
    assert!(users["users"].as_array().unwrap().iter().all(|u| u["disabled"] == false && u["name"] != "mallory"));
    // The administrator sees every file.
    let (_, all) = api.call(&admin, Method::GET, "/v1/files", None).await;
    assert_eq!(all["files"].as_array().unwrap().len(), 1);

    // The same bytes from bob are his own file (the gateway seals each
    // upload with a fresh key: another CID), counted in his usage; alice's
    // stays out of his reach.
    let (st, up) =
        raw(&api, Method::POST, "/v1/files", Some(("authorization", format!("Bearer {bob}"))), a.content.clone()).await;
    assert_eq!(st, 201, "{up}");
    let bobs = up["cid"].as_str().unwrap().to_string();
    assert_eq!(api.call(&bob, Method::GET, &format!("/v1/files/{bobs}"), None).await.0, 200);
    assert_eq!(api.call(&alice, Method::GET, &format!("/v1/files/{bobs}"), None).await.0, 403);
    let (_, u) = api.call(&bob, Method::GET, "/v1/me/usage", None).await;
    assert_eq!((u["files"].as_u64(), u["stored_bytes"].as_u64()), (Some(1), Some(a.content.len() as u64)), "{u}");
    assert_eq!(api.call(&bob, Method::DELETE, &format!("/v1/files/{cid}"), None).await.0, 403);

    // Alice deletes her file: gone from her usage.
    let (st, b) = api.call(&alice, Method::DELETE, &format!("/v1/files/{cid}"), None).await;
    assert_eq!(st, 200, "{b}");
    let (_, u) = api.call(&alice, Method::GET, "/v1/me/usage", None).await;
    assert_eq!((u["files"].as_u64(), u["stored_bytes"].as_u64()), (Some(0), Some(0)), "{u}");

    let (st, v) = api.call(&admin, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_before_anything_is_stored_and_usage_is_reported() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;
    let (alice, _) = api.login("alice", PW).await;
    let (_, before) = api.call(&admin, Method::GET, "/v1/status", None).await;

    // Over the free tier's 100 MB per file: refused on the declared size,
    // before a byte is read (a sparse file: nothing is really sent).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::File::create(&big).unwrap().set_len(100_000_001).unwrap();
    let o = std::process::Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", "POST", "-T"])
        .arg(&big)
        .args(["-H", &format!("Authorization: Bearer {alice}"), "-H", "Expect: 100-continue"])
        .arg(format!("{}/v1/files", api.url))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (body, status) = out.rsplit_once('\n').unwrap();
    assert_eq!(status.trim(), "403", "{out}");
    let b: Value = serde_json::from_str(body).unwrap();
    assert_eq!(code(&b), "quota_exceeded", "{b}");
    assert!(b["message"].as_str().unwrap().contains("file_size"), "the message names the quota: {b}");

    // Nothing stored, nothing counted.
    let (_, u) = api.call(&alice, Method::GET, "/v1/me/usage", None).await;
    assert_eq!(
        (u["stored_bytes"].as_u64(), u["files"].as_u64(), u["reserved_bytes"].as_u64(), u["reserved_files"].as_u64()),
        (Some(0), Some(0), Some(0), Some(0)),
        "{u}"
    );
    let (_, after) = api.call(&admin, Method::GET, "/v1/status", None).await;
    assert_eq!(before["store"]["pins"], after["store"]["pins"], "no file was pinned");

    // A small tier: the storage quota, by upload and by chunk.
    let tiny = json!({"name": "tiny", "max_stored_bytes": 3000, "max_transfer_bytes": null,
        "max_calls_per_hour": null, "max_file_bytes": null, "max_files": 10, "sla": false});
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/tiny", Some(tiny)).await.0, 200);
    assert_eq!(api.call(&admin, Method::PATCH, "/v1/admin/users/alice", Some(json!({"tier": "tiny"}))).await.0, 200);
    let auth = Some(("authorization", format!("Bearer {alice}")));
    let (st, b) = raw(&api, Method::POST, "/v1/files", auth.clone(), text_like(2000, 1)).await;
    assert_eq!(st, 201, "{b}");
    let (st, b) = raw(&api, Method::POST, "/v1/files", auth.clone(), text_like(2000, 2)).await;
    assert_eq!((st, code(&b)), (403, "quota_exceeded".into()), "{b}");
    assert!(b["message"].as_str().unwrap().contains("storage"), "{b}");
    // By chunks: the session opens, the chunk over the quota is refused,
    // and the session goes with its reservation.
    let (st, s) = api.call(&alice, Method::POST, "/v1/uploads", Some(json!({}))).await;
    assert_eq!(st, 201, "{s}");
    let id = s["upload_id"].as_str().unwrap();
    let (st, b) = raw(&api, Method::PUT, &format!("/v1/uploads/{id}/chunks"), auth.clone(), vec![1u8; 2000]).await;
    assert_eq!((st, code(&b)), (403, "quota_exceeded".into()), "{b}");

    let (_, u) = api.call(&alice, Method::GET, "/v1/me/usage", None).await;
    assert_eq!((u["stored_bytes"].as_u64(), u["files"].as_u64()), (Some(2000), Some(1)), "{u}");
    assert_eq!((u["reserved_bytes"].as_u64(), u["reserved_files"].as_u64()), (Some(0), Some(0)), "{u}");
    assert_eq!(u["tier"]["name"], "tiny");

    let (st, v) = api.call(&admin, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
}

/// The next `quota.warning` event on `ws`, as (user, quota, resolved),
/// with the `alert` published beside it checked on the way.
async fn next_quota_warning(
    ws: &mut tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
) -> (String, String, bool) {
    use futures::StreamExt;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut warning = None;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let msg = tokio::time::timeout(left, ws.next()).await.expect("a quota.warning event within 20 s");
        let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = msg else { continue };
        let e: Value = serde_json::from_str(&t).unwrap();
        match e["type"].as_str() {
            Some("quota.warning") => {
                warning = Some((
                    e["user"].as_str().unwrap().to_string(),
                    e["quota"].as_str().unwrap().to_string(),
                    e["resolved"].as_bool().unwrap(),
                ))
            }
            Some("alert") if e["code"] == "quota_nearly_reached" => {
                let w = warning.take().expect("the quota.warning comes before its alert");
                assert_eq!(e["resolved"].as_bool(), Some(w.2), "{e}");
                assert!(e["message"].as_str().unwrap().contains(&w.1), "the alert names the quota: {e}");
                return w;
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_are_charged_and_80_percent_raises_one_warning_per_episode() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;
    let (alice, _) = api.login("alice", PW).await;
    let metered = json!({"name": "metered", "max_stored_bytes": 10_000, "max_transfer_bytes": 10_000,
        "max_calls_per_hour": null, "max_file_bytes": null, "max_files": 100, "sla": false});
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/metered", Some(metered)).await.0, 200);
    assert_eq!(api.call(&admin, Method::PATCH, "/v1/admin/users/alice", Some(json!({"tier": "metered"}))).await.0, 200);
    let ws_url =
        format!("{}/v1/events?token={admin}&types=quota.warning,alert", api.url.replacen("http://", "ws://", 1));
    let (mut ws, _) = tokio_tungstenite::connect_async(ws_url).await.unwrap();
    let auth = Some(("authorization", format!("Bearer {alice}")));
    let usage = async || api.call(&alice, Method::GET, "/v1/me/usage", None).await.1;

    // 8,100 of 10,000 bytes stored: one storage warning.
    let (st, b) = raw(&api, Method::POST, "/v1/files", auth.clone(), text_like(8100, 7)).await;
    assert_eq!(st, 201, "{b}");
    let cid = b["cid"].as_str().unwrap().to_string();
    assert_eq!(next_quota_warning(&mut ws).await, ("alice".into(), "storage".into(), false));
    assert_eq!(usage().await["warnings"], json!(["storage"]));

    // A whole download is charged its size, a range its length, a 304
    // nothing; reaching 80 % of the transfer quota warns once.
    let content = format!("/v1/files/{cid}/content");
    let get = async |headers: &[(&str, &str)]| {
        let mut r = api.http.get(format!("{}{content}", api.url)).bearer_auth(&alice);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let r = r.send().await.unwrap();
        let st = r.status().as_u16();
        let etag = r.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
        (st, etag, r.bytes().await.unwrap().len())
    };
    let (st, etag, n) = get(&[]).await;
    assert_eq!((st, n), (200, 8100));
    assert_eq!(usage().await["downloaded_bytes"], 8100);
    assert_eq!(next_quota_warning(&mut ws).await, ("alice".into(), "transfer".into(), false));
    assert_eq!(get(&[("range", "bytes=0-99")]).await.0, 206);
    assert_eq!(usage().await["downloaded_bytes"], 8200);
    let etag = etag.expect("an ETag");
    assert_eq!(get(&[("if-none-match", etag.as_str())]).await.0, 304);
    assert_eq!(usage().await["downloaded_bytes"], 8200, "a 304 sends nothing and is charged nothing");

    // A download past the quota is refused before a byte is sent, and
    // not counted.
    let (st, b) = raw(&api, Method::GET, &content, auth.clone(), Vec::new()).await;
    assert_eq!((st, code(&b)), (403, "quota_exceeded".into()), "{b}");
    assert!(b["message"].as_str().unwrap().contains("transfer"), "{b}");
    assert_eq!(usage().await["downloaded_bytes"], 8200);

    // Deleting the file ends the storage episode at the next request.
    assert_eq!(api.call(&alice, Method::DELETE, &format!("/v1/files/{cid}"), None).await.0, 200);
    let (st, b) = raw(&api, Method::POST, "/v1/files", auth.clone(), text_like(100, 8)).await;
    assert_eq!(st, 201, "{b}");
    assert_eq!(next_quota_warning(&mut ws).await, ("alice".into(), "storage".into(), true));

    // A share link's downloads are charged to its owner, before a byte is
    // sent; a refused one leaves the link's count as it was.
    let small = b["cid"].as_str().unwrap().to_string();
    let tier = |transfer: u64| {
        json!({"name": "metered", "max_stored_bytes": 10_000, "max_transfer_bytes": transfer,
            "max_calls_per_hour": null, "max_file_bytes": null, "max_files": 100, "sla": false})
    };
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/metered", Some(tier(8250))).await.0, 200);
    let (st, link) =
        api.call(&alice, Method::POST, "/v1/shares", Some(json!({"cid": small, "max_downloads": 1}))).await;
    assert_eq!(st, 201, "{link}");
    let visit = async |range: Option<&str>| {
        let mut r = api.http.get(format!("{}{}", api.url, link["path"].as_str().unwrap()));
        if let Some(range) = range {
            r = r.header("range", range);
        }
        let r = r.send().await.unwrap();
        let st = r.status().as_u16();
        (st, r.bytes().await.unwrap())
    };
    let (st, body) = visit(Some("bytes=0-9")).await;
    assert_eq!((st, body.len()), (206, 10));
    assert_eq!(usage().await["downloaded_bytes"], 8210, "the owner pays for a visitor's range");
    let (st, body) = visit(None).await;
    let refusal: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert_eq!((st, code(&refusal)), (403, "quota_exceeded".into()), "{refusal}");
    assert_eq!(usage().await["downloaded_bytes"], 8210, "a refused visit is not charged");
    // More transfer: the whole file now goes, and it is the link's one
    // download (had the refused visit been counted, the link would be used up).
    assert_eq!(api.call(&admin, Method::PUT, "/v1/admin/tiers/metered", Some(tier(100_000))).await.0, 200);
    let (st, body) = visit(None).await;
    assert_eq!((st, body.len()), (200, 100));
    assert_eq!(usage().await["downloaded_bytes"], 8310);
    let (_, list) = api.call(&alice, Method::GET, "/v1/shares", None).await;
    let mine = list["shares"].as_array().unwrap().iter().find(|s| s["id"] == link["id"]).cloned().unwrap();
    assert_eq!(mine["downloads"], 1, "{mine}");
    assert_eq!(visit(None).await.0, 410, "used up");
}

/// A fresh database on the test PostgreSQL server (`DATAMESH_TEST_POSTGRES`,
/// set by scripts/with-postgres), made with Debian's `psql`; `None`, said
/// loudly, when no server is configured and none is required.
fn fresh_postgres_database() -> Option<String> {
    let Ok(server) = std::env::var("DATAMESH_TEST_POSTGRES") else {
        assert!(
            std::env::var("DATAMESH_REQUIRE_POSTGRES").as_deref() != Ok("1"),
            "DATAMESH_REQUIRE_POSTGRES=1 but DATAMESH_TEST_POSTGRES is unset: run under scripts/with-postgres"
        );
        eprintln!("\n!!!!! SKIPPED: DATAMESH_TEST_POSTGRES is unset (run under scripts/with-postgres) !!!!!\n");
        return None;
    };
    let psql = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|d| d.path().join("bin/psql"))
        .find(|p| p.exists())
        .unwrap_or_else(|| "psql".into());
    let name = format!("dm_http_{}", std::process::id());
    let o = std::process::Command::new(psql)
        .args([server.as_str(), "-v", "ON_ERROR_STOP=1", "-c", &format!("CREATE DATABASE {name}")])
        .output()
        .expect("run psql");
    assert!(o.status.success(), "CREATE DATABASE: {}", String::from_utf8_lossy(&o.stderr));
    let (base, query) = server.split_once('?').map_or((server.as_str(), None), |(b, q)| (b, Some(q)));
    let host_end = base.rfind('/').filter(|&i| i > base.find("://").map_or(0, |j| j + 2)).unwrap_or(base.len());
    Some(format!("{}/{name}{}", &base[..host_end], query.map(|q| format!("?{q}")).unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_postgresql_share_accounts_keys_and_revocations() {
    let Some(db) = fresh_postgres_database() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sealing = dir.path().join("sealing.key");
    let args =
        ["--offline", "--s3", "127.0.0.1:0", "--database", db.as_str(), "--sealing-key", sealing.to_str().unwrap()];
    let a = TestNode::start(&args);
    let b = TestNode::start(&args);
    let (api_a, api_b) = (Api::of(&a), Api::of(&b));

    // A user created on one logs in on the other.
    let (st, u) =
        api_a.call(&a.token(), Method::POST, "/v1/admin/users", Some(json!({"name": "alice", "password": PW}))).await;
    assert_eq!(st, 201, "{u}");
    let (alice, _) = api_b.login("alice", PW).await;
    let (st, me) = api_b.call(&alice, Method::GET, "/v1/me", None).await;
    assert_eq!((st, me["name"].as_str()), (200, Some("alice")), "{me}");
    // Her token from gateway B works on gateway A.
    assert_eq!(api_a.call(&alice, Method::GET, "/v1/me", None).await.0, 200);

    // An API key made on A works on B; revoked on B, A refuses it on its next request.
    let (st, k) = api_a.call(&alice, Method::POST, "/v1/keys", Some(json!({"kind": "api", "name": "ci"}))).await;
    assert_eq!(st, 201, "{k}");
    let token = k["token"].as_str().unwrap().to_string();
    let id = k["key"]["key_id"].as_str().unwrap().to_string();
    assert_eq!(api_b.call(&token, Method::GET, "/v1/me", None).await.0, 200);
    assert_eq!(api_a.call(&token, Method::GET, "/v1/me", None).await.0, 200);
    assert_eq!(api_b.call(&alice, Method::DELETE, &format!("/v1/keys/{id}"), None).await.0, 204);
    assert_eq!(api_a.call(&token, Method::GET, "/v1/me", None).await.0, 401, "revoked on B, refused on A");

    // An S3 key made on A signs requests B accepts (one sealing key), and
    // its revocation on A holds on B: the AWS CLI's own SigV4.
    let (st, k) = api_a.call(&alice, Method::POST, "/v1/keys", Some(json!({"name": "s3"}))).await;
    assert_eq!(st, 201, "{k}");
    let (ak, sk) = (k["access_key_id"].as_str().unwrap(), k["secret_access_key"].as_str().unwrap());
    let s3_b = std::fs::read_to_string(b.data_dir().join("s3.url")).unwrap();
    let list = || {
        let o = std::process::Command::new("aws")
            .env("AWS_ACCESS_KEY_ID", ak)
            .env("AWS_SECRET_ACCESS_KEY", sk)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .args(["--endpoint-url", s3_b.trim(), "s3api", "list-buckets"])
            .output()
            .expect("run aws (pip install awscli)");
        (o.status.success(), String::from_utf8_lossy(&o.stderr).to_string())
    };
    let (ok, err) = list();
    assert!(ok, "ListBuckets on B with a key made on A: {err}");
    let id = k["key"]["key_id"].as_str().unwrap();
    assert_eq!(api_a.call(&alice, Method::DELETE, &format!("/v1/keys/{id}"), None).await.0, 204);
    let (ok, err) = list();
    assert!(
        !ok && (err.contains("InvalidAccessKeyId") || err.contains("AccessDenied")),
        "revoked on A, refused on B: {err}"
    );

    // Both gateways append to one audit chain, and it verifies.
    let (st, v) = api_b.call(&b.token(), Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
}

/// Runs the CLI with `input` on stdin.
fn cli_stdin(node: &TestNode, args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut c = node.cli();
    c.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn cli_accounts_admin_and_usage() {
    let node = TestNode::start(&["--offline"]);
    // The node's token (from the data dir) is the administrator: no ceremony.
    let who: Value = serde_json::from_str(&node.ok(&["account", "whoami", "--json"])).unwrap();
    assert_eq!(who["name"], "admin");
    let o = cli_stdin(
        &node,
        &["admin", "user", "create", "carol", "--tier", "premium", "--password-stdin", "--json"],
        &format!("{PW}\n"),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let list = node.ok(&["admin", "user", "list"]);
    assert!(list.contains("carol\tuser\tpremium"), "{list}");

    // Carol logs in: the login is saved beside the key, mode 0600.
    let o = cli_stdin(&node, &["account", "login", "carol", "--password-stdin"], &format!("{PW}\n"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let saved = node.user_dir.path().join("login.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777, 0o600);
    let who: Value = serde_json::from_str(&node.ok(&["account", "whoami", "--json"])).unwrap();
    assert_eq!(who["name"], "carol");
    let usage: Value = serde_json::from_str(&node.ok(&["usage", "--json"])).unwrap();
    assert_eq!((usage["tier"]["name"].as_str(), usage["files"].as_u64()), (Some("premium"), Some(0)), "{usage}");
    // Carol is no administrator: exit code 4.
    let o = node.run(&["admin", "user", "list"]);
    assert_eq!(o.status.code(), Some(4), "{}", String::from_utf8_lossy(&o.stderr));

    // Key login: register the key, log out, log in by signature.
    node.ok(&["account", "add-key"]);
    node.ok(&["account", "logout"]);
    assert!(!saved.exists(), "logout forgets the login");
    let who: Value = serde_json::from_str(&node.ok(&["account", "whoami", "--json"])).unwrap();
    assert_eq!(who["name"], "admin", "without a login, the node token again");
    node.ok(&["account", "login", "carol", "--key"]);
    let who: Value = serde_json::from_str(&node.ok(&["account", "whoami", "--json"])).unwrap();
    assert_eq!(who["name"], "carol");
    node.ok(&["account", "logout"]);

    // The administrator's tiers, user changes and audit log.
    node.ok(&["admin", "tier", "set", "tiny", "--max-stored-bytes", "1000", "--max-files", "1"]);
    assert!(node.ok(&["admin", "tier", "list"]).contains("tiny"));
    node.ok(&["admin", "user", "set-tier", "carol", "tiny"]);
    node.ok(&["admin", "user", "disable", "carol"]);
    let o = cli_stdin(&node, &["account", "login", "carol", "--password-stdin"], &format!("{PW}\n"));
    assert_eq!(o.status.code(), Some(4), "a disabled user cannot log in");
    node.ok(&["admin", "user", "enable", "carol"]);
    node.ok(&["admin", "user", "delete", "carol"]);
    assert!(!node.ok(&["admin", "user", "list"]).contains("carol"));
    let audit: Value = serde_json::from_str(&node.ok(&["admin", "audit", "--json"])).unwrap();
    assert!(audit["records"].as_array().unwrap().iter().any(|r| r["action"] == "user_deleted"), "{audit}");
    assert!(node.ok(&["admin", "audit", "--verify"]).starts_with("ok:"));

    // Keys, with the node named by DATAMESH_API as a devnet's user has it
    // (a flag of `key create` once shared the global `--api`'s name, and
    // clap panicked whenever the variable was set).
    let key_cli = |args: &[&str]| {
        let o =
            node.cli().env("DATAMESH_API", &node.url).env("DATAMESH_TOKEN", node.token()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<Value>(&o.stdout).unwrap()
    };
    let s3 = key_cli(&["key", "create", "--json"]);
    assert!(s3["access_key_id"].as_str().is_some_and(|k| k.len() == 20), "{s3}");
    let api_key = key_cli(&["key", "create", "--api-key", "--json"]);
    assert!(api_key["token"].as_str().is_some_and(|t| t.starts_with("dmak_")), "{api_key}");
    let listed = key_cli(&["key", "list", "--json"]);
    assert!(listed.to_string().contains(api_key["key"]["key_id"].as_str().unwrap()), "{listed}");
}

/// The `_count` sample of a histogram on `/metrics`.
async fn histogram_count(api: &Api, name: &str) -> f64 {
    let text = api.http.get(format!("{}/metrics", api.url)).send().await.unwrap().text().await.unwrap();
    let series = format!("{name}_count ");
    text.lines().find_map(|l| l.strip_prefix(&series)).map(|v| v.trim().parse().unwrap()).unwrap_or(0.0)
}

/// A CID the caller may not read is refused before the node resolves it:
/// bob's random UnixFS CID makes no DHT lookup, and its 403 is the same as
/// on alice's existing file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_cid_makes_the_node_look_nothing_up() {
    // Networked (not offline): an unknown UnixFS CID would be looked up.
    let node = TestNode::start(&[]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;
    let (alice, _) = api.login("alice", PW).await;
    let (bob, _) = api.login("bob", PW).await;
    let (st, up) = raw(
        &api,
        Method::POST,
        "/v1/files?name=a.txt",
        Some(("authorization", format!("Bearer {alice}"))),
        text_like(5_000, 3),
    )
    .await;
    assert_eq!(st, 201, "{up}");
    let existing = up["cid"].as_str().unwrap().to_string();
    let lookups = "datamesh_dht_lookup_duration_seconds";
    let before = histogram_count(&api, lookups).await;
    let random = datamesh_core::Cid::from_sha256(0x70, &rand::random::<[u8; 32]>()).to_string();
    let (st, refused_random) = api.call(&bob, Method::GET, &format!("/v1/files/{random}"), None).await;
    assert_eq!(st, 403, "{refused_random}");
    let (st, refused_existing) = api.call(&bob, Method::GET, &format!("/v1/files/{existing}"), None).await;
    assert_eq!(st, 403, "{refused_existing}");
    assert_eq!(refused_random, refused_existing, "a refusal must not tell whether the CID exists");
    for path in ["content", "metadata", "manifest"] {
        let (st, b) = api.call(&bob, Method::GET, &format!("/v1/files/{random}/{path}"), None).await;
        assert_eq!((st, &b), (403, &refused_existing), "{path}");
    }
    assert_eq!(histogram_count(&api, lookups).await, before, "bob's CID made the node look it up");
    // The administrator's request for it does reach the node (and its
    // lookup is counted): the metric is live.
    let (st, _) = api.call(&admin, Method::GET, &format!("/v1/files/{random}"), None).await;
    assert_eq!(st, 404);
    assert!(histogram_count(&api, lookups).await > before, "the administrator's lookup was not counted");
}

/// The CLI as one user: their own key file (and the login saved beside it).
fn as_user(node: &TestNode, key: &std::path::Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut c = node.cli();
    c.env("DATAMESH_USER_KEY", key)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn out_ok(o: &std::process::Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// An encrypted file shared with a person: alice's CLI wraps the file's key
/// for bob's published key; bob reads it with his own key, byte for byte;
/// carol, another valid user, never can; after unsharing neither can bob.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_file_is_shared_with_one_user_and_unshared() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let admin = node.token();
    users(&api, &admin).await;
    let (st, b) =
        api.call(&admin, Method::POST, "/v1/admin/users", Some(json!({"name": "carol", "password": PW}))).await;
    assert_eq!(st, 201, "{b}");
    let dir = tempfile::tempdir().unwrap();
    // Each user's key in a directory of its own: the login is saved beside it.
    let key = |u: &str| dir.path().join(u).join("user.key");
    for u in ["alice", "bob", "carol"] {
        std::fs::create_dir_all(dir.path().join(u)).unwrap();
        let k = key(u);
        out_ok(&as_user(&node, &k, &["account", "login", u, "--password-stdin"], &format!("{PW}\n")), "login");
        out_ok(&as_user(&node, &k, &["account", "publish-keys"], ""), "publish-keys");
    }
    let secret = pseudo_random(700_000, 21);
    let file = dir.path().join("secret.bin");
    std::fs::write(&file, &secret).unwrap();
    let put = out_ok(&as_user(&node, &key("alice"), &["put", file.to_str().unwrap(), "--json"], ""), "alice's put");
    let cid = serde_json::from_str::<Value>(&put).unwrap()["cid"].as_str().unwrap().to_string();
    let get = |u: &str| {
        let out = dir.path().join(format!("{u}.out"));
        let _ = std::fs::remove_file(&out);
        let o = as_user(&node, &key(u), &["get", &cid, "-o", out.to_str().unwrap()], "");
        (o.status.success(), std::fs::read(&out).ok(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let refused = |u: &str, when: &str| {
        let (ok, bytes, err) = get(u);
        assert!(!ok && bytes.is_none(), "{u} read alice's file {when}: {err}");
    };
    assert_eq!(get("alice").1.as_deref(), Some(secret.as_slice()), "alice reads her own file");
    refused("bob", "before it was shared");
    refused("carol", "before it was shared");

    let o = as_user(&node, &key("alice"), &["share", &cid, "--to", "bob"], "");
    let said = out_ok(&o, "share");
    assert!(said.contains("bob"), "{said}");
    let (ok, bytes, err) = get("bob");
    assert!(ok, "bob's get after sharing: {err}");
    assert!(bytes.as_deref() == Some(secret.as_slice()), "bob's copy is not byte-identical");
    refused("carol", "when it was shared with bob only");
    // Bob cannot pass it on: sharing is the owner's.
    let o = as_user(&node, &key("bob"), &["share", &cid, "--to", "carol"], "");
    assert!(!o.status.success(), "bob re-shared alice's file");
    refused("carol", "after bob tried to share it");

    let said = out_ok(&as_user(&node, &key("alice"), &["unshare", &cid, "--from", "bob"], ""), "unshare");
    assert!(said.contains("already read"), "unshare says what it cannot take back: {said}");
    refused("bob", "after it was unshared");
    refused("carol", "at the end");

    // A file put with --pq is shared at the same level: only to a published
    // X-Wing key, never silently down to X25519.
    let pq_file = dir.path().join("pq.bin");
    std::fs::write(&pq_file, &secret[..100_000]).unwrap();
    let put = as_user(&node, &key("alice"), &["put", pq_file.to_str().unwrap(), "--pq", "--json"], "");
    let pq_cid = serde_json::from_str::<Value>(&out_ok(&put, "put --pq")).unwrap()["cid"].as_str().unwrap().to_string();
    let o = as_user(&node, &key("alice"), &["share", &pq_cid, "--to", "bob"], "");
    assert!(!o.status.success(), "a --pq file was shared without an X-Wing key");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("publish-keys --pq"), "{err}");
    out_ok(&as_user(&node, &key("bob"), &["account", "publish-keys", "--pq"], ""), "publish-keys --pq");
    out_ok(&as_user(&node, &key("alice"), &["share", &pq_cid, "--to", "bob"], ""), "share --pq");
    let out = dir.path().join("bob.pq");
    out_ok(&as_user(&node, &key("bob"), &["get", &pq_cid, "-o", out.to_str().unwrap()], ""), "bob's get --pq");
    assert_eq!(std::fs::read(&out).unwrap(), &secret[..100_000]);
    let (st, v) = api.call(&admin, Method::GET, "/v1/admin/audit/verify", None).await;
    assert_eq!((st, v["ok"].as_bool()), (200, Some(true)), "{v}");
}
