//! Streaming puts and reads: an object written or read in pieces, so that
//! memory per transfer is a piece, not the object.
//!
//! [`ObjectWriter`] writes into a temp file in `tmp/` while hashing what it
//! is given, and commits only from [`ObjectWriter::finish`], and only if the
//! length is the announced one and the bytes hash to the CID: then it is the
//! same commit as [`Store::put_shards`] (fsync, rename, fsync of the
//! directory, index entry). Anything else (a wrong hash, a body cut short, a
//! writer dropped half way) removes the temp file and gives back the
//! reserved capacity; nothing is ever indexed. The announced length is
//! reserved against the capacity budget when the writer is made.
//!
//! [`ObjectReader`] reads a stored object in pieces, verified as it goes:
//! the read that would return the last bytes first finishes the hash (and
//! checks that the file holds no more bytes than recorded), and returns an
//! error instead of them if they do not match. So a reader that forwards
//! pieces as they come never forwards a whole corrupt object; the corrupt
//! file is quarantined and its entry dropped, as for [`Store::get_shard`].

use std::io::{self, Read};
use std::path::PathBuf;

use datamesh_core::{Cid, CidHasher};

use crate::error::{StoreError, io_error};
use crate::guard::UploadGuard;
use crate::io::IoFile;
use crate::read_lock;
use crate::store::{Kind, ShardMeta, Store, object_path};

type Result<T> = std::result::Result<T, StoreError>;

/// A shard or manifest being written in pieces (see the module docs).
/// Blocking like every store call. Dropping it without a successful
/// [`Self::finish`] leaves nothing behind.
pub struct ObjectWriter {
    store: Store,
    kind: Kind,
    cid: Cid,
    meta: Option<ShardMeta>,
    len: u64,
    written: u64,
    hasher: CidHasher,
    file: Option<Box<dyn IoFile>>,
    tmp: PathBuf,
}

impl std::fmt::Debug for ObjectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectWriter")
            .field("cid", &self.cid)
            .field("len", &self.len)
            .field("written", &self.written)
            .finish()
    }
}

impl Store {
    /// Starts a streaming put of a shard of exactly `len` bytes. Fails at
    /// once, before writing anything, if `len` exceeds the largest shard
    /// ([`StoreError::TooLarge`]) or the capacity budget
    /// ([`StoreError::CapacityExceeded`]); `len` stays reserved until the
    /// writer is finished or dropped.
    pub fn shard_writer(&self, cid: Cid, len: u64, meta: ShardMeta) -> Result<ObjectWriter> {
        self.object_writer(Kind::Shard, cid, len, Some(meta))
    }

    /// [`Self::shard_writer`] for a manifest.
    pub fn manifest_writer(&self, cid: Cid, len: u64) -> Result<ObjectWriter> {
        self.object_writer(Kind::Manifest, cid, len, None)
    }

    fn object_writer(&self, kind: Kind, cid: Cid, len: u64, meta: Option<ShardMeta>) -> Result<ObjectWriter> {
        if len > kind.max_size() {
            return Err(StoreError::TooLarge { cid, size: len, max: kind.max_size(), what: kind.what() });
        }
        self.reserve_bytes(len)?;
        let tmp = self.tmp_path(kind.what());
        let mut w = ObjectWriter {
            store: self.clone(),
            kind,
            cid,
            meta,
            len,
            written: 0,
            hasher: cid.hasher(),
            file: None,
            tmp,
        };
        // On failure `w` is dropped, which gives the reservation back.
        let f = self.inner.io.create_new(&w.tmp).map_err(|e| io_error(&self.inner.dir, "create", &w.tmp, e))?;
        w.file = Some(f);
        Ok(w)
    }

    /// Opens a stored shard for reading in pieces, verified as it is read
    /// (see the module docs). [`StoreError::NotFound`] if it is not stored.
    pub fn shard_reader(&self, cid: &Cid) -> Result<ObjectReader> {
        self.object_reader(Kind::Shard, cid)
    }

    /// [`Self::shard_reader`] for a manifest.
    pub fn manifest_reader(&self, cid: &Cid) -> Result<ObjectReader> {
        self.object_reader(Kind::Manifest, cid)
    }

    fn object_reader(&self, kind: Kind, cid: &Cid) -> Result<ObjectReader> {
        let inner = &*self.inner;
        let Some((size, rec)) = self.lookup(kind, cid)? else {
            return Err(StoreError::NotFound { cid: *cid });
        };
        let path = object_path(&inner.dir, kind, cid);
        let file = match inner.io.open_read(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted concurrently (entry gone too), or lost.
                return Err(if self.lookup(kind, cid)?.is_some() {
                    self.quarantine(kind, cid, false)
                } else {
                    StoreError::NotFound { cid: *cid }
                });
            }
            Err(e) => return Err(io_error(&inner.dir, "open", &path, e)),
        };
        if let Some(r) = rec {
            self.note_access(cid, &r);
        }
        Ok(ObjectReader {
            store: self.clone(),
            kind,
            cid: *cid,
            size,
            remaining: size,
            file,
            hasher: cid.hasher(),
            state: ReadState::Reading,
        })
    }
}

impl ObjectWriter {
    /// The CID the bytes must hash to.
    pub fn cid(&self) -> Cid {
        self.cid
    }

    /// Appends the next piece. More bytes than announced is
    /// [`StoreError::Corrupt`] (they cannot be the object's).
    pub fn write(&mut self, piece: &[u8]) -> Result<()> {
        let inner = &*self.store.inner;
        if self.written + piece.len() as u64 > self.len {
            return Err(StoreError::Corrupt { cid: self.cid });
        }
        let Some(f) = self.file.as_mut() else {
            return Err(StoreError::Corrupt { cid: self.cid });
        };
        f.write_all(piece).map_err(|e| io_error(&inner.dir, "write", &self.tmp, e))?;
        self.hasher.update(piece);
        self.written += piece.len() as u64;
        Ok(())
    }

    /// Commits the object if exactly the announced length was written and
    /// it hashes to the CID ([`StoreError::Corrupt`] otherwise, and nothing
    /// is kept). Durable and indexed when it returns `Ok`. With a guard, the
    /// CID is added to it first (see [`UploadGuard`]). An object already
    /// stored is not written again.
    pub fn finish(mut self, guard: Option<&UploadGuard>) -> Result<()> {
        let inner = self.store.inner.clone();
        let (kind, cid) = (self.kind, self.cid);
        if self.written != self.len || !self.hasher.verifies() {
            return Err(StoreError::Corrupt { cid });
        }
        let Some(mut f) = self.file.take() else {
            return Err(StoreError::Corrupt { cid });
        };
        f.sync().map_err(|e| io_error(&inner.dir, "fsync", &self.tmp, e))?;
        drop(f);

        let _m = read_lock(&inner.mutation);
        if let Some(g) = guard {
            // Before the "already stored?" check, as in `put_shards`.
            g.add(cid);
        }
        if self.store.lookup(kind, &cid)?.is_some() {
            return Ok(());
        }
        let inflight = self.store.register(std::iter::once(cid));
        let dst = object_path(&inner.dir, kind, &cid);
        inner.io.rename(&self.tmp, &dst).map_err(|e| io_error(&inner.dir, "rename", &dst, e))?;
        if let Some(d) = dst.parent()
            && let Err(e) = inner.io.sync_dir(d)
        {
            self.store.remove_uncommitted(kind, &[cid]);
            return Err(io_error(&inner.dir, "fsync", d, e));
        }
        self.store.index_durable(kind, &[(cid, self.len, self.meta)])?;
        drop(inflight);
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        // After a successful rename there is no temp file and this fails
        // harmlessly; in every other case it removes the partial object.
        drop(self.file.take());
        let _ = self.store.inner.io.remove_file(&self.tmp);
        self.store.release_bytes(self.len);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Reading,
    Verified,
    Failed,
}

/// A stored shard or manifest read in pieces and verified as it is read
/// (see the module docs). Blocking, like every store call.
pub struct ObjectReader {
    store: Store,
    kind: Kind,
    cid: Cid,
    size: u64,
    remaining: u64,
    file: Box<dyn Read + Send>,
    hasher: CidHasher,
    state: ReadState,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader").field("cid", &self.cid).field("size", &self.size).finish()
    }
}

impl ObjectReader {
    /// The object's recorded size: exactly what a successful read returns.
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Whether the object is empty.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    fn corrupt(&mut self, why: &str) -> io::Error {
        self.state = ReadState::Failed;
        let e = self.store.quarantine(self.kind, &self.cid, true);
        io::Error::new(io::ErrorKind::InvalidData, format!("{why}: {e}"))
    }
}

impl Read for ObjectReader {
    /// Returns the object's bytes; the read that reaches the end verifies
    /// the whole object first and fails (quarantining the file) instead of
    /// returning the last bytes if they do not match the CID.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.state {
            ReadState::Failed => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{} is corrupt", self.cid)));
            }
            ReadState::Verified => return Ok(0),
            ReadState::Reading => {}
        }
        if buf.is_empty() && self.remaining > 0 {
            return Ok(0);
        }
        let mut n = 0;
        if self.remaining > 0 {
            let want = buf.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            n = loop {
                match self.file.read(&mut buf[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                return Err(self.corrupt("the file is shorter than recorded"));
            }
            self.hasher.update(&buf[..n]);
            self.remaining -= n as u64;
        }
        if self.remaining == 0 {
            // The last bytes are in `buf`: check everything before they go.
            let mut extra = [0u8; 1];
            if self.file.read(&mut extra)? != 0 {
                return Err(self.corrupt("the file is longer than recorded"));
            }
            if !self.hasher.verifies() {
                return Err(self.corrupt("the bytes do not match the CID"));
            }
            self.state = ReadState::Verified;
        }
        Ok(n)
    }
}
