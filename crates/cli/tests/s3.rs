//! The S3 API driven by real clients: the AWS CLI, boto3 and rclone each run
//! a whole workflow (buckets, put/get/list/delete, a multipart upload of
//! more than 100 MiB, Range GET, presigned GET, copy) against a real node,
//! comparing content byte for byte. CI installs the clients (`.ci/run`); a
//! missing client fails the test with a message saying how to install it.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{TestNode, wait_for};

/// A node with the S3 API on, and an access key made with `datamesh key create`.
struct S3Node {
    node: TestNode,
    endpoint: String,
    key: String,
    secret: String,
}

impl S3Node {
    fn start(extra: &[&str]) -> S3Node {
        let mut args = vec!["--offline", "--s3", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let node = TestNode::start(&args);
        let endpoint = wait_for("s3.url", Duration::from_secs(30), || {
            std::fs::read_to_string(node.data_dir().join("s3.url")).ok()
        });
        let v: serde_json::Value = serde_json::from_str(&node.ok(&["key", "create", "--json"])).expect("key json");
        let key = v["access_key_id"].as_str().expect("access_key_id").to_string();
        let secret = v["secret_access_key"].as_str().expect("secret_access_key").to_string();
        S3Node { node, endpoint, key, secret }
    }

    fn env(&self, c: &mut Command) {
        c.env("AWS_ACCESS_KEY_ID", &self.key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret)
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null");
    }
}

/// Panics with an install hint when `tool` is not on PATH.
fn need(tool: &str, install: &str) {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is not installed; the S3 client tests need it. Install it with: {install} (.ci/run does)");
}

fn ok(what: &str, o: Output) -> String {
    String::from_utf8_lossy(&ok_bytes(what, o)).into_owned()
}

fn ok_bytes(what: &str, o: Output) -> Vec<u8> {
    assert!(
        o.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o.stdout
}

fn write_random(path: &Path, len: usize, seed: u64) -> Vec<u8> {
    let data = common::pseudo_random(len, seed);
    std::fs::write(path, &data).expect("write test file");
    data
}

fn same_file(a: &Path, b: &Path) {
    let (x, y) = (std::fs::read(a).expect("read a"), std::fs::read(b).expect("read b"));
    assert!(
        x.len() == y.len() && x == y,
        "{} and {} differ ({} vs {} bytes)",
        a.display(),
        b.display(),
        x.len(),
        y.len()
    );
}

/// A plain unauthenticated GET (presigned URLs), failing on any non-2xx.
fn http_get(url: &str) -> Vec<u8> {
    need("curl", "apt-get install curl");
    let o = Command::new("curl").args(["-sS", "--fail-with-body", url]).output().expect("run curl");
    assert!(o.status.success(), "GET {url} failed: {}", String::from_utf8_lossy(&o.stdout));
    o.stdout
}

const MIB: usize = 1024 * 1024;

#[test]
fn boto3_full_workflow() {
    need("python3", "apt-get install python3");
    let probe = Command::new("python3").args(["-c", "import boto3"]).output().expect("python3");
    assert!(probe.status.success(), "boto3 is not installed; run: pip install boto3 (.ci/run does)");
    let s = S3Node::start(&[]);
    let work = tempfile::tempdir().expect("tmp");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_workflow.py");
    let o = Command::new("python3")
        .arg(script)
        .env("DM_S3", &s.endpoint)
        .env("DM_KEY", &s.key)
        .env("DM_SECRET", &s.secret)
        .env("DM_WORK", work.path())
        .output()
        .expect("run python3");
    let out = ok("the boto3 workflow", o);
    assert!(out.contains("boto3 workflow passed"), "{out}");
}

#[test]
fn boto3_pages_multipart_uploads() {
    need("python3", "apt-get install python3");
    let probe = Command::new("python3").args(["-c", "import boto3"]).output().expect("python3");
    assert!(probe.status.success(), "boto3 is not installed; run: pip install boto3 (.ci/run does)");
    let s = S3Node::start(&[]);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/boto3_multipart_paging.py");
    let o = Command::new("python3")
        .arg(script)
        .env("DM_S3", &s.endpoint)
        .env("DM_KEY", &s.key)
        .env("DM_SECRET", &s.secret)
        .output()
        .expect("run python3");
    let out = ok("the boto3 multipart paging script", o);
    assert!(out.contains("boto3 multipart paging passed"), "{out}");
}

#[test]
fn aws_cli_full_workflow() {
    need("aws", "pip install awscli");
    let s = S3Node::start(&[]);
    let work = tempfile::tempdir().expect("tmp");
    let aws = |args: &[&str]| {
        let mut c = Command::new("aws");
        s.env(&mut c);
        c.args(["--endpoint-url", &s.endpoint]).args(args);
        ok(&format!("aws {args:?}"), c.output().expect("run aws"))
    };
    let big = work.path().join("big.bin");
    write_random(&big, 101 * MIB, 1);
    let small = work.path().join("small.bin");
    let small_data = write_random(&small, 100_000, 2);
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();

    aws(&["s3", "mb", "s3://awscli"]);
    assert!(aws(&["s3", "ls"]).contains("awscli"));
    // `aws s3 cp` switches to multipart above 8 MiB: 101 MiB is 13 parts.
    aws(&["s3", "cp", &p(&big), "s3://awscli/big.bin"]);
    aws(&["s3", "cp", &p(&small), "s3://awscli/dir/small.bin"]);
    let ls = aws(&["s3", "ls", "--recursive", "s3://awscli"]);
    assert!(ls.contains("big.bin") && ls.contains("dir/small.bin"), "{ls}");
    let back = work.path().join("big.out");
    aws(&["s3", "cp", "s3://awscli/big.bin", &p(&back)]);
    same_file(&big, &back);

    let head: serde_json::Value =
        serde_json::from_str(&aws(&["s3api", "head-object", "--bucket", "awscli", "--key", "big.bin"])).expect("json");
    assert_eq!(head["ContentLength"], 101 * MIB);
    assert!(head["ETag"].as_str().expect("etag").ends_with("-13\""), "multipart ETag: {}", head["ETag"]);

    let range = work.path().join("range.bin");
    aws(&[
        "s3api",
        "get-object",
        "--bucket",
        "awscli",
        "--key",
        "dir/small.bin",
        "--range",
        "bytes=1000-1999",
        &p(&range),
    ]);
    assert_eq!(std::fs::read(&range).expect("range"), &small_data[1000..2000]);

    let url = aws(&["s3", "presign", "s3://awscli/dir/small.bin", "--expires-in", "300"]);
    assert_eq!(http_get(url.trim()), small_data);

    aws(&["s3", "cp", "s3://awscli/dir/small.bin", "s3://awscli/copy.bin"]);
    let copy = work.path().join("copy.out");
    aws(&["s3", "cp", "s3://awscli/copy.bin", &p(&copy)]);
    same_file(&small, &copy);

    aws(&["s3", "rm", "--recursive", "s3://awscli"]);
    assert!(aws(&["s3", "ls", "--recursive", "s3://awscli"]).trim().is_empty());
    aws(&["s3", "rb", "s3://awscli"]);
}

#[test]
fn rclone_full_workflow() {
    need("rclone", "apt-get install rclone");
    let s = S3Node::start(&[]);
    let work = tempfile::tempdir().expect("tmp");
    let rclone = |args: &[&str]| {
        let mut c = Command::new("rclone");
        // A custom CA bundle in the environment makes rclone's S3 client refuse
        // to start; the endpoint is plain HTTP on loopback anyway.
        c.env_remove("AWS_CA_BUNDLE")
            .env("RCLONE_CONFIG", "/dev/null")
            .env("RCLONE_CONFIG_DM_TYPE", "s3")
            .env("RCLONE_CONFIG_DM_PROVIDER", "Other")
            .env("RCLONE_CONFIG_DM_ACCESS_KEY_ID", &s.key)
            .env("RCLONE_CONFIG_DM_SECRET_ACCESS_KEY", &s.secret)
            .env("RCLONE_CONFIG_DM_ENDPOINT", &s.endpoint)
            .env("RCLONE_CONFIG_DM_REGION", "us-east-1")
            .env("RCLONE_CONFIG_DM_FORCE_PATH_STYLE", "true")
            .args(args)
            .args([
                "--s3-upload-cutoff",
                "16M",
                "--s3-chunk-size",
                "16M",
                "--retries",
                "1",
                "--low-level-retries",
                "1",
            ]);
        ok_bytes(&format!("rclone {args:?}"), c.output().expect("run rclone"))
    };
    let src = work.path().join("src");
    std::fs::create_dir_all(src.join("sub")).expect("mkdir");
    write_random(&src.join("big.bin"), 100 * MIB + 5, 3);
    let small = write_random(&src.join("sub/small.bin"), 50_000, 4);
    let p = |p: &Path| p.to_str().expect("utf-8").to_string();

    rclone(&["mkdir", "dm:rclone"]);
    rclone(&["copy", &p(&src), "dm:rclone/tree"]);
    // `rclone check` compares sizes and MD5s with the ETags, multipart ones included.
    rclone(&["check", &p(&src), "dm:rclone/tree"]);
    let dst = work.path().join("dst");
    rclone(&["copy", "dm:rclone/tree", &p(&dst)]);
    same_file(&src.join("big.bin"), &dst.join("big.bin"));
    same_file(&src.join("sub/small.bin"), &dst.join("sub/small.bin"));

    let part = rclone(&["cat", "--offset", "100", "--count", "50", "dm:rclone/tree/sub/small.bin"]);
    assert_eq!(part, &small[100..150]);

    let link = rclone(&["link", "--expire", "5m", "dm:rclone/tree/sub/small.bin"]);
    assert_eq!(http_get(String::from_utf8_lossy(&link).trim()), small);

    // Server-side copy.
    rclone(&["copyto", "dm:rclone/tree/sub/small.bin", "dm:rclone/copied.bin"]);
    let copied = work.path().join("copied.bin");
    rclone(&["copyto", "dm:rclone/copied.bin", &p(&copied)]);
    same_file(&src.join("sub/small.bin"), &copied);

    rclone(&["purge", "dm:rclone"]);
    assert!(!String::from_utf8_lossy(&rclone(&["lsd", "dm:"])).contains("rclone"));
}

#[test]
fn a_refused_put_leaves_nothing_behind() {
    need("aws", "pip install awscli");
    let s = S3Node::start(&[]);
    let work = tempfile::tempdir().expect("tmp");
    let aws = |args: &[&str]| {
        let mut c = Command::new("aws");
        s.env(&mut c);
        c.args(["--endpoint-url", &s.endpoint]).args(args).output().expect("run aws")
    };
    let f = work.path().join("f.bin");
    write_random(&f, 9 * MIB, 5);
    ok("mb", aws(&["s3", "mb", "s3://clean"]));
    let files_before = s.node.ok(&["ls", "--json"]);
    let shards_before = common::shard_files(&s.node).len();
    // Nine MiB is three chunks: they reach the node before the checksum,
    // which comes last, is found wrong.
    let o = aws(&[
        "s3api",
        "put-object",
        "--bucket",
        "clean",
        "--key",
        "bad",
        "--body",
        f.to_str().expect("utf-8"),
        "--checksum-crc32",
        "AAAAAA==",
    ]);
    assert!(!o.status.success(), "a PUT with a wrong checksum succeeded");
    assert!(String::from_utf8_lossy(&o.stderr).contains("BadDigest"), "{}", String::from_utf8_lossy(&o.stderr));
    let listed = ok("list", aws(&["s3api", "list-objects-v2", "--bucket", "clean"]));
    assert!(!listed.contains("\"bad\""), "the refused object is listed: {listed}");
    assert_eq!(s.node.ok(&["ls", "--json"]), files_before, "the refused PUT left a pinned file");
    s.node.ok(&["gc"]);
    assert_eq!(common::shard_files(&s.node).len(), shards_before, "the refused PUT left shards after GC");
}
