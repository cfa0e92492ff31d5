//! `/v1/keys`: a user's API keys and S3 access keys.

use serde::{Deserialize, Serialize};

/// `POST /v1/keys`. Every field is optional: an empty body makes an S3 key
/// with the caller's own scope, as before accounts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewKey {
    /// `s3` (default) or `api`.
    #[serde(default)]
    pub kind: Option<String>,
    /// A label (default: the kind and date).
    #[serde(default)]
    pub name: Option<String>,
    /// Seconds until the key stops working (default: never, or the
    /// creating key's own expiry).
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Operations: `read`, `write`, `delete`, `list`, `admin` (default: the
    /// creating credential's).
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Buckets the key is limited to, each `BUCKET` or `BUCKET/PREFIX`
    /// (default: every bucket the user may reach).
    #[serde(default)]
    pub buckets: Option<Vec<String>>,
    /// A key prefix applied to each bucket in `buckets` given without one.
    #[serde(default)]
    pub prefix: Option<String>,
    /// The user the key is for (the administrator only; default: the caller).
    #[serde(default)]
    pub user: Option<String>,
}

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyEntry {
    /// The public id: the S3 access key id, or the API key's id.
    pub key_id: String,
    /// `s3` or `api`.
    pub kind: String,
    /// The owner's user name.
    pub user: String,
    /// The label.
    pub name: String,
    /// Operations allowed.
    pub ops: Vec<String>,
    /// Buckets or `BUCKET/PREFIX`es it is limited to; absent: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<Vec<String>>,
    /// Creation time (Unix seconds).
    pub created_at: u64,
    /// Expiry (Unix seconds), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Whether it was revoked.
    pub revoked: bool,
}

/// `POST /v1/keys` answer. The secret is shown once: for an S3 key
/// `access_key_id` and `secret_access_key` (the fields `datamesh key create
/// --json` always printed), for an API key `token`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedKey {
    /// The S3 access key id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// The S3 secret access key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key: Option<crate::Secret>,
    /// The API key (`Authorization: Bearer dmak_...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<crate::Secret>,
    /// The key as listed.
    pub key: KeyEntry,
}

/// `GET /v1/keys` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyList {
    /// The keys, revoked ones included.
    pub keys: Vec<KeyEntry>,
}

/// Query of `GET /v1/keys`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
pub struct KeyListQuery {
    /// Another user's keys (the administrator only).
    pub user: Option<String>,
}
