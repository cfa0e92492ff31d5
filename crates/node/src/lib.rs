//! The DataMesh node: the composition root that owns the store, the
//! identity, the configuration and the put/get orchestration.
//!
//! The node never sees plaintext of encrypted files: clients send stored
//! chunk forms (sealed on the user's machine); the node erasure-codes them,
//! keeps the shards and serves chunks back, verified.

mod admit;
pub mod audit;
pub mod config;
mod context;
pub mod deletion;
pub mod drain;
mod error;
mod files;
mod holder;
pub mod identity;
mod intake;
mod lifecycle;
mod locate;
pub mod network;
pub mod observe;
pub mod placement;
mod read;
mod records;
pub mod repair;
pub mod reputation;
mod state;
pub mod workers;

pub use config::{ConfigError, NodeConfig};
pub use context::Node;
pub use datamesh_core::tombstone::delete_message;
pub use drain::DrainProgress;
pub use error::{
    AuthError, InvalidRequest, NetworkError, NodeError, PlacementError, ShardFailures, StorageError, Unavailable,
};
pub use files::{FileStat, NodeStatus};
pub use identity::NodeIdentity;
pub use intake::{ChunkReceipt, UploadId};
