//! Files: upload sessions (the CLI's encrypted puts), listing, stat,
//! delete, pins, and the plain-HTTP upload and metadata routes.

use std::collections::BTreeMap;

use datamesh_core::Cid;
use serde::{Deserialize, Deserializer, Serialize};

use crate::GcReport;

/// `POST /v1/uploads`: the erasure code of a new upload session; the node's
/// default for what is absent (or for an empty body).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BeginUpload {
    /// Data shards per chunk.
    pub k: Option<u16>,
    /// Parity shards per chunk.
    pub m: Option<u16>,
}

/// `POST /v1/uploads` (201): the session and the code the node will apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadSession {
    /// The session id (unguessable).
    pub upload_id: String,
    /// Data shards per chunk.
    pub k: u16,
    /// Parity shards per chunk.
    pub m: u16,
    /// The node's Ed25519 public key (hex): the manifest names it as its
    /// `writer`, the only node whose first location record of the file
    /// peers take. Absent from nodes before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
}

/// `PUT /v1/uploads/{id}/chunks`: what the node stored of one chunk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkReceipt {
    /// CID of the chunk's stored form.
    #[schema(value_type = String)]
    pub cid: Cid,
    /// CIDs of its k+m shards.
    #[schema(value_type = Vec<String>)]
    pub shards: Vec<Cid>,
}

/// Query of `POST /v1/uploads/{id}/complete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CompleteQuery {
    /// Name recorded with the pin (≤ 1024 bytes).
    pub name: Option<String>,
}

/// `POST /v1/uploads/{id}/complete` (201): the file's CID.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Completed {
    /// The manifest CID the node stored the file under.
    #[schema(value_type = String)]
    pub cid: Cid,
}

/// `GET /v1/files`: the files pinned on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileList {
    /// One entry per pin.
    pub files: Vec<FileEntry>,
}

/// One pinned file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    /// The CID the file is known by: its UnixFS CID for a public file, else
    /// its manifest CID.
    #[schema(value_type = String)]
    pub cid: Cid,
    /// Its manifest CID, always.
    #[schema(value_type = String)]
    pub manifest: Cid,
    /// The name given at put.
    pub name: Option<String>,
    /// Plaintext bytes.
    pub size: u64,
    /// When it was pinned (Unix seconds).
    pub created_at: u64,
}

/// `GET /v1/files/{cid}`: a file as the node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileStat {
    /// The manifest CID.
    #[schema(value_type = String)]
    pub cid: Cid,
    /// The UnixFS CID of a public file.
    #[schema(value_type = Option<String>)]
    pub unixfs: Option<Cid>,
    /// Plaintext size.
    pub size: u64,
    /// Whether the chunks are encrypted.
    pub encrypted: bool,
    /// Erasure code data shards.
    pub k: u16,
    /// Erasure code parity shards.
    pub m: u16,
    /// Whether it is pinned (kept by GC).
    pub pinned: bool,
    /// The name given at put.
    pub name: Option<String>,
    /// Live (present) shards of each chunk, out of k+m.
    pub live_shards: Vec<u16>,
    /// Distinct nodes holding shards of the file.
    pub holders: usize,
}

/// `DELETE /v1/files/{cid}`: what was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Removed {
    /// The CID asked for.
    #[schema(value_type = String)]
    pub removed: Cid,
    /// What the collection that followed freed on this node.
    pub gc: GcReport,
}

/// `POST /v1/pins/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pinned {
    /// The manifest CID now pinned.
    #[schema(value_type = String)]
    pub pinned: Cid,
}

/// `DELETE /v1/pins/{cid}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Unpinned {
    /// The manifest CID no longer pinned.
    #[schema(value_type = String)]
    pub unpinned: Cid,
}

/// Query of `POST /v1/files`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// File name (≤ 1024 bytes).
    pub name: Option<String>,
    /// Data shards per chunk (the node's default when absent).
    pub k: Option<u16>,
    /// Parity shards per chunk.
    pub m: Option<u16>,
}

/// `POST /v1/files` (201): the file stored, encrypted by the node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Uploaded {
    /// The file's CID (its manifest's).
    pub cid: String,
    /// Plaintext bytes stored.
    pub size: u64,
    /// Name given.
    pub name: Option<String>,
    /// Content-Type given.
    pub content_type: Option<String>,
    /// Erasure code data shards.
    pub k: u16,
    /// Erasure code parity shards.
    pub m: u16,
    /// The id upload events carried.
    pub upload: String,
}

/// `GET` and `PATCH /v1/files/{cid}/metadata`: a file's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileMetadata {
    /// Manifest CID (also the ETag).
    pub cid: String,
    /// Plaintext bytes.
    pub size: u64,
    /// Name.
    pub name: Option<String>,
    /// MIME type served with the content.
    pub content_type: Option<String>,
    /// User tags.
    pub tags: BTreeMap<String, String>,
    /// Whether the chunks are encrypted.
    pub encrypted: bool,
    /// Whether the gateway can serve its plaintext (`/content`, shares).
    pub readable: bool,
    /// Unix seconds the gateway first recorded it (None: never described here).
    pub created_at: Option<i64>,
    /// Unix seconds of the last metadata change.
    pub updated_at: Option<i64>,
}

/// `PATCH /v1/files/{cid}/metadata`: each field given replaces the stored
/// one; `null` clears it; an absent field is left as it is. Tags merge: a
/// string sets a tag, `null` removes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MetadataPatch {
    /// New name (≤ 1024 bytes, no control characters), or null.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Option<String>>,
    /// New MIME type (`type/subtype[; params]`, ≤ 255 bytes), or null.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub content_type: Option<Option<String>>,
    /// Tags to set (string) or remove (null); ≤ 64 tags, keys ≤ 128 bytes of
    /// `[A-Za-z0-9._:-]`, values ≤ 1024 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, Option<String>>>,
}

/// A field that is present: `null` is `Some(None)`, absent (`default`) is `None`.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_tells_absent_from_null() {
        let p: MetadataPatch = serde_json::from_str(r#"{"name": null, "tags": {"a": "1", "b": null}}"#).unwrap();
        assert_eq!(p.name, Some(None));
        assert_eq!(p.content_type, None);
        assert_eq!(p.tags.as_ref().unwrap().get("b"), Some(&None));
        assert_eq!(serde_json::to_string(&p).unwrap(), r#"{"name":null,"tags":{"a":"1","b":null}}"#);
        assert!(serde_json::from_str::<MetadataPatch>(r#"{"nme": "x"}"#).is_err());
    }
}
