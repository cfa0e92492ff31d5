//! Streaming put: seal and send chunks with a bounded number in flight,
//! then build and complete the manifest.
//!
//! The caller pushes plaintext chunks in file order; [`Upload::push`]
//! returns as soon as the chunk is handed to a task, and waits first while
//! `concurrency` chunks are in flight. Each task seals its chunk on the
//! blocking pool (compression and AEAD are CPU work) and sends the stored
//! form; the node's receipt must name the CID the chunk sealed to. Entries
//! are collected in push order, whatever order the tasks finish in.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use datamesh_core::{ChunkEntry, Chunking, Cid, Encryption, Erasure};
use datamesh_pipeline::seal::{ChunkSealer, ManifestBuilder};
use tokio::task::JoinHandle;

use crate::{Client, Transport};

/// How a file is put.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// How the caller cuts the plaintext (recorded in the manifest).
    pub chunking: Chunking,
    /// Erasure code; the node's default when None.
    pub erasure: Option<Erasure>,
    /// Name recorded with the pin.
    pub name: Option<String>,
}

/// Why a put failed. Its upload session was aborted: nothing is pinned.
#[derive(Debug, thiserror::Error)]
pub enum PutError<E: std::error::Error + 'static> {
    /// The transport (the node, or the connection to it) failed.
    #[error(transparent)]
    Transport(E),
    /// The node acknowledged a chunk under another CID than the one it
    /// sealed to: the bytes were altered on the way.
    #[error("node stored chunk {index} as {stored} but it is {sealed}; the transfer was corrupted")]
    ChunkMismatch {
        /// Chunk position.
        index: u64,
        /// CID the node acknowledged.
        stored: Cid,
        /// CID the chunk sealed to.
        sealed: Cid,
    },
    /// The node acknowledged the manifest under another CID.
    #[error("node acknowledged {stored} but the manifest is {local}")]
    ManifestMismatch {
        /// CID the node acknowledged.
        stored: Cid,
        /// CID of the manifest sent.
        local: Cid,
    },
    /// A sealing or sending task died (a panic, or the runtime shutting
    /// down).
    #[error("internal error: chunk task failed: {0}")]
    Task(String),
}

/// What a completed put stored.
#[derive(Debug, Clone)]
pub struct Stored {
    /// The manifest CID the node acknowledged.
    pub manifest: Cid,
    /// Plaintext bytes.
    pub size: u64,
    /// Chunks.
    pub chunks: usize,
}

type Progress = Arc<dyn Fn(u64) + Send + Sync>;
type ChunkTask<E> = JoinHandle<Result<ChunkEntry, PutError<E>>>;

/// One file being put. Dropped before [`Upload::finish`] (a failed or
/// cancelled request), it aborts its chunk tasks and its upload session.
pub struct Upload<T: Transport> {
    transport: T,
    /// None once completed or aborted.
    session: Option<String>,
    erasure: Erasure,
    /// The node's key, named in the manifest as its writer.
    writer: Option<[u8; 32]>,
    opts: PutOptions,
    sealer: Arc<ChunkSealer>,
    concurrency: usize,
    tasks: VecDeque<ChunkTask<T::Error>>,
    entries: Vec<ChunkEntry>,
    next: u64,
    size: u64,
    progress: Option<Progress>,
}

impl<T: Transport> Client<T> {
    /// Opens an upload session for a file whose chunks `sealer` seals.
    pub async fn begin_put(&self, sealer: ChunkSealer, opts: PutOptions) -> Result<Upload<T>, PutError<T::Error>> {
        let session = self.transport.begin_upload(opts.erasure).await.map_err(PutError::Transport)?;
        Ok(Upload {
            transport: self.transport.clone(),
            session: Some(session.id),
            erasure: session.erasure,
            writer: session.writer,
            opts,
            sealer: Arc::new(sealer),
            concurrency: self.cfg.concurrency.max(1),
            tasks: VecDeque::new(),
            entries: Vec::new(),
            next: 0,
            size: 0,
            progress: None,
        })
    }
}

impl<T: Transport> Upload<T> {
    /// The erasure code the node applies (and the manifest names).
    pub fn erasure(&self) -> Erasure {
        self.erasure
    }

    /// Plaintext bytes pushed so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Calls `f` with each chunk's plaintext size once the node stored it.
    pub fn on_progress(&mut self, f: impl Fn(u64) + Send + Sync + 'static) {
        self.progress = Some(Arc::new(f));
    }

    /// Hands the next chunk (in file order) to a sealing task, waiting
    /// first while `concurrency` chunks are in flight. On error the upload
    /// is aborted.
    ///
    /// # Cancel safety
    /// Not cancel safe: a chunk may be lost. Drop the upload instead.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), PutError<T::Error>> {
        let r = self.push_inner(chunk).await;
        if r.is_err() {
            self.abort_now().await;
        }
        r
    }

    async fn push_inner(&mut self, chunk: Bytes) -> Result<(), PutError<T::Error>> {
        while self.tasks.len() >= self.concurrency {
            self.join_one().await?;
        }
        let Some(session) = self.session.clone() else {
            return Err(PutError::Task("the upload was already completed or aborted".into()));
        };
        let (index, transport, sealer, progress) =
            (self.next, self.transport.clone(), self.sealer.clone(), self.progress.clone());
        self.next += 1;
        self.size += chunk.len() as u64;
        self.tasks.push_back(tokio::spawn(async move {
            let mut sealed = tokio::task::spawn_blocking(move || sealer.seal(index, &chunk))
                .await
                .map_err(|e| PutError::Task(e.to_string()))?;
            let stored = Bytes::from(std::mem::take(&mut sealed.stored));
            let stored_size = stored.len() as u32;
            let receipt = transport.put_chunk(&session, stored).await.map_err(PutError::Transport)?;
            if receipt.cid != sealed.cid {
                return Err(PutError::ChunkMismatch { index, stored: receipt.cid, sealed: sealed.cid });
            }
            if let Some(p) = progress {
                p(sealed.plain_size as u64);
            }
            Ok::<_, PutError<T::Error>>(ChunkEntry {
                plain_size: sealed.plain_size,
                stored_size,
                compression: sealed.compression,
                cid: sealed.cid,
                shards: receipt.shards,
            })
        }));
        Ok(())
    }

    async fn join_one(&mut self) -> Result<(), PutError<T::Error>> {
        if let Some(t) = self.tasks.pop_front() {
            let entry = t.await.map_err(|e| PutError::Task(e.to_string()))??;
            self.entries.push(entry);
        }
        Ok(())
    }

    /// Waits until every chunk pushed is stored. On error the upload is
    /// aborted.
    pub async fn flush(&mut self) -> Result<(), PutError<T::Error>> {
        let mut r = Ok(());
        while !self.tasks.is_empty() && r.is_ok() {
            r = self.join_one().await;
        }
        if r.is_err() {
            self.abort_now().await;
        }
        r
    }

    /// Stores the rest, builds the manifest (with the file's encryption
    /// record, public UnixFS CID and owner), completes the session and
    /// checks the CID the node acknowledged. On error the upload is aborted.
    pub async fn finish(
        mut self,
        encryption: Option<Encryption>,
        unixfs: Option<Cid>,
        owner: Option<[u8; 32]>,
    ) -> Result<Stored, PutError<T::Error>> {
        self.flush().await?;
        let Some(session) = self.session.clone() else {
            return Err(PutError::Task("the upload was already completed or aborted".into()));
        };
        let mut b = ManifestBuilder::new(self.opts.chunking, self.erasure);
        let chunks = self.entries.len();
        for e in std::mem::take(&mut self.entries) {
            b.push(e);
        }
        let mut manifest = b.finish(encryption, unixfs, owner);
        manifest.writer = self.writer.map(|w| w.to_vec());
        let local = manifest.cid();
        let stored = match self.transport.complete_upload(&session, manifest.encode(), self.opts.name.take()).await {
            Ok(c) => c,
            Err(e) => {
                self.abort_now().await;
                return Err(PutError::Transport(e));
            }
        };
        // Completing consumed the session.
        self.session = None;
        if stored != local {
            return Err(PutError::ManifestMismatch { stored, local });
        }
        Ok(Stored { manifest: local, size: self.size, chunks })
    }

    /// Aborts the upload now: its tasks stop and its session is dropped.
    pub async fn abort(mut self) {
        self.abort_now().await;
    }

    async fn abort_now(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        if let Some(id) = self.session.take() {
            self.transport.abort_upload(&id).await;
        }
    }
}

impl<T: Transport> Drop for Upload<T> {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        // Dropped mid-way (the request went away): abort in the background.
        if let Some(id) = self.session.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let transport = self.transport.clone();
            rt.spawn(async move { transport.abort_upload(&id).await });
        }
    }
}

/// Cuts a stream of byte buffers of any sizes into fixed-size chunks (the
/// last one shorter), copying each byte once.
#[derive(Debug)]
pub struct Rechunker {
    size: usize,
    buf: BytesMut,
}

impl Rechunker {
    /// Chunks of `size` bytes (at least 1).
    pub fn new(size: usize) -> Self {
        let size = size.max(1);
        Self { size, buf: BytesMut::with_capacity(size) }
    }

    /// Takes `data` in; returns the chunks it completed, in order.
    pub fn push(&mut self, mut data: Bytes) -> Vec<Bytes> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let take = (self.size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data.split_to(take));
            if self.buf.len() == self.size {
                out.push(self.buf.split().freeze());
                self.buf.reserve(self.size);
            }
        }
        out
    }

    /// The last, partial chunk, if any bytes are left.
    pub fn finish(self) -> Option<Bytes> {
        (!self.buf.is_empty()).then(|| self.buf.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rechunker_cuts_fixed_sizes_whatever_the_input() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        for piece in [1, 7, 100, 250, 999, 1000, 4096] {
            let mut r = Rechunker::new(250);
            let mut out = Vec::new();
            for p in data.chunks(piece) {
                out.extend(r.push(Bytes::copy_from_slice(p)));
            }
            out.extend(r.finish());
            assert_eq!(out.len(), 4, "piece {piece}");
            assert!(out.iter().all(|c| c.len() == 250));
            assert_eq!(out.concat(), data);
        }
        let mut r = Rechunker::new(300);
        let out = r.push(Bytes::from(data.clone()));
        assert_eq!(out.iter().map(Bytes::len).collect::<Vec<_>>(), [300, 300, 300]);
        assert_eq!(r.finish().map(|b| b.len()), Some(100));
        assert!(Rechunker::new(8).finish().is_none());
    }
}
