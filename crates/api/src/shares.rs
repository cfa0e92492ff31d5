//! Share links: read capabilities for one file, usable without the token.

use serde::{Deserialize, Serialize};

/// `POST /v1/shares`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewShare {
    /// The file (manifest or UnixFS CID).
    pub cid: String,
    /// Seconds until the link dies (1 to ten years); never when absent.
    pub expires_in_secs: Option<u64>,
    /// Downloads allowed (1 to 10⁹); unlimited when absent.
    pub max_downloads: Option<u64>,
    /// A password the downloader must give (1 to 1024 bytes).
    pub password: Option<String>,
}

/// Whether a share link still works, and if not, why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareState {
    /// It serves the file.
    Active,
    /// Its lifetime is over.
    Expired,
    /// It was downloaded as many times as it allows.
    Exhausted,
    /// Its owner revoked it.
    Revoked,
    /// The node does not know it.
    Unknown,
}

/// A share link as the API shows it (never its password).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Share {
    /// The link's id.
    pub id: String,
    /// The link (public URL).
    pub url: String,
    /// The path on this node (`/v1/s/{id}`).
    pub path: String,
    /// The file's manifest CID.
    pub cid: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the link is dead.
    pub expires_at: Option<i64>,
    /// Downloads allowed.
    pub max_downloads: Option<u64>,
    /// Downloads so far.
    pub downloads: u64,
    /// Whether a password is needed.
    pub has_password: bool,
    /// `active`, `expired`, `exhausted` or `revoked`.
    pub state: ShareState,
}

/// `GET /v1/shares`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ShareList {
    /// Newest first, at most 10 000.
    pub shares: Vec<Share>,
}

/// Query of `GET /v1/s/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShareQuery {
    /// The link's password (or send it in `x-datamesh-share-password`).
    pub password: Option<String>,
}
