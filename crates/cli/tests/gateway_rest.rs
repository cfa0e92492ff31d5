//! The REST additions and the event stream, driven by real clients against
//! the real binary: reqwest and curl for HTTP, raw TCP for a cut-off
//! upload, tokio-tungstenite for WebSocket. Every wait is on a condition
//! with a timeout.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1024 * 1024;

/// The node's HTTP API, with its token.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
}

impl Api {
    fn of(node: &TestNode) -> Api {
        Api { url: node.url.clone(), token: node.token(), http: reqwest::Client::new() }
    }

    fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(&self.token)
    }

    /// A request without the token (public routes).
    fn public(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    async fn upload(&self, data: Vec<u8>, query: &str, content_type: Option<&str>) -> reqwest::Response {
        let mut r = self.http.post(format!("{}/v1/files{query}", self.url)).bearer_auth(&self.token).body(data);
        if let Some(ct) = content_type {
            r = r.header("content-type", ct);
        }
        r.send().await.unwrap()
    }

    /// Uploads and returns the 201 body.
    async fn upload_ok(&self, data: Vec<u8>, query: &str, content_type: Option<&str>) -> Value {
        let r = self.upload(data, query, content_type).await;
        assert_eq!(r.status(), 201, "upload failed: {}", r.text().await.unwrap());
        r.json().await.unwrap()
    }

    async fn json(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    /// A sample of `/metrics` (the line starting with `series `), 0 if absent.
    async fn metric(&self, series: &str) -> f64 {
        let text = self.public("/metrics").send().await.unwrap().text().await.unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0.0)
    }

    fn ws_url(&self, query: &str) -> String {
        format!("{}/v1/events?token={}{query}", self.url.replacen("http://", "ws://", 1), self.token)
    }
}

/// Polls `f` every 50 ms until it gives Some, for at most `timeout`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next event of type `kind` for which `pred` holds (others are skipped).
async fn event(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if v["type"] == kind && pred(&v) {
                        return v;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("the event stream ended before {kind}: {other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {kind} event within 60 s"))
}

fn pinned(node: &TestNode) -> usize {
    let v: Value = serde_json::from_str(&node.ok(&["ls", "--json"])).unwrap();
    v["files"].as_array().map(Vec::len).unwrap_or(0)
}

fn open_uploads(node: &TestNode) -> u64 {
    let v: Value = serde_json::from_str(&node.ok(&["status", "--json"])).unwrap();
    v["uploads"].as_u64().unwrap()
}

const DECODES: &str = "datamesh_erasure_decode_duration_seconds_count";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_upload_then_ranged_download_and_metadata() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let data = pseudo_random(9 * MIB + 123, 7); // three 4 MiB chunks
    let size = data.len();
    let up = api.upload_ok(data.clone(), "?name=report.pdf", Some("application/pdf")).await;
    assert_eq!((up["size"].as_u64(), up["name"].as_str()), (Some(size as u64), Some("report.pdf")), "{up}");
    assert_eq!(
        (up["k"].as_u64(), up["m"].as_u64(), up["content_type"].as_str()),
        (Some(4), Some(2), Some("application/pdf"))
    );
    let cid = up["cid"].as_str().unwrap().to_string();
    let content = format!("/v1/files/{cid}/content");

    // A range reads only the chunks it covers (the hot-chunk cache keeps
    // them after, so each chunk is decoded once).
    let d0 = api.metric(DECODES).await;
    let r = api.get(&content).header("range", "bytes=0-9").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes 0-9/{size}").as_str());
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.bytes().await.unwrap(), &data[..10]);
    assert_eq!(api.metric(DECODES).await - d0, 1.0, "bytes=0-9 must decode only chunk 0");
    let r = api.get(&content).header("range", "bytes=-100").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], format!("bytes {}-{}/{size}", size - 100, size - 1).as_str());
    assert_eq!(r.bytes().await.unwrap(), &data[size - 100..]);
    assert_eq!(api.metric(DECODES).await - d0, 2.0, "bytes=-100 must decode only the last chunk");
    let r = api.get(&content).header("range", format!("bytes={}-", 4 * MIB - 5)).send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &data[4 * MIB - 5..]);
    assert_eq!(api.metric(DECODES).await - d0, 3.0, "the middle chunk, once");

    let r = api.get(&content).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = r.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{cid}\""));
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.headers()["content-length"], size.to_string().as_str());
    assert!(r.headers()["content-disposition"].to_str().unwrap().contains("report.pdf"));
    assert!(r.bytes().await.unwrap() == data, "the whole file differs");

    let r = api.get(&content).header("range", format!("bytes={size}-")).send().await.unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], format!("bytes */{size}").as_str());
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "range_not_satisfiable");
    let r = api.get(&content).header("if-none-match", &etag).send().await.unwrap();
    assert_eq!(r.status(), 304);

    // Metadata: as uploaded, then patched; bad patches change nothing.
    let meta = format!("/v1/files/{cid}/metadata");
    let (s, m) = api.json(reqwest::Method::GET, &meta, None).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!((m["name"].as_str(), m["content_type"].as_str()), (Some("report.pdf"), Some("application/pdf")));
    assert_eq!((m["encrypted"].as_bool(), m["readable"].as_bool()), (Some(true), Some(true)));
    assert_eq!(m["size"], size);
    let patch = json!({"name": "renamed.pdf", "tags": {"project": "apollo", "year": "1969"}});
    let (s, m) = api.json(reqwest::Method::PATCH, &meta, Some(patch)).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["tags"], json!({"project": "apollo", "year": "1969"}));
    let (s, m) =
        api.json(reqwest::Method::PATCH, &meta, Some(json!({"tags": {"year": null}, "content_type": null}))).await;
    assert_eq!(s, 200, "{m}");
    assert_eq!((m["name"].as_str(), m["content_type"].as_str()), (Some("renamed.pdf"), None));
    assert_eq!(m["tags"], json!({"project": "apollo"}));
    for bad in [
        json!({"tags": {"bad key": "v"}}),
        json!({"tags": {"k": "x".repeat(1025)}}),
        json!({"name": 5}),
        json!({"name": ""}),
        json!({"content_type": "not a type"}),
        json!({"colour": "red"}),
        json!([1, 2]),
    ] {
        let (s, e) = api.json(reqwest::Method::PATCH, &meta, Some(bad.clone())).await;
        assert_eq!((s, e["code"].as_str()), (400, Some("bad_request")), "{bad} gave {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let many: serde_json::Map<String, Value> = (0..65).map(|i| (format!("t{i}"), json!("v"))).collect();
    let (s, _) = api.json(reqwest::Method::PATCH, &meta, Some(json!({ "tags": many }))).await;
    assert_eq!(s, 400, "65 tags");
    let (_, m) = api.json(reqwest::Method::GET, &meta, None).await;
    assert_eq!(m["tags"], json!({"project": "apollo"}), "a refused patch changed the metadata");

    // An empty file is a file too.
    let empty = api.upload_ok(Vec::new(), "", None).await;
    assert_eq!(empty["size"], 0);
    let ec = format!("/v1/files/{}/content", empty["cid"].as_str().unwrap());
    let r = api.get(&ec).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.bytes().await.unwrap().len()), (200, 0));
    assert_eq!(api.get(&ec).header("range", "bytes=0-").send().await.unwrap().status(), 416);

    // curl streams a file from disk (the README's example).
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("photo.jpg");
    let small = pseudo_random(300_000, 8);
    std::fs::write(&f, &small).unwrap();
    let o = std::process::Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "-T"])
        .arg(&f)
        .args(["-H", "Content-Type: image/jpeg", "-H", &format!("Authorization: Bearer {}", api.token)])
        .arg(format!("{}/v1/files?name=photo.jpg", api.url))
        .output()
        .expect("run curl (apt-get install curl)");
    assert!(o.status.success(), "curl upload: {}", String::from_utf8_lossy(&o.stdout));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let r = api.get(&format!("/v1/files/{}/content", v["cid"].as_str().unwrap())).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert_eq!(r.bytes().await.unwrap(), small);

    // The CLI's files: encrypted for the user's key the gateway cannot
    // open (403, saying why); public ones are served.
    let plain = dir.path().join("cli.bin");
    std::fs::write(&plain, &small).unwrap();
    let enc = node.put(&plain, &[]);
    let (s, e) = api.json(reqwest::Method::GET, &format!("/v1/files/{enc}/content"), None).await;
    assert_eq!((s, e["code"].as_str()), (403, Some("not_decryptable")), "{e}");
    assert!(e["message"].as_str().unwrap().contains("datamesh get"), "{e}");
    let (_, m) = api.json(reqwest::Method::GET, &format!("/v1/files/{enc}/metadata"), None).await;
    assert_eq!((m["encrypted"].as_bool(), m["readable"].as_bool()), (Some(true), Some(false)), "{m}");
    let public = node.put(&plain, &["--public"]);
    let r = api.get(&format!("/v1/files/{public}/content")).header("range", "bytes=5-9").send().await.unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.unwrap(), &small[5..10]);

    // Deleting a gateway file needs no owner signature from the client:
    // the gateway holds its key and signs.
    let (s, e) = api.json(reqwest::Method::DELETE, &format!("/v1/files/{cid}"), None).await;
    assert_eq!(s, 200, "{e}");
    let (s, _) = api.json(reqwest::Method::GET, &content, None).await;
    assert_eq!(s, 404);
    let (s, _) = api.json(reqwest::Method::GET, "/v1/files/not-a-cid/content", None).await;
    assert_eq!(s, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_upload_leaves_nothing_pinned_and_gc_reclaims_its_shards() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let files_before = pinned(&node);
    let shards_before = shard_files(&node).len();
    // Twelve MiB announced, nine sent: two whole chunks reach the store,
    // then the connection closes.
    let addr = api.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/files?name=cut HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        api.token,
        12 * MIB
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&pseudo_random(9 * MIB, 9)).await.unwrap();
    tcp.flush().await.unwrap();
    until("the cut upload's chunks to reach the store", Duration::from_secs(60), || async {
        (shard_files(&node).len() > shards_before).then_some(())
    })
    .await;
    drop(tcp);
    until("the upload session to be aborted", Duration::from_secs(60), || async {
        (open_uploads(&node) == 0).then_some(())
    })
    .await;
    assert_eq!(pinned(&node), files_before, "a cut-off upload left a pinned file");
    until("GC to reclaim the cut upload's shards", Duration::from_secs(60), || async {
        node.ok(&["gc"]);
        (shard_files(&node).len() == shards_before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_uploads_are_refused_with_413_and_507_leaving_nothing() {
    let chunked = |len: usize| {
        // No Content-Length: the limit is found while the body streams.
        let parts: Vec<Result<Vec<u8>, std::io::Error>> =
            pseudo_random(len, 3).chunks(256 * 1024).map(|c| Ok(c.to_vec())).collect();
        reqwest::Body::wrap_stream(futures::stream::iter(parts))
    };
    let limited = TestNode::start(&["--offline", "--max-file-size", "1MiB"]);
    let api = Api::of(&limited);
    let r = api.upload(pseudo_random(2 * MIB, 1), "", None).await;
    assert_eq!(r.status(), 413);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "payload_too_large", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--max-file-size"), "{e}");
    let r = api.http.post(format!("{}/v1/files", api.url)).bearer_auth(&api.token).body(chunked(2 * MIB));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "payload_too_large");
    assert_eq!(api.upload(pseudo_random(MIB, 2), "", None).await.status(), 201, "at the limit is fine");
    // A client that asks `Expect: 100-continue` is refused before it sends
    // the body (curl asks it for bodies over 1 MiB).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, pseudo_random(64 * MIB, 6)).unwrap();
    let o = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "-",
            "-w",
            "\n%{http_code} %{size_upload}",
            "-X",
            "POST",
            "-H",
            "Expect: 100-continue",
            "-T",
        ])
        .arg(&big)
        .args(["-H", &format!("Authorization: Bearer {}", api.token)])
        .arg(format!("{}/v1/files", api.url))
        .output()
        .expect("run curl (apt-get install curl)");
    let out = String::from_utf8_lossy(&o.stdout);
    let (body, tail) = out.rsplit_once('\n').unwrap();
    let (status, sent) = tail.split_once(' ').unwrap();
    assert_eq!(status, "413", "{out}");
    assert!(sent.parse::<u64>().unwrap() < 64 * MIB as u64, "curl sent the whole body anyway: {out}");
    assert!(body.contains("payload_too_large"), "{body}");

    let small = TestNode::start(&["--offline", "--capacity", "4MiB"]);
    let api = Api::of(&small);
    let r = api.upload(pseudo_random(6 * MIB, 4), "", None).await;
    assert_eq!(r.status(), 507);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["code"], "insufficient_storage", "{e}");
    assert!(e["message"].as_str().unwrap().contains("--capacity"), "{e}");
    // Without a Content-Length the store itself refuses the first chunk.
    let r = api.http.post(format!("{}/v1/files", api.url)).bearer_auth(&api.token).body(chunked(6 * MIB));
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), 507);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "insufficient_storage");
    until("the refused uploads' sessions to close", Duration::from_secs(30), || async {
        (open_uploads(&small) == 0).then_some(())
    })
    .await;
    assert_eq!(pinned(&small), 0);
    until("GC to leave no shard", Duration::from_secs(30), || async {
        small.ok(&["gc"]);
        shard_files(&small).is_empty().then_some(())
    })
    .await;
}

/// A file unpinned and collected is gone for its share link and its
/// content route alike: a clean 404 before any byte, not a 200 whose body
/// breaks off when the shards turn out to be gone (the node's manifest
/// cache used to outlive GC).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collected_file_answers_404_not_a_broken_200() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let up = api.upload_ok(pseudo_random(300_000, 11), "", None).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let (s, share) = api.json(reqwest::Method::POST, "/v1/shares", Some(json!({ "cid": cid }))).await;
    assert_eq!(s, 201, "{share}");
    let link = format!("/v1/s/{}", share["id"].as_str().unwrap());
    // Read once, so the manifest is in the node's cache.
    let r = api.public(&link).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 300_000);
    let (s, v) = api.json(reqwest::Method::DELETE, &format!("/v1/pins/{cid}"), None).await;
    assert_eq!(s, 200, "{v}");
    let (s, gc) = api.json(reqwest::Method::POST, "/v1/gc", None).await;
    assert_eq!((s, gc["manifests_removed"].as_u64()), (200, Some(1)), "{gc}");
    for (what, r) in [
        ("share link", api.public(&link).send().await.unwrap()),
        ("content", api.get(&format!("/v1/files/{cid}/content")).send().await.unwrap()),
    ] {
        let status = r.status().as_u16();
        let body = r.text().await;
        assert_eq!(status, 404, "{what} after GC: {body:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_enforce_password_limit_expiry_and_revocation() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let data = pseudo_random(300_000, 5);
    let up = api.upload_ok(data.clone(), "?name=notes.txt", Some("text/plain")).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let share = |body: Value| {
        let api = &api;
        async move {
            let (s, v) = api.json(reqwest::Method::POST, "/v1/shares", Some(body)).await;
            assert_eq!(s, 201, "{v}");
            v
        }
    };
    let get = |id: String, pw: Option<(&'static str, &'static str)>, range: Option<&'static str>| {
        let api = &api;
        async move {
            let mut path = format!("/v1/s/{id}");
            let mut r = api.http.get(format!("{}{path}", api.url));
            match pw {
                Some(("header", p)) => r = r.header("x-datamesh-share-password", p),
                Some((_, p)) => {
                    path.push_str(&format!("?password={p}"));
                    r = api.http.get(format!("{}{path}", api.url));
                }
                None => {}
            }
            if let Some(range) = range {
                r = r.header("range", range);
            }
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.bytes().await.unwrap().to_vec())
        }
    };
    let code = |body: &[u8]| serde_json::from_slice::<Value>(body).unwrap()["code"].as_str().unwrap().to_string();

    let s = share(json!({"cid": cid, "max_downloads": 3, "password": "hunter2"})).await;
    let id = s["id"].as_str().unwrap().to_string();
    assert!(id.len() >= 22, "a share id carries at least 128 random bits: {id}");
    assert!(s["url"].as_str().unwrap().ends_with(&format!("/v1/s/{id}")), "{s}");
    assert_eq!(s["has_password"], true);
    assert!(!s.to_string().contains("argon2"), "the password hash leaked: {s}");
    let (st, b) = get(id.clone(), None, None).await;
    assert_eq!((st, code(&b)), (401, "password_required".into()));
    let (st, b) = get(id.clone(), Some(("header", "wrong")), None).await;
    assert_eq!((st, code(&b)), (403, "wrong_password".into()));
    let (st, b) = get(id.clone(), Some(("header", "hunter2")), None).await;
    assert!(st == 200 && b == data, "download with the password: {st}");
    let (st, b) = get(id.clone(), Some(("query", "hunter2")), Some("bytes=10-19")).await;
    assert_eq!((st, b.as_slice()), (206, &data[10..20]));
    // A range counts its bytes, not a whole download: two more whole ones.
    for _ in 0..2 {
        let (st, _) = get(id.clone(), Some(("header", "hunter2")), None).await;
        assert_eq!(st, 200);
    }
    let (st, b) = get(id.clone(), Some(("header", "hunter2")), None).await;
    assert_eq!((st, code(&b)), (410, "share_exhausted".into()));

    // Concurrent downloads never pass the limit.
    let s = share(json!({"cid": cid, "max_downloads": 5})).await;
    let id5 = s["id"].as_str().unwrap().to_string();
    let all = futures::future::join_all((0..16).map(|_| get(id5.clone(), None, None))).await;
    let served = all.iter().filter(|(s, b)| *s == 200 && *b == data).count();
    let gone = all.iter().filter(|(s, b)| *s == 410 && code(b) == "share_exhausted").count();
    assert_eq!((served, gone), (5, 11), "{:?}", all.iter().map(|a| a.0).collect::<Vec<_>>());

    // Revocation.
    let s = share(json!({"cid": cid})).await;
    let idr = s["id"].as_str().unwrap().to_string();
    assert_eq!(get(idr.clone(), None, None).await.0, 200);
    let (st, _) = api.json(reqwest::Method::DELETE, &format!("/v1/shares/{idr}"), None).await;
    assert_eq!(st, 204);
    let (st, b) = get(idr.clone(), None, None).await;
    assert_eq!((st, code(&b)), (410, "share_revoked".into()));
    let (st, e) = api.json(reqwest::Method::DELETE, "/v1/shares/nosuchshare", None).await;
    assert_eq!((st, e["code"].as_str()), (404, Some("share_not_found")));

    // Expiry.
    let s = share(json!({"cid": cid, "expires_in_secs": 1})).await;
    let idx = s["id"].as_str().unwrap().to_string();
    assert!(s["expires_at"].as_i64().is_some());
    let why = until("the share to expire", Duration::from_secs(10), || {
        let idx = idx.clone();
        let get = &get;
        async move {
            let (st, b) = get(idx, None, None).await;
            (st == 410).then(|| code(&b))
        }
    })
    .await;
    assert_eq!(why, "share_expired");

    let (st, b) = get("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into(), None, None).await;
    assert_eq!((st, code(&b)), (404, "share_not_found".into()));
    // Bad requests, and files the gateway cannot open.
    for bad in [
        json!({"cid": cid, "max_downloads": 0}),
        json!({"cid": cid, "expires_in_secs": 0}),
        json!({"cid": cid, "password": ""}),
        json!({"cid": "nope"}),
        json!({"cid": cid, "extra": 1}),
    ] {
        let (st, e) = api.json(reqwest::Method::POST, "/v1/shares", Some(bad.clone())).await;
        assert_eq!(st, 400, "{bad}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"the CLI's secret").unwrap();
    let enc = node.put(&f, &[]);
    let (st, e) = api.json(reqwest::Method::POST, "/v1/shares", Some(json!({"cid": enc}))).await;
    assert_eq!((st, e["code"].as_str()), (403, Some("not_decryptable")), "{e}");

    let (_, list) = api.json(reqwest::Method::GET, "/v1/shares", None).await;
    let states: Vec<(&str, &str)> = list["shares"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["id"].as_str().unwrap(), s["state"].as_str().unwrap()))
        .collect();
    for (want_id, want) in [(&id, "exhausted"), (&id5, "exhausted"), (&idr, "revoked"), (&idx, "expired")] {
        assert!(states.contains(&(want_id.as_str(), want)), "{want_id} should be {want}: {states:?}");
    }
    // Every download counted in the links is counted in the metrics.
    let counted: u64 = list["shares"].as_array().unwrap().iter().map(|s| s["downloads"].as_u64().unwrap()).sum();
    assert!(counted >= 9, "3 with the password, 5 of the limited link, 1 before the revocation: {list}");
    assert_eq!(api.metric("datamesh_share_downloads_total{outcome=\"served\"}").await, counted as f64);
    assert!(api.metric("datamesh_share_downloads_total{outcome=\"refused\"}").await >= 14.0);
}

/// One share-link request: `(status, headers, body)`.
async fn share_request(
    api: &Api,
    method: reqwest::Method,
    id: &str,
    password: Option<&str>,
    range: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut r = api.http.request(method, format!("{}/v1/s/{id}", api.url));
    if let Some(p) = password {
        r = r.header("x-datamesh-share-password", p);
    }
    if let Some(range) = range {
        r = r.header("range", range);
    }
    let r = r.send().await.unwrap();
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    (status, headers, r.bytes().await.unwrap().to_vec())
}

fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).map(|v| v["code"].as_str().unwrap_or("").to_string()).unwrap_or_default()
}

/// A link counts whole transfers: HEADs and a 1-byte range leave a
/// 3-download link its three whole downloads. An HTML file is an
/// attachment, never rendered from the gateway's origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_links_count_whole_transfers_and_never_render_active_content() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let html = b"<html><script>fetch('/v1/me')</script></html>".repeat(1000);
    let up = api.upload_ok(html.clone(), "?name=page.html", Some("text/html")).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let (st, s) = api.json(reqwest::Method::POST, "/v1/shares", Some(json!({"cid": cid, "max_downloads": 3}))).await;
    assert_eq!(st, 201, "{s}");
    let id = s["id"].as_str().unwrap().to_string();
    let safe = |h: &reqwest::header::HeaderMap, what: &str| {
        let get = |n: &str| h.get(n).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        assert!(get("content-disposition").starts_with("attachment"), "{what}: {h:?}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{what}: {h:?}");
        assert!(get("content-security-policy").starts_with("sandbox"), "{what}: {h:?}");
    };
    for _ in 0..2 {
        let (st, h, b) = share_request(&api, reqwest::Method::HEAD, &id, None, None).await;
        assert_eq!((st, b.len()), (200, 0));
        assert_eq!(h["content-length"], html.len().to_string().as_str());
        safe(&h, "HEAD");
    }
    let (st, h, b) = share_request(&api, reqwest::Method::GET, &id, None, Some("bytes=0-0")).await;
    assert_eq!((st, b.as_slice()), (206, &html[..1]));
    safe(&h, "range");
    for n in 0..3 {
        let (st, h, b) = share_request(&api, reqwest::Method::GET, &id, None, None).await;
        assert!(st == 200 && b == html, "whole download {n}: {st}");
        safe(&h, "GET");
    }
    let (st, _, b) = share_request(&api, reqwest::Method::GET, &id, None, None).await;
    assert_eq!((st, error_code(&b)), (410, "share_exhausted".into()));
    let (st, _, _) = share_request(&api, reqwest::Method::HEAD, &id, None, None).await;
    assert_eq!(st, 410);
    let (_, list) = api.json(reqwest::Method::GET, "/v1/shares", None).await;
    assert_eq!(list["shares"][0]["downloads"], 3, "{list}");
    // The owner's own content route is as careful.
    let r = api.get(&format!("/v1/files/{cid}/content")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    safe(r.headers(), "content route");
    // Plain text stays inline, still with nosniff.
    let up = api.upload_ok(b"just text".to_vec(), "?name=a.txt", Some("text/plain")).await;
    let r = api.get(&format!("/v1/files/{}/content", up["cid"].as_str().unwrap())).send().await.unwrap();
    let d = r.headers()["content-disposition"].to_str().unwrap().to_string();
    assert!(d.starts_with("inline"), "{d}");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
}

/// A wrong password gets the same answer whatever the link's state: the
/// state is told only to whoever knows the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_reveals_nothing_about_the_link() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let up = api.upload_ok(pseudo_random(10_000, 3), "", None).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let link = |extra: Value| {
        let api = &api;
        let cid = cid.clone();
        async move {
            let mut body = json!({"cid": cid, "password": "right one"});
            body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            let (st, s) = api.json(reqwest::Method::POST, "/v1/shares", Some(body)).await;
            assert_eq!(st, 201, "{s}");
            s["id"].as_str().unwrap().to_string()
        }
    };
    let live = link(json!({})).await;
    let exhausted = link(json!({"max_downloads": 1})).await;
    assert_eq!(share_request(&api, reqwest::Method::GET, &exhausted, Some("right one"), None).await.0, 200);
    let revoked = link(json!({})).await;
    assert_eq!(api.json(reqwest::Method::DELETE, &format!("/v1/shares/{revoked}"), None).await.0, 204);
    let expired = link(json!({"expires_in_secs": 1})).await;
    until("the link to expire", Duration::from_secs(10), || async {
        let (st, _, b) = share_request(&api, reqwest::Method::GET, &expired, Some("right one"), None).await;
        (st == 410 && error_code(&b) == "share_expired").then_some(())
    })
    .await;
    let (st, _, want) = share_request(&api, reqwest::Method::GET, &live, Some("wrong"), None).await;
    assert_eq!((st, error_code(&want)), (403, "wrong_password".into()));
    for (what, id) in [("exhausted", &exhausted), ("revoked", &revoked), ("expired", &expired)] {
        let (st, _, b) = share_request(&api, reqwest::Method::GET, id, Some("wrong"), None).await;
        assert_eq!((st, &b), (403, &want), "{what}: {}", String::from_utf8_lossy(&b));
        let (st, _, b) = share_request(&api, reqwest::Method::GET, id, None, None).await;
        assert_eq!((st, error_code(&b)), (401, "password_required".into()), "{what}");
        // Whoever knows the password learns the state.
        let (st, _, b) = share_request(&api, reqwest::Method::GET, id, Some("right one"), None).await;
        assert_eq!((st, error_code(&b)), (410, format!("share_{what}")));
    }
}

/// Wrong passwords lock the link, then the address: 429 with Retry-After,
/// before any hashing, even for the right password. Guessers do not hold
/// up a download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn share_password_guessing_is_locked_per_link_and_per_address() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let data = pseudo_random(200_000, 4);
    let up = api.upload_ok(data.clone(), "", None).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let link = |password: Option<&'static str>| {
        let api = &api;
        let cid = cid.clone();
        async move {
            let body = match password {
                Some(p) => json!({"cid": cid, "password": p}),
                None => json!({"cid": cid}),
            };
            let (st, s) = api.json(reqwest::Method::POST, "/v1/shares", Some(body)).await;
            assert_eq!(st, 201, "{s}");
            s["id"].as_str().unwrap().to_string()
        }
    };
    let retry_after = |h: &reqwest::header::HeaderMap| -> u64 {
        h.get("retry-after").expect("429 without Retry-After").to_str().unwrap().parse().unwrap()
    };

    // Per link: 5 free failures, then a doubling lockout.
    let id = link(Some("sesame")).await;
    let mut wrong = 0;
    let mut locked_answers = 0;
    loop {
        let (st, h, b) = share_request(&api, reqwest::Method::GET, &id, Some("guess"), None).await;
        if st == 429 {
            assert_eq!(error_code(&b), "rate_limited");
            locked_answers += 1;
            // A lock with at least 2 s left, so the next request surely
            // meets it (the first lock is 1 s, the next 2 s).
            if retry_after(&h) >= 2 {
                break;
            }
            assert!(locked_answers < 100, "the 1 s lock never ended");
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!((st, error_code(&b)), (403, "wrong_password".into()));
        wrong += 1;
        assert!(wrong <= 8, "still guessing after {wrong} wrong passwords");
    }
    assert!(wrong >= 6, "locked after only {wrong} failures (5 are free)");
    let (st, h, b) = share_request(&api, reqwest::Method::GET, &id, Some("sesame"), None).await;
    assert_eq!((st, error_code(&b)), (429, "rate_limited".into()), "the right password while locked");
    assert!(retry_after(&h) >= 1);

    // 64 guessers at once on another link: the lock stops them, and a
    // download meanwhile is not held up by their hashing.
    let open = link(None).await;
    let target = link(Some("other")).await;
    let start = Instant::now();
    let guessers =
        futures::future::join_all((0..64).map(|_| share_request(&api, reqwest::Method::GET, &target, Some("x"), None)));
    let download = async {
        let t = Instant::now();
        let (st, _, b) = share_request(&api, reqwest::Method::GET, &open, None, None).await;
        assert!(st == 200 && b == data);
        t.elapsed()
    };
    let (answers, took) = futures::join!(guessers, download);
    let checked = answers.iter().filter(|a| a.0 == 403).count();
    assert!(answers.iter().all(|a| a.0 == 403 || a.0 == 429), "{:?}", answers.iter().map(|a| a.0).collect::<Vec<_>>());
    // 5 free failures, the one that locks, and at most the checks already
    // running when it did (half the cores).
    assert!(checked <= 12, "{checked} of 64 concurrent guesses were hashed: the lock should stop the rest");
    eprintln!("64 guessers: {checked} hashed, all done in {:?}; a download meanwhile took {took:?}", start.elapsed());

    // Per address: fresh links, each with fewer failures than its own
    // limit, until the address is locked even for a right password.
    let mut rounds = 0;
    loop {
        let fresh = link(Some("sesame")).await;
        let (st, h, b) = share_request(&api, reqwest::Method::GET, &fresh, Some("sesame"), None).await;
        if st == 429 {
            assert_eq!(error_code(&b), "rate_limited");
            assert!(retry_after(&h) >= 1);
            break;
        }
        assert_eq!(st, 200);
        for _ in 0..3 {
            let (st, _, _) = share_request(&api, reqwest::Method::GET, &fresh, Some("guess"), None).await;
            assert!(st == 403 || st == 429, "{st}");
        }
        rounds += 1;
        assert!(rounds <= 12, "the address was never locked");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_uploads_downloads_and_file_changes() {
    let node = TestNode::start(&["--offline"]);
    let api = Api::of(&node);
    let types = "upload.progress,upload.completed,download.progress,file.added,file.removed";
    let (mut ws, _) = tokio_tungstenite::connect_async(api.ws_url(&format!("&types={types}"))).await.unwrap();
    let data = pseudo_random(9 * MIB, 11);
    let up = api.upload_ok(data.clone(), "?name=big.bin", None).await;
    let cid = up["cid"].as_str().unwrap().to_string();
    let upload = up["upload"].as_str().unwrap().to_string();
    let p = event(&mut ws, "upload.progress", |v| v["upload"] == upload.as_str()).await;
    assert!(p["bytes"].as_u64().unwrap() <= data.len() as u64 && p["total"] == data.len(), "{p}");
    let c = event(&mut ws, "upload.completed", |_| true).await;
    assert_eq!(
        (c["cid"].as_str(), c["size"].as_u64(), c["upload"].as_str()),
        (Some(cid.as_str()), Some(9 * MIB as u64), Some(upload.as_str()))
    );
    let a = event(&mut ws, "file.added", |_| true).await;
    assert_eq!(
        (a["cid"].as_str(), a["source"].as_str(), a["name"].as_str()),
        (Some(cid.as_str()), Some("rest"), Some("big.bin"))
    );

    let r = api.get(&format!("/v1/files/{cid}/content")).send().await.unwrap();
    assert!(r.bytes().await.unwrap() == data);
    let d = event(&mut ws, "download.progress", |v| v["done"] == true).await;
    assert_eq!((d["cid"].as_str(), d["bytes"].as_u64()), (Some(cid.as_str()), Some(9 * MIB as u64)), "{d}");

    // The CLI's put, through an upload session, is a file too.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"from the CLI").unwrap();
    let cli = node.put(&f, &[]);
    let a = event(&mut ws, "file.added", |v| v["cid"] == cli.as_str()).await;
    assert_eq!(a["source"], "api");

    let (s, _) = api.json(reqwest::Method::DELETE, &format!("/v1/files/{cid}"), None).await;
    assert_eq!(s, 200);
    let rm = event(&mut ws, "file.removed", |_| true).await;
    assert_eq!((rm["cid"].as_str(), rm["reason"].as_str()), (Some(cid.as_str()), Some("deleted")));
    assert!(api.metric("datamesh_events_published_total{type=\"file.added\"}").await >= 2.0);

    // Stopping the node closes the stream with 1001 and does not wait for it.
    let mut node = node;
    node.stop();
    let close = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(f))) => return f,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await
    .expect("no close frame after SIGTERM")
    .expect("a close frame with a code");
    assert_eq!(u16::from(close.code), 1001, "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_report_peers_joining_and_dying_and_ready_follows_placement() {
    let mut args: Vec<&str> = FAST_TIMERS.to_vec();
    args.extend(["-k", "1", "-m", "1"]);
    let first = TestNode::start(&args);
    let api = Api::of(&first);
    let ready = |api: &Api| {
        let r = api.public("/v1/ready").send();
        async move {
            let r = r.await.unwrap();
            let s = r.status().as_u16();
            (s, r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = ready(&api).await;
    assert_eq!(s, 200, "a lone node is ready (standalone): {v}");
    assert!(v["mode"].as_str().unwrap().contains("standalone"), "{v}");

    let types = "peer.connected,peer.disconnected,peer.state,alert";
    let (mut ws, _) = tokio_tungstenite::connect_async(api.ws_url(&format!("&types={types}"))).await.unwrap();
    let boot = first.p2p_addr();
    let mut second_args = args.clone();
    second_args.extend(["--bootstrap", &boot]);
    let mut second = TestNode::start(&second_args);
    let peer = second.p2p_addr().rsplit("/p2p/").next().unwrap().to_string();
    let is_peer = |v: &Value| v["peer"] == peer.as_str();
    event(&mut ws, "peer.connected", is_peer).await;
    event(&mut ws, "peer.state", |v| is_peer(v) && v["to"] == "ONLINE").await;
    until("node 0 to be ready with its peer", Duration::from_secs(60), || async {
        let (s, v) = ready(&api).await;
        (s == 200 && v["mode"].as_str().is_some_and(|m| m.contains("networked"))).then_some(())
    })
    .await;

    second.kill9();
    event(&mut ws, "peer.disconnected", is_peer).await;
    event(&mut ws, "peer.state", |v| is_peer(v) && v["to"] == "OFFLINE").await;
    let alert = event(&mut ws, "alert", |v| v["code"] == "peer_offline" && v["resolved"] == false).await;
    assert!(alert["message"].as_str().unwrap().contains(&peer), "{alert}");
    let (s, v) = until("node 0 to be not ready", Duration::from_secs(60), || async {
        let (s, v) = ready(&api).await;
        (s == 503).then_some((s, v))
    })
    .await;
    assert_eq!((s, v["status"].as_str()), (503, Some("not_ready")));
    assert!(v["message"].as_str().unwrap().contains("needs 2"), "{v}");
}

/// VmRSS of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        s.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches("kB").trim().parse().unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_client_that_never_reads_is_dropped_while_others_keep_receiving() {
    let node = TestNode::start(&[
        "--offline",
        "--events-interval",
        "5ms",
        "--events-client-timeout",
        "1s",
        "--events-buffer",
        "256",
    ]);
    let api = Api::of(&node);
    let pid = node.child.as_ref().unwrap().id();

    // A reader that keeps up.
    let (mut good, _) = tokio_tungstenite::connect_async(api.ws_url("")).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = good.next().await {
            if matches!(m, Message::Text(_)) {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    // A client that never reads: it never sees the server's pings, so it
    // answers none.
    let (slow, _) = tokio_tungstenite::connect_async(api.ws_url("")).await.unwrap();
    until("two subscribers", Duration::from_secs(30), || async {
        (api.metric("datamesh_events_subscribers").await == 2.0).then_some(())
    })
    .await;
    let rss_before = rss(pid);

    let dropped = |reason: &str| format!("datamesh_events_clients_dropped_total{{reason=\"{reason}\"}}");
    until("the server to drop the client that never reads", Duration::from_secs(60), || async {
        let mut n = 0.0;
        for r in ["unresponsive", "stalled", "lagged"] {
            n += api.metric(&dropped(r)).await;
        }
        (n >= 1.0).then_some(())
    })
    .await;
    until("one subscriber left", Duration::from_secs(30), || async {
        (api.metric("datamesh_events_subscribers").await == 1.0).then_some(())
    })
    .await;
    let rss_after = rss(pid);
    assert!(
        rss_after < rss_before + 64 * MIB as u64,
        "the node grew from {rss_before} to {rss_after} bytes while a client did not read"
    );
    // The reader was never held up, and goes on receiving.
    let seen = received.load(Ordering::Relaxed);
    until("the reader to keep receiving", Duration::from_secs(30), || async {
        (received.load(Ordering::Relaxed) > seen + 20).then_some(())
    })
    .await;
    assert!(!reader.is_finished(), "the reading client was disconnected too");
    // The dropped client finds its stream ended once it drains what was buffered.
    let (_, mut slow_rx) = slow.split();
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            match slow_rx.next().await {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("the dropped client's stream did not end");
}
