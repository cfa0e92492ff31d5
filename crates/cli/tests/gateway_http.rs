//! The node's HTTP surface besides S3: `/metrics` (checked by `promtool`),
//! the OpenAPI document and the auth sweep over every route it lists (the
//! routes the document marks public, `security: [{}]`, must be exactly the
//! public ones).

mod common;

use std::process::{Command, Stdio};

use common::TestNode;

/// Panics with an install hint when `tool` is not on PATH.
fn need(tool: &str, install: &str) {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is not installed; this test needs it. Install it with: {install} (.ci/run does)");
}

/// (status, body) of a request made with curl.
fn curl(method: &str, url: &str, headers: &[&str]) -> (u16, Vec<u8>) {
    need("curl", "apt-get install curl");
    let mut c = Command::new("curl");
    c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "-X", method, url]);
    for h in headers {
        c.args(["-H", h]);
    }
    let o = c.output().expect("run curl");
    assert!(o.status.success(), "curl {method} {url} failed: {}", String::from_utf8_lossy(&o.stderr));
    let out = o.stdout;
    let cut = out.iter().rposition(|&b| b == b'\n').expect("status line");
    let status = String::from_utf8_lossy(&out[cut + 1..]).trim().parse().expect("status code");
    (status, out[..cut].to_vec())
}

#[test]
fn metrics_are_public_and_pass_promtool() {
    need("promtool", "apt-get install prometheus");
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let token = node.token();
    let auth = format!("Authorization: Bearer {token}");
    // Some traffic first, so request families have samples: a put and a
    // get give erasure encode and decode timings.
    assert_eq!(curl("GET", &format!("{}/v1/status", node.url), &[&auth]).0, 200);
    assert_eq!(curl("GET", &format!("{}/v1/files", node.url), &[]).0, 401);
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("f");
    std::fs::write(&f, common::pseudo_random(100_000, 1)).expect("write");
    let cid = node.put(&f, &[]);
    node.ok(&["get", &cid, "-o", dir.path().join("out").to_str().expect("utf-8")]);
    let (status, body) = curl("GET", &format!("{}/metrics", node.url), &[]);
    assert_eq!(status, 200, "/metrics must not need a token");
    let text = String::from_utf8(body).expect("utf-8");
    for name in [
        "datamesh_http_requests_total",
        "datamesh_http_request_duration_seconds_bucket",
        "datamesh_store_used_bytes",
        "datamesh_store_shards",
        "datamesh_peers",
        "datamesh_dht_routing_table_entries",
        "datamesh_erasure_encode_duration_seconds_bucket",
        "datamesh_erasure_decode_duration_seconds_bucket",
        "datamesh_dht_lookup_duration_seconds_bucket",
        "datamesh_repair_shards_rebuilt_total",
        "datamesh_repair_rebuilt_for_peers_total",
        "datamesh_repair_passes_total",
        "datamesh_repair_chunks_unrecoverable",
        "datamesh_http_rate_limited_total",
        "datamesh_share_downloads_total",
        "datamesh_events_subscribers",
        "datamesh_events_published_total",
        "datamesh_events_clients_dropped_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("datamesh_"), "metric without the datamesh_ prefix: {line}");
    }
    assert!(text.contains(r#"route="/v1/status",method="GET",status="200""#), "{text}");
    assert!(text.contains(r#"status="401""#), "refused requests are counted too:\n{text}");
    let count = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(count("datamesh_erasure_encode_duration_seconds_count") >= 1.0, "no encode timed:\n{text}");
    assert!(count("datamesh_erasure_decode_duration_seconds_count") >= 1.0, "no decode timed:\n{text}");
    let mut p = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    std::io::Write::write_all(&mut p.stdin.take().expect("stdin"), text.as_bytes()).expect("feed promtool");
    let o = p.wait_with_output().expect("promtool");
    assert!(
        o.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The OpenAPI document's (path, method, public) triples, with path
/// parameters filled; public = the operation's `security` is `[{}]`.
fn documented(node: &TestNode) -> Vec<(String, String, bool)> {
    let (status, body) = curl("GET", &format!("{}/v1/openapi.json", node.url), &[]);
    assert_eq!(status, 200, "the OpenAPI document is public");
    let doc: serde_json::Value = serde_json::from_slice(&body).expect("OpenAPI JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "not an OpenAPI 3 document");
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().expect("paths") {
        for (method, op) in ops.as_object().expect("operations") {
            let filled = path
                .replace("{cid}", "bafkr4ihdjm4mk7ry2uwacenh7xn4mzwelmx4xhbq5fwevbewdcemhugu4i")
                .replace("{id}", "00000000000000000000000000000000")
                .replace("{index}", "0");
            let public = op["security"] == serde_json::json!([{}]);
            out.push((filled, method.to_uppercase(), public));
        }
    }
    out
}

#[test]
fn openapi_lists_every_route_and_every_private_route_needs_the_token() {
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let routes = documented(&node);
    let token = node.token();
    for want in [
        "/v1/status",
        "/v1/uploads",
        "/v1/files",
        "/v1/peers",
        "/v1/keys",
        "/v1/gc",
        "/v1/health",
        "/v1/ready",
        "/metrics",
        "/v1/openapi.json",
        "/v1/shares",
        "/v1/events",
    ] {
        assert!(routes.iter().any(|(p, _, _)| p == want), "the OpenAPI document lacks {want}");
    }
    // Public: answered without the token (200, or the route's own 404 for
    // a share link that does not exist).
    let public = [
        ("/v1/health", 200),
        ("/v1/ready", 200),
        ("/metrics", 200),
        ("/v1/openapi.json", 200),
        ("/v1/s/00000000000000000000000000000000", 404),
        // Account routes: without a body, a 400 saying what to send; a
        // challenge needs nothing.
        ("/v1/accounts", 400),
        ("/v1/login", 400),
        ("/v1/login/challenge", 200),
        ("/v1/login/signature", 400),
        ("/v1/token/refresh", 400),
    ];
    let mut documented_public: Vec<&str> = routes.iter().filter(|r| r.2).map(|r| r.0.as_str()).collect();
    documented_public.sort();
    let mut want_public: Vec<&str> = public.iter().map(|p| p.0).collect();
    want_public.sort();
    assert_eq!(documented_public, want_public, "the routes the document marks public");
    let mut private = 0;
    for (path, method, _) in &routes {
        let url = format!("{}{path}", node.url);
        // Every documented route is routed: with the token, the answer is
        // never the fallback's "no such route".
        let (status, body) = curl(method, &url, &[&format!("Authorization: Bearer {token}")]);
        assert!(
            !String::from_utf8_lossy(&body).contains("no such route") && status != 405,
            "{method} {path} is documented but not routed ({status})"
        );
        if let Some((_, want)) = public.iter().find(|p| p.0 == path) {
            assert_eq!(curl(method, &url, &[]).0, *want, "{method} {path} is public");
            continue;
        }
        private += 1;
        for headers in [
            vec![],
            vec!["Authorization: Bearer wrong-token".to_string()],
            vec!["Authorization: Basic Zm9vOmJhcg==".to_string()],
        ] {
            let h: Vec<&str> = headers.iter().map(String::as_str).collect();
            let (status, body) = curl(method, &url, &h);
            assert_eq!(status, 401, "{method} {path} answered {status} with {headers:?}");
            let err: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
            assert_eq!(err["code"], "unauthorized", "{method} {path}: {err}");
        }
    }
    assert!(private >= 22, "the sweep covered only {private} private routes");
}

#[test]
fn schemathesis_finds_no_server_error() {
    need("schemathesis", "pip install schemathesis");
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let token = node.token();
    // schemathesis keeps a cache in its working directory: keep it out of the tree.
    let scratch = tempfile::tempdir().expect("tmp");
    let o = Command::new("schemathesis")
        .current_dir(scratch.path())
        .args(["run", &format!("{}/v1/openapi.json", node.url), "--url", &node.url])
        .args(["-H", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "not_a_server_error", "--max-examples", "40", "--seed", "1", "--no-color"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "schemathesis found failures:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
}
