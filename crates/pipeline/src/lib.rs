//! The content pipeline: turns a byte stream into verified, compressed,
//! encrypted, erasure-coded shards and back.
//!
//! **Architecture invariant:** pure. Functions over byte slices and
//! `std::io::Read` streams; no sockets, no files opened here, no async
//! runtime. That is what lets every stage be property-tested and fuzzed.
//!
//! Put, per chunk: [`chunker`] → [`compress`] → [`crypto`] (seal) →
//! [`erasure`] (encode) → shard CIDs. Get runs the same stages backwards and
//! verifies every shard and every chunk against its CID.

pub mod chunker;
pub mod compress;
pub mod crypto;
pub mod erasure;
pub mod keys;
pub mod seal;
pub mod unixfs;
