//! What the orchestration needs from a node: the upload-session protocol
//! of API v1 (`/v1/uploads`) and the two reads (`/v1/files/{cid}/manifest`,
//! `/v1/files/{cid}/chunks/{i}`), whatever carries them.
//!
//! Two implementations: [`crate::http::HttpTransport`] (the CLI, any remote
//! client) and the gateway's in-process one over its `Node`. Test doubles
//! implement it over a map.

use std::sync::Arc;

use bytes::Bytes;
use datamesh_api::ChunkReceipt;
use datamesh_core::{Cid, Erasure, Manifest};

/// An open upload session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The session id.
    pub id: String,
    /// The erasure code the node applies to this upload's chunks (its
    /// default when none was asked for); the manifest must name it.
    pub erasure: Erasure,
    /// The node's key, named in the manifest as the file's writer (the
    /// owner's delegation to this node to place it); None from a node that
    /// does not say.
    pub writer: Option<[u8; 32]>,
}

/// A node, as put and get see it. Cheap to clone; every call may run
/// concurrently with the others.
#[async_trait::async_trait]
pub trait Transport: Clone + Send + Sync + 'static {
    /// Why a call failed. The orchestration passes it through untouched, so
    /// a caller can map it (to an exit code, an S3 error code, a status).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Opens an upload session for a file coded with `erasure` (the node's
    /// default when None).
    async fn begin_upload(&self, erasure: Option<Erasure>) -> Result<Session, Self::Error>;

    /// Sends one chunk's stored (sealed) form; the node erasure-codes it and
    /// answers once its shards are durable.
    async fn put_chunk(&self, upload: &str, stored: Bytes) -> Result<ChunkReceipt, Self::Error>;

    /// Completes the upload with the encoded manifest, recording `name`
    /// with the pin; returns the CID the node stored it under.
    async fn complete_upload(&self, upload: &str, manifest: Vec<u8>, name: Option<String>) -> Result<Cid, Self::Error>;

    /// Aborts an upload session, best effort: the node also expires idle
    /// sessions, and GC reclaims what an aborted one wrote.
    async fn abort_upload(&self, upload: &str);

    /// The manifest of a file (`cid` is a manifest CID, or the UnixFS CID
    /// of a public file) and the manifest's CID. The manifest must have been
    /// checked to hash to that CID.
    async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), Self::Error>;

    /// The stored form of chunk `index` of the file whose manifest is
    /// `file`. The caller verifies it against the manifest.
    async fn chunk(&self, file: Cid, index: usize) -> Result<Bytes, Self::Error>;
}
