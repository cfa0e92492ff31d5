//! S3 input a client controls, against a real node with boto3 and raw
//! signed HTTP (`clients/boto3_input.py`): keys with control characters
//! are refused, keys with `%`, `+` and XML's special characters come back
//! exactly with `EncodingType=url` (boto3's default); bucket
//! names S3 forbids, user metadata over 2 KB, presigned URLs valid for more
//! than 7 days and oversized DeleteObjects bodies are refused with S3's
//! codes. The node runs at DEBUG, and its log must hold neither the
//! presigned signature nor an `Authorization` header, and no ERROR line
//! for the requests refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{TestNode, wait_for};

#[test]
fn s3_input_is_bounded_validated_and_listed_safely_and_secrets_stay_out_of_the_log() {
    let probe = Command::new("python3").args(["-c", "import boto3"]).output().expect("python3");
    assert!(probe.status.success(), "boto3 is not installed; run: pip install boto3 (.ci/run does)");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("node.log");
    let node = TestNode::start_logged(&["--offline", "--s3", "127.0.0.1:0"], Some(("debug", &log)));
    let endpoint =
        wait_for("s3.url", Duration::from_secs(30), || std::fs::read_to_string(node.data_dir().join("s3.url")).ok());
    let v: serde_json::Value = serde_json::from_str(&node.ok(&["key", "create", "--json"])).unwrap();
    let (key, secret) = (v["access_key_id"].as_str().unwrap(), v["secret_access_key"].as_str().unwrap());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_input.py");
    let o = Command::new("python3")
        .arg(script)
        .env("DM_S3", endpoint.trim())
        .env("DM_KEY", key)
        .env("DM_SECRET", secret)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "the input script failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("input passed"), "{out}");
    let signature = out.lines().find_map(|l| l.strip_prefix("signature=")).expect("the script prints the signature");

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("DEBUG"), "the node did not log at DEBUG: {}", &text[..text.len().min(2000)]);
    assert!(text.contains("S3 request refused"), "refusals are logged at DEBUG");
    for secret_text in [signature, secret, "AWS4-HMAC-SHA256 Credential", "X-Amz-Signature"] {
        assert!(!text.contains(secret_text), "the node's log holds {secret_text:?}");
    }
    let errors: Vec<&str> = text.lines().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "refused requests logged at ERROR:\n{}", errors.join("\n"));
}
