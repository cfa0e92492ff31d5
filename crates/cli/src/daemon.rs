//! `datamesh node`: runs a node until SIGINT or SIGTERM. This is the
//! composition root's outer shell: it reads the configuration, opens the
//! node and the gateway, binds the ports and wires them; the node and the
//! gateway start and stop their own workers.
//!
//! Start-up order matters for scripts: the store is opened (and recovered)
//! first, then the API port is bound, and only then is `api.url` written, so
//! a client that finds the URL can put and get at once. With `--s3`, the S3
//! port is bound and `s3.url` written before `api.url` too.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use datamesh_node::{Node, NodeConfig};

/// Gateway settings given on the command line (not in the node's config file).
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    /// `--max-file-size`.
    pub max_file_size: Option<u64>,
    /// `--public-url`.
    pub public_url: Option<String>,
    /// `--events-buffer`.
    pub events_buffer: Option<usize>,
    /// `--events-interval`.
    pub events_interval: Option<Duration>,
    /// `--events-client-timeout`.
    pub events_client_timeout: Option<Duration>,
    /// `--database`: the accounts database URL.
    pub database: Option<String>,
    /// `--sealing-key`: the file of the key sealing S3 secrets.
    pub sealing_key: Option<std::path::PathBuf>,
    /// `--tls-cert`/`--tls-key`, the HTTP timeouts and connection caps.
    pub edge: datamesh_gateway::listen::EdgeConfig,
}

/// Runs the node to completion.
pub async fn run(cfg: NodeConfig, opts: GatewayOptions) -> Result<()> {
    let shutdown = shutdown_signal()?;
    let data_dir = cfg.data_dir.clone();
    crate::private::tighten(&data_dir, true)?;
    let api = cfg.api;
    let node = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || Node::open(cfg)).await??
    };
    if !cfg.offline {
        start_network(&cfg, &node).await?;
    }
    let token = load_or_create_token(&data_dir)?;
    let listener = tokio::net::TcpListener::bind(api).await.with_context(|| {
        format!("cannot listen on {api}: is another node using it? choose another with --api 127.0.0.1:PORT")
    })?;
    let addr = listener.local_addr()?;
    let gateway = {
        let (node, mut gcfg) = (node.clone(), datamesh_gateway::GatewayConfig::new(&data_dir));
        gcfg.region = cfg.s3_region.clone();
        gcfg.domain = cfg.s3_domain.clone();
        gcfg.max_file_size = opts.max_file_size;
        gcfg.public_url = opts.public_url.clone();
        gcfg.database = opts.database.clone();
        gcfg.sealing_key = opts.sealing_key.clone();
        gcfg.edge = opts.edge.clone();
        if let Some(b) = opts.events_buffer {
            gcfg.events.buffer = b;
        }
        if let Some(d) = opts.events_interval {
            gcfg.events.metrics_interval = d;
        }
        if let Some(d) = opts.events_client_timeout {
            gcfg.events.client_timeout = d;
        }
        datamesh_gateway::Gateway::open(node, gcfg).await?
    };
    // The databases the gateway just created: private from their start
    // (the dir already was).
    crate::private::tighten(&data_dir, false)?;
    // With TLS, both ports speak https only.
    let scheme = if gateway.tls() { "https" } else { "http" };
    let _ = std::fs::remove_file(data_dir.join("s3.url"));
    let s3_listener = match cfg.s3 {
        None => None,
        Some(addr) => {
            let l = datamesh_gateway::bind_s3(addr).await?;
            let s3_url = format!("{scheme}://{}", l.local_addr()?);
            write_atomic(&data_dir.join("s3.url"), s3_url.as_bytes())?;
            tracing::info!(url = %s3_url, "S3 API ready");
            Some((l, s3_url))
        }
    };
    let url = format!("{scheme}://{addr}");
    write_atomic(&data_dir.join("api.url"), url.as_bytes())?;
    let status = node.status().await?;
    tracing::info!(node_id = %status.node_id, %url, data_dir = %data_dir.display(), "node ready");
    println!("api {url}");
    if let Some((_, s3_url)) = &s3_listener {
        println!("s3 {s3_url}");
    }
    println!("data-dir {}", data_dir.display());
    println!("node-id {}", status.node_id);
    std::io::stdout().flush()?;

    // The composition: the node's workers (repair, audit, scrub, leases,
    // drain, upload expiry; the heartbeat worker came with the network),
    // then the gateway's servers and workers, until SIGINT or SIGTERM.
    node.spawn_workers();
    let served = gateway.serve(listener, s3_listener.map(|(l, _)| l), token, shutdown).await;
    // Workers stop in the reverse order they started (the gateway's first),
    // then the network, then the store writes what it holds in memory.
    node.shutdown().await;
    drop(gateway);
    drop(node);
    for f in ["s3.url", "api.url", "p2p.addrs"] {
        let _ = std::fs::remove_file(data_dir.join(f));
    }
    served?;
    tracing::info!("node stopped");
    Ok(())
}

/// Starts the libp2p node and writes its dialable addresses (with
/// `/p2p/<peer id>`) to `<data-dir>/p2p.addrs`, one per line, for scripts
/// and the devnet to bootstrap from.
async fn start_network(cfg: &NodeConfig, node: &Node) -> Result<()> {
    let net = node.start_network().await?;
    let me = net.local_peer_id();
    let addrs: Vec<String> = net.listen_addrs().await.iter().map(|a| format!("{a}/p2p/{me}")).collect();
    write_atomic(&cfg.data_dir.join("p2p.addrs"), addrs.join("\n").as_bytes())?;
    for a in &addrs {
        tracing::info!(addr = %a, "listening for peers");
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled, so a signal that arrives
/// while the node is still starting stops it cleanly too.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
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

/// Writes one of the node's own files (mode 0600) through the store's one
/// atomic write.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    datamesh_store::write_file_atomically(path, bytes, true).with_context(|| format!("cannot write {}", path.display()))
}
