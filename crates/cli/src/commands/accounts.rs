//! Accounts from the command line: `datamesh account ...` (sign-up, login
//! by password or key, logout, whoami), `datamesh admin ...` (users, tiers,
//! audit log) and `datamesh usage`.

use std::io::{BufRead, IsTerminal};

use anyhow::{Context, Result, bail};
use bytesize::ByteSize;
use clap::{Args, Subcommand};
use datamesh_api as api;
use datamesh_pipeline::keys::UserKey;
use ed25519_dalek::Signer;
use reqwest::Method;
use serde_json::json;

use super::{ClientOpts, print};
use crate::client::{Client, http_error};
use crate::login::{self, SavedLogin};

/// `datamesh account ...`.
#[derive(Subcommand)]
pub enum AccountCmd {
    /// Sign up on the node (when it allows sign-up).
    Create {
        /// The user name.
        name: String,
        /// Read the password from the first line of stdin (else a prompt).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Log in and save the login for later commands (beside your key, mode 0600).
    Login {
        /// The user name (default: the last one logged in).
        name: Option<String>,
        /// Log in by signing the node's challenge with your DataMesh key
        /// (register it first with `datamesh account add-key`).
        #[arg(long)]
        key: bool,
        /// Read the password from the first line of stdin (else a prompt).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Register your DataMesh key for `account login --key`.
    AddKey {
        /// A label for the key.
        #[arg(long, default_value = "datamesh key")]
        label: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Publish your public encryption keys, so that others can share
    /// encrypted files with you (`datamesh share CID --to YOU`).
    PublishKeys {
        /// Also publish your X-Wing key, for files put with `--pq`.
        #[arg(long)]
        pq: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Log out: revoke the saved login's tokens and forget them.
    Logout(#[command(flatten)] ClientOpts),
    /// Who the CLI acts as on this node.
    Whoami(#[command(flatten)] ClientOpts),
}

/// `datamesh admin ...` (the node's administrator).
#[derive(Subcommand)]
pub enum AdminCmd {
    /// Users.
    User {
        #[command(subcommand)]
        cmd: UserCmd,
    },
    /// Tiers and their limits.
    Tier {
        #[command(subcommand)]
        cmd: TierCmd,
    },
    /// The audit log (oldest first).
    Audit {
        /// Verify the hash chain instead of listing it.
        #[arg(long)]
        verify: bool,
        /// Rows after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// At most this many rows.
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[command(flatten)]
        c: ClientOpts,
    },
}

/// `datamesh admin user ...`.
#[derive(Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create {
        /// The user name.
        name: String,
        /// The tier.
        #[arg(long, default_value = "free")]
        tier: String,
        /// Make the user an administrator.
        #[arg(long)]
        admin: bool,
        /// Read the password from the first line of stdin (else a prompt on
        /// a terminal, else no password: key login only).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// List users.
    List(#[command(flatten)] ClientOpts),
    /// Move a user to a tier.
    SetTier {
        /// The user name.
        name: String,
        /// The tier.
        tier: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Disable a user: every credential of theirs is refused from the next request.
    Disable {
        /// The user name.
        name: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Enable a disabled user.
    Enable {
        /// The user name.
        name: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Delete a user, their credentials and grants; the files they own are unpinned.
    Delete {
        /// The user name.
        name: String,
        #[command(flatten)]
        c: ClientOpts,
    },
}

/// `datamesh admin tier ...`.
#[derive(Subcommand)]
pub enum TierCmd {
    /// List tiers.
    List(#[command(flatten)] ClientOpts),
    /// Create or change a tier (an absent limit is unlimited).
    Set {
        /// The tier's name.
        name: String,
        /// Bytes stored.
        #[arg(long)]
        max_stored_bytes: Option<u64>,
        /// Bytes downloaded per month.
        #[arg(long)]
        max_transfer_bytes: Option<u64>,
        /// API calls per hour.
        #[arg(long)]
        max_calls_per_hour: Option<u32>,
        /// Bytes per file.
        #[arg(long)]
        max_file_bytes: Option<u64>,
        /// Number of files.
        #[arg(long)]
        max_files: Option<u64>,
        /// The tier comes with an SLA.
        #[arg(long)]
        sla: bool,
        #[command(flatten)]
        c: ClientOpts,
    },
}

/// `datamesh usage`.
#[derive(Args)]
pub struct UsageArgs {
    #[command(flatten)]
    c: ClientOpts,
}

/// A password: the first line of stdin, or a prompt on a terminal.
fn password(from_stdin: bool, prompt: &str) -> Result<Option<String>> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line).context("cannot read the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']).to_string();
        if pw.is_empty() {
            bail!("stdin gave an empty password");
        }
        return Ok(Some(pw));
    }
    if std::io::stdin().is_terminal() {
        return Ok(Some(rpassword::prompt_password(prompt)?));
    }
    Ok(None)
}

/// Sends a request whose success has no body (204).
async fn send(client: &Client, rb: reqwest::RequestBuilder) -> Result<()> {
    client.transport().send(rb).await.map_err(http_error)?;
    Ok(())
}

fn account_line(a: &api::Account) -> String {
    format!("{}\t{}\t{}{}", a.name, a.role, a.tier, if a.disabled { "\tdisabled" } else { "" })
}

fn limit(v: Option<u64>) -> String {
    v.map(|b| ByteSize::b(b).display().iec().to_string()).unwrap_or_else(|| "unlimited".into())
}

/// Logs `name` in on `client`'s node by signing its challenge with the
/// user's key (the node has the key's public half as a login key).
pub async fn key_login(client: &Client, name: &str, user: &UserKey) -> Result<api::LoginAnswer> {
    let ch: api::Challenge = client.post("/v1/login/challenge").await?;
    let nonce: [u8; 32] = hex::decode(&ch.nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .context("the node's challenge has a malformed nonce")?;
    // The message format of services' keylogin: the node checks audience,
    // nonce, expiry and user.
    let message = format!(
        "datamesh-login-v1\naudience={}\nnonce={}\nexpires={}\nuser={}\n",
        ch.audience,
        hex::encode(nonce),
        ch.expires_at,
        name
    );
    let signature = user.signing_key().sign(message.as_bytes());
    let body = api::SignatureLogin {
        challenge: ch,
        name: name.to_string(),
        public_key: hex::encode(user.public().ed25519),
        signature: hex::encode(signature.to_bytes()),
        session: false,
    };
    client.call(client.request(Method::POST, "/v1/login/signature").json(&body)).await
}

/// Saves `answer`'s tokens as the login for `client`'s node.
pub fn save_login(client: &Client, user_key: Option<&std::path::Path>, answer: &api::LoginAnswer) -> Result<()> {
    let (Some(access_token), Some(access_expires_at), Some(refresh_token), Some(refresh_expires_at)) = (
        answer.access_token.clone(),
        answer.access_expires_at,
        answer.refresh_token.clone(),
        answer.refresh_expires_at,
    ) else {
        bail!("the node answered the login without tokens")
    };
    let saved = SavedLogin {
        api: client.transport().base().to_string(),
        name: answer.user.name.clone(),
        access_token,
        access_expires_at,
        refresh_token,
        refresh_expires_at,
    };
    login::save(user_key, &saved)
}

/// Runs one `account` command.
pub async fn run_account(cmd: AccountCmd) -> Result<()> {
    match cmd {
        AccountCmd::Create { name, password_stdin, c } => {
            let Some(pw) = password(password_stdin, "Password: ")? else {
                bail!("no password: pass --password-stdin or run on a terminal")
            };
            let client = c.anonymous()?;
            let rb = client.request(Method::POST, "/v1/accounts").json(&json!({"name": name, "password": pw}));
            let a: api::Account = client.call(rb).await?;
            print(c.json, &a, || {
                format!("created {} (tier {}); log in with `datamesh account login {}`", a.name, a.tier, a.name)
            });
            Ok(())
        }
        AccountCmd::Login { name, key, password_stdin, c } => {
            let name = match name.or_else(|| login::load(c.user_key_path()).map(|l| l.name)) {
                Some(n) => n,
                None => bail!("give your user name: `datamesh account login NAME`"),
            };
            let client = c.anonymous()?;
            let answer: api::LoginAnswer = if key {
                key_login(&client, &name, &c.user()?).await?
            } else {
                let Some(pw) = password(password_stdin, &format!("Password for {name}: "))? else {
                    bail!("no password: pass --password-stdin, run on a terminal, or log in with --key")
                };
                let body = api::PasswordLogin { name: name.clone(), password: pw, session: false };
                client.call(client.request(Method::POST, "/v1/login").json(&body)).await?
            };
            save_login(&client, c.user_key_path(), &answer)?;
            print(c.json, &answer.user, || format!("logged in as {}", answer.user.name));
            Ok(())
        }
        AccountCmd::AddKey { label, c } => {
            let user = c.user()?;
            let client = c.client()?;
            let body = json!({"name": label, "public_key": hex::encode(user.public().ed25519)});
            send(&client, client.request(Method::POST, "/v1/me/login-keys").json(&body)).await?;
            print(c.json, &json!({"added": true}), || {
                "your key can now log in: `datamesh account login NAME --key`".into()
            });
            Ok(())
        }
        AccountCmd::PublishKeys { pq, c } => {
            // Only the public halves leave this machine.
            let public = c.user()?.public();
            let client = c.client()?;
            let mut keys = vec![("x25519", hex::encode(public.x25519))];
            if pq {
                keys.push(("x-wing", hex::encode(&public.xwing)));
            }
            for (algorithm, key) in &keys {
                let body = json!({"algorithm": algorithm, "public_key": key});
                send(&client, client.request(Method::POST, "/v1/me/encryption-keys").json(&body)).await?;
            }
            let published: Vec<&str> = keys.iter().map(|k| k.0).collect();
            print(c.json, &json!({"published": published}), || {
                format!(
                    "published your {} public key: others can `datamesh share CID --to` you",
                    published.join(" and ")
                )
            });
            Ok(())
        }
        AccountCmd::Logout(c) => {
            let base = Client::base_url(c.api.as_deref(), &c.data_dir())?;
            let Some(saved) = login::load(c.user_key_path()).filter(|l| l.api == base) else {
                print(c.json, &json!({"logged_out": false}), || "not logged in to this node".into());
                return Ok(());
            };
            // The login's access token (refreshed if it expired) names its
            // family: revoking it revokes the refresh token too.
            let Some(token) = login::access_token(c.user_key_path(), &base, c.ca_cert()).await else {
                login::forget(c.user_key_path())?;
                print(c.json, &json!({"logged_out": true}), || {
                    format!("logged out {} (the login had expired)", saved.name)
                });
                return Ok(());
            };
            let client = Client::connect(Some(&base), Some(&token), &c.data_dir(), c.ca_cert())?;
            let revoked = send(&client, client.request(Method::POST, "/v1/logout")).await;
            login::forget(c.user_key_path())?;
            if let Err(e) = revoked {
                tracing::warn!(error = %e, "the node did not revoke the login; it was forgotten here");
            }
            print(c.json, &json!({"logged_out": true}), || format!("logged out {}", saved.name));
            Ok(())
        }
        AccountCmd::Whoami(c) => {
            let a: api::Account = c.client()?.get("/v1/me").await?;
            print(c.json, &a, || account_line(&a));
            Ok(())
        }
    }
}

/// Runs one `admin` command.
pub async fn run_admin(cmd: AdminCmd) -> Result<()> {
    match cmd {
        AdminCmd::User { cmd } => run_user(cmd).await,
        AdminCmd::Tier { cmd } => run_tier(cmd).await,
        AdminCmd::Audit { verify, after, limit, c } => {
            let client = c.client()?;
            if verify {
                let v: api::AuditVerdict = client.get("/v1/admin/audit/verify").await?;
                print(c.json, &v, || match (&v.head, v.broken_at) {
                    (Some(head), _) if v.ok => format!("ok: {} rows verify; head {head}", v.rows),
                    (_, Some(seq)) => {
                        format!("BROKEN at row {seq}: {}", v.problem.clone().unwrap_or_default())
                    }
                    _ => "BROKEN".into(),
                });
                if !v.ok {
                    bail!("the audit log does not verify: restore the accounts database from a backup and investigate");
                }
                return Ok(());
            }
            let page: api::AuditPage = client.get(&format!("/v1/admin/audit?after={after}&limit={limit}")).await?;
            print(c.json, &page, || {
                page.records
                    .iter()
                    .map(|r| format!("{}\t{}\t{}\t{}\t{}\t{}", r.seq, r.at, r.actor, r.action, r.target, r.detail))
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
    }
}

async fn patch(c: &ClientOpts, name: &str, body: serde_json::Value) -> Result<()> {
    let client = c.client()?;
    let a: api::Account =
        client.call(client.request(Method::PATCH, &format!("/v1/admin/users/{name}")).json(&body)).await?;
    print(c.json, &a, || account_line(&a));
    Ok(())
}

async fn run_user(cmd: UserCmd) -> Result<()> {
    match cmd {
        UserCmd::Create { name, tier, admin, password_stdin, c } => {
            let pw = password(password_stdin, &format!("Password for {name}: "))?;
            let body = api::NewAccount {
                name,
                password: pw,
                role: Some(if admin { "admin" } else { "user" }.into()),
                tier: Some(tier),
            };
            let client = c.client()?;
            let a: api::Account = client.call(client.request(Method::POST, "/v1/admin/users").json(&body)).await?;
            print(c.json, &a, || account_line(&a));
            Ok(())
        }
        UserCmd::List(c) => {
            let l: api::AccountList = c.client()?.get("/v1/admin/users").await?;
            print(c.json, &l, || l.users.iter().map(account_line).collect::<Vec<_>>().join("\n"));
            Ok(())
        }
        UserCmd::SetTier { name, tier, c } => patch(&c, &name, json!({"tier": tier})).await,
        UserCmd::Disable { name, c } => patch(&c, &name, json!({"disabled": true})).await,
        UserCmd::Enable { name, c } => patch(&c, &name, json!({"disabled": false})).await,
        UserCmd::Delete { name, c } => {
            let client = c.client()?;
            send(&client, client.request(Method::DELETE, &format!("/v1/admin/users/{name}"))).await?;
            print(c.json, &json!({"deleted": name}), || format!("deleted {name}"));
            Ok(())
        }
    }
}

async fn run_tier(cmd: TierCmd) -> Result<()> {
    match cmd {
        TierCmd::List(c) => {
            let l: api::TierList = c.client()?.get("/v1/admin/tiers").await?;
            print(c.json, &l, || {
                l.tiers
                    .iter()
                    .map(|t| {
                        format!(
                            "{}\tstored {}\ttransfer {}/month\tfile {}\tfiles {}\tcalls {}/h{}",
                            t.name,
                            limit(t.max_stored_bytes),
                            limit(t.max_transfer_bytes),
                            limit(t.max_file_bytes),
                            t.max_files.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
                            t.max_calls_per_hour.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
                            if t.sla { "\tSLA" } else { "" }
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        TierCmd::Set {
            name,
            max_stored_bytes,
            max_transfer_bytes,
            max_calls_per_hour,
            max_file_bytes,
            max_files,
            sla,
            c,
        } => {
            let t = api::Tier {
                name: name.clone(),
                max_stored_bytes,
                max_transfer_bytes,
                max_calls_per_hour,
                max_file_bytes,
                max_files,
                sla,
            };
            let client = c.client()?;
            let t: api::Tier =
                client.call(client.request(Method::PUT, &format!("/v1/admin/tiers/{name}")).json(&t)).await?;
            print(c.json, &t, || format!("tier {} set", t.name));
            Ok(())
        }
    }
}

/// Runs `datamesh usage`.
pub async fn run_usage(a: UsageArgs) -> Result<()> {
    let u: api::Usage = a.c.client()?.get("/v1/me/usage").await?;
    print(a.c.json, &u, || {
        let used = |v: u64| ByteSize::b(v).display().iec().to_string();
        let mut s = format!(
            "tier        {}\nstored      {} of {}\nfiles       {} of {}\ndownloaded  {} of {} this month\nin progress {} ({} files)",
            u.tier.name,
            used(u.stored_bytes),
            limit(u.tier.max_stored_bytes),
            u.files,
            u.tier.max_files.map(|n| n.to_string()).unwrap_or_else(|| "unlimited".into()),
            used(u.downloaded_bytes),
            limit(u.tier.max_transfer_bytes),
            used(u.reserved_bytes),
            u.reserved_files,
        );
        if !u.warnings.is_empty() {
            s += &format!("\nwarning     80 % or more of: {}", u.warnings.join(", "));
        }
        s
    });
    Ok(())
}
