//! Encrypted files shared with people: the public encryption keys a user
//! publishes (`/v1/me/encryption-keys`, `/v1/users/{name}/encryption-keys`)
//! and a file's data key wrapped for a recipient
//! (`/v1/files/{cid}/recipients/{user}`, `/v1/files/{cid}/key`).
//!
//! Only public keys and wraps travel: the owner's client unwraps the data
//! key and wraps it again for the recipient; the server never sees either
//! private key nor the data key.

use serde::{Deserialize, Serialize};

/// `POST /v1/me/encryption-keys`: publish a public encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEncryptionKey {
    /// `x25519` (32 bytes) or `x-wing` (1,216 bytes).
    pub algorithm: String,
    /// The public key, hex.
    pub public_key: String,
}

/// A published public encryption key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EncryptionKey {
    /// `x25519` or `x-wing`.
    pub algorithm: String,
    /// The public key, hex.
    pub public_key: String,
    /// When it was published (Unix seconds).
    pub created_at: u64,
}

/// `GET /v1/users/{name}/encryption-keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EncryptionKeyList {
    /// The user.
    pub user: String,
    /// Their published keys, oldest first.
    pub keys: Vec<EncryptionKey>,
}

/// A file's data key wrapped for one user: the DAG-CBOR of a list of
/// `WrappedKey`s (as in a manifest), hex. At most 16 KiB of bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileKey {
    /// The wrapped keys, DAG-CBOR, hex.
    pub wrapped_keys: String,
}
