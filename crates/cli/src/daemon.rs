//! `datamesh node`: runs a node until SIGINT or SIGTERM.
//!
//! Start-up order matters for scripts: the store is opened (and recovered)
//! first, then the API port is bound, and only then is `api.url` written, so
//! a client that finds the URL can put and get at once.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use datamesh_node::{Node, NodeConfig};

/// Runs the node to completion.
pub async fn run(cfg: NodeConfig) -> Result<()> {
    let data_dir = cfg.data_dir.clone();
    let api = cfg.api;
    let node = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Node::open(cfg)).await??
    };
    let token = load_or_create_token(&data_dir)?;
    let listener = tokio::net::TcpListener::bind(api)
        .await
        .with_context(|| format!("cannot listen on {api}: is another node using it? choose another with --api 127.0.0.1:PORT"))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}");
    write_atomic(&data_dir.join("api.url"), url.as_bytes())?;
    let status = node.status().await?;
    tracing::info!(node_id = %status.node_id, %url, data_dir = %data_dir.display(), "node ready");
    println!("api {url}");
    println!("data-dir {}", data_dir.display());
    println!("node-id {}", status.node_id);
    std::io::stdout().flush()?;

    // Upload sessions idle past their timeout release their shards to GC.
    let reaper = {
        let node = node.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs(60));
            loop {
                t.tick().await;
                let n = node.expire_uploads();
                if n > 0 {
                    tracing::info!(expired = n, "dropped idle upload sessions");
                }
            }
        })
    };

    let app = datamesh_gateway::router(node.clone(), token);
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    reaper.abort();
    let _ = std::fs::remove_file(data_dir.join("api.url"));
    tracing::info!("node stopped");
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

/// The API token: created once (mode 0600) and kept, so clients configured
/// with DATAMESH_TOKEN keep working across restarts.
fn load_or_create_token(dir: &Path) -> Result<String> {
    let p = dir.join("api.token");
    match std::fs::read_to_string(&p) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => {
            let t = hex::encode(rand::random::<[u8; 32]>());
            write_atomic(&p, t.as_bytes())?;
            Ok(t)
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = datamesh_node::identity::private_file(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
