//! Tenancy over S3 with a real client (boto3) against a real node: two
//! users, alice and bob, each with an S3 key made by `datamesh key create
//! --user NAME --json`. Every S3 operation that touches a resource, sent
//! with bob's valid key against alice's bucket, object or upload, is
//! `AccessDenied` (the same for a name that does not exist) and changes
//! nothing; a revoked key is refused on its next request; a key scoped to
//! read one bucket can neither write it nor read another; a free-tier
//! user's PUT over the per-file limit is `QuotaExceeded` with nothing
//! stored; a multipart upload over the storage quota is refused at the part
//! that exceeds it; a multipart upload is its initiator's: bob, granted
//! write on alice's bucket, can neither add parts to, list, complete nor
//! abort her upload, which completes intact. The users and tiers are made through the accounts
//! services on the node's own database (as `datamesh admin` does).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestNode, wait_for};
use datamesh_services::perms::{Level, ResourceRef};
use datamesh_services::quota::Tier;
use datamesh_services::users::{NewUser, Role};
use datamesh_services::{Config, SealingKey, Services};

const MIB: u64 = 1024 * 1024;

/// The node's accounts database, opened beside the node.
async fn services(node: &TestNode) -> Services {
    let dir = node.data_dir().join("gateway");
    let hexkey = std::fs::read_to_string(dir.join("sealing.key")).expect("sealing key");
    let bytes: [u8; 32] = hex::decode(hexkey.trim()).expect("hex").try_into().expect("32 bytes");
    let url = format!("sqlite://{}", dir.join("services.db").display());
    Services::open(&url, SealingKey::new("v1", bytes), Config::default()).await.expect("open services")
}

/// Users on tiers: alice and bob (premium), carol (free, with the per-file
/// limit set to 1 MiB), dave (a tier of 12 MiB stored).
async fn set_up_users(node: &TestNode) {
    let s = services(node).await;
    let admin = s.bootstrap_admin("admin").await.expect("admin");
    let mut free = s.list_tiers().await.expect("tiers").into_iter().find(|t| t.name == "free").expect("free tier");
    free.max_file_bytes = Some(MIB);
    s.set_tier(&admin, &free).await.expect("edit the free tier");
    let small = Tier {
        name: "small".into(),
        max_stored_bytes: Some(12 * MIB),
        max_transfer_bytes: None,
        max_calls_per_hour: None,
        max_file_bytes: None,
        max_files: None,
        sla: false,
    };
    s.set_tier(&admin, &small).await.expect("make the small tier");
    for (name, tier) in [("alice", "premium"), ("bob", "premium"), ("carol", "free"), ("dave", "small")] {
        let new = NewUser { name, password: None, role: Role::User, tier: Some(tier) };
        s.create_user(&admin, new).await.expect("create user");
    }
    s.close().await;
}

fn key(node: &TestNode, args: &[&str]) -> (String, String) {
    let mut all = vec!["key", "create", "--json"];
    all.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&node.ok(&all)).expect("key json");
    (v["access_key_id"].as_str().expect("id").to_string(), v["secret_access_key"].as_str().expect("secret").to_string())
}

fn script(endpoint: &str, phase: &str, keys: &[(&str, &(String, String))]) -> String {
    script_with(endpoint, phase, keys, &[])
}

fn script_with(endpoint: &str, phase: &str, keys: &[(&str, &(String, String))], env: &[(&str, &str)]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_tenancy.py");
    let mut c = Command::new("python3");
    c.arg(path).arg(phase).env("DM_S3", endpoint).envs(env.iter().copied());
    for (who, (id, secret)) in keys {
        c.env(format!("DM_{}_KEY", who.to_uppercase()), id).env(format!("DM_{}_SECRET", who.to_uppercase()), secret);
    }
    let o = c.output().expect("run python3");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "the tenancy script ({phase}) failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn s3_users_are_isolated_keys_scoped_and_revocable_and_quotas_hold() {
    let probe = Command::new("python3").args(["-c", "import boto3"]).output().expect("python3");
    assert!(probe.status.success(), "boto3 is not installed; run: pip install boto3 (.ci/run does)");
    let node = TestNode::start(&["--offline", "--s3", "127.0.0.1:0"]);
    let endpoint =
        wait_for("s3.url", Duration::from_secs(30), || std::fs::read_to_string(node.data_dir().join("s3.url")).ok());
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(set_up_users(&node));

    let alice = key(&node, &["--user", "alice"]);
    let bob = key(&node, &["--user", "bob"]);
    let alice2 = key(&node, &["--user", "alice", "--name", "to-revoke"]);
    let carol = key(&node, &["--user", "carol"]);
    let dave = key(&node, &["--user", "dave"]);
    // alice's own buckets first, then a key scoped to reading one of them.
    let keys = [("alice", &alice), ("bob", &bob), ("alice2", &alice2), ("carol", &carol), ("dave", &dave)];
    script(&endpoint, "setup", &keys);
    let scoped = key(&node, &["--user", "alice", "--ops", "read,list", "--bucket", "alice-data"]);
    let listed = node.ok(&["key", "list", "--user", "alice", "--json"]);
    assert!(listed.contains(&alice.0) && listed.contains(&scoped.0), "alice's keys are listed: {listed}");
    assert!(!listed.contains(&alice.1), "a listing never shows a secret");
    let keys = [
        ("alice", &alice),
        ("bob", &bob),
        ("alice2", &alice2),
        ("carol", &carol),
        ("dave", &dave),
        ("scoped", &scoped),
    ];
    let out = script(&endpoint, "sweep", &keys);
    assert!(out.contains("sweep passed"), "{out}");

    node.ok(&["key", "revoke", &alice2.0]);
    let out = script(&endpoint, "revoked", &keys);
    assert!(out.contains("revoked passed"), "{out}");
    let listed = node.ok(&["key", "list", "--user", "alice", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("list json");
    let revoked =
        v["keys"].as_array().expect("keys").iter().find(|k| k["key_id"] == alice2.0.as_str()).expect("listed");
    assert_eq!(revoked["revoked"], true, "{listed}");

    // Multipart uploads belong to their initiator, even in a bucket others
    // may write.
    let out = script(&endpoint, "mp_setup", &keys);
    let upload = out.lines().find_map(|l| l.strip_prefix("UPLOAD=")).expect("the upload id").to_string();
    rt.block_on(async {
        let s = services(&node).await;
        let admin = s.bootstrap_admin("admin").await.expect("admin");
        let bob = s.find_user("bob").await.expect("lookup").expect("bob");
        let bucket = ResourceRef::bucket("alice-shared").expect("bucket name");
        s.grant(&admin, &bucket, bob.id, Level::Write).await.expect("grant bob write");
        s.close().await;
    });
    let out = script_with(&endpoint, "mp", &keys, &[("DM_UPLOAD", &upload)]);
    assert!(out.contains("mp passed"), "{out}");
}
