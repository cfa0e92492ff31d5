//! The client's [`Transport`] in process: the same upload-session and read
//! calls the HTTP API serves, made directly on the [`Node`], so the S3 and
//! REST paths run the put/get orchestration of `datamesh-client` without a
//! round trip through HTTP.

use std::sync::Arc;

use bytes::Bytes;
use datamesh_api::ChunkReceipt;
use datamesh_client::{Session, Transport};
use datamesh_core::{Cid, Erasure, Manifest};
use datamesh_node::{Node, NodeError};

/// The node this process runs. Cheap to clone.
#[derive(Clone)]
pub struct InProcess {
    node: Node,
    /// Whose uploads these are (the node's per-owner upload cap).
    owner: Option<String>,
    /// Counts uploads refused for want of a slot.
    metrics: Option<crate::metrics::Metrics>,
}

impl InProcess {
    /// Calls on `node`.
    pub fn new(node: Node) -> Self {
        Self { node, owner: None, metrics: None }
    }

    /// Calls on `node` whose upload sessions count against `owner`'s
    /// slots; refusals are counted in `metrics`.
    pub fn for_owner(node: Node, owner: Option<String>, metrics: Option<crate::metrics::Metrics>) -> Self {
        Self { node, owner, metrics }
    }
}

#[async_trait::async_trait]
impl Transport for InProcess {
    type Error = NodeError;

    async fn begin_upload(&self, erasure: Option<Erasure>) -> Result<Session, NodeError> {
        let erasure = erasure.unwrap_or_else(|| self.node.config().erasure());
        let id = self.node.begin_upload_for(Some(erasure), self.owner.as_deref()).inspect_err(|e| {
            if let (NodeError::TooManyUploads(_) | NodeError::TooManyUploadsForOwner(_), Some(m)) = (e, &self.metrics) {
                m.rate_limited("uploads");
            }
        })?;
        Ok(Session { id, erasure, writer: Some(self.node.writer_key()) })
    }

    async fn put_chunk(&self, upload: &str, stored: Bytes) -> Result<ChunkReceipt, NodeError> {
        let r = self.node.put_chunk(upload, stored).await?;
        Ok(ChunkReceipt { cid: r.cid, shards: r.shards })
    }

    async fn complete_upload(&self, upload: &str, manifest: Vec<u8>, name: Option<String>) -> Result<Cid, NodeError> {
        self.node.complete_upload(upload, manifest, name).await
    }

    async fn abort_upload(&self, upload: &str) {
        let _ = self.node.abort_upload(upload);
    }

    async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), NodeError> {
        // The node checked the bytes against the CID (and caches the
        // decoded manifest).
        self.node.manifest(cid).await
    }

    async fn chunk(&self, file: Cid, index: usize) -> Result<Bytes, NodeError> {
        self.node.chunk(file, index).await
    }
}
