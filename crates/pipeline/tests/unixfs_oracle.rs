//! Proves `unixfs::unixfs_cid` exact against an independent implementation:
//! the JS UnixFS importer (`tests/oracle/cid.mjs`), configured as
//! `ipfs add --cid-version 1` (CIDv1, raw leaves, 262144-byte fixed chunks,
//! balanced layout, 174 links per node, single leaf reduced to itself).
//!
//! Needs Node.js and the oracle's npm packages, installed once from the
//! workspace root with:
//!
//! ```sh
//! npm ci --prefix crates/pipeline/tests/oracle
//! ```
//!
//! Without them these tests fail (they do not skip): a silently skipped
//! exactness check is how a wrong CID ships.

#![allow(clippy::unwrap_used)]

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use datamesh_pipeline::unixfs::{CHUNK_SIZE, MAX_LINKS, UnixFsHasher, unixfs_cid};

fn oracle_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("oracle")
}

/// Fails early, with the fix, when the oracle's packages are not installed.
fn require_oracle() {
    assert!(
        oracle_dir().join("node_modules").join("ipfs-unixfs-importer").is_dir(),
        "the UnixFS oracle's npm packages are missing: run \
         `npm ci --prefix crates/pipeline/tests/oracle` from the workspace root, then rerun"
    );
}

/// Runs the oracle on `files` with extra `args`; one CID per file.
fn oracle(args: &[&str], files: &[PathBuf]) -> Vec<String> {
    require_oracle();
    let dir = oracle_dir();
    let out = Command::new("node")
        .arg(dir.join("cid.mjs"))
        .args(args)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `node` (Node.js 20+ is needed for the UnixFS oracle): {e}"));
    assert!(out.status.success(), "oracle failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    let cids: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect();
    assert_eq!(cids.len(), files.len(), "oracle printed {cids:?}");
    cids
}

/// Deterministic pseudo-random bytes (splitmix64 from `seed`), written in
/// blocks so large files never sit in memory.
fn write_file(path: &Path, len: usize, seed: u64) {
    let mut w = BufWriter::with_capacity(1 << 20, File::create(path).expect("create temp file"));
    let mut rng = datamesh_core::testdata::SplitMix64::new(seed);
    let mut left = len;
    let mut block = Vec::with_capacity(1 << 16);
    while left > 0 {
        block.clear();
        rng.extend(&mut block, 1 << 16);
        let n = left.min(block.len());
        w.write_all(&block[..n]).expect("write temp file");
        left -= n;
    }
    w.flush().expect("flush temp file");
}

#[test]
fn default_layout_matches_the_js_importer() {
    require_oracle();
    let c = CHUNK_SIZE;
    let sizes = [
        0,
        1,
        c - 1,
        c,
        c + 1,
        // Exactly one full node of leaves: the root has 174 links.
        MAX_LINKS * c,
        // One leaf more: a second level, whose last node has a single link.
        MAX_LINKS * c + 1,
        3 * MAX_LINKS * c + 5,
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let files: Vec<PathBuf> = sizes
        .iter()
        .map(|&n| {
            let p = dir.path().join(format!("f{n}"));
            write_file(&p, n, n as u64);
            p
        })
        .collect();
    let expected = oracle(&[], &files);
    // The oracle itself is configured right: the empty file gives kubo's CID.
    assert_eq!(expected[0], "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
    for ((n, path), want) in sizes.iter().zip(&files).zip(&expected) {
        let f = BufReader::new(File::open(path).expect("open temp file"));
        let got = unixfs_cid(f).expect("read temp file").to_string();
        assert_eq!(&got, want, "{n}-byte file");
    }
}

/// Deep trees cost gigabytes at the real layout (174² leaves ≈ 7.4 GiB), so
/// the level-growth logic is checked with tiny chunks and fan-outs, which
/// the JS importer accepts too: every size around each level boundary.
#[test]
fn deep_trees_match_the_js_importer() {
    require_oracle();
    let dir = tempfile::tempdir().expect("temp dir");
    for (chunk, links) in [(1usize, 2usize), (10, 3), (7, 4)] {
        let mut sizes: Vec<usize> = (0..=40).collect();
        // Around links^h leaves for h = 2..=5.
        let mut leaves = links * links;
        while leaves <= links.pow(5) {
            for d in [-1isize, 0, 1] {
                let n = (leaves * chunk) as isize + d * chunk as isize;
                sizes.extend([n as usize - 1, n as usize, n as usize + 1]);
            }
            leaves *= links;
        }
        sizes.sort_unstable();
        sizes.dedup();
        let files: Vec<PathBuf> = sizes
            .iter()
            .map(|&n| {
                let p = dir.path().join(format!("d{chunk}-{links}-{n}"));
                write_file(&p, n, (n * 31 + chunk) as u64);
                p
            })
            .collect();
        let (c, l) = (chunk.to_string(), links.to_string());
        let expected = oracle(&["--chunk-size", &c, "--max-links", &l], &files);
        for ((n, path), want) in sizes.iter().zip(&files).zip(&expected) {
            let bytes = std::fs::read(path).expect("read temp file");
            let Some(mut h) = UnixFsHasher::with_layout(chunk, links) else { panic!("bad layout") };
            // Uneven slices, to exercise the streaming path too.
            for piece in bytes.chunks(3) {
                h.update(piece);
            }
            assert_eq!(&h.finalize().to_string(), want, "{n} bytes, chunk {chunk}, {links} links");
        }
    }
}
