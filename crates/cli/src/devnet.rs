//! `datamesh devnet --nodes N`: a local network of N node processes on
//! loopback, each with its own data dir and ports.
//!
//! Node 0 starts first; the others bootstrap from node 0 and node 1 (two
//! entries, so one may be down). Each node's API URL is printed as soon as
//! that node answers. SIGINT or SIGTERM stops every node it started (SIGTERM,
//! then SIGKILL after a grace period) and waits for them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

/// What the devnet runs.
pub struct DevnetOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Parent of the nodes' data dirs (`node-0`, `node-1`, ...).
    pub dir: PathBuf,
    /// Print one JSON document once every node is up.
    pub json: bool,
    /// Sign the CLI's user in on node-0 with their key (`None`: do not).
    pub sign_in: Option<SignIn>,
    /// Extra flags passed to every `datamesh node` (timers, codes).
    pub node_args: Vec<String>,
}

struct Member {
    child: Child,
    dir: PathBuf,
    url: Option<String>,
    s3: Option<String>,
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

fn spawn(dir: &Path, bootstrap: &[String], extra: &[String]) -> Result<Child> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Stale files from an earlier run must not be mistaken for this one's.
    let _ = std::fs::remove_file(dir.join("api.url"));
    let _ = std::fs::remove_file(dir.join("p2p.addrs"));
    let _ = std::fs::remove_file(dir.join("s3.url"));
    let log = std::fs::File::create(dir.join("node.log"))?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "node",
        "--api",
        "127.0.0.1:0",
        "--listen",
        "/ip4/127.0.0.1/tcp/0,/ip4/127.0.0.1/udp/0/quic-v1",
        "--s3",
        "127.0.0.1:0",
        "--data-dir",
    ])
    .arg(dir)
    .args(extra)
    .env_remove("DATAMESH_API")
    .env_remove("DATAMESH_DATA_DIR")
    .env_remove("DATAMESH_LISTEN")
    .env_remove("DATAMESH_BOOTSTRAP")
    .env_remove("DATAMESH_NODE_API")
    .env_remove("DATAMESH_S3")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(log);
    if !bootstrap.is_empty() {
        cmd.arg("--bootstrap").arg(bootstrap.join(","));
    }
    Ok(cmd.spawn()?)
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on a child we started and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn stop_all(members: &mut [Member]) {
    for m in members.iter() {
        signal(m.child.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    for m in members.iter_mut() {
        loop {
            match m.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = m.child.kill();
                    let _ = m.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }
}

/// Whose key the devnet signs in with.
pub struct SignIn {
    /// The user's key file (`None`: the default path).
    pub user_key: Option<PathBuf>,
}

/// The account the devnet makes for its user: the OS user name when it is
/// a valid account name, else `devnet`.
fn account_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| {
            (1..=32).contains(&u.len())
                && u.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
        .filter(|u| u != "admin" && u != "root")
        .unwrap_or_else(|| "devnet".into())
}

/// Signs the CLI's user in on node-0 with their key, so the quick start
/// needs no ceremony and what the user stores is theirs, not the node's
/// administrator's. The account is made on first start, as an
/// administrator (whoever runs a devnet operates it): with a random
/// password nobody sees, used once to register the user's key; the key
/// logs in from then on. Returns the account's name.
async fn sign_in(url: &str, dir: &Path, how: &SignIn) -> Result<String> {
    use crate::client::{Client, http_error};
    use datamesh_client::http::HttpError;
    use reqwest::Method;
    let user = crate::userkey::load_or_create(how.user_key.as_deref(), true)?;
    let name = account_name();
    let admin = Client::connect(Some(url), None, dir, None)?;
    let anon = Client::connect(Some(url), Some(""), dir, None)?;
    let password = hex::encode(rand::random::<[u8; 24]>());
    let create = admin
        .request(Method::POST, "/v1/admin/users")
        .json(&json!({"name": name, "password": password, "role": "admin"}));
    match admin.transport().send(create).await {
        Ok(_) => {
            let login = anon.request(Method::POST, "/v1/login").json(&json!({"name": name, "password": password}));
            let answer: datamesh_api::LoginAnswer = anon.call(login).await?;
            let token = answer.access_token.context("the node answered the login without a token")?;
            let me = Client::connect(Some(url), Some(token.expose()), dir, None)?;
            let key = me
                .request(Method::POST, "/v1/me/login-keys")
                .json(&json!({"name": "devnet", "public_key": hex::encode(user.public().ed25519)}));
            me.transport().send(key).await.map_err(http_error)?;
        }
        // A restarted devnet: the account and its key are there.
        Err(HttpError::Api(e)) if e.status == reqwest::StatusCode::CONFLICT => {}
        Err(e) => return Err(http_error(e)),
    }
    let answer = crate::commands::accounts::key_login(&anon, &name, &user).await?;
    crate::commands::accounts::save_login(&anon, how.user_key.as_deref(), &answer)?;
    Ok(name)
}

/// Runs the devnet until a signal arrives.
pub async fn run(opts: DevnetOptions) -> Result<()> {
    if opts.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let mut members: Vec<Member> = Vec::new();
    let result = run_inner(&opts, &mut members).await;
    stop_all(&mut members);
    if result.is_ok() && !opts.json {
        eprintln!("devnet stopped; data kept in {}", opts.dir.display());
    }
    result
}

async fn run_inner(opts: &DevnetOptions, members: &mut Vec<Member>) -> Result<()> {
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let dir0 = opts.dir.join("node-0");
    members.push(Member { child: spawn(&dir0, &[], &opts.node_args)?, dir: dir0.clone(), url: None, s3: None });
    let boot0 = wait_file(&mut members[0], "p2p.addrs", Duration::from_secs(60)).await?;
    let mut bootstrap: Vec<String> = boot0.lines().take(1).map(str::to_owned).collect();
    if opts.nodes > 1 {
        let dir1 = opts.dir.join("node-1");
        members.push(Member { child: spawn(&dir1, &bootstrap, &opts.node_args)?, dir: dir1, url: None, s3: None });
        let boot1 = wait_file(&mut members[1], "p2p.addrs", Duration::from_secs(60)).await?;
        bootstrap.extend(boot1.lines().take(1).map(str::to_owned));
    }
    for i in 2..opts.nodes {
        let d = opts.dir.join(format!("node-{i}"));
        members.push(Member { child: spawn(&d, &bootstrap, &opts.node_args)?, dir: d, url: None, s3: None });
    }
    // Print each URL as soon as its node answers.
    let start = Instant::now();
    let mut out = std::io::stdout();
    while members.iter().any(|m| m.url.is_none()) {
        for (i, m) in members.iter_mut().enumerate() {
            if m.url.is_none() {
                // s3.url is written before api.url, so both are there.
                if let Some(u) = read_trimmed(&m.dir.join("api.url")) {
                    m.s3 = read_trimmed(&m.dir.join("s3.url"));
                    if !opts.json {
                        writeln!(out, "node-{i} {u}")?;
                        if let Some(s3) = &m.s3 {
                            writeln!(out, "node-{i} s3 {s3}")?;
                        }
                        out.flush()?;
                    }
                    m.url = Some(u);
                } else if let Ok(Some(status)) = m.child.try_wait() {
                    bail!("node-{i} exited during start-up ({status}); see {}", m.dir.join("node.log").display());
                }
            }
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!(
                "the devnet's nodes did not all start within 120 s; see the node.log files under {}",
                opts.dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let signed_in = match &opts.sign_in {
        None => None,
        Some(how) => {
            let url = members[0].url.clone().unwrap_or_default();
            match sign_in(&url, &members[0].dir, how).await {
                Ok(name) => Some(name),
                Err(e) => {
                    eprintln!(
                        "warning: could not sign your key in on node-0 ({e:#}); the CLI acts as the node's administrator"
                    );
                    None
                }
            }
        }
    };
    if opts.json {
        let nodes: Vec<_> = members
            .iter()
            .enumerate()
            .map(|(i, m)| {
                json!({
                    "index": i,
                    "api": m.url,
                    "s3": m.s3,
                    "data_dir": m.dir,
                    "token": read_trimmed(&m.dir.join("api.token")),
                    "p2p": read_trimmed(&m.dir.join("p2p.addrs")).map(|s| s.lines().map(str::to_owned).collect::<Vec<_>>()),
                    "pid": m.child.id(),
                })
            })
            .collect();
        writeln!(out, "{}", json!({ "nodes": nodes, "dir": opts.dir, "user": signed_in }))?;
    } else {
        writeln!(out, "# point the CLI at node-0 (any node works; use its own data dir for its token):")?;
        writeln!(out, "export DATAMESH_API={}", members[0].url.as_deref().unwrap_or(""))?;
        writeln!(out, "export DATAMESH_DATA_DIR={}", members[0].dir.display())?;
        if let Some(name) = &signed_in {
            writeln!(out, "# you are signed in on node-0 as {name} with your key (`datamesh account whoami`)")?;
        }
        writeln!(
            out,
            "# S3: create a key with `datamesh key create`, then use endpoint {}",
            members[0].s3.as_deref().unwrap_or("")
        )?;
        writeln!(out, "# Ctrl-C stops the devnet")?;
    }
    out.flush()?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, m) in members.iter_mut().enumerate() {
                    if let Ok(Some(status)) = m.child.try_wait() {
                        eprintln!("warning: node-{i} exited ({status}); see {}", m.dir.join("node.log").display());
                        m.url = None;
                    }
                }
                members.retain(|m| m.url.is_some());
                if members.is_empty() {
                    bail!("every devnet node exited");
                }
            }
        }
    }
}

async fn wait_file(m: &mut Member, name: &str, timeout: Duration) -> Result<String> {
    let start = Instant::now();
    loop {
        if let Some(s) = read_trimmed(&m.dir.join(name)) {
            return Ok(s);
        }
        if let Ok(Some(status)) = m.child.try_wait() {
            bail!("a devnet node exited during start-up ({status}); see {}", m.dir.join("node.log").display());
        }
        if start.elapsed() > timeout {
            bail!("a devnet node did not start within {timeout:?}; see {}", m.dir.join("node.log").display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
