//! The gateway's edge against real clients and raw sockets: TLS on both
//! ports (curl, boto3 and the CLI trusting a self-signed certificate made
//! here; plain HTTP to a TLS port gets nothing in clear), the HTTP timeouts
//! (stalled request heads and idle kept-alive connections are closed while
//! other requests are served), the per-address connection cap, upload
//! slots per user (one user's stalled uploads leave another user theirs,
//! and are dropped with their quota released after the body timeout), and
//! the refusals counted in `/metrics`. Every server listens on 127.0.0.1.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{TestNode, wait_for};

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let c = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).expect("certificate");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("write cert");
    std::fs::write(&key, c.key_pair.serialize_pem()).expect("write key");
    (cert, key)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// curl with `args`; (exit status success, stdout).
fn curl(args: &[&str]) -> (bool, String, Output) {
    let o = Command::new("curl").args(["-sS", "--max-time", "20"]).args(args).output().expect("run curl");
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into_owned(), o)
}

/// A metric's value (summed over the series whose labels contain `labels`).
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(labels) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}

/// The node's `/metrics` (plain HTTP).
fn metrics(node: &TestNode) -> String {
    let (ok, body, o) = curl(&[&format!("{}/metrics", node.url)]);
    assert!(ok, "GET /metrics failed: {}", String::from_utf8_lossy(&o.stderr));
    body
}

/// A raw connection to `url`'s host and port.
fn connect(url: &str) -> TcpStream {
    let addr = url.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
    let c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).expect("nodelay");
    c
}

/// Whether the server closed `c` (EOF or reset); never blocks long.
fn closed(c: &mut TcpStream) -> bool {
    c.set_read_timeout(Some(Duration::from_millis(5))).expect("timeout");
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an answer (e.g. 429); the close comes after
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// Sends one HTTP/1.1 request on a kept-alive connection and reads the
/// answer's head and body (by Content-Length).
fn request(c: &mut TcpStream, path: &str) -> String {
    exchange(c, format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
}

/// Sends `raw` on `c` and reads one answer's head and body (by
/// Content-Length).
fn exchange(c: &mut TcpStream, raw: &[u8]) -> String {
    c.write_all(raw).expect("send");
    c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = c.read(&mut buf).expect("read the answer");
        assert!(n > 0, "the connection closed before answering: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= len {
                return text;
            }
        }
    }
}

#[test]
fn tls_serves_rest_s3_and_the_cli_and_nothing_in_clear() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = self_signed(dir.path());
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0", "--tls-cert", s(&cert), "--tls-key", s(&key)]);
    assert!(node.url.starts_with("https://127.0.0.1:"), "api.url says https: {}", node.url);
    let s3 = std::fs::read_to_string(node.data_dir().join("s3.url")).expect("s3.url");
    assert!(s3.starts_with("https://127.0.0.1:"), "s3.url says https: {s3}");
    let auth = format!("Authorization: Bearer {}", node.token());
    let status = format!("{}/v1/status", node.url);

    // curl trusting the certificate: TLS 1.3, TLS 1.2 too, and HTTP/2 by ALPN.
    let (ok, body, o) = curl(&["--fail", "--cacert", s(&cert), "-H", &auth, &status]);
    assert!(ok, "GET /v1/status over TLS failed: {}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_str(&body).expect("status json");
    assert!(v["node_id"].is_string(), "{body}");
    let (ok, body, _) = curl(&[
        "--fail",
        "--cacert",
        s(&cert),
        "--tlsv1.3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version}",
        "-H",
        &auth,
        &status,
    ]);
    assert!(ok && body == "2", "TLS 1.3 with ALPN h2 (got HTTP version {body})");
    let (ok, _, o) = curl(&[
        "--fail",
        "--cacert",
        s(&cert),
        "--tls-max",
        "1.2",
        "--http1.1",
        "-o",
        "/dev/null",
        "-H",
        &auth,
        &status,
    ]);
    assert!(ok, "TLS 1.2 is allowed: {}", String::from_utf8_lossy(&o.stderr));
    // A client that does not trust it is refused by its own TLS check.
    let (ok, _, o) = curl(&["-o", "/dev/null", "-H", &auth, &status]);
    assert!(!ok, "curl without --cacert must refuse the self-signed certificate");
    assert!(String::from_utf8_lossy(&o.stderr).contains("certificate"), "{}", String::from_utf8_lossy(&o.stderr));

    // Plain HTTP to the TLS ports: no HTTP answer, nothing in clear.
    for url in [&node.url, &s3] {
        let mut c = connect(url);
        // The server may close as soon as it sees bytes that are no TLS
        // handshake: a failed write is as good as no answer.
        let _ = c.write_all(format!("GET /v1/status HTTP/1.1\r\nHost: x\r\n{auth}\r\n\r\n").as_bytes());
        c.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        let text = String::from_utf8_lossy(&got);
        assert!(!text.contains("HTTP/") && !text.contains("node_id"), "plain HTTP got an answer in clear: {text:?}");
        let (ok, _, _) = curl(&["-o", "/dev/null", &url.replace("https://", "http://")]);
        assert!(!ok, "curl over plain http to a TLS port must fail ({url})");
    }

    // The CLI: https from api.url, trusting the certificate with --ca-cert
    // or DATAMESH_CA_CERT; without it, a clear refusal.
    let o = node.cli().args(["status", "--json", "--ca-cert", s(&cert)]).output().expect("cli");
    assert!(o.status.success(), "datamesh status over TLS: {}", String::from_utf8_lossy(&o.stderr));
    let file = dir.path().join("f.bin");
    let data = common::pseudo_random(300_000, 7);
    std::fs::write(&file, &data).expect("write");
    let put = node.cli().env("DATAMESH_CA_CERT", &cert).args(["put", s(&file)]).output().expect("cli");
    assert!(put.status.success(), "datamesh put over TLS: {}", String::from_utf8_lossy(&put.stderr));
    let cid = common::last_line(&String::from_utf8_lossy(&put.stdout));
    let out = dir.path().join("out.bin");
    let get = node.cli().env("DATAMESH_CA_CERT", &cert).args(["get", &cid, "-o", s(&out)]).output().expect("cli");
    assert!(get.status.success(), "datamesh get over TLS: {}", String::from_utf8_lossy(&get.stderr));
    assert!(std::fs::read(&out).expect("read") == data, "bytes differ after a round trip over TLS");
    let o = node.run(&["status"]);
    assert!(!o.status.success(), "the CLI must not trust a self-signed certificate by itself");

    // S3 with boto3 trusting the certificate (verify=<cert>).
    let v: serde_json::Value = serde_json::from_slice(
        &node.cli().env("DATAMESH_CA_CERT", &cert).args(["key", "create", "--json"]).output().expect("cli").stdout,
    )
    .expect("key json");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_tls.py");
    let o = Command::new("python3")
        .arg(script)
        .env("DM_S3", &s3)
        .env("DM_KEY", v["access_key_id"].as_str().expect("id"))
        .env("DM_SECRET", v["secret_access_key"].as_str().expect("secret"))
        .env("DM_CA", &cert)
        .output()
        .expect("run python3");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.contains("boto3 tls passed"), "{out}\n{}", String::from_utf8_lossy(&o.stderr));

    // The failed handshakes are counted.
    let (ok, text, _) = curl(&["--cacert", s(&cert), &format!("{}/metrics", node.url)]);
    assert!(ok);
    let refused = metric(&text, "datamesh_http_connections_refused_total", "reason=\"tls_handshake\"");
    assert!(refused >= 4.0, "plain-HTTP connections to the TLS ports are counted ({refused})");
}

#[test]
fn a_node_with_unusable_tls_files_says_which_file() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, _) = self_signed(dir.path());
    let data = dir.path().join("node");
    let missing = dir.path().join("missing-key.pem");
    let o = Command::new(common::bin())
        .args(["node", "--offline", "--api", "127.0.0.1:0", "--data-dir", s(&data)])
        .args(["--tls-cert", s(&cert), "--tls-key", s(&missing)])
        .env("DATAMESH_LOG", "warn")
        .output()
        .expect("run node");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "the node must not start");
    assert!(err.contains("missing-key.pem") && err.contains("cannot read the TLS key"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let o = Command::new(common::bin())
        .args(["node", "--offline", "--api", "127.0.0.1:0", "--data-dir", s(&data)])
        .args(["--tls-cert", s(&cert)])
        .output()
        .expect("run node");
    assert!(!o.status.success(), "--tls-cert without --tls-key is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--tls-key"), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn stalled_request_heads_and_idle_connections_are_closed_while_others_are_served() {
    let node = TestNode::start(&[
        "--offline",
        "--s3",
        "127.0.0.1:0",
        "--http-header-timeout",
        "1s",
        "--http-idle-timeout",
        "3s",
        "--max-connections-per-address",
        "500",
    ]);
    let s3 = std::fs::read_to_string(node.data_dir().join("s3.url")).expect("s3.url");
    let started = Instant::now();
    let mut stalled = Vec::new();
    for url in [&node.url, &s3] {
        for i in 0..60 {
            let mut c = connect(url);
            // Half a request line, or nothing at all.
            if i % 2 == 0 {
                c.write_all(b"GET /v1/sta").expect("send");
            }
            stalled.push(c);
        }
    }
    // A kept-alive connection that made a request, then went quiet.
    let mut quiet = connect(&node.url);
    assert!(request(&mut quiet, "/v1/health").starts_with("HTTP/1.1 200"));
    let quiet_since = Instant::now();
    // Meanwhile other clients are served.
    let (ok, _, o) = curl(&["--fail", "-o", "/dev/null", &format!("{}/v1/health", node.url)]);
    assert!(ok, "a normal request while 120 connections stall: {}", String::from_utf8_lossy(&o.stderr));

    wait_for("the stalled connections to be closed", Duration::from_secs(8), || {
        stalled.iter_mut().all(closed).then_some(())
    });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "closed by the header timeout (1 s), not before: {took:?}");
    // The quiet kept-alive connection outlives the header timeout (it owes
    // no request head) and is closed by the idle timeout.
    if quiet_since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_secs(2) - quiet_since.elapsed());
    }
    assert!(!closed(&mut quiet), "an idle kept-alive connection is kept beyond the header timeout");
    wait_for("the idle connection to be closed", Duration::from_secs(8), || closed(&mut quiet).then_some(()));
    assert!(quiet_since.elapsed() >= Duration::from_millis(2900), "idle for {:?}", quiet_since.elapsed());

    let text = metrics(&node);
    assert!(metric(&text, "datamesh_http_timeouts_total", "phase=\"header\"") >= 120.0, "header timeouts counted");
    assert!(metric(&text, "datamesh_http_timeouts_total", "phase=\"idle\"") >= 1.0, "idle timeouts counted");
}

#[test]
fn connections_over_the_per_address_cap_are_closed_at_once() {
    let node = TestNode::start(&["--offline", "--max-connections-per-address", "6", "--http-header-timeout", "60s"]);
    let mut first = connect(&node.url);
    assert!(request(&mut first, "/v1/health").starts_with("HTTP/1.1 200"));
    let mut idle: Vec<TcpStream> = (0..5).map(|_| connect(&node.url)).collect();
    // Six open: the next ones are closed at once, not queued.
    let mut extra: Vec<TcpStream> = (0..4).map(|_| connect(&node.url)).collect();
    wait_for("the connections over the cap to be closed", Duration::from_secs(3), || {
        extra.iter_mut().all(closed).then_some(())
    });
    assert!(idle.iter_mut().all(|c| !closed(c)), "the connections within the cap stay open");
    // A request over a connection within the cap is served.
    assert!(request(&mut first, "/v1/health").starts_with("HTTP/1.1 200"));
    // A closed connection gives its place back.
    drop(idle.pop());
    let text = wait_for("a place under the cap", Duration::from_secs(5), || {
        let (ok, body, _) = curl(&["--fail", &format!("{}/metrics", node.url)]);
        ok.then_some(body)
    });
    let refused = metric(&text, "datamesh_http_connections_refused_total", "reason=\"address_limit\"");
    assert!(refused >= 4.0, "refused connections are counted ({refused})");
}

/// Creates user `name` (premium tier) with the node token; returns an
/// access token of theirs.
fn user(node: &TestNode, name: &str) -> String {
    let admin = format!("Authorization: Bearer {}", node.token());
    let body = serde_json::json!({"name": name, "password": "a long enough password", "tier": "premium"});
    let (ok, out, o) = curl(&[
        "--fail-with-body",
        "-H",
        &admin,
        "-H",
        "Content-Type: application/json",
        "-d",
        &body.to_string(),
        &format!("{}/v1/admin/users", node.url),
    ]);
    assert!(ok, "create {name}: {out} {}", String::from_utf8_lossy(&o.stderr));
    let login = serde_json::json!({"name": name, "password": "a long enough password"});
    let (ok, out, _) = curl(&[
        "--fail-with-body",
        "-H",
        "Content-Type: application/json",
        "-d",
        &login.to_string(),
        &format!("{}/v1/login", node.url),
    ]);
    assert!(ok, "login {name}: {out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("login json");
    v["access_token"].as_str().expect("access token").to_string()
}

fn usage(node: &TestNode, token: &str) -> serde_json::Value {
    let (ok, out, _) = curl(&[
        "--fail-with-body",
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{}/v1/me/usage", node.url),
    ]);
    assert!(ok, "usage: {out}");
    serde_json::from_str(&out).expect("usage json")
}

#[test]
fn one_users_stalled_uploads_leave_another_user_theirs() {
    let node = TestNode::start(&["--offline", "--http-body-timeout", "2s", "--max-connections-per-address", "500"]);
    let (alice, bob) = (user(&node, "alice"), user(&node, "bob"));
    // Alice starts 70 uploads that declare 1 MiB, send 10 bytes and stall:
    // more than the node's 64 upload slots.
    let mut stalled = Vec::new();
    for i in 0..70 {
        let mut c = connect(&node.url);
        write!(
            c,
            "POST /v1/files?name=stall{i} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {alice}\r\nContent-Length: 1048576\r\n\r\n0123456789"
        )
        .expect("send");
        stalled.push(c);
    }
    let sessions = |text: &str| metric(text, "datamesh_upload_sessions", "");
    let text = wait_for("alice's uploads to take their slots", Duration::from_secs(20), || {
        let t = metrics(&node);
        (metric(&t, "datamesh_rate_limited_total", "class=\"uploads\"") >= 54.0).then_some(t)
    });
    assert_eq!(sessions(&text), 16.0, "alice holds her 16 slots, no more");
    assert!(usage(&node, &alice)["reserved_bytes"].as_u64().unwrap_or(0) >= 16 * 1024 * 1024);

    // Bob's upload goes through while alice's stall.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("bob.bin");
    std::fs::write(&file, common::pseudo_random(200_000, 3)).expect("write");
    let (ok, out, o) = curl(&[
        "--fail-with-body",
        "-H",
        &format!("Authorization: Bearer {bob}"),
        "--data-binary",
        &format!("@{}", s(&file)),
        &format!("{}/v1/files?name=bob.bin", node.url),
    ]);
    assert!(ok, "bob's upload while alice's stall: {out} {}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("\"cid\""), "{out}");

    // Alice's stalled bodies are dropped after the body timeout, their
    // upload sessions closed and their quota released.
    wait_for("alice's stalled uploads to be dropped", Duration::from_secs(15), || {
        stalled.iter_mut().all(closed).then_some(())
    });
    wait_for("the upload sessions and reservations to be released", Duration::from_secs(10), || {
        let u = usage(&node, &alice);
        (sessions(&metrics(&node)) == 0.0 && u["reserved_bytes"] == 0 && u["reserved_files"] == 0).then_some(())
    });
    assert_eq!(usage(&node, &alice)["files"], 0, "nothing of alice's stalled uploads was stored");
    let text = metrics(&node);
    assert!(metric(&text, "datamesh_http_timeouts_total", "phase=\"body\"") >= 16.0, "body timeouts counted");
}

#[test]
fn rate_limit_refusals_are_counted_by_limit() {
    let node = TestNode::start(&["--offline"]);
    let before = metrics(&node);
    assert_eq!(metric(&before, "datamesh_rate_limited_total", "class=\"login\""), 0.0);
    // Wrong passwords until the login limiter locks the name out (429).
    let url = format!("{}/v1/login", node.url);
    let body = serde_json::json!({"name": "nobody", "password": "wrong password here"}).to_string();
    let mut locked = false;
    for _ in 0..10 {
        let (_, code, _) =
            curl(&["-o", "/dev/null", "-w", "%{http_code}", "-H", "Content-Type: application/json", "-d", &body, &url]);
        if code == "429" {
            locked = true;
            break;
        }
    }
    assert!(locked, "the login limiter answers 429");
    let text = metrics(&node);
    assert!(metric(&text, "datamesh_rate_limited_total", "class=\"login\"") >= 1.0, "login lockouts counted");
    // Public account routes are limited per address (60 a minute).
    let challenge = format!("{}/v1/login/challenge", node.url);
    let mut args = vec!["-w", "\\n%{http_code}\\n", "-X", "POST"];
    for _ in 0..70 {
        args.push(&challenge);
    }
    let (_, codes, _) = curl(&args);
    assert!(codes.lines().any(|c| c == "429"), "the address limiter answers 429");
    let text = metrics(&node);
    assert!(metric(&text, "datamesh_rate_limited_total", "class=\"address\"") >= 1.0, "address limits counted");
}

/// A refusal answered before its request's body was read ends the
/// connection and says `Connection: close`, on both ports: the client may
/// never send that body (it asked `Expect: 100-continue`, as the AWS SDKs
/// do, and got a final answer instead), so what follows cannot be taken for
/// the next request. An answer after the whole body keeps the connection.
#[test]
fn a_refusal_before_the_body_says_connection_close_and_a_read_body_keeps_the_connection() {
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let s3 = std::fs::read_to_string(node.data_dir().join("s3.url")).expect("s3.url");
    let refused: [(&str, String); 2] = [
        (&node.url, "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dmat_wrong\r\n".into()),
        (&s3, "PUT /some-bucket/key HTTP/1.1\r\nHost: x\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n".into()),
    ];
    for (url, head) in &refused {
        let mut c = connect(url);
        let raw = format!("{head}Content-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        let answer = exchange(&mut c, raw.as_bytes());
        let status = answer.lines().next().unwrap_or("").to_string();
        assert!(status.starts_with("HTTP/1.1 4"), "{url}: refused: {answer}");
        assert!(!status.contains(" 100 "), "{url}: no 100 Continue for a refusal: {answer}");
        let head = answer.split("\r\n\r\n").next().unwrap_or("").to_ascii_lowercase();
        assert!(head.contains("\r\nconnection: close"), "{url}: the refusal says it ends the connection: {answer}");
        wait_for("the refused request's connection to close", Duration::from_secs(5), || closed(&mut c).then_some(()));
    }
    // A request whose body was read: the connection stays for the next one.
    let mut c = connect(&node.url);
    let body = "hello, kept-alive";
    let raw = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n{body}",
        node.token(),
        body.len()
    );
    let answer = exchange(&mut c, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "upload: {answer}");
    assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    assert!(request(&mut c, "/v1/health").starts_with("HTTP/1.1 200"), "the same connection serves the next request");
}

/// Small answers on a kept-alive connection come at once on both ports: no
/// 40 ms wait from Nagle's algorithm meeting the client's delayed ACK (the
/// node sets TCP_NODELAY on every connection it accepts). Thirty requests in
/// a row on one connection; the median must stay far below the 40 ms such
/// a stall costs (a few hundred microseconds here), so only a stall, not a
/// busy machine, fails it.
#[test]
fn small_answers_on_a_kept_alive_connection_do_not_stall() {
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let s3 = std::fs::read_to_string(node.data_dir().join("s3.url")).expect("s3.url");
    let token = node.token();
    let body = "x".repeat(4096);
    let mut c = connect(&node.url);
    let raw = format!(
        "POST /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let answer = exchange(&mut c, raw.as_bytes());
    assert!(answer.starts_with("HTTP/1.1 201"), "upload: {answer}");
    let cid = answer.split("\"cid\":\"").nth(1).and_then(|r| r.split('"').next()).expect("a cid").to_string();
    let rest = format!("GET /v1/files/{cid}/content HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    // An anonymous S3 GET: a small XML refusal, on a connection kept alive.
    let s3_get = "GET /no-such-bucket/key HTTP/1.1\r\nHost: x\r\n\r\n".to_string();
    for (what, url, req, expect) in
        [("REST 4 KiB GET", &node.url, &rest, "HTTP/1.1 200"), ("S3 refusal", &s3, &s3_get, "HTTP/1.1 403")]
    {
        let mut c = connect(url);
        let mut took = Vec::new();
        for i in 0..30 {
            let t = Instant::now();
            let answer = exchange(&mut c, req.as_bytes());
            took.push(t.elapsed());
            assert!(answer.starts_with(expect), "{what} #{i}: {answer}");
            assert!(!answer.to_ascii_lowercase().contains("connection: close"), "{what} #{i} kept alive: {answer}");
        }
        took.sort();
        let median = took[took.len() / 2];
        assert!(median < Duration::from_millis(15), "{what} on a kept-alive connection: median {median:?} ({took:?})");
    }
}
