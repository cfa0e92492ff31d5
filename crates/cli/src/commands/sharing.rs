//! `share` and `unshare`: an encrypted file's key wrapped for another user.
//!
//! `datamesh share CID --to USER` opens the file's data key with your key
//! (here, on your machine), wraps it for the recipient's published public
//! key (X25519, or X-Wing for a file put with `--pq`) and stores the wrap
//! on the node, which grants the recipient read. They `datamesh get CID`
//! with their own key. `datamesh unshare CID --from USER` deletes the wrap
//! and the grant; a recipient who already read the file keeps what they
//! read. Only public keys and wraps leave your machine.

use anyhow::{Context, Result, anyhow, bail};
use clap::Subcommand;
use datamesh_api as api;
use datamesh_core::{Manifest, WrappedKey};
use datamesh_pipeline::keys::{self, UserPublicKey, WrapKind};
use reqwest::Method;
use serde_json::json;

use super::{ClientOpts, parse_cid, print};
use crate::client::http_error;

#[derive(Subcommand)]
pub enum SharingCmd {
    /// Share an encrypted file with another user: they can then get it with their own key.
    Share {
        /// The file's CID.
        cid: String,
        /// The user to share with (they publish their keys with `datamesh account publish-keys`).
        #[arg(long)]
        to: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Stop sharing a file with a user (what they already read, they keep).
    Unshare {
        /// The file's CID.
        cid: String,
        /// The user to stop sharing with.
        #[arg(long)]
        from: String,
        #[command(flatten)]
        c: ClientOpts,
    },
}

/// The path segment of a user name (names have no `/`, but say so safely).
fn user_segment(name: &str) -> Result<&str> {
    if name.is_empty() || name.contains(['/', '?', '#', '%']) || name.chars().any(char::is_control) {
        bail!("{name:?} is not a user name");
    }
    Ok(name)
}

/// Runs `share` or `unshare`.
pub async fn run(cmd: SharingCmd) -> Result<()> {
    match cmd {
        SharingCmd::Share { cid, to, c } => {
            let cid = parse_cid(&cid)?;
            let to = user_segment(&to)?;
            let client = c.client()?;
            let (mcid, bytes) = client.manifest(&cid).await?;
            let manifest = Manifest::decode_verified(&mcid, &bytes).context("the node served a bad manifest")?;
            let Some(enc) = &manifest.encryption else {
                bail!("{cid} is not encrypted: there is no key to share");
            };
            let user = c.user()?;
            let dk = keys::unwrap_for(&enc.wrapped_keys, &user).map_err(|e| {
                anyhow!("cannot open this file's key with your key ({e}): only its holder can share it")
            })?;
            // A file put with --pq is shared at the same level.
            let pq = enc.wrapped_keys.iter().any(|w| matches!(w, WrappedKey::XWing { .. }));
            let (algorithm, kind) = if pq { ("x-wing", WrapKind::XWing) } else { ("x25519", WrapKind::X25519) };
            let list: api::EncryptionKeyList = client.get(&format!("/v1/users/{to}/encryption-keys")).await?;
            let Some(published) = list.keys.iter().rev().find(|k| k.algorithm == algorithm) else {
                bail!(
                    "{to} has published no {algorithm} key: ask them to run `datamesh account publish-keys{}`",
                    if pq { " --pq" } else { "" }
                );
            };
            let public = hex::decode(&published.public_key).context("the node served a key that is not hex")?;
            let mut recipient = UserPublicKey { ed25519: [0; 32], x25519: [0; 32], xwing: Vec::new() };
            if pq {
                recipient.xwing = public;
            } else {
                recipient.x25519 =
                    public.try_into().map_err(|_| anyhow!("{to}'s published X25519 key is not 32 bytes"))?;
            }
            let wrap = keys::try_wrap_for(&dk, &recipient, kind).map_err(|e| anyhow!("{to}'s key: {e}"))?;
            let cbor = serde_ipld_dagcbor::to_vec(&vec![wrap]).context("encoding the wrap")?;
            let body = json!({"wrapped_keys": hex::encode(cbor)});
            let rb = client.request(Method::PUT, &format!("/v1/files/{mcid}/recipients/{to}")).json(&body);
            client.transport().send(rb).await.map_err(http_error)?;
            print(c.json, &json!({"cid": cid, "shared_with": to, "algorithm": algorithm}), || {
                format!("shared {cid} with {to}: they can `datamesh get {cid}` with their own key")
            });
            Ok(())
        }
        SharingCmd::Unshare { cid, from, c } => {
            let cid = parse_cid(&cid)?;
            let from = user_segment(&from)?;
            let client = c.client()?;
            let rb = client.request(Method::DELETE, &format!("/v1/files/{cid}/recipients/{from}"));
            client.transport().send(rb).await.map_err(http_error)?;
            print(c.json, &json!({"cid": cid, "unshared_from": from}), || {
                format!(
                    "{from} can no longer read {cid} or open its key; if they already read it (or kept its key), \
                     they still have what they read: put a new copy under a new key for that"
                )
            });
            Ok(())
        }
    }
}
