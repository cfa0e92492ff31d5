//! The node's HTTP surface besides S3: `/metrics` (checked by `promtool`),
//! the OpenAPI document and the auth sweep over every route it lists.

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
    // Some traffic first, so request families have samples.
    assert_eq!(curl("GET", &format!("{}/v1/status", node.url), &[&auth]).0, 200);
    assert_eq!(curl("GET", &format!("{}/v1/files", node.url), &[]).0, 401);
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
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        assert!(line.starts_with("datamesh_"), "metric without the datamesh_ prefix: {line}");
    }
    assert!(text.contains(r#"route="/v1/status",method="GET",status="200""#), "{text}");
    assert!(text.contains(r#"status="401""#), "refused requests are counted too:\n{text}");
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
