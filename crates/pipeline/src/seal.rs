//! Composition of the put and get stages for one chunk, and the manifest
//! builder.
//!
//! A chunk's *stored form* is what leaves its owner's machine: the plaintext,
//! compressed when that pays, then sealed with the file's data key (or left
//! as is for public files). Nodes only ever see stored forms and the shards
//! cut from them.
//!
//! ```text
//! plaintext ──compress_if_pays──► compressed? ──seal_chunk(index)──► stored ──BLAKE3──► chunk CID
//!                                                                     │
//!                                                   erasure::encode ──┴──► k+m shards ──► shard CIDs
//! ```

use datamesh_core::manifest::{MANIFEST_VERSION, merkle_root};
use datamesh_core::{ChunkEntry, Chunking, Cid, Cipher, Compression, Encryption, Erasure, Manifest, limits};

use crate::compress::{self, CompressError};
use crate::crypto::{self, CryptoError, DataKey, NonceMode};
use crate::erasure::{self, ErasureError};

/// A chunk in its stored form, ready to be erasure coded.
#[derive(Debug, Clone)]
pub struct SealedChunk {
    /// Position in the file.
    pub index: u64,
    /// Plaintext length.
    pub plain_size: u32,
    /// Compression applied before sealing.
    pub compression: Compression,
    /// The stored form.
    pub stored: Vec<u8>,
    /// CID of the stored form (raw, BLAKE3).
    pub cid: Cid,
}

impl SealedChunk {
    /// The manifest entry for this chunk, given its shard CIDs.
    pub fn entry(&self, shards: Vec<Cid>) -> ChunkEntry {
        ChunkEntry {
            plain_size: self.plain_size,
            stored_size: self.stored.len() as u32,
            compression: self.compression,
            cid: self.cid,
            shards,
        }
    }
}

/// Turns plaintext chunks into stored forms. Cheap to share across threads.
pub struct ChunkSealer {
    compression: Compression,
    crypt: Option<(Cipher, DataKey, bool)>,
}

impl ChunkSealer {
    /// A sealer for a public (unencrypted) file.
    pub fn public(compression: Compression) -> Self {
        Self { compression, crypt: None }
    }

    /// A sealer that encrypts with `key`; `convergent` makes nonces derive
    /// from the content so identical chunks seal identically.
    pub fn encrypted(compression: Compression, cipher: Cipher, key: DataKey, convergent: bool) -> Self {
        Self { compression, crypt: Some((cipher, key, convergent)) }
    }

    /// Compresses (when it pays) and seals one chunk.
    pub fn seal(&self, index: u64, plain: &[u8]) -> SealedChunk {
        debug_assert!(plain.len() <= limits::MAX_CHUNK_SIZE);
        let compressed = compress::compress_if_pays(self.compression, plain);
        let (compression, body): (Compression, &[u8]) = match &compressed {
            Some(c) => (self.compression, c),
            None => (Compression::None, plain),
        };
        let stored = match &self.crypt {
            Some((cipher, key, convergent)) => {
                let mode = if *convergent { NonceMode::Convergent } else { NonceMode::Random };
                crypto::seal_chunk(*cipher, key, index, body, mode)
            }
            None => match compressed {
                Some(c) => c,
                None => plain.to_vec(),
            },
        };
        let cid = Cid::raw_blake3(&stored);
        SealedChunk { index, plain_size: plain.len() as u32, compression, stored, cid }
    }
}

/// Why a sealed chunk could not be opened (its stored form turned back into
/// plaintext): [`open_chunk`]'s error.
#[derive(Debug, thiserror::Error)]
pub enum OpenChunkError {
    /// The bytes do not hash to the chunk's CID.
    #[error("chunk {index} does not match its CID {cid}: the copy served was corrupt")]
    CidMismatch {
        /// Chunk position.
        index: u64,
        /// Expected CID.
        cid: Cid,
    },
    /// Authentication failed after the CID matched: wrong key.
    #[error("chunk {index} failed to decrypt: {source}")]
    Decrypt {
        /// Chunk position.
        index: u64,
        /// Cause.
        source: CryptoError,
    },
    /// Decompression failed or gave the wrong size.
    #[error("chunk {index} failed to decompress: {source}")]
    Decompress {
        /// Chunk position.
        index: u64,
        /// Cause.
        source: CompressError,
    },
}

/// Verifies a chunk's stored form against its entry, decrypts and
/// decompresses it, and checks the plaintext size.
pub fn open_chunk(
    entry: &ChunkEntry,
    index: u64,
    stored: &[u8],
    key: Option<(Cipher, &DataKey)>,
) -> Result<Vec<u8>, OpenChunkError> {
    if stored.len() != entry.stored_size as usize || !entry.cid.verifies(stored) {
        return Err(OpenChunkError::CidMismatch { index, cid: entry.cid });
    }
    let body = match key {
        Some((cipher, key)) => crypto::open_chunk(cipher, key, index, stored)
            .map_err(|source| OpenChunkError::Decrypt { index, source })?,
        None => stored.to_vec(),
    };
    let plain_size = entry.plain_size as usize;
    match entry.compression {
        Compression::None if body.len() == plain_size => Ok(body),
        Compression::None => Err(OpenChunkError::Decompress {
            index,
            source: CompressError::SizeMismatch { expected: plain_size, actual: body.len() },
        }),
        algo => {
            compress::decompress(algo, &body, plain_size).map_err(|source| OpenChunkError::Decompress { index, source })
        }
    }
}

/// Erasure codes a sealed chunk: returns its manifest entry and its shards.
pub fn shard_chunk(erasure: Erasure, chunk: &SealedChunk) -> Result<(ChunkEntry, Vec<Vec<u8>>), ErasureError> {
    let shards = erasure::encode(erasure, &chunk.stored)?;
    let cids = erasure::shard_cids(&shards);
    Ok((chunk.entry(cids), shards))
}

/// Collects chunk entries in order and produces the manifest.
#[derive(Debug)]
pub struct ManifestBuilder {
    chunking: Chunking,
    erasure: Erasure,
    chunks: Vec<ChunkEntry>,
    size: u64,
}

impl ManifestBuilder {
    /// Starts a manifest for a file cut with `chunking` and coded with `erasure`.
    pub fn new(chunking: Chunking, erasure: Erasure) -> Self {
        Self { chunking, erasure, chunks: Vec::new(), size: 0 }
    }

    /// Appends the next chunk, in file order.
    pub fn push(&mut self, entry: ChunkEntry) {
        self.size += entry.plain_size as u64;
        self.chunks.push(entry);
    }

    /// Number of chunks so far.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk was pushed.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Finishes the manifest.
    pub fn finish(self, encryption: Option<Encryption>, unixfs: Option<Cid>, owner: Option<[u8; 32]>) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            size: self.size,
            chunking: self.chunking,
            erasure: self.erasure,
            encryption,
            unixfs,
            owner: owner.map(|o| o.to_vec()),
            writer: None,
            merkle_root: merkle_root(self.chunks.iter().map(|c| &c.cid)),
            chunks: self.chunks,
        }
    }
}
