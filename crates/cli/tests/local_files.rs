//! What the node and the CLI keep on the local disk, and what they print
//! from it: the data dir and the gateway's databases are their owner's
//! alone (and tightened at start when looser); a key file others can read
//! is refused; `key passphrase` never leaves the user without a key; `ls`
//! escapes control characters in names.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn the_data_dir_and_databases_are_private_and_tightened_at_start() {
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("node.log");
    let mut node = TestNode::start_logged(&["--offline"], Some(("warn", &log)));
    let dir = node.data_dir();
    let gw = dir.join("gateway");
    assert_eq!(mode(&dir), 0o700, "data dir");
    assert_eq!(mode(&gw), 0o700, "gateway dir");
    for f in ["gateway.db", "services.db", "sealing.key"] {
        assert_eq!(mode(&gw.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.join("api.token")), 0o600);
    node.stop();
    // As an older build left them.
    for (p, m) in [(&dir, 0o755), (&gw, 0o755), (&gw.join("gateway.db"), 0o644), (&gw.join("services.db"), 0o644)] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    }
    node.spawn();
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&gw), 0o700);
    assert_eq!(mode(&gw.join("gateway.db")), 0o600);
    assert_eq!(mode(&gw.join("services.db")), 0o600);
    let text = wait_for("the warning", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).ok().filter(|t| t.contains("gateway.db"))
    });
    assert!(text.contains("WARN") && text.contains("other users could read"), "{text}");
}

#[test]
fn a_key_file_others_can_read_is_refused_with_the_fix() {
    let node = TestNode::start(&["--offline"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"mine").unwrap();
    let cid = node.put(&f, &[]);
    let key = node.user_dir.path().join("user.key");
    assert_eq!(mode(&key), 0o600);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = dir.path().join("out");
    let err = node.fails(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert!(err.contains(&format!("chmod 600 {}", key.display())), "{err}");
    let err = node.fails(&["put", f.to_str().unwrap()]);
    assert!(err.contains("chmod 600"), "{err}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"mine");
}

#[test]
fn key_passphrase_that_fails_to_write_keeps_the_old_key() {
    let node = TestNode::start(&["--offline"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"still mine").unwrap();
    let cid = node.put(&f, &[]);
    let key = node.user_dir.path().join("user.key");
    let before = std::fs::read(&key).unwrap();
    // The temp file's name is taken by a directory: the write fails.
    std::fs::create_dir(node.user_dir.path().join("user.key.tmp")).unwrap();
    let o = node
        .cli()
        .args(["key", "passphrase"])
        .env("DATAMESH_NEW_KEY_PASSPHRASE", "lantern quietly orbits 63 marmalade")
        .output()
        .unwrap();
    assert!(!o.status.success(), "the write could not have succeeded");
    assert_eq!(std::fs::read(&key).unwrap(), before, "the key was lost or changed");
    let out = dir.path().join("out");
    node.ok(&["get", &cid, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"still mine");
}

#[test]
fn ls_escapes_control_characters_in_names() {
    let node = TestNode::start(&["--offline"]);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let evil = "red\u{1b}[31mALERT\u{1b}[0m\nfake-cid\t1 B\tinnocent\u{202e}fdp.exe";
    node.ok(&["put", f.to_str().unwrap(), "--name", evil]);
    let out = node.ok(&["ls"]);
    assert!(!out.contains('\u{1b}') && !out.contains('\u{202e}'), "raw control characters: {out:?}");
    assert_eq!(out.trim_end().lines().count(), 1, "a name made a line of its own: {out:?}");
    assert!(out.contains(r"red\u{1b}[31mALERT\u{1b}[0m\u{a}fake-cid\u{9}1 B\u{9}innocent\u{202e}fdp.exe"), "{out:?}");
    // The JSON output keeps the name as it is.
    assert!(node.ok(&["ls", "--json"]).contains(r"\u001b[31mALERT"));
}
