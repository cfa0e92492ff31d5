//! `datamesh`: one binary that runs a node (`datamesh node`) and is the
//! user's client (`put`, `get`, `ls`, ...).
//!
//! Output contract: results on stdout (with `--json`, exactly one JSON
//! document); logs, progress and warnings on stderr. On success the plain
//! output of `put` and `cid` ends with the CID alone on the last line.
//! Errors print `error: ...` on stderr and exit non-zero.
//!
//! The commands live in `commands/`, one module per group; this file parses
//! the command line, dispatches, and maps errors to exit codes.

mod alloc;
mod client;
mod commands;
mod daemon;
mod devnet;
mod login;
mod partial;
mod private;
mod transfer;
mod userkey;

use anyhow::Result;
use clap::{Parser, Subcommand};
use datamesh_api as api;

use crate::commands::{accounts, durability, files, keys, node, ops};

#[derive(Parser)]
#[command(name = "datamesh", version, about = "DataMesh: decentralized, encrypted, erasure-coded storage")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The top-level commands, in the order `datamesh --help` lists them. A
/// group whose commands sit at the top level (`put`, `status`, ...) is a
/// flattened variant; one under its own word (`key`) is a subcommand.
#[derive(Subcommand)]
enum Cmd {
    /// Run a node (API on 127.0.0.1; address printed and written to the data dir).
    Node(Box<node::NodeArgs>),
    /// Run a local network of N nodes on loopback until Ctrl-C.
    Devnet(commands::devnet::DevnetArgs),
    /// Probability of losing a chunk per month and year for a k+m code under node churn.
    Durability(durability::DurabilityArgs),
    // put, get, cid, ls, stat, rm, pin, unpin, gc
    #[command(flatten)]
    Files(files::FilesCmd),
    // status, peers, drain
    #[command(flatten)]
    Ops(ops::OpsCmd),
    // share, unshare
    #[command(flatten)]
    Sharing(commands::sharing::SharingCmd),
    /// Manage your key.
    Key {
        #[command(subcommand)]
        cmd: keys::KeyCmd,
    },
    /// Your account on a node: sign up, log in (password or key), log out, whoami.
    Account {
        #[command(subcommand)]
        cmd: accounts::AccountCmd,
    },
    /// The node administrator's users, tiers and audit log.
    Admin {
        #[command(subcommand)]
        cmd: accounts::AdminCmd,
    },
    /// What you store and download, with your tier's limits.
    Usage(accounts::UsageArgs),
}

async fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Node(args) => node::run(*args).await,
        Cmd::Devnet(a) => commands::devnet::run(a).await,
        Cmd::Durability(a) => durability::run(a),
        Cmd::Files(cmd) => files::run(cmd).await,
        Cmd::Ops(cmd) => ops::run(cmd).await,
        Cmd::Sharing(cmd) => commands::sharing::run(cmd).await,
        Cmd::Key { cmd } => keys::run(cmd).await,
        Cmd::Account { cmd } => accounts::run_account(cmd).await,
        Cmd::Admin { cmd } => accounts::run_admin(cmd).await,
        Cmd::Usage(a) => accounts::run_usage(a).await,
    }
}

/// Exit codes scripts can rely on: 1 any error, 3 not found, 4 not
/// allowed (token or owner signature), 5 out of space, 6 data unavailable
/// or corrupt beyond repair.
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

fn main() {
    let cli = Cli::parse();
    let mut filter = tracing_subscriber::EnvFilter::try_from_env("DATAMESH_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(if matches!(cli.cmd, Cmd::Node(_)) { "info" } else { "warn" })
    });
    // The S3 library logs each request with its `Authorization` header and
    // presigned signature at DEBUG, signature mismatches with the expected
    // signature, and every refused request at ERROR; whatever level is asked
    // for, it logs warnings only, and its request handling nothing (the
    // gateway logs refusals at DEBUG and its own faults at ERROR).
    for d in ["s3s=warn", "s3s::ops=off"] {
        if let Ok(d) = d.parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
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

#[cfg(test)]
mod tests {
    /// clap's own consistency checks over every command (two arguments of
    /// one name, as `key create --api` once shared the global `--api`, are
    /// caught here instead of by a panic at run time).
    #[test]
    fn the_command_line_is_consistent() {
        // clap runs these checks in debug builds only.
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    /// Every command takes the global options with its own flags (release
    /// builds too, where clap's checks above are compiled out).
    #[test]
    fn global_options_parse_beside_every_commands_own_flags() {
        let node = ["--api", "http://127.0.0.1:1", "--token", "t", "--data-dir", "/nonexistent", "--json"];
        for cmd in [&["key", "create", "--api-key"][..], &["key", "list"], &["ls"], &["account", "whoami"], &["usage"]]
        {
            let args: Vec<&str> = ["datamesh"].iter().chain(cmd).chain(&node).copied().collect();
            let parsed = std::panic::catch_unwind(|| <super::Cli as clap::Parser>::try_parse_from(&args));
            assert!(matches!(parsed, Ok(Ok(_))), "{args:?} does not parse");
        }
    }
}
