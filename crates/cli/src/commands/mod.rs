//! The `datamesh` subcommands, one module per command group: each holds its
//! clap definitions and its `run`. Adding a group is one module here plus one
//! variant of `Cmd` in `main.rs` (flattened when its commands sit at the top
//! level, like `put` and `status`).
//!
//! This module also holds what the client commands share: how to reach the
//! node and the user's key ([`ClientOpts`]), and the output contract
//! ([`print`]).

pub mod accounts;
pub mod devnet;
pub mod durability;
pub mod files;
pub mod keys;
pub mod node;
pub mod ops;
pub mod sharing;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use datamesh_core::Cid;

use crate::client::Client;
use crate::userkey;

/// How the client finds its node and the user's key.
#[derive(Args, Clone)]
pub struct ClientOpts {
    /// Node API URL (`http://HOST:PORT`, `https://HOST:PORT` or `HOST:PORT`); default: the URL the node wrote into its data dir.
    #[arg(long, env = "DATAMESH_API", global = true)]
    api: Option<String>,
    /// API token; default: the `api.token` file in the node's data dir.
    #[arg(long, env = "DATAMESH_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A PEM CA certificate to trust for an https node besides the system's (e.g. its self-signed certificate).
    #[arg(long, env = "DATAMESH_CA_CERT", global = true)]
    ca_cert: Option<PathBuf>,
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
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(datamesh_node::config::default_data_dir)
    }
    /// The client, with the credential [`crate::login`] chooses: the
    /// token given, else this node's saved login (refreshed if expired),
    /// else the node's own token from its data dir.
    pub fn client(&self) -> Result<Client> {
        let data_dir = self.data_dir();
        if self.token.is_some() {
            return Client::connect(self.api.as_deref(), self.token.as_deref(), &data_dir, self.ca_cert());
        }
        let base = Client::base_url(self.api.as_deref(), &data_dir)?;
        // Refreshing is a request; the commands run on the multi-threaded
        // runtime, where a blocking section may wait for it.
        let saved = tokio::task::block_in_place(|| {
            tokio::runtime::Handle::current().block_on(crate::login::access_token(
                self.user_key.as_deref(),
                &base,
                self.ca_cert(),
            ))
        });
        match saved {
            Some(t) => Client::connect(Some(&base), Some(&t), &data_dir, self.ca_cert()),
            None => Client::connect(Some(&base), None, &data_dir, self.ca_cert()),
        }
    }

    /// A client that sends no saved login (public routes: sign-up, login).
    pub fn anonymous(&self) -> Result<Client> {
        let base = Client::base_url(self.api.as_deref(), &self.data_dir())?;
        Client::connect(Some(&base), Some(""), &self.data_dir(), self.ca_cert())
    }

    /// The CA certificate to trust for an https node (`--ca-cert`).
    pub fn ca_cert(&self) -> Option<&std::path::Path> {
        self.ca_cert.as_deref()
    }

    /// The user's key file, if given.
    pub fn user_key_path(&self) -> Option<&std::path::Path> {
        self.user_key.as_deref()
    }
    pub fn user(&self) -> Result<datamesh_pipeline::keys::UserKey> {
        userkey::load_or_create(self.user_key.as_deref(), self.quiet)
    }
}

/// A CID from the command line.
pub fn parse_cid(s: &str) -> Result<Cid> {
    Ok(s.parse::<Cid>()?)
}

/// Prints a result on stdout: `value` as one JSON document with `--json`,
/// else the `plain` text (nothing when it is empty).
pub fn print(json_mode: bool, value: &impl serde::Serialize, plain: impl FnOnce() -> String) {
    if json_mode {
        println!("{}", serde_json::to_string(value).unwrap_or_default());
    } else {
        let text = plain();
        if !text.is_empty() {
            println!("{text}");
        }
    }
}
