//! The node's HTTP API v1 as Rust types: the request and response body of
//! every route, the query strings, and the error body with its [`ErrorCode`].
//!
//! The gateway answers with these types (and generates its OpenAPI document,
//! `/v1/openapi.json`, from their `utoipa::ToSchema` derives); the CLI reads
//! the answers into the same types. A field renamed here is renamed on the
//! wire: the JSON shapes are the API's contract.
//!
//! **Architecture invariant:** this crate knows serde, utoipa and the
//! vocabulary of `datamesh-core` (a CID is a [`Cid`], its text on the wire),
//! nothing else: no HTTP library, no node, no network. A client needs only
//! this crate to speak the API.
//!
//! [`Cid`]: datamesh_core::Cid

pub mod accounts;
pub mod error;
pub mod files;
pub mod keys;
pub mod node;
pub mod secret;
pub mod shares;
pub mod sharing;

pub use accounts::{
    Account, AccountList, AccountPatch, AuditPage, AuditQuery, AuditRecord, AuditVerdict, Challenge, LoginAnswer,
    NewAccount, PasswordChange, PasswordLogin, Refresh, SignUp, SignatureLogin, Tier, TierList, TokenPair, Usage,
};
pub use error::{ErrorBody, ErrorCode};
pub use files::{
    BeginUpload, ChunkReceipt, CompleteQuery, Completed, FileEntry, FileList, FileMetadata, FileStat, MetadataPatch,
    Pinned, Removed, Unpinned, UploadQuery, UploadSession, Uploaded,
};
pub use node::{
    AccessKey, AuditTotals, Bucket, DrainProgress, EventsQuery, GcReport, Health, NodeStatus, NotReady, Peer,
    PeerState, Peers, Ready, RepairTotals, Reputation, StoreStats, WorkerInfo, WorkerState,
};
pub use secret::Secret;
pub use shares::{NewShare, Share, ShareList, ShareQuery, ShareState};
pub use sharing::{EncryptionKey, EncryptionKeyList, FileKey, NewEncryptionKey};
