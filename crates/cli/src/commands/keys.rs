//! `datamesh key`: the user's key file (export, import, passphrase, show),
//! and S3 access keys made on the node (`key create`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use datamesh_api as api;

use super::{ClientOpts, print};
use crate::{transfer, userkey};

/// `datamesh key` subcommands.
#[derive(Subcommand)]
pub enum KeyCmd {
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

/// Runs one `key` subcommand.
pub async fn run(cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create(c) => {
            let v: api::AccessKey = c.client()?.post("/v1/keys").await?;
            print(c.json, &v, || {
                format!(
                    "access key id      {}\nsecret access key  {}\n# usable now on this node's S3 API; the secret is not shown again",
                    v.access_key_id, v.secret_access_key
                )
            });
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
