//! Hard bounds on sizes that a client or a peer controls. Everything that reads
//! untrusted input checks against these before allocating.

/// Largest chunk (plaintext or stored form) the pipeline accepts: 16 MiB.
pub const MAX_CHUNK_SIZE: usize = 16 * 1024 * 1024;
/// Largest stored chunk: a chunk may grow a little when compression does not
/// pay and the AEAD adds its nonce and tag.
pub const MAX_STORED_CHUNK_SIZE: usize = MAX_CHUNK_SIZE + 1024;
/// Largest encoded manifest: 64 MiB holds ~200k chunk entries for 4+2 (an
/// ~800 GiB file at 4 MiB chunks); bigger files use bigger chunks.
pub const MAX_MANIFEST_SIZE: usize = 64 * 1024 * 1024;
/// Largest number of shards per chunk (data + parity), as the erasure library allows.
pub const MAX_TOTAL_SHARDS: usize = 256;
/// Largest number of wrapped keys in one manifest (owner plus shares).
pub const MAX_WRAPPED_KEYS: usize = 64;
