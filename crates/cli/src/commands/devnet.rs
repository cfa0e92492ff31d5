//! `datamesh devnet`: its options, passed on to every node it starts.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::devnet;

#[derive(Args)]
pub struct DevnetArgs {
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
    /// Your key file, which the devnet signs in on node-0 (default: $XDG_CONFIG_HOME/datamesh/user.key).
    #[arg(long, env = "DATAMESH_USER_KEY")]
    user_key: Option<PathBuf>,
    /// Do not sign your key in: the CLI then acts as the node's administrator (its api.token).
    #[arg(long)]
    no_login: bool,
}

/// Runs the local network until Ctrl-C.
pub async fn run(a: DevnetArgs) -> Result<()> {
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
    let sign_in = (!a.no_login).then_some(devnet::SignIn { user_key: a.user_key });
    devnet::run(devnet::DevnetOptions { nodes: a.nodes, dir, json: a.json, node_args, sign_in }).await
}
