//! The crate graph's rules (ARCHITECTURE.md), checked over every crate's
//! `Cargo.toml` so that a dependency added against them fails the build's
//! tests, not a review.

use std::collections::BTreeMap;
use std::path::Path;

/// Each crate's normal (non-dev) dependencies: (datamesh crates, all names).
fn crates() -> BTreeMap<String, Vec<String>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(&root).expect("crates dir") {
        let dir = e.expect("entry").path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else { continue };
        let doc: toml::Table = text.parse().expect("Cargo.toml parses");
        let name = doc["package"]["name"].as_str().expect("package name").to_string();
        let deps =
            doc.get("dependencies").and_then(|d| d.as_table()).map(|t| t.keys().cloned().collect()).unwrap_or_default();
        out.insert(name, deps);
    }
    out
}

/// A crate's layer: a crate may depend only on crates of a lower layer.
fn layer(name: &str) -> u8 {
    match name {
        "datamesh-core" => 0,
        "datamesh-pipeline" | "datamesh-store" | "datamesh-net" | "datamesh-api" | "datamesh-services" => 1,
        "datamesh-node" => 2,
        "datamesh-client" => 3,
        "datamesh-gateway" => 4,
        "datamesh-cli" | "datamesh-bench" => 5,
        other => panic!("{other} has no layer: add it to this test and to ARCHITECTURE.md's code map"),
    }
}

const SQL: [&str; 5] = ["rusqlite", "sqlx", "postgres", "tokio-postgres", "diesel"];
const HTTP_SERVERS: [&str; 3] = ["axum", "hyper", "hyper-util"];

#[test]
fn dependencies_point_one_way() {
    let all = crates();
    assert!(all.contains_key("datamesh-services") && all.contains_key("datamesh-node"), "{all:?}");
    for (name, deps) in &all {
        for d in deps.iter().filter(|d| d.starts_with("datamesh-")) {
            assert!(layer(d) < layer(name), "{name} depends on {d}, which is not below it");
        }
    }
}

#[test]
fn services_know_sql_never_the_network_or_the_store() {
    let all = crates();
    for d in &all["datamesh-services"] {
        assert!(
            !["datamesh-net", "datamesh-store", "datamesh-node", "libp2p"].contains(&d.as_str())
                && !HTTP_SERVERS.contains(&d.as_str()),
            "datamesh-services depends on {d}"
        );
    }
}

#[test]
fn the_node_and_below_never_know_sql() {
    let all = crates();
    for c in ["datamesh-core", "datamesh-pipeline", "datamesh-store", "datamesh-net", "datamesh-node"] {
        for d in &all[c] {
            assert!(!SQL.contains(&d.as_str()) && d != "datamesh-services", "{c} depends on {d}");
        }
    }
}

#[test]
fn only_net_imports_libp2p_and_pure_crates_stay_pure() {
    let all = crates();
    for (name, deps) in &all {
        if name != "datamesh-net" {
            assert!(!deps.iter().any(|d| d.starts_with("libp2p")), "{name} imports libp2p");
        }
    }
    for c in ["datamesh-core", "datamesh-pipeline"] {
        for d in &all[c] {
            assert!(!["tokio", "mimalloc"].contains(&d.as_str()), "{c} is pure but depends on {d}");
        }
    }
    // The global allocator is the binaries' choice, not a library's.
    for (name, deps) in &all {
        if !["datamesh-cli", "datamesh-bench"].contains(&name.as_str()) {
            assert!(!deps.iter().any(|d| d == "mimalloc"), "{name} (a library) picks the allocator");
        }
    }
}

#[test]
fn the_client_knows_only_api_core_and_pipeline() {
    let all = crates();
    let allowed = ["datamesh-api", "datamesh-core", "datamesh-pipeline"];
    for d in &all["datamesh-client"] {
        assert!(
            (!d.starts_with("datamesh-") || allowed.contains(&d.as_str()))
                && d != "s3s"
                && !d.starts_with("libp2p")
                && !HTTP_SERVERS.contains(&d.as_str())
                && !SQL.contains(&d.as_str()),
            "datamesh-client depends on {d}: it must stay embeddable by any client (api, core, pipeline only)"
        );
    }
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("source dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn s3s_stays_in_the_s3_module() {
    let all = crates();
    for (name, deps) in &all {
        assert!(name == "datamesh-gateway" || !deps.iter().any(|d| d == "s3s"), "{name} depends on s3s");
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    assert!(files.iter().any(|f| f.ends_with("s3/mod.rs")), "{files:?}");
    for f in files.iter().filter(|f| !f.starts_with(src.join("s3"))) {
        let text = std::fs::read_to_string(f).expect("source");
        assert!(!text.contains("s3s::") && !text.contains("use s3s"), "{} uses s3s outside the S3 module", f.display());
    }
}
