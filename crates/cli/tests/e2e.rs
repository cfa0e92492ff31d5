//! End-to-end tests: the real `datamesh` binary, a real node on loopback,
//! real files on disk.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not one JSON document ({e}): {s}"))
}

fn roundtrip(node: &TestNode, data: &[u8], put_args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, data).unwrap();
    let cid = node.put(&src, put_args);
    let out = dir.path().join("out.bin");
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    let back = std::fs::read(&out).unwrap();
    assert!(back == data, "{} bytes put with {put_args:?} came back different ({} bytes)", data.len(), back.len());
    cid
}

#[test]
fn boundary_sizes_round_trip_encrypted_and_public() {
    let node = TestNode::start(&[]);
    let chunk = 64 * 1024;
    for &len in &[0usize, 1, chunk - 1, chunk, chunk + 1, 5 * chunk + 7] {
        let data = pseudo_random(len, len as u64);
        roundtrip(&node, &data, &["--chunk-size", "64KiB"]);
        roundtrip(&node, &data, &["--chunk-size", "64KiB", "--public"]);
        roundtrip(&node, &text_like(len, 3), &["--chunk-size", "64KiB", "--compression", "lz4"]);
    }
    // Other codes and ciphers.
    let data = pseudo_random(300_000, 9);
    roundtrip(&node, &data, &["--chunk-size", "64KiB", "-k", "10", "-m", "4", "--cipher", "xchacha20-poly1305"]);
    roundtrip(&node, &data, &["--chunk-size", "64KiB", "--cdc", "16KiB,32KiB,64KiB", "--pq"]);
}

#[test]
fn public_cid_is_the_ipfs_cid_and_cid_needs_no_node() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("hello.txt");
    std::fs::write(&f, b"hello world").unwrap();
    // `printf "hello world" | ipfs add --cid-version 1`
    let ipfs = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e";
    let offline = std::process::Command::new(bin())
        .args(["cid", "--public"])
        .arg(&f)
        .env_remove("DATAMESH_API")
        .output()
        .unwrap();
    assert!(offline.status.success());
    assert_eq!(last_line(&String::from_utf8_lossy(&offline.stdout)), ipfs);
    assert_eq!(node.put(&f, &["--public"]), ipfs);
    let out = dir.path().join("o");
    node.ok(&["get", ipfs, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"hello world");
    // Multi-leaf public file: put and cid agree.
    let big = dir.path().join("big");
    std::fs::write(&big, pseudo_random(3 * 262_144 + 11, 5)).unwrap();
    let c1 = last_line(&node.ok(&["cid", "--public", big.to_str().unwrap()]));
    assert_eq!(node.put(&big, &["--public"]), c1);
}

#[test]
fn json_output_is_one_document_and_ls_stat_status_work() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("a.txt");
    std::fs::write(&f, text_like(200_000, 1)).unwrap();
    let put = json(&node.ok(&["put", f.to_str().unwrap(), "--json"]));
    let cid = put["cid"].as_str().unwrap().to_string();
    assert_eq!(put["size"], 200_000);
    let ls = json(&node.ok(&["ls", "--json"]));
    assert!(ls["files"].as_array().unwrap().iter().any(|x| x["cid"] == cid.as_str() && x["name"] == "a.txt"));
    let st = json(&node.ok(&["stat", &cid, "--json"]));
    assert_eq!(st["encrypted"], true);
    assert!(st["live_shards"].as_array().unwrap().iter().all(|n| n == 6));
    let status = json(&node.ok(&["status", "--json"]));
    assert_eq!(status["store"]["pins"], 1);
    assert!(node.ok(&["status"]).contains("protection"));
}

#[test]
fn api_needs_the_token() {
    let node = TestNode::start(&[]);
    let o = node.cli().args(["ls"]).env("DATAMESH_TOKEN", "wrong").output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("token"), "{}", String::from_utf8_lossy(&o.stderr));
    // And with the URL given explicitly plus the right token, it works without the data dir.
    let o = std::process::Command::new(bin())
        .args(["ls", "--api", node.url.trim_start_matches("http://")])
        .env("DATAMESH_TOKEN", node.token())
        .env("DATAMESH_DATA_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn bad_cids_and_unknown_cids_are_clear_errors() {
    let node = TestNode::start(&[]);
    let e = node.fails(&["get", "not-a-cid"]);
    assert!(e.contains("not a valid CID"), "{e}");
    let e = node.fails(&["get", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"]);
    assert!(e.contains("CIDv0"), "{e}");
    let o = node.run(&["get", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"]);
    assert_eq!(o.status.code(), Some(3), "unknown CIDs exit 3");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not stored"));
    let e = node.fails(&["stat", "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"]);
    assert!(e.contains("not stored"), "{e}");
}

#[test]
fn another_users_key_cannot_read_but_a_passphrase_can() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("secret");
    std::fs::write(&f, b"for my eyes only").unwrap();
    let cid = last_line(
        &node
            .cli()
            .args(["put", f.to_str().unwrap(), "--passphrase"])
            .env("DATAMESH_PASSPHRASE", "lantern quietly orbits 63 marmalade")
            .output()
            .map(|o| {
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                String::from_utf8(o.stdout).unwrap()
            })
            .unwrap(),
    );
    let other = dir.path().join("other.key");
    let out = dir.path().join("out");
    let o =
        node.cli().args(["get", &cid, "-o", out.to_str().unwrap()]).env("DATAMESH_USER_KEY", &other).output().unwrap();
    assert!(!o.status.success());
    assert!(!out.exists(), "no output file may be left by a failed get");
    let o = node
        .cli()
        .args(["get", &cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_USER_KEY", &other)
        .env("DATAMESH_PASSPHRASE", "wrong")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let o = node
        .cli()
        .args(["get", &cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_USER_KEY", &other)
        .env("DATAMESH_PASSPHRASE", "lantern quietly orbits 63 marmalade")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"for my eyes only");
}

/// A passphrase wrap sits in the manifest any peer can fetch, so it faces
/// offline guessing: `put --passphrase` refuses an empty or weak one, says
/// why, and stores nothing.
#[test]
fn put_refuses_an_empty_or_weak_passphrase() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("payroll.csv");
    std::fs::write(&f, b"for my eyes only").unwrap();
    for weak in ["", "password1", "qwertyuiop", "payroll.csv2026", "letmein123"] {
        let o = node
            .cli()
            .args(["put", f.to_str().unwrap(), "--passphrase"])
            .env("DATAMESH_PASSPHRASE", weak)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{weak:?} was accepted");
        assert!(err.contains("any peer can fetch") && err.contains("offline guessing"), "{weak:?}: {err}");
    }
    assert_eq!(
        json(&node.ok(&["ls", "--json"]))["files"].as_array().unwrap().len(),
        0,
        "a refused put stored something"
    );
    let help = node.ok(&["put", "--help"]);
    assert!(help.contains("offline guessing"), "{help}");
    let o = node
        .cli()
        .args(["put", f.to_str().unwrap(), "--passphrase"])
        .env("DATAMESH_PASSPHRASE", "lantern quietly orbits 63 marmalade")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn key_export_import_moves_access_to_another_machine() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, pseudo_random(10_000, 2)).unwrap();
    let cid = node.put(&f, &[]);
    let backup = dir.path().join("backup.key");
    let o = node
        .cli()
        .args(["key", "export", "--passphrase", "-o", backup.to_str().unwrap()])
        .env("DATAMESH_KEY_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let elsewhere = dir.path().join("elsewhere/user.key");
    let o = node
        .cli()
        .args(["key", "import", backup.to_str().unwrap()])
        .env("DATAMESH_USER_KEY", &elsewhere)
        .env("DATAMESH_KEY_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // A protected key without its passphrase and no terminal: a clear error, no prompt.
    let out = dir.path().join("out");
    let o = node
        .cli()
        .args(["get", &cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_USER_KEY", &elsewhere)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("DATAMESH_KEY_PASSPHRASE"));
    let o = node
        .cli()
        .args(["get", &cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_USER_KEY", &elsewhere)
        .env("DATAMESH_KEY_PASSPHRASE", "pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&f).unwrap());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&elsewhere).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(node.user_dir.path().join("user.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    assert!(!node.data_dir().join("user.key").exists());
}

#[test]
fn only_the_owner_can_delete_and_gc_reclaims_space() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, pseudo_random(500_000, 4)).unwrap();
    let cid = node.put(&f, &["--chunk-size", "64KiB"]);
    let before = json(&node.ok(&["status", "--json"]));
    assert!(before["store"]["shards"].as_u64().unwrap() >= 8 * 6);
    let intruder = dir.path().join("intruder.key");
    let o = node.cli().args(["rm", &cid]).env("DATAMESH_USER_KEY", &intruder).output().unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("owner"), "{}", String::from_utf8_lossy(&o.stderr));
    node.ok(&["stat", &cid]);
    node.ok(&["rm", &cid]);
    let after = json(&node.ok(&["status", "--json"]));
    assert_eq!(after["store"]["shards"], 0);
    assert_eq!(after["store"]["pins"], 0);
    assert!(node.fails(&["get", &cid]).contains("not stored"));
    // unpin + gc
    let cid = node.put(&f, &["--public"]);
    node.ok(&["unpin", &cid]);
    node.ok(&["gc"]);
    assert_eq!(json(&node.ok(&["status", "--json"]))["store"]["shards"], 0);
    assert!(node.fails(&["pin", &cid]).contains("not stored"));
}

#[test]
fn corrupt_shards_are_survived_up_to_m_then_a_clear_error() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(40_000, 8); // one chunk, 4+2
    std::fs::write(&f, &data).unwrap();
    let cid = node.put(&f, &[]);
    let files = shard_files(&node);
    assert_eq!(files.len(), 6);
    let out = dir.path().join("out");
    // Flip a bit in two shard files: still readable (m = 2).
    for p in &files[..2] {
        let mut b = std::fs::read(p).unwrap();
        b[7] ^= 0x10;
        std::fs::write(p, b).unwrap();
    }
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), data);
    std::fs::remove_file(&out).unwrap();
    // Truncate a third: now fewer than k verified shards remain.
    let p = &files[2];
    let b = std::fs::read(p).unwrap();
    std::fs::write(p, &b[..b.len() / 2]).unwrap();
    // The node caches hot chunks; restart it so the read goes to disk.
    let mut node = node;
    node.stop();
    node.spawn();
    let e = node.fails(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(e.contains("readable shards") || e.contains("cannot be rebuilt"), "{e}");
    assert!(!out.exists());
}

#[test]
fn capacity_budget_is_enforced_and_nothing_leaks() {
    let node = TestNode::start(&["--capacity", "1MiB"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, pseudo_random(3 << 20, 6)).unwrap();
    let e = node.fails(&["put", f.to_str().unwrap(), "--chunk-size", "256KiB"]);
    assert!(e.to_lowercase().contains("capacity") || e.contains("space"), "{e}");
    // Chunk uploads still in flight when the put failed hold their shards
    // until they finish; after that GC must take every one of them.
    let st = wait_for("GC to reclaim the failed put's shards", std::time::Duration::from_secs(20), || {
        node.ok(&["gc"]);
        let st = json(&node.ok(&["status", "--json"]));
        (st["store"]["shards"] == 0).then_some(st)
    });
    assert_eq!(st["store"]["pins"], 0);
    // A file that fits still goes in.
    let small = dir.path().join("small");
    std::fs::write(&small, pseudo_random(100_000, 7)).unwrap();
    node.put(&small, &[]);
}

#[test]
fn convergent_puts_store_identical_data_once() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, pseudo_random(300_000, 11)).unwrap();
    let a = node.put(&f, &["--convergent", "--chunk-size", "64KiB"]);
    let shards = json(&node.ok(&["status", "--json"]))["store"]["shards"].as_u64().unwrap();
    let b = node.put(&f, &["--convergent", "--chunk-size", "64KiB"]);
    assert_eq!(json(&node.ok(&["status", "--json"]))["store"]["shards"].as_u64().unwrap(), shards);
    let (sa, sb) = (json(&node.ok(&["stat", &a, "--json"])), json(&node.ok(&["stat", &b, "--json"])));
    assert_eq!(sa["size"], sb["size"]);
    // Random keys: the same file twice is stored twice.
    node.put(&f, &["--chunk-size", "64KiB"]);
    node.put(&f, &["--chunk-size", "64KiB"]);
    assert_eq!(json(&node.ok(&["status", "--json"]))["store"]["shards"].as_u64().unwrap(), 3 * shards);
}

#[test]
fn acknowledged_puts_survive_kill_9_and_partial_puts_are_not_listed() {
    let mut node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let mut acked = vec![];
    for i in 0..3u64 {
        let f = dir.path().join(format!("f{i}"));
        std::fs::write(&f, pseudo_random(150_000 + i as usize, i)).unwrap();
        acked.push((node.put(&f, &["--chunk-size", "64KiB"]), f));
    }
    // A put in flight when the node dies.
    let big = dir.path().join("big");
    std::fs::write(&big, pseudo_random(64 << 20, 99)).unwrap();
    let mut child = node
        .cli()
        .args(["put", big.to_str().unwrap(), "--chunk-size", "1MiB"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("some shards of the big put", std::time::Duration::from_secs(30), || {
        (shard_files(&node).len() > 3 * 18 + 12).then_some(())
    });
    node.kill9();
    let _ = child.wait();
    node.spawn();
    let ls = json(&node.ok(&["ls", "--json"]));
    assert_eq!(ls["files"].as_array().unwrap().len(), 3, "only acknowledged puts are listed: {ls}");
    for (cid, f) in &acked {
        let out = dir.path().join("out");
        node.ok(&["get", cid, "-o", out.to_str().unwrap()]);
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(f).unwrap());
    }
    // The dead put's shards are garbage.
    node.ok(&["gc"]);
    let st = json(&node.ok(&["status", "--json"]));
    assert_eq!(st["store"]["shards"].as_u64().unwrap(), 3 * 3 * 6, "{st}");
}

#[test]
fn a_file_that_changes_while_read_is_refused() {
    // A FIFO reports size 0 but yields bytes: the put must notice the
    // mismatch and store nothing.
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(&fifo, pseudo_random(100_000, 1)))
    };
    let e = node.fails(&["put", fifo.to_str().unwrap()]);
    let _ = writer.join();
    assert!(e.contains("changed while it was being read"), "{e}");
    node.ok(&["gc"]);
    assert_eq!(json(&node.ok(&["status", "--json"]))["store"]["shards"], 0);
    let missing = Path::new("/definitely/not/here");
    assert!(node.fails(&["put", missing.to_str().unwrap()]).contains("cannot open"));
}

#[test]
fn key_passphrase_protects_the_installed_key() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"protected").unwrap();
    let cid = node.put(&f, &[]);
    let o = node.cli().args(["key", "passphrase"]).env("DATAMESH_NEW_KEY_PASSPHRASE", "s3cret").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let key = std::fs::read_to_string(node.user_dir.path().join("user.key")).unwrap();
    assert!(key.contains("argon2id") && !key.contains("\"secret\""), "secret material must not be in clear: {key}");
    let out = dir.path().join("out");
    let e = node.fails(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(e.contains("DATAMESH_KEY_PASSPHRASE"), "{e}");
    let o = node
        .cli()
        .args(["get", &cid, "-o", out.to_str().unwrap()])
        .env("DATAMESH_KEY_PASSPHRASE", "s3cret")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::read(&out).unwrap(), b"protected");
    let o =
        node.cli().args(["key", "passphrase", "--remove"]).env("DATAMESH_KEY_PASSPHRASE", "s3cret").output().unwrap();
    assert!(o.status.success());
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
}

#[test]
fn a_client_killed_mid_put_leaves_nothing_listed_and_gc_reclaims_it() {
    let mut node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big");
    std::fs::write(&big, pseudo_random(48 << 20, 5)).unwrap();
    let mut child = node
        .cli()
        .args(["put", big.to_str().unwrap(), "--chunk-size", "1MiB"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("some shards", std::time::Duration::from_secs(30), || (shard_files(&node).len() >= 12).then_some(()));
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(json(&node.ok(&["ls", "--json"]))["files"].as_array().unwrap().len(), 0);
    // The session still protects its shards (the client might resume); a
    // restart ends the session and GC reclaims everything.
    node.stop();
    node.spawn();
    node.ok(&["gc"]);
    let st = json(&node.ok(&["status", "--json"]));
    assert_eq!(st["store"]["shards"], 0, "{st}");
    // What remains counted is the node's own state records, if any.
    assert_eq!(st["store"]["used_bytes"], st["store"]["state_bytes"], "{st}");
    assert_eq!(st["store"]["manifests"], 0, "{st}");
}

#[test]
fn an_interrupted_get_resumes_where_it_stopped() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(40 << 20, 12);
    std::fs::write(&f, &data).unwrap();
    for public in [false, true] {
        let cid =
            node.put(&f, if public { &["--public", "--chunk-size", "256KiB"] } else { &["--chunk-size", "256KiB"] });
        let out = dir.path().join(format!("out-{public}"));
        let partial = dir.path().join(format!("out-{public}.datamesh-partial"));
        let mut child = node
            .cli()
            .args(["get", &cid, "-o", out.to_str().unwrap(), "--concurrency", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        wait_for("part of the file", std::time::Duration::from_secs(30), || {
            (std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) > 2 << 20).then_some(())
        });
        child.kill().unwrap();
        let _ = child.wait();
        assert!(!out.exists());
        let r = json(&node.ok(&["get", &cid, "-o", out.to_str().unwrap(), "--json"]));
        assert!(r["resumed_from"].as_u64().unwrap() > 0, "{r}");
        assert!(std::fs::read(&out).unwrap() == data, "resumed file differs");
        assert!(!partial.exists());
    }
}

/// Bytes planted in `<out>.datamesh-partial` (by another local user, or
/// left corrupt) are never copied into the output: a resumed get keeps only
/// the chunks it proves, so the result is the original file, byte for
/// byte, whatever the sidecar claims.
#[test]
fn a_planted_partial_prefix_is_fetched_again_not_trusted() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(1 << 20, 31);
    std::fs::write(&f, &data).unwrap();
    let garbage = pseudo_random(600 << 10, 32);
    for public in [false, true] {
        let mut args = vec!["put", f.to_str().unwrap(), "--chunk-size", "64KiB", "--json"];
        if public {
            args.push("--public");
        }
        let put = json(&node.ok(&args));
        let (cid, mcid) = (put["cid"].as_str().unwrap(), put["manifest"].as_str().unwrap());
        // Three sidecars an attacker could write: an older CLI's (the
        // manifest CID alone), and the current one with made-up tags, or
        // with tags copied from nothing at all.
        let forged = (0..9).map(|i| format!("{i} {}\n", "ab".repeat(32))).collect::<String>();
        for sidecar in
            [mcid.to_string(), format!("datamesh-partial v2 {mcid}\n{forged}"), format!("datamesh-partial v2 {mcid}\n")]
        {
            let out = dir.path().join(format!("out-{public}"));
            let partial = dir.path().join(format!("out-{public}.datamesh-partial"));
            std::fs::write(&partial, &garbage).unwrap();
            std::fs::write(dir.path().join(format!("out-{public}.datamesh-partial.cid")), &sidecar).unwrap();
            let r = json(&node.ok(&["get", cid, "-o", out.to_str().unwrap(), "--json"]));
            assert_eq!(r["resumed_from"], 0, "{r}");
            assert!(std::fs::read(&out).unwrap() == data, "planted bytes reached the output (public: {public})");
            assert!(!partial.exists());
            std::fs::remove_file(&out).unwrap();
        }
        // A partial that really is this file's prefix (a public file's
        // chunks prove themselves) still resumes.
        if public {
            let out = dir.path().join("out-real");
            let partial = dir.path().join("out-real.datamesh-partial");
            let mut prefix = data[..300 << 10].to_vec();
            prefix.extend_from_slice(b"torn tail");
            std::fs::write(&partial, &prefix).unwrap();
            std::fs::write(dir.path().join("out-real.datamesh-partial.cid"), mcid).unwrap();
            let r = json(&node.ok(&["get", cid, "-o", out.to_str().unwrap(), "--json"]));
            assert_eq!(r["resumed_from"], 256 << 10, "{r}");
            assert!(std::fs::read(&out).unwrap() == data);
        }
    }
}

/// A symlink planted at the partial download's path (or its sidecar's)
/// does not make a get write through it: the get refuses with an error
/// naming the link, and the file it points to is untouched.
#[test]
fn a_planted_partial_symlink_is_refused_and_its_target_untouched() {
    let node = TestNode::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    let data = pseudo_random(200 << 10, 33);
    std::fs::write(&f, &data).unwrap();
    let cid = node.put(&f, &["--chunk-size", "64KiB"]);
    let victim = dir.path().join("victim");
    for suffix in [".datamesh-partial", ".datamesh-partial.cid"] {
        std::fs::write(&victim, b"precious").unwrap();
        let out = dir.path().join("out");
        let link = dir.path().join(format!("out{suffix}"));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = node.fails(&["get", &cid, "-o", out.to_str().unwrap()]);
        assert!(err.contains("symbolic link") && err.contains(&format!("out{suffix}")), "{err}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the get wrote through {suffix}");
        assert!(!out.exists());
        std::fs::remove_file(&link).unwrap();
    }
    // With the links gone the same get succeeds.
    let out = dir.path().join("out");
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == data);
}
