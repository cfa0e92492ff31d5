//! Verified, ranged reads with read-ahead.
//!
//! [`Client::read`] fetches the chunks covering a byte range (and no
//! others), up to `concurrency` at once and in order; each stored form is
//! checked against the CID its manifest names, then decrypted (AEAD tag)
//! and decompressed (size checked) on the blocking pool, and sliced to the
//! range. Memory: the chunks in flight, whatever the file's size.
//! [`read_ahead`] runs such a stream in its own task into a channel of two,
//! so a slow consumer (an HTTP response body) holds at most a few chunks
//! while the next ones are already fetched.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datamesh_core::{Cid, Cipher, Compression, Manifest};
use datamesh_pipeline::compress::compress_if_pays;
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::seal::{OpenChunkError, open_chunk};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::{Client, Transport};

/// A file opened for reading: its manifest and its data key, unwrapped.
/// Cheap to clone.
#[derive(Clone)]
pub struct OpenFile {
    /// The manifest CID.
    pub cid: Cid,
    /// Plaintext bytes.
    pub size: u64,
    manifest: Arc<Manifest>,
    key: Option<Arc<(Cipher, DataKey)>>,
}

impl OpenFile {
    /// The file `manifest` (whose CID is `cid`) describes, opened with
    /// `key` (None for a public file; ignored for one).
    pub fn new(cid: Cid, manifest: Arc<Manifest>, key: Option<DataKey>) -> Self {
        let key = manifest.encryption.as_ref().zip(key).map(|(e, k)| Arc::new((e.cipher, k)));
        Self { cid, size: manifest.size, manifest, key }
    }

    /// The manifest.
    pub fn manifest(&self) -> &Arc<Manifest> {
        &self.manifest
    }

    /// The tag a resumable download records beside chunk `index`'s
    /// plaintext, so a later run can trust those bytes on disk: a keyed
    /// BLAKE3 over the manifest CID, the index and the plaintext, keyed
    /// from the data key, so nobody without the key can forge one for
    /// planted bytes. None for a public file, whose plaintext is checked
    /// against the chunk CID itself ([`OpenFile::verify_resumed`]).
    pub fn resume_tag(&self, index: usize, plain: &[u8]) -> Option<[u8; 32]> {
        let key = blake3::derive_key(RESUME_TAG_CONTEXT, self.key.as_ref()?.1.as_bytes());
        let mut h = blake3::Hasher::new_keyed(&key);
        h.update(&self.cid.to_bytes());
        h.update(&(index as u64).to_le_bytes());
        h.update(plain);
        Some(*h.finalize().as_bytes())
    }

    /// Whether `plain`, read back from a partial download, is chunk
    /// `index` of this file. A public chunk is proved against its CID (its
    /// stored form is the plaintext, or the plaintext compressed by the
    /// same deterministic codec); an encrypted chunk's stored form has a
    /// random nonce, so it is proved by the `tag` recorded when the chunk
    /// was written after verification ([`OpenFile::resume_tag`]). False
    /// means: do not trust these bytes, fetch the chunk again.
    pub fn verify_resumed(&self, index: usize, plain: &[u8], tag: Option<&[u8; 32]>) -> bool {
        let Some(entry) = self.manifest.chunks.get(index) else { return false };
        if plain.len() != entry.plain_size as usize {
            return false;
        }
        if self.manifest.encryption.is_some() {
            // blake3::Hash compares in constant time.
            return match (self.resume_tag(index, plain), tag) {
                (Some(want), Some(got)) => blake3::Hash::from(want) == blake3::Hash::from(*got),
                _ => false,
            };
        }
        match entry.compression {
            Compression::None => entry.stored_size == entry.plain_size && entry.cid.verifies(plain),
            algo => compress_if_pays(algo, plain)
                .is_some_and(|c| c.len() == entry.stored_size as usize && entry.cid.verifies(&c)),
        }
    }
}

/// Domain of [`OpenFile::resume_tag`]'s key derivation.
const RESUME_TAG_CONTEXT: &str = "datamesh 2026-12 resumable get chunk tag v1";

/// Why a read failed.
#[derive(Debug, thiserror::Error)]
pub enum GetError<E: std::error::Error + 'static> {
    /// The transport (the node, or the connection to it) failed.
    #[error(transparent)]
    Transport(E),
    /// A chunk's stored form failed verification, decryption or
    /// decompression: corrupt data was served, or the key is wrong.
    #[error(transparent)]
    Open(#[from] OpenChunkError),
    /// The file is encrypted and was opened without its key.
    #[error("{0} is encrypted and no key to open it was given")]
    NoKey(Cid),
    /// A worker died (a panic, or the runtime shutting down).
    #[error("internal error: {0}")]
    Task(String),
}

impl<T: Transport> Client<T> {
    /// The manifest of a file and the manifest's CID (`cid` may be a public
    /// file's UnixFS CID), as the transport checked it.
    pub async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), GetError<T::Error>> {
        self.transport.manifest(cid).await.map_err(GetError::Transport)
    }

    /// The plaintext of `range` of `file` (clamped to its size), in order,
    /// one piece per chunk covered. Fetches up to `concurrency` chunks
    /// ahead of the consumer; dropping the stream stops them.
    pub fn read(&self, file: &OpenFile, range: Range<u64>) -> BoxStream<'static, Result<Bytes, GetError<T::Error>>> {
        let (lo, hi) = (range.start, range.end.min(file.size));
        if lo >= hi {
            return futures::stream::empty().boxed();
        }
        if file.manifest.encryption.is_some() && file.key.is_none() {
            return futures::stream::once(std::future::ready(Err(GetError::NoKey(file.cid)))).boxed();
        }
        let offsets = Arc::new(file.manifest.chunk_offsets());
        let first = offsets.partition_point(|&o| o <= lo).saturating_sub(1);
        let last = offsets.partition_point(|&o| o < hi).saturating_sub(1);
        let (mcid, transport) = (file.cid, self.transport.clone());
        let (manifest, key) = (file.manifest.clone(), file.key.clone());
        futures::stream::iter(first..=last)
            .map(move |i| {
                let (transport, manifest, key, offsets) =
                    (transport.clone(), manifest.clone(), key.clone(), offsets.clone());
                async move {
                    let stored = transport.chunk(mcid, i).await.map_err(GetError::Transport)?;
                    let plain = tokio::task::spawn_blocking(move || {
                        open_chunk(&manifest.chunks[i], i as u64, &stored, key.as_ref().map(|k| (k.0, &k.1)))
                    })
                    .await
                    .map_err(|e| GetError::Task(e.to_string()))??;
                    let (c0, c1) = (offsets[i], offsets[i + 1]);
                    let (from, to) = ((lo.max(c0) - c0) as usize, (hi.min(c1) - c0) as usize);
                    Ok::<_, GetError<T::Error>>(Bytes::from(plain).slice(from..to))
                }
            })
            .buffered(self.cfg.concurrency.max(1))
            .boxed()
    }
}

/// Runs `stream` in its own task, `slots` items ahead of the consumer (at
/// least one), ending after the first error. The task stops when the
/// returned stream is dropped.
pub fn read_ahead<S, E>(
    stream: S,
    slots: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static
where
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(slots.max(1));
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(item) = stream.next().await {
            match item {
                Ok(b) => {
                    if tx.send(Ok(b)).await.is_err() {
                        return; // the consumer went away
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "read failed mid-stream");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
