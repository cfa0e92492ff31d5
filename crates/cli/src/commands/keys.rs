//! `datamesh key`: the user's key file (export, import, passphrase, show),
//! and the S3 access keys and API keys of an account on the node
//! (`key create`, `key list`, `key revoke`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use datamesh_api as api;
use reqwest::Method;
use zeroize::Zeroizing;

use super::{ClientOpts, print};
use crate::{transfer, userkey};

/// `datamesh key` subcommands.
#[derive(Subcommand)]
pub enum KeyCmd {
    /// Create an S3 access key pair (or an API key) on the running node, usable at once.
    Create(CreateKey),
    /// List your keys (the administrator: `--user NAME`'s), revoked ones included.
    List {
        /// Another user's keys (administrator only).
        #[arg(long)]
        user: Option<String>,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Revoke a key: refused from its next request on.
    Revoke {
        /// The key id (S3 access key id, or API key id `ak_...`).
        id: String,
        #[command(flatten)]
        c: ClientOpts,
    },
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

/// `datamesh key create`.
#[derive(clap::Args)]
pub struct CreateKey {
    /// The user the key is for (administrator only; default: you).
    #[arg(long)]
    user: Option<String>,
    /// An API key (`Authorization: Bearer dmak_...`) instead of an S3 key.
    /// (Not `--api`: that is every command's node URL, and one name for
    /// both made clap panic whenever `DATAMESH_API` was set.)
    #[arg(long = "api-key")]
    api_key: bool,
    /// A label for the key.
    #[arg(long)]
    name: Option<String>,
    /// When the key stops working, from now (`30d`, `12h`).
    #[arg(long, value_parser = humantime::parse_duration)]
    expires: Option<std::time::Duration>,
    /// Operations it allows: read, write, delete, list, admin (comma-separated;
    /// default: those of the credential creating it).
    #[arg(long, value_delimiter = ',')]
    ops: Vec<String>,
    /// Limit it to a bucket, or a key prefix in one (`BUCKET` or `BUCKET/PREFIX`; repeatable).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    #[command(flatten)]
    c: ClientOpts,
}

fn describe(k: &api::keys::KeyEntry) -> String {
    let on = k.buckets.as_ref().map(|b| format!(" on {}", b.join(","))).unwrap_or_default();
    let state = if k.revoked {
        " (revoked)".to_string()
    } else {
        k.expires_at.map(|t| format!(" (expires at {t})")).unwrap_or_default()
    };
    format!("{}  {}  {}  {}  {}{on}{state}", k.key_id, k.kind, k.user, k.name, k.ops.join(","))
}

/// Runs one `key` subcommand.
pub async fn run(cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create(k) => {
            let req = api::keys::NewKey {
                kind: Some(if k.api_key { "api" } else { "s3" }.into()),
                name: k.name,
                expires_in: k.expires.map(|d| d.as_secs()),
                ops: (!k.ops.is_empty()).then_some(k.ops),
                buckets: (!k.buckets.is_empty()).then_some(k.buckets),
                prefix: None,
                user: k.user,
            };
            let client = k.c.client()?;
            let v: api::keys::CreatedKey = client.call(client.request(Method::POST, "/v1/keys").json(&req)).await?;
            match (&v.access_key_id, &v.secret_access_key, &v.token) {
                (Some(id), Some(secret), _) => {
                    // `--json` prints exactly what scripts have always read.
                    let pair = api::AccessKey { access_key_id: id.clone(), secret_access_key: secret.clone() };
                    print(k.c.json, &pair, || {
                        format!(
                            "access key id      {id}\nsecret access key  {}\n# for user {}: usable now on this node's S3 API; the secret is not shown again",
                            secret.expose(),
                            v.key.user
                        )
                    });
                }
                (_, _, Some(token)) => print(k.c.json, &v, || {
                    format!(
                        "api key  {}\n# id {} for user {}: send it as `Authorization: Bearer ...`; it is not shown again",
                        token.expose(),
                        v.key.key_id,
                        v.key.user
                    )
                }),
                _ => bail!("the node answered a key without its secret"),
            }
            Ok(())
        }
        KeyCmd::List { user, c } => {
            let client = c.client()?;
            let mut rb = client.request(Method::GET, "/v1/keys");
            if let Some(u) = &user {
                rb = rb.query(&[("user", u)]);
            }
            let v: api::keys::KeyList = client.call(rb).await?;
            print(c.json, &v, || v.keys.iter().map(describe).collect::<Vec<_>>().join("\n"));
            Ok(())
        }
        KeyCmd::Revoke { id, c } => {
            let client = c.client()?;
            client
                .transport()
                .send(client.request(Method::DELETE, &format!("/v1/keys/{id}")))
                .await
                .map_err(crate::client::http_error)?;
            if c.json {
                println!("{}", serde_json::json!({ "revoked": id }));
            } else {
                eprintln!("revoked {id}: refused from its next request on");
            }
            Ok(())
        }
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
            let bytes = Zeroizing::new(key.to_file_bytes(pass.as_ref().map(|p| p.as_str())));
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
            let bytes = Zeroizing::new(transfer::read_small(&file)?);
            let key = userkey::parse(&file, &bytes)?;
            let dest = userkey::key_path(user_key.as_deref());
            if dest.exists() && !force {
                let existing = userkey::parse(&dest, &userkey::read_key_file(&dest)?.unwrap_or_default())?;
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
            println!("{}", key.public());
            Ok(())
        }
        KeyCmd::Passphrase { remove, user_key } => {
            let path = userkey::key_path(user_key.as_deref());
            let bytes = userkey::read_key_file(&path)?
                .with_context(|| format!("no key at {}: it is created by the first put", path.display()))?;
            let key = userkey::parse(&path, &bytes)?;
            // The new file's bytes hold the key in clear when unprotected.
            let new = Zeroizing::new(if remove {
                key.to_file_bytes(None)
            } else {
                let p = match std::env::var("DATAMESH_NEW_KEY_PASSPHRASE") {
                    Ok(p) => Zeroizing::new(p),
                    Err(_) => userkey::passphrase("DATAMESH_KEY_PASSPHRASE", "New passphrase for your key: ")?
                        .ok_or_else(|| anyhow!("set DATAMESH_NEW_KEY_PASSPHRASE (stdin is not a terminal)"))?,
                };
                if p.is_empty() {
                    bail!("an empty passphrase protects nothing; use --remove to store the key unprotected");
                }
                key.to_file_bytes(Some(&p))
            });
            // Written beside it, synced and renamed over it: the old key
            // stays whole until the new one is on disk.
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
