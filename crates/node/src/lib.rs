//! The DataMesh node: the composition root that owns the store, the
//! identity, the configuration and the put/get orchestration.
//!
//! The node never sees plaintext of encrypted files: clients send stored
//! chunk forms (sealed on the user's machine); the node erasure-codes them,
//! keeps the shards and serves chunks back, verified.

pub mod audit;
pub mod config;
pub mod deletion;
pub mod drain;
pub mod identity;
pub mod network;
mod node;
pub mod observe;
pub mod placement;
pub mod repair;
pub mod workers;

pub use config::{ConfigError, NodeConfig};
pub use drain::DrainProgress;
pub use identity::NodeIdentity;
pub use node::{ChunkReceipt, FileStat, Node, NodeError, NodeStatus, UploadId, delete_message};
