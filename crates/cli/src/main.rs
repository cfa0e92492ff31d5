//! `datamesh`: one binary that runs a node (`datamesh node`) and is the
//! user's client (`put`, `get`, `ls`, ...).
//!
//! Output contract: results on stdout (with `--json`, exactly one JSON
//! document); logs, progress and warnings on stderr. On success the plain
//! output of `put` and `cid` ends with the CID alone on the last line.
//! Errors print `error: ...` on stderr and exit non-zero.

mod alloc;
mod client;
mod daemon;
mod devnet;
mod durability;
mod transfer;
mod userkey;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use bytesize::ByteSize;
use clap::{Args, Parser, Subcommand, ValueEnum};
use datamesh_api as api;
use datamesh_core::{Chunking, Cid, Cipher, Compression, Erasure};
use datamesh_node::NodeConfig;
use datamesh_pipeline::chunker::DEFAULT_CHUNK_SIZE;
use ed25519_dalek::Signer;
use reqwest::Method;
use serde_json::json;

use crate::client::Client;
use crate::transfer::PutOptions;

#[derive(Parser)]
#[command(name = "datamesh", version, about = "DataMesh: decentralized, encrypted, erasure-coded storage")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// How the client finds its node and the user's key.
#[derive(Args, Clone)]
struct ClientOpts {
    /// Node API URL (`http://HOST:PORT` or `HOST:PORT`); default: the URL the node wrote into its data dir.
    #[arg(long, env = "DATAMESH_API", global = true)]
    api: Option<String>,
    /// API token; default: the `api.token` file in the node's data dir.
    #[arg(long, env = "DATAMESH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// The node's data dir (to find its URL and token).
    #[arg(long, env = "DATAMESH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    /// Your key file (default: $XDG_CONFIG_HOME/datamesh/user.key).
    #[arg(long, env = "DATAMESH_USER_KEY", global = true)]
    user_key: Option<PathBuf>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// No progress bars or notices on stderr.
    #[arg(long, short, global = true)]
    quiet: bool,
}

impl ClientOpts {
    fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(datamesh_node::config::default_data_dir)
    }
    fn client(&self) -> Result<Client> {
        Client::connect(self.api.as_deref(), self.token.as_deref(), &self.data_dir())
    }
    fn user(&self) -> Result<datamesh_pipeline::keys::UserKey> {
        userkey::load_or_create(self.user_key.as_deref(), self.quiet)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Zstd,
    Lz4,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum CipherArg {
    #[value(name = "aes-256-gcm")]
    Aes,
    #[value(name = "xchacha20-poly1305")]
    XChaCha,
}

/// How to cut, compress, encrypt and code a file.
#[derive(Args, Clone)]
struct PutArgs {
    /// Store unencrypted; the CID is the one `ipfs add --cid-version 1` gives.
    #[arg(long)]
    public: bool,
    /// Convergent encryption: your identical files encrypt identically and are stored once.
    #[arg(long, conflicts_with = "public")]
    convergent: bool,
    /// Chunk cipher.
    #[arg(long, value_enum, default_value = "aes-256-gcm")]
    cipher: CipherArg,
    /// Also wrap the file key with the hybrid post-quantum KEM (X25519 + ML-KEM-768).
    #[arg(long)]
    pq: bool,
    /// Also let a passphrase open this file (read from DATAMESH_PASSPHRASE or prompted on a terminal).
    #[arg(long, conflicts_with = "public")]
    passphrase: bool,
    /// Fixed chunk size (e.g. 4MiB).
    #[arg(long, default_value_t = ByteSize::b(DEFAULT_CHUNK_SIZE as u64))]
    chunk_size: ByteSize,
    /// Content-defined chunking (FastCDC) for deduplication: MIN,AVG,MAX (e.g. 256KiB,1MiB,4MiB).
    #[arg(long, value_name = "MIN,AVG,MAX")]
    cdc: Option<String>,
    /// Per-chunk compression, used only when it pays.
    #[arg(long, value_enum, default_value = "zstd")]
    compression: CompressionArg,
    /// Data shards per chunk (default: the node's, 4).
    #[arg(short = 'k', long)]
    data_shards: Option<u16>,
    /// Parity shards per chunk (default: the node's, 2).
    #[arg(short = 'm', long)]
    parity_shards: Option<u16>,
    /// Chunks in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

impl PutArgs {
    fn options(&self, name: Option<String>, progress: bool) -> Result<PutOptions> {
        let chunking = match &self.cdc {
            Some(spec) => {
                let v: Vec<u32> = spec
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<ByteSize>()
                            .map(|b| b.as_u64() as u32)
                            .map_err(|e| anyhow!("--cdc {spec}: {e}"))
                    })
                    .collect::<Result<_>>()?;
                let [min, avg, max] = v[..] else { bail!("--cdc takes MIN,AVG,MAX, e.g. 256KiB,1MiB,4MiB") };
                Chunking::FastCdc { min, avg, max }
            }
            None => {
                Chunking::Fixed { size: u32::try_from(self.chunk_size.as_u64()).context("--chunk-size is too large")? }
            }
        };
        let passphrase = if self.passphrase {
            Some(
                userkey::passphrase("DATAMESH_PASSPHRASE", "Passphrase for this file: ")?
                    .ok_or_else(|| anyhow!("--passphrase needs DATAMESH_PASSPHRASE when stdin is not a terminal"))?,
            )
        } else {
            None
        };
        let erasure = match (self.data_shards, self.parity_shards) {
            (None, None) => None,
            (k, m) => Some(Erasure { k: k.unwrap_or(Erasure::DEFAULT.k), m: m.unwrap_or(Erasure::DEFAULT.m) }),
        };
        Ok(PutOptions {
            chunking,
            compression: match self.compression {
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::Lz4 => Compression::Lz4,
                CompressionArg::None => Compression::None,
            },
            cipher: (!self.public).then_some(match self.cipher {
                CipherArg::Aes => Cipher::Aes256Gcm,
                CipherArg::XChaCha => Cipher::XChaCha20Poly1305,
            }),
            convergent: self.convergent,
            post_quantum: self.pq,
            passphrase,
            erasure,
            concurrency: self.concurrency,
            name,
            progress,
        })
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a node (API on 127.0.0.1; address printed and written to the data dir).
    Node(Box<NodeArgs>),
    /// Run a local network of N nodes on loopback until Ctrl-C.
    Devnet(DevnetArgs),
    /// Probability of losing a chunk per month and year for a k+m code under node churn.
    Durability(durability::DurabilityArgs),
    /// Store a file; prints its CID.
    #[command(alias = "add")]
    Put {
        /// The file.
        file: PathBuf,
        /// Name recorded with the pin (default: the file name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        put: PutArgs,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Fetch a file, verifying every byte.
    #[command(alias = "cat")]
    Get {
        /// The file's CID.
        cid: String,
        /// Output path (`-` for stdout; default: a file named after the CID).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Chunks in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Print the CID a public put would give a file, without storing anything.
    Cid {
        /// The file.
        file: PathBuf,
        /// Accepted for symmetry with `put --public`; CIDs without a node are public CIDs.
        #[arg(long)]
        public: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List pinned files.
    #[command(alias = "list")]
    Ls(#[command(flatten)] ClientOpts),
    /// Show a file's manifest summary and live shards.
    Stat {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Delete a file (signed with your key).
    #[command(alias = "delete")]
    Rm {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Pin a file so garbage collection keeps it.
    Pin {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Unpin a file; `gc` may then reclaim it.
    Unpin {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Reclaim space held by unpinned data.
    Gc(#[command(flatten)] ClientOpts),
    /// Node status and usage.
    Status(#[command(flatten)] ClientOpts),
    /// Peers with their health state, and the routing table's fill.
    Peers(#[command(flatten)] ClientOpts),
    /// Move this node's shards to other nodes before it leaves the network.
    ///
    /// Peers stop placing shards on the node and it refuses new uploads; it
    /// copies every shard it holds to another node, rewrites the files'
    /// location records and hands its manifest replicas on. Waits, printing
    /// progress, until the node can be stopped without any file losing
    /// redundancy. Draining ends when the node restarts.
    Drain {
        /// Start draining and return at once (check later with `datamesh drain`,
        /// which is idempotent).
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Manage your key.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Create an S3 access key pair on the running node (usable at once).
    Create(#[command(flatten)] ClientOpts),
    /// Write your key file to OUT (or stdout), optionally passphrase-protected.
    Export {
        /// Destination (default stdout).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Protect the exported key with a passphrase (DATAMESH_KEY_PASSPHRASE or prompt).
        #[arg(long)]
        passphrase: bool,
        /// Your key file.
        #[arg(long, env = "DATAMESH_USER_KEY")]
        user_key: Option<PathBuf>,
    },
    /// Install a key exported elsewhere as your key on this machine.
    Import {
        /// The exported key (`-` for stdin).
        file: PathBuf,
        /// Replace an existing key (its files become unreadable here).
        #[arg(long)]
        force: bool,
        /// Where to install it.
        #[arg(long, env = "DATAMESH_USER_KEY")]
        user_key: Option<PathBuf>,
    },
    /// Protect your key file with a passphrase (or remove it with --remove).
    /// The passphrase comes from DATAMESH_KEY_PASSPHRASE or a prompt; it is then
    /// asked for whenever the key is used (never prompted without a terminal).
    Passphrase {
        /// Store the key unprotected again.
        #[arg(long)]
        remove: bool,
        /// Your key file.
        #[arg(long, env = "DATAMESH_USER_KEY")]
        user_key: Option<PathBuf>,
    },
    /// Print your public key (give it to people who share files with you).
    Show {
        /// Your key file.
        #[arg(long, env = "DATAMESH_USER_KEY")]
        user_key: Option<PathBuf>,
    },
}

#[derive(Args)]
struct DevnetArgs {
    /// Number of nodes.
    #[arg(long, default_value_t = 6)]
    nodes: usize,
    /// Parent directory of the nodes' data dirs (default: <data home>/datamesh/devnet).
    #[arg(long, env = "DATAMESH_DEVNET_DIR")]
    data_dir: Option<PathBuf>,
    /// Print one JSON document listing the nodes once all are up.
    #[arg(long)]
    json: bool,
    /// Heartbeat interval of every node (e.g. 1s).
    #[arg(long)]
    heartbeat_interval: Option<String>,
    /// WARNING after this much silence (e.g. 2s).
    #[arg(long)]
    warning_after: Option<String>,
    /// OFFLINE after this much silence (e.g. 5s).
    #[arg(long)]
    offline_after: Option<String>,
    /// Default data shards per chunk.
    #[arg(short = 'k', long)]
    data_shards: Option<u16>,
    /// Default parity shards per chunk.
    #[arg(short = 'm', long)]
    parity_shards: Option<u16>,
}

#[derive(Args)]
struct NodeArgs {
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
        Ok(daemon::GatewayOptions {
            max_file_size: self.max_file_size.map(|b| b.as_u64()),
            public_url: self.public_url.clone(),
            events_buffer: self.events_buffer,
            events_interval: self.events_interval,
            events_client_timeout: self.events_client_timeout,
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
            let a = a.trim_start_matches("http://").trim_end_matches('/');
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
            let a = a.trim_start_matches("http://").trim_end_matches('/');
            cfg.s3 = Some(a.parse().with_context(|| format!("--s3 {a}: expected 127.0.0.1:PORT"))?);
        }
        cfg.validate()?;
        Ok(cfg)
    }
}

fn parse_cid(s: &str) -> Result<Cid> {
    Ok(s.parse::<Cid>()?)
}

fn print(json_mode: bool, value: &impl serde::Serialize, plain: impl FnOnce() -> String) {
    if json_mode {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        let text = plain();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Node(args) => daemon::run(args.config()?, args.gateway()?).await,
        Cmd::Durability(a) => durability::run(a),
        Cmd::Devnet(a) => {
            let mut node_args = Vec::new();
            for (flag, v) in [
                ("--heartbeat-interval", a.heartbeat_interval.clone()),
                ("--warning-after", a.warning_after.clone()),
                ("--offline-after", a.offline_after.clone()),
                ("--data-shards", a.data_shards.map(|v| v.to_string())),
                ("--parity-shards", a.parity_shards.map(|v| v.to_string())),
            ] {
                if let Some(v) = v {
                    node_args.push(flag.to_string());
                    node_args.push(v);
                }
            }
            let dir = a.data_dir.unwrap_or_else(|| datamesh_node::config::default_data_dir().join("devnet"));
            devnet::run(devnet::DevnetOptions { nodes: a.nodes, dir, json: a.json, node_args }).await
        }
        Cmd::Put { file, name, put, c } => {
            let user = c.user()?;
            let client = c.client()?;
            let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()));
            let opts = put.options(name, !c.quiet && !c.json)?;
            let r = transfer::put(&client, &user, &file, &opts).await?;
            print(
                c.json,
                &json!({"cid": r.cid, "manifest": r.manifest, "size": r.size, "chunks": r.chunks, "encrypted": opts.cipher.is_some()}),
                || format!("{}", r.cid),
            );
            Ok(())
        }
        Cmd::Get { cid, output, concurrency, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let out = output.unwrap_or_else(|| PathBuf::from(cid.to_string()));
            // The key is loaded only if the file is encrypted.
            let r = transfer::get(&client, || c.user(), &cid, &out, concurrency, !c.quiet && !c.json).await?;
            if out != Path::new("-") {
                print(
                    c.json,
                    &json!({"cid": cid, "bytes": r.bytes, "resumed_from": r.resumed_from, "output": out}),
                    String::new,
                );
            }
            Ok(())
        }
        Cmd::Cid { file, public: _, json } => {
            let cid = transfer::cid_only(&file)?;
            print(json, &json!({"cid": cid}), || cid.to_string());
            Ok(())
        }
        Cmd::Ls(c) => {
            let v: api::FileList = c.client()?.get("/v1/files").await?;
            print(c.json, &v, || {
                v.files
                    .iter()
                    .map(|f| {
                        format!(
                            "{}\t{}\t{}",
                            f.cid,
                            ByteSize::b(f.size).display().iec(),
                            f.name.as_deref().unwrap_or("-")
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        Cmd::Stat { cid, c } => {
            let cid = parse_cid(&cid)?;
            let v: api::FileStat = c.client()?.get(&format!("/v1/files/{cid}")).await?;
            print(c.json, &v, || {
                let total = u32::from(v.k) + u32::from(v.m);
                let full = v.live_shards.iter().filter(|&&n| u32::from(n) == total).count();
                format!(
                    "cid        {}\nunixfs     {}\nsize       {}\nencrypted  {}\nerasure    {}+{}\npinned     {}\nname       {}\nchunks     {} ({} with all {} shards live)",
                    v.cid,
                    v.unixfs.map_or("-".to_string(), |u| u.to_string()),
                    v.size,
                    v.encrypted,
                    v.k,
                    v.m,
                    v.pinned,
                    v.name.as_deref().unwrap_or("-"),
                    v.live_shards.len(),
                    full,
                    total
                )
            });
            Ok(())
        }
        Cmd::Rm { cid, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let (mcid, _) = client.manifest(&cid).await?;
            let user = c.user()?;
            let ts = datamesh_core::clock::unix_secs();
            let sig = user.signing_key().sign(&datamesh_node::delete_message(&mcid, ts));
            let v: api::Removed = client
                .call(
                    client
                        .request(Method::DELETE, &format!("/v1/files/{mcid}"))
                        .header("x-datamesh-timestamp", ts.to_string())
                        .header("x-datamesh-signature", hex::encode(sig.to_bytes())),
                )
                .await?;
            print(c.json, &v, || format!("removed {cid}"));
            Ok(())
        }
        Cmd::Pin { cid, c } => {
            let cid = parse_cid(&cid)?;
            let v: api::Pinned = c.client()?.post(&format!("/v1/pins/{cid}")).await?;
            print(c.json, &v, || format!("pinned {cid}"));
            Ok(())
        }
        Cmd::Unpin { cid, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let v: api::Unpinned = client.call(client.request(Method::DELETE, &format!("/v1/pins/{cid}"))).await?;
            print(c.json, &v, || format!("unpinned {cid}"));
            Ok(())
        }
        Cmd::Gc(c) => {
            let v: api::GcReport = c.client()?.post("/v1/gc").await?;
            print(c.json, &v, || {
                format!(
                    "removed {} shards and {} manifests, freed {}",
                    v.shards_removed,
                    v.manifests_removed,
                    ByteSize::b(v.bytes_freed).display().iec()
                )
            });
            Ok(())
        }
        Cmd::Status(c) => {
            let v: api::NodeStatus = c.client()?.get("/v1/status").await?;
            print(c.json, &v, || {
                let s = &v.store;
                format!(
                    "node       {}\nversion    {}\ndata dir   {}\npeers      {}\nfiles      {}\nshards     {} ({})\nused       {} of {}\nprotection {}",
                    v.node_id,
                    v.version,
                    v.data_dir,
                    v.peers,
                    s.pins,
                    s.shards,
                    ByteSize::b(s.shard_bytes).display().iec(),
                    ByteSize::b(s.used_bytes).display().iec(),
                    ByteSize::b(s.capacity_bytes).display().iec(),
                    v.protection
                ) + &workers_lines(&v.workers)
            });
            Ok(())
        }
        Cmd::Peers(c) => {
            let v: api::Peers = c.client()?.get("/v1/peers").await?;
            print(c.json, &v, || {
                let mut lines: Vec<String> = v
                    .peers
                    .iter()
                    .map(|p| {
                        format!(
                            "{}\t{}\t{}\tlast seen {:.1}s ago\t{} free\treputation {:.0} ({} audits passed, {} failed)",
                            p.peer,
                            p.state,
                            if p.connected { "connected" } else { "disconnected" },
                            p.since_last_seen_secs,
                            p.free_bytes.map(|b| ByteSize::b(b).display().iec().to_string()).unwrap_or("?".into()),
                            p.reputation.score,
                            p.reputation.passed,
                            p.reputation.failed,
                        )
                    })
                    .collect();
                let buckets: Vec<String> =
                    v.routing_table.iter().map(|b| format!("{}:{}", b.bucket, b.entries)).collect();
                lines.push(format!(
                    "k-buckets (index:entries) {}",
                    if buckets.is_empty() { "none".into() } else { buckets.join(" ") }
                ));
                lines.join("\n")
            });
            Ok(())
        }
        Cmd::Drain { no_wait, c } => drain(&c, no_wait).await,
        Cmd::Key { cmd: KeyCmd::Create(c) } => {
            let v: api::AccessKey = c.client()?.post("/v1/keys").await?;
            print(c.json, &v, || {
                format!(
                    "access key id      {}\nsecret access key  {}\n# usable now on this node's S3 API; the secret is not shown again",
                    v.access_key_id, v.secret_access_key
                )
            });
            Ok(())
        }
        Cmd::Key { cmd } => key_cmd(cmd),
    }
}

fn key_cmd(cmd: KeyCmd) -> Result<()> {
    use datamesh_pipeline::keys::UserKey;
    match cmd {
        // Needs the node; handled in `run`.
        KeyCmd::Create(_) => bail!("`key create` talks to the node"),
        KeyCmd::Export { output, passphrase, user_key } => {
            let key = userkey::load_or_create(user_key.as_deref(), false)?;
            let pass = if passphrase {
                Some(
                    userkey::passphrase("DATAMESH_KEY_PASSPHRASE", "Passphrase to protect the exported key: ")?
                        .ok_or_else(|| {
                            anyhow!("--passphrase needs DATAMESH_KEY_PASSPHRASE when stdin is not a terminal")
                        })?,
                )
            } else {
                None
            };
            let bytes = key.to_file_bytes(pass.as_deref());
            match output {
                Some(p) if p != Path::new("-") => {
                    userkey::write_key_file(&p, &bytes)?;
                    eprintln!("exported your key to {} (keep it secret and safe)", p.display());
                }
                _ => {
                    use std::io::Write;
                    std::io::stdout().write_all(&bytes)?;
                }
            }
            Ok(())
        }
        KeyCmd::Import { file, force, user_key } => {
            let bytes = transfer::read_small(&file)?;
            let key = userkey::parse(&file, &bytes)?;
            let dest = userkey::key_path(user_key.as_deref());
            if dest.exists() && !force {
                let existing = userkey::parse(&dest, &std::fs::read(&dest)?)?;
                if existing.public() == key.public() {
                    eprintln!("this key is already installed at {}", dest.display());
                    return Ok(());
                }
                bail!(
                    "a different key is already installed at {}; files stored with it would become unreadable. Export it first, then use --force",
                    dest.display()
                );
            }
            // Store it in the same protection state it came in.
            userkey::write_key_file(&dest, &bytes)?;
            let _: &UserKey = &key;
            println!("{}", key.public());
            Ok(())
        }
        KeyCmd::Passphrase { remove, user_key } => {
            let path = userkey::key_path(user_key.as_deref());
            let bytes = std::fs::read(&path)
                .with_context(|| format!("no key at {}: it is created by the first put", path.display()))?;
            let key = userkey::parse(&path, &bytes)?;
            let new = if remove {
                key.to_file_bytes(None)
            } else {
                let p = match std::env::var("DATAMESH_NEW_KEY_PASSPHRASE") {
                    Ok(p) => p,
                    Err(_) => userkey::passphrase("DATAMESH_KEY_PASSPHRASE", "New passphrase for your key: ")?
                        .ok_or_else(|| anyhow!("set DATAMESH_NEW_KEY_PASSPHRASE (stdin is not a terminal)"))?,
                };
                if p.is_empty() {
                    bail!("an empty passphrase protects nothing; use --remove to store the key unprotected");
                }
                key.to_file_bytes(Some(&p))
            };
            std::fs::remove_file(&path).ok();
            userkey::write_key_file(&path, &new)?;
            eprintln!("{} {}", if remove { "removed the passphrase from" } else { "protected" }, path.display());
            Ok(())
        }
        KeyCmd::Show { user_key } => {
            let key = userkey::load_or_create(user_key.as_deref(), false)?;
            println!("{}", key.public());
            Ok(())
        }
    }
}

/// Exit codes scripts can rely on: 1 any error, 3 not found, 4 not
/// allowed (token or owner signature), 5 out of space, 6 data unavailable
/// or corrupt beyond repair.
/// `datamesh drain`: starts draining, then (unless `no_wait`) polls the
/// progress until the node says it is safe to stop.
async fn drain(c: &ClientOpts, no_wait: bool) -> Result<()> {
    let client = c.client()?;
    let mut v: api::DrainProgress = client.post("/v1/drain").await?;
    let line = |v: &api::DrainProgress| {
        if v.rounds == 0 {
            return "draining: looking for the shards to move".to_string();
        }
        format!(
            "draining: {} of {} shards moved ({} left, {} failed verification and go to repair), {} chunks short of k+m elsewhere, {} files still need manifest copies{}",
            v.shards_moved,
            v.shards_moved + v.shards_to_move as u64,
            v.shards_to_move,
            v.shards_failed,
            v.chunks_short,
            v.files_needing_replicas,
            match v.files_local_only {
                0 => String::new(),
                n => format!(", {n} files stored before the node had peers cannot be drained"),
            }
        )
    };
    if no_wait {
        print(c.json, &v, || {
            "draining started; run `datamesh drain` to wait until it is safe to stop the node".to_string()
        });
        return Ok(());
    }
    let mut last = String::new();
    // One full round after the start is needed before the answer means anything.
    while !(v.safe_to_stop && v.rounds > 0) {
        let now = line(&v);
        if !c.quiet && now != last {
            eprintln!("{now}");
            if let Some(err) = v.errors.first() {
                eprintln!("  retrying: {err}");
            }
            last = now;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        v = client.get("/v1/drain").await?;
    }
    print(c.json, &v, || {
        format!(
            "{} shards moved to other nodes ({}); every file keeps k+m shards and its replicas without this node.\nsafe to stop the node",
            v.shards_moved,
            ByteSize::b(v.bytes_moved).display().iec()
        )
    });
    Ok(())
}

fn exit_code(e: &anyhow::Error) -> i32 {
    match e.downcast_ref::<client::ApiError>() {
        Some(e) => match (e.status.as_u16(), e.code) {
            (404, _) => 3,
            (401 | 403, _) => 4,
            (507, _) => 5,
            (_, api::ErrorCode::DataUnavailable) => 6,
            _ => 1,
        },
        None => 1,
    }
}

/// The `workers` section of `datamesh status`: one line per worker.
fn workers_lines(ws: &[api::WorkerInfo]) -> String {
    let mut out = String::from("\nworkers");
    for w in ws {
        out.push_str(&format!(
            "\n  {:<20} {:<10} {}{}",
            w.name,
            w.state.as_str(),
            w.doing,
            if w.restarts > 0 {
                format!(" (restarted {} times after a panic: {})", w.restarts, w.last_panic.as_deref().unwrap_or(""))
            } else {
                String::new()
            }
        ));
    }
    out
}

fn main() {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("DATAMESH_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(if matches!(cli.cmd, Cmd::Node(_)) { "info" } else { "warn" })
        }))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(exit_code(&e));
    }
}
