//! DataMesh vocabulary shared by every layer: content identifiers, the file
//! manifest and its canonical encoding, and the limits that bound what a peer
//! or client may send.
//!
//! **Architecture invariant:** this crate does no IO and depends on no runtime.
//! Every type that is persisted or sent over the wire lives here (or in the
//! protocol module that owns it) and carries a version.

pub mod cid;
pub mod clock;
pub mod durability;
pub mod limits;
pub mod location;
pub mod manifest;
pub mod proof;
pub mod testdata;
pub mod tombstone;

pub use crate::cid::{Cid, CidError, CidHasher, Codec};
pub use crate::location::{HolderId, LocationError, LocationRecord, Origin};
pub use crate::manifest::{
    ChunkEntry, Chunking, Cipher, Compression, Encryption, Erasure, Manifest, ManifestError, WrappedKey,
};
