//! The login `datamesh account login` saves, and which credential the CLI
//! sends.
//!
//! The credential, in order: `--token` / `DATAMESH_TOKEN`; else the saved
//! login for this node (a file beside the user's key, `login.json`, mode
//! 0600), refreshed when its access token has expired; else the node's
//! `api.token` from its data dir, which acts as the node's administrator
//! (the local quick start keeps working with no login at all).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A saved login: whose, for which node, and its tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedLogin {
    /// The node's base URL the tokens are for.
    pub api: String,
    /// The user name.
    pub name: String,
    /// The bearer token.
    pub access_token: datamesh_api::Secret,
    /// When it expires (Unix seconds).
    pub access_expires_at: u64,
    /// The refresh token.
    pub refresh_token: datamesh_api::Secret,
    /// When it expires (Unix seconds).
    pub refresh_expires_at: u64,
}

/// Where the saved login lives: beside the user's key.
pub fn path(user_key: Option<&Path>) -> PathBuf {
    let key = crate::userkey::key_path(user_key);
    key.parent().map(|d| d.join("login.json")).unwrap_or_else(|| PathBuf::from("login.json"))
}

/// The saved login, if any.
pub fn load(user_key: Option<&Path>) -> Option<SavedLogin> {
    let bytes = std::fs::read(path(user_key)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Saves a login (mode 0600, atomically).
pub fn save(user_key: Option<&Path>, login: &SavedLogin) -> Result<()> {
    let p = path(user_key);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let bytes = serde_json::to_vec_pretty(login)?;
    datamesh_store::write_file_atomically(&p, &bytes, true).with_context(|| format!("cannot write {}", p.display()))?;
    Ok(())
}

/// Forgets the saved login.
pub fn forget(user_key: Option<&Path>) -> Result<()> {
    match std::fs::remove_file(path(user_key)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    datamesh_core::clock::unix_secs()
}

/// The access token of the saved login for `api`, refreshed (and saved
/// again) when it has expired or is about to. None when there is no
/// usable login for this node.
pub async fn access_token(user_key: Option<&Path>, api: &str, ca_cert: Option<&Path>) -> Option<String> {
    let mut login = load(user_key).filter(|l| l.api == api)?;
    // A minute's margin: the token must still be valid when it arrives.
    if login.access_expires_at > now() + 60 {
        return Some(login.access_token.expose().to_owned());
    }
    if login.refresh_expires_at <= now() {
        return None;
    }
    let http = datamesh_client::http::http_client(ca_cert).ok()?;
    let resp = http
        .post(format!("{api}/v1/token/refresh"))
        .json(&serde_json::json!({"refresh_token": login.refresh_token}))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        tracing::warn!(status = %resp.status(), "the saved login could not be refreshed: log in again");
        return None;
    }
    let pair: datamesh_api::TokenPair = resp.json().await.ok()?;
    login.access_token = pair.access_token;
    login.access_expires_at = pair.access_expires_at;
    login.refresh_token = pair.refresh_token;
    login.refresh_expires_at = pair.refresh_expires_at;
    if let Err(e) = save(user_key, &login) {
        tracing::warn!(error = %e, "could not save the refreshed login");
    }
    Some(login.access_token.expose().to_owned())
}
