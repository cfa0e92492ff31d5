//! The node's state as its operator sees it: `status`, `peers`, `drain`.

use anyhow::Result;
use bytesize::ByteSize;
use clap::Subcommand;
use datamesh_api as api;

use super::{ClientOpts, print};

/// The operator's commands, flattened into the top level (`datamesh status`, ...).
#[derive(Subcommand)]
pub enum OpsCmd {
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
}

/// Runs one operator command.
pub async fn run(cmd: OpsCmd) -> Result<()> {
    match cmd {
        OpsCmd::Status(c) => {
            let v: api::NodeStatus = c.client()?.get("/v1/status").await?;
            print(c.json, &v, || {
                let s = &v.store;
                format!(
                    "node       {}\nversion    {}\ndata dir   {}\npeers      {}\nfiles      {}\nshards     {} ({})\nrecords    {} ({})\nused       {} of {}\nprotection {}",
                    v.node_id,
                    v.version,
                    v.data_dir,
                    v.peers,
                    s.pins,
                    s.shards,
                    ByteSize::b(s.shard_bytes).display().iec(),
                    s.state_records,
                    ByteSize::b(s.state_bytes).display().iec(),
                    ByteSize::b(s.used_bytes).display().iec(),
                    ByteSize::b(s.capacity_bytes).display().iec(),
                    v.protection
                ) + &workers_lines(&v.workers)
            });
            Ok(())
        }
        OpsCmd::Peers(c) => {
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
        OpsCmd::Drain { no_wait, c } => drain(&c, no_wait).await,
    }
}

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
