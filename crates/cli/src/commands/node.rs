//! `datamesh node`: the node's options (flags, environment, config file) and
//! how they become the node's and the gateway's settings; `daemon` runs it.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use bytesize::ByteSize;
use clap::Args;
use datamesh_node::NodeConfig;

use crate::daemon;

#[derive(Args)]
pub struct NodeArgs {
    /// Data dir (default: $XDG_DATA_HOME/datamesh).
    #[arg(long, env = "DATAMESH_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Config file (default: <data-dir>/config.toml if present).
    #[arg(long, env = "DATAMESH_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address (default 127.0.0.1:7780; port 0 picks a free one).
    #[arg(long, env = "DATAMESH_NODE_API")]
    api: Option<String>,
    /// Disk budget (e.g. 100GiB).
    #[arg(long, env = "DATAMESH_CAPACITY")]
    capacity: Option<ByteSize>,
    /// Hot-chunk cache size (e.g. 32MiB).
    #[arg(long, env = "DATAMESH_CACHE")]
    cache: Option<ByteSize>,
    /// Default data shards per chunk.
    #[arg(short = 'k', long)]
    data_shards: Option<u16>,
    /// Default parity shards per chunk.
    #[arg(short = 'm', long)]
    parity_shards: Option<u16>,
    /// Peer-to-peer listen multiaddr (repeatable; default /ip4/0.0.0.0/tcp/7781 and udp/7781/quic-v1).
    #[arg(long, value_delimiter = ',', env = "DATAMESH_LISTEN")]
    listen: Vec<String>,
    /// Bootstrap peer multiaddr, with or without /p2p/<id> (repeatable, in priority order).
    #[arg(long, value_delimiter = ',', env = "DATAMESH_BOOTSTRAP")]
    bootstrap: Vec<String>,
    /// Discover peers on the LAN with mDNS.
    #[arg(long)]
    mdns: bool,
    /// Run without the network: keep every shard on this node.
    #[arg(long)]
    offline: bool,
    /// How often to heartbeat peers (e.g. 30s).
    #[arg(long, value_parser = humantime::parse_duration)]
    heartbeat_interval: Option<std::time::Duration>,
    /// Silence after which a peer is WARNING (e.g. 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    warning_after: Option<std::time::Duration>,
    /// Silence after which a peer is OFFLINE (e.g. 5m).
    #[arg(long, value_parser = humantime::parse_duration)]
    offline_after: Option<std::time::Duration>,
    /// Ask another holder when a shard has not arrived after this long (e.g. 500ms).
    #[arg(long, value_parser = humantime::parse_duration)]
    hedge_after: Option<std::time::Duration>,
    /// How often the repair worker checks the files this node maintains (e.g. 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    repair_interval: Option<std::time::Duration>,
    /// Cap on rebuilt shard bytes per second (e.g. 64MiB; 0 lifts the cap).
    #[arg(long)]
    repair_rate: Option<ByteSize>,
    /// How often every stored shard is re-read and verified (e.g. 24h).
    #[arg(long, value_parser = humantime::parse_duration)]
    scrub_interval: Option<std::time::Duration>,
    /// How often this node audits the holders of the files it maintains (proof of storage, e.g. 10m; 0s: off).
    #[arg(long, value_parser = humantime::parse_duration)]
    audit_interval: Option<std::time::Duration>,
    /// How long this node keeps another node's file unless its maintainer renews the lease (e.g. 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    lease: Option<std::time::Duration>,
    /// Multiaddr other nodes should dial to reach this one, e.g. behind NAT (repeatable; default: the listen addresses).
    #[arg(long, value_delimiter = ',', env = "DATAMESH_ANNOUNCE")]
    announce: Vec<String>,
    /// Serve the S3-compatible API on this address (e.g. 127.0.0.1:7782; port 0 picks a free one).
    #[arg(long, env = "DATAMESH_S3")]
    s3: Option<String>,
    /// Largest file `POST /v1/files` takes (e.g. 10GiB; default: no limit but the store's).
    #[arg(long, env = "DATAMESH_MAX_FILE_SIZE")]
    max_file_size: Option<ByteSize>,
    /// Base URL share links are given under (e.g. https://files.example.com; default: http:// and the Host asked).
    #[arg(long, env = "DATAMESH_PUBLIC_URL")]
    public_url: Option<String>,
    /// Events held for event-stream clients; a client further behind is disconnected (default 1024).
    #[arg(long, env = "DATAMESH_EVENTS_BUFFER")]
    events_buffer: Option<usize>,
    /// Period of the event stream's `metrics` event (default 5s).
    #[arg(long, env = "DATAMESH_EVENTS_INTERVAL", value_parser = humantime::parse_duration)]
    events_interval: Option<std::time::Duration>,
    /// Drop an event-stream client that answers no ping, or whose socket accepts nothing, for this long (default 30s).
    #[arg(long, env = "DATAMESH_EVENTS_CLIENT_TIMEOUT", value_parser = humantime::parse_duration)]
    events_client_timeout: Option<std::time::Duration>,
    /// The accounts database: `sqlite://PATH` or `postgres://USER@HOST/DB` (default: SQLite in the data dir's gateway/services.db). Gateways sharing a PostgreSQL database share every account and key.
    #[arg(long, env = "DATAMESH_DATABASE")]
    database: Option<String>,
    /// The file of the key that seals S3 secrets in the accounts database (default: gateway/sealing.key in the data dir, created at first start). Gateways sharing one database must share this file.
    #[arg(long, env = "DATAMESH_SEALING_KEY")]
    sealing_key: Option<PathBuf>,
    /// Serve the API and S3 ports over TLS with this PEM certificate chain (leaf first; with --tls-key).
    #[arg(long, env = "DATAMESH_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "DATAMESH_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Close a connection whose TLS handshake or request head takes longer than this (default 10s).
    #[arg(long, env = "DATAMESH_HTTP_HEADER_TIMEOUT", value_parser = humantime::parse_duration)]
    http_header_timeout: Option<std::time::Duration>,
    /// Fail a request whose body sends nothing for this long; its upload is aborted (default 30s).
    #[arg(long, env = "DATAMESH_HTTP_BODY_TIMEOUT", value_parser = humantime::parse_duration)]
    http_body_timeout: Option<std::time::Duration>,
    /// Close a kept-alive connection idle (no request, no traffic) this long (default 60s).
    #[arg(long, env = "DATAMESH_HTTP_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    http_idle_timeout: Option<std::time::Duration>,
    /// Open connections over the API and S3 ports together; more are closed at once (default 1024).
    #[arg(long, env = "DATAMESH_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Open connections from one source address over both ports; more are closed at once (default 256: room for parallel S3 transfers and a few users behind one NAT).
    #[arg(long, env = "DATAMESH_MAX_CONNECTIONS_PER_ADDRESS")]
    max_connections_per_address: Option<usize>,
}

impl NodeArgs {
    /// The gateway's settings that are not part of the node's config file.
    fn gateway(&self) -> Result<daemon::GatewayOptions> {
        if let Some(u) = &self.public_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            bail!("--public-url {u}: expected http://HOST or https://HOST");
        }
        if self.events_buffer == Some(0) {
            bail!("--events-buffer must be at least 1");
        }
        if self.max_connections == Some(0) || self.max_connections_per_address == Some(0) {
            bail!("--max-connections and --max-connections-per-address must be at least 1");
        }
        for (flag, d) in [
            ("--http-header-timeout", self.http_header_timeout),
            ("--http-body-timeout", self.http_body_timeout),
            ("--http-idle-timeout", self.http_idle_timeout),
        ] {
            if d.is_some_and(|d| d.is_zero()) {
                bail!("{flag} must be longer than 0s");
            }
        }
        let mut edge = datamesh_gateway::listen::EdgeConfig::default();
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            edge.tls = Some(datamesh_gateway::listen::TlsFiles { cert: cert.clone(), key: key.clone() });
        }
        edge.header_timeout = self.http_header_timeout.unwrap_or(edge.header_timeout);
        edge.body_idle_timeout = self.http_body_timeout.unwrap_or(edge.body_idle_timeout);
        edge.idle_timeout = self.http_idle_timeout.unwrap_or(edge.idle_timeout);
        edge.max_connections = self.max_connections.unwrap_or(edge.max_connections);
        edge.max_connections_per_address = self.max_connections_per_address.unwrap_or(edge.max_connections_per_address);
        Ok(daemon::GatewayOptions {
            max_file_size: self.max_file_size.map(|b| b.as_u64()),
            public_url: self.public_url.clone(),
            events_buffer: self.events_buffer,
            events_interval: self.events_interval,
            events_client_timeout: self.events_client_timeout,
            database: self.database.clone(),
            sealing_key: self.sealing_key.clone(),
            edge,
        })
    }

    fn config(&self) -> Result<NodeConfig> {
        let mut data_dir = self.data_dir.clone();
        let (path, explicit) = match &self.config {
            Some(p) => (p.clone(), true),
            None => {
                (data_dir.clone().unwrap_or_else(datamesh_node::config::default_data_dir).join("config.toml"), false)
            }
        };
        let mut cfg = NodeConfig::load(&path, explicit)?;
        if data_dir.is_none() && !explicit {
            data_dir = Some(datamesh_node::config::default_data_dir());
        }
        if let Some(d) = data_dir {
            cfg.data_dir = d;
        }
        if let Some(a) = &self.api {
            let a = a.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
            cfg.api = a.parse().with_context(|| format!("--api {a}: expected 127.0.0.1:PORT"))?;
        }
        if let Some(c) = self.capacity {
            cfg.capacity = c;
        }
        if let Some(c) = self.cache {
            cfg.cache = c;
        }
        if let Some(k) = self.data_shards {
            cfg.data_shards = k;
        }
        if let Some(m) = self.parity_shards {
            cfg.parity_shards = m;
        }
        if !self.listen.is_empty() {
            cfg.listen = self.listen.clone();
        }
        if !self.bootstrap.is_empty() {
            cfg.bootstrap = self.bootstrap.clone();
        }
        cfg.mdns |= self.mdns;
        cfg.offline |= self.offline;
        if let Some(d) = self.heartbeat_interval {
            cfg.heartbeat_interval = d;
        }
        if let Some(d) = self.warning_after {
            cfg.warning_after = d;
        }
        if let Some(d) = self.offline_after {
            cfg.offline_after = d;
        }
        if let Some(d) = self.hedge_after {
            cfg.hedge_after = d;
        }
        if let Some(d) = self.repair_interval {
            cfg.repair_interval = d;
        }
        if let Some(r) = self.repair_rate {
            cfg.repair_rate = r;
        }
        if let Some(d) = self.scrub_interval {
            cfg.scrub_interval = d;
        }
        if let Some(d) = self.audit_interval {
            cfg.audit_interval = d;
        }
        if let Some(d) = self.lease {
            cfg.lease = d;
        }
        if !self.announce.is_empty() {
            cfg.announce = self.announce.clone();
        }
        if let Some(a) = &self.s3 {
            let a = a.trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/');
            cfg.s3 = Some(a.parse().with_context(|| format!("--s3 {a}: expected 127.0.0.1:PORT"))?);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn run(args: NodeArgs) -> Result<()> {
    daemon::run(args.config()?, args.gateway()?).await
}
