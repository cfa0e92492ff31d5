//! The node's errors: what went wrong, in terms a client can act on.
//!
//! The gateway maps each [`NodeError`] to an HTTP status and an API error
//! code in one place (`gateway/src/error.rs`); nothing here speaks HTTP.

use datamesh_core::{Cid, ManifestError};
use datamesh_net::NetError;
use datamesh_pipeline::erasure::ErasureError;
use datamesh_store::StoreError;

/// What went wrong, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Its owner deleted it.
    #[error("{0} was deleted by its owner")]
    Deleted(Cid),
    /// No such file, manifest or shard here.
    #[error("{0} is not stored on this node nor announced by any peer it can reach")]
    NotFound(Cid),
    /// The upload session does not exist (finished, aborted or expired).
    #[error("upload {0} does not exist: it finished, was aborted or expired; start a new put")]
    UploadNotFound(String),
    /// Too many uploads open.
    #[error("too many uploads in progress ({0}); retry when one finishes")]
    TooManyUploads(usize),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The manifest does not describe the uploaded data.
    #[error("manifest rejected: {0}")]
    Manifest(#[from] ManifestError),
    /// The signature on a destructive request is missing or wrong.
    #[error("{0}")]
    Forbidden(String),
    /// Out of budget or disk.
    #[error("{0}")]
    NoSpace(String),
    /// Stored data failed verification beyond what erasure coding can mend.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: an IO error of the node's own disk.
    #[error("node storage error: {0}")]
    Storage(String),
    /// Not enough nodes, or peers failed.
    #[error("{0}")]
    Network(String),
    /// The node is draining (leaving the network) and takes no new files.
    #[error("{0}")]
    Draining(String),
}

impl From<NetError> for NodeError {
    fn from(e: NetError) -> Self {
        NodeError::Network(e.to_string())
    }
}

impl From<PlacementError> for NodeError {
    fn from(e: PlacementError) -> Self {
        NodeError::Network(e.to_string())
    }
}

impl From<StoreError> for NodeError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { cid } => NodeError::NotFound(cid),
            e @ (StoreError::CapacityExceeded { .. } | StoreError::DiskFull { .. }) => {
                NodeError::NoSpace(e.to_string())
            }
            e => NodeError::Storage(e.to_string()),
        }
    }
}

impl From<ErasureError> for NodeError {
    fn from(e: ErasureError) -> Self {
        NodeError::Unavailable(e.to_string())
    }
}

/// Not enough nodes to spread a chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "placing a chunk needs {needed} distinct online nodes with {shard_bytes} bytes free each, but only {found} were found; \
     start more nodes, wait for peers to come online, or use a smaller code (-k/-m)"
)]
pub struct PlacementError {
    /// k+m.
    pub needed: usize,
    /// Suitable nodes found.
    pub found: usize,
    /// Size of one shard.
    pub shard_bytes: u64,
}
