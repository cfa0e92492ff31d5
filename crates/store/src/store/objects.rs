//! Object files and their index rows: batched durable writes, reads that
//! verify, capacity reservations, quarantine and deletion.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Store {
    pub(super) fn list(&self, kind: Kind) -> Result<Vec<Cid>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "listing", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
        let mut out = Vec::new();
        for row in t.iter().map_err(|e| ix(e.into()))? {
            let (k, _) = row.map_err(|e| ix(e.into()))?;
            out.push(decode_key(k.value())?);
        }
        Ok(out)
    }

    /// The object's size and, for shards, its record.
    pub(crate) fn lookup(&self, kind: Kind, cid: &Cid) -> Result<Option<(u64, Option<ShardRecord>)>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "looking up", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
        let Some(v) = t.get(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))? else {
            return Ok(None);
        };
        match kind {
            Kind::Shard => {
                let r = ShardRecord::decode(v.value()).map_err(|e| bad_record(cid, e))?;
                Ok(Some((r.size, Some(r))))
            }
            Kind::Manifest => {
                let r = ManifestRecord::decode(v.value()).map_err(|e| bad_record(cid, e))?;
                Ok(Some((r.size, None)))
            }
        }
    }

    pub(super) fn put_objects(
        &self,
        kind: Kind,
        items: &[(Cid, &[u8], Option<ShardMeta>)],
        guard: Option<&UploadGuard>,
    ) -> Result<()> {
        let inner = &*self.inner;
        for (cid, data, _) in items {
            if data.len() as u64 > kind.max_size() {
                return Err(StoreError::TooLarge {
                    cid: *cid,
                    size: data.len() as u64,
                    max: kind.max_size(),
                    what: kind.what(),
                });
            }
            if !cid.verifies(data) {
                return Err(StoreError::Corrupt { cid: *cid });
            }
        }
        let mut seen = HashSet::new();
        let items: Vec<_> = items.iter().filter(|(c, _, _)| seen.insert(*c)).collect();

        let _m = read_lock(&inner.mutation);
        if let Some(g) = guard {
            // Before the "already stored?" check: see the guard protocol.
            g.add_many(items.iter().map(|i| i.0));
        }
        let fresh: Vec<_> = {
            let ix = |e: redb::Error| index_error(&inner.dir, "checking what is stored", e);
            let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
            let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let mut fresh = Vec::new();
            for item in items {
                if t.get(item.0.to_bytes().as_slice()).map_err(|e| ix(e.into()))?.is_none() {
                    fresh.push(item);
                }
            }
            fresh
        };
        if fresh.is_empty() {
            return Ok(());
        }
        let needed: u64 = fresh.iter().map(|i| i.1.len() as u64).sum();
        let reservation = self.reserve(needed)?;
        let inflight = self.register(fresh.iter().map(|i| i.0));

        // fsync latency, not bandwidth, bounds a put: overlapping the
        // batch's file fsyncs (and then its directory fsyncs) lets the file
        // system commit them together. Every file is durable and in place
        // before any directory is synced, and every directory before the
        // index commit, so the order that matters is unchanged.
        let results = par_map(&fresh, |(cid, data, _)| self.write_durably(kind, cid, data));
        let written: Vec<Cid> = fresh.iter().zip(&results).filter(|(_, r)| r.is_ok()).map(|(i, _)| i.0).collect();
        let files = (|| -> Result<()> {
            let mut dirs = BTreeSet::new();
            for r in results {
                if let Some(p) = r?.parent() {
                    dirs.insert(p.to_path_buf());
                }
            }
            // One fsync per touched directory makes all the renames durable.
            let dirs: Vec<PathBuf> = dirs.into_iter().collect();
            for r in par_map(&dirs, |d| inner.io.sync_dir(d).map_err(|e| io_error(&inner.dir, "fsync", d, e))) {
                r?;
            }
            Ok(())
        })();
        if let Err(e) = files {
            // Nothing was committed: give the space back now.
            self.remove_uncommitted(kind, &written);
            return Err(e);
        }
        let sized: Vec<_> = fresh.iter().map(|(c, d, m)| (*c, d.len() as u64, *m)).collect();
        self.index_durable(kind, &sized)?;
        drop(reservation);
        drop(inflight);
        Ok(())
    }

    /// Indexes files that are durable in place and counts them as used.
    ///
    /// If the commit fails, its outcome is unknown: a commit whose last fsync
    /// failed may still be on disk and be found by the next open. So the
    /// files stay; the next open keeps them if the entries made it and
    /// removes them as orphans if not. Removing them here could leave entries
    /// without files.
    pub(crate) fn index_durable(&self, kind: Kind, fresh: &[(Cid, u64, Option<ShardMeta>)]) -> Result<()> {
        let inner = &*self.inner;
        let (count, bytes) = self.index_batch(kind, fresh).inspect_err(|_| {
            inner.commit_failed.store(true, Ordering::SeqCst);
        })?;
        lock(&inner.usage).add(kind, count, bytes);
        Ok(())
    }

    /// Commits index entries for freshly written files, with any pending
    /// access times. Returns (objects added, bytes added).
    pub(super) fn index_batch(&self, kind: Kind, fresh: &[(Cid, u64, Option<ShardMeta>)]) -> Result<(u64, u64)> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "indexing new data", e);
        let txn = begin_write(&inner.dir, &inner.db)?;
        let (mut count, mut bytes) = (0, 0);
        {
            let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let now = now();
            for &(cid, size, meta) in fresh {
                let key = cid.to_bytes();
                // A concurrent put of the same CID may have committed first.
                if t.get(key.as_slice()).map_err(|e| ix(e.into()))?.is_some() {
                    continue;
                }
                let value = match (kind, meta) {
                    (Kind::Shard, Some(m)) => ShardRecord {
                        chunk: m.chunk,
                        index: m.index,
                        size,
                        stored_at: now,
                        last_access: now,
                        verified_at: now,
                    }
                    .encode(),
                    _ => ManifestRecord { size, stored_at: now }.encode(),
                };
                t.insert(key.as_slice(), value.as_slice()).map_err(|e| ix(e.into()))?;
                count += 1;
                bytes += size;
            }
        }
        // Piggyback read-access times on a commit we pay for anyway.
        let pending = std::mem::take(&mut *lock(&inner.pending_access));
        if !pending.is_empty() {
            apply_access(&inner.dir, &txn, &pending)?;
        }
        txn.commit().map_err(|e| ix(e.into()))?;
        Ok((count, bytes))
    }

    /// temp file → write → fsync → rename into place. Leaves no temp file
    /// behind on failure. The caller fsyncs the destination directory.
    pub(super) fn write_durably(&self, kind: Kind, cid: &Cid, data: &[u8]) -> Result<PathBuf> {
        let inner = &*self.inner;
        let tmp = self.tmp_path(kind.what());
        let dst = object_path(&inner.dir, kind, cid);
        match write_file(&*inner.io, (&tmp, &dst), data, false, Commit::Renamed) {
            Ok(()) => Ok(dst),
            Err((op, e)) => Err(io_error(&inner.dir, op, if op == "rename" { &dst } else { &tmp }, e)),
        }
    }

    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        // The data dir is locked to this process and tmp/ is emptied at open,
        // so a per-open counter is a unique name.
        let n = self.inner.seq.fetch_add(1, Ordering::Relaxed);
        self.inner.dir.join(TMP_DIR).join(format!("{what}-{n}.tmp"))
    }

    /// Removes the files of a failed batch that nobody else is writing or
    /// has indexed, so a failed put (e.g. disk full) gives its space back.
    pub(crate) fn remove_uncommitted(&self, kind: Kind, written: &[Cid]) {
        let inner = &*self.inner;
        // Holding the registry keeps new writers of these CIDs out while we
        // decide; an index entry can only come from a registered writer.
        let reg = lock(&inner.inflight);
        if inner.commit_failed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(txn) = inner.db.begin_read() else {
            return;
        };
        let Ok(t) = txn.open_table(kind.table()) else {
            return;
        };
        for cid in written {
            let indexed = !matches!(t.get(cid.to_bytes().as_slice()), Ok(None));
            if reg.get(cid) == Some(&1) && !indexed {
                let _ = inner.io.remove_file(&object_path(&inner.dir, kind, cid));
            }
        }
    }

    pub(super) fn reserve(&self, needed: u64) -> Result<Reservation<'_>> {
        self.reserve_bytes(needed)?;
        Ok(Reservation { usage: &self.inner.usage, bytes: needed })
    }

    /// Counts `needed` bytes as reserved if they fit the budget; the caller
    /// gives them back with [`Self::release_bytes`].
    pub(crate) fn reserve_bytes(&self, needed: u64) -> Result<()> {
        let mut u = lock(&self.inner.usage);
        let available = self.inner.cfg.capacity_bytes.saturating_sub(u.used() + u.reserved);
        if needed > available {
            return Err(StoreError::CapacityExceeded { needed, available });
        }
        u.reserved += needed;
        Ok(())
    }

    /// Gives back bytes taken with [`Self::reserve_bytes`].
    pub(crate) fn release_bytes(&self, bytes: u64) {
        let mut u = lock(&self.inner.usage);
        u.reserved = u.reserved.saturating_sub(bytes);
    }

    pub(crate) fn register(&self, cids: impl Iterator<Item = Cid>) -> Inflight<'_> {
        let mut m = lock(&self.inner.inflight);
        let cids: Vec<Cid> = cids.collect();
        for c in &cids {
            *m.entry(*c).or_insert(0) += 1;
        }
        Inflight { map: &self.inner.inflight, cids }
    }

    pub(crate) fn get_object(&self, kind: Kind, cid: &Cid) -> Result<Vec<u8>> {
        let inner = &*self.inner;
        let Some((size, rec)) = self.lookup(kind, cid)? else {
            return Err(StoreError::NotFound { cid: *cid });
        };
        let path = object_path(&inner.dir, kind, cid);
        // One byte past the recorded size tells a grown file from a good one
        // without reading an arbitrarily large file.
        match inner.io.read(&path, size + 1) {
            Ok(bytes) if bytes.len() as u64 == size && cid.verifies(&bytes) => {
                if let Some(r) = rec {
                    self.note_access(cid, &r);
                }
                Ok(bytes)
            }
            Ok(_) => Err(self.quarantine(kind, cid, true)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Either deleted concurrently (entry gone too) or lost.
                if self.lookup(kind, cid)?.is_some() {
                    Err(self.quarantine(kind, cid, false))
                } else {
                    Err(StoreError::NotFound { cid: *cid })
                }
            }
            Err(e) => Err(io_error(&inner.dir, "read", &path, e)),
        }
    }

    pub(crate) fn note_access(&self, cid: &Cid, rec: &ShardRecord) {
        let now = now();
        if now.saturating_sub(rec.last_access) < self.inner.access_interval {
            return;
        }
        let flush = {
            let mut p = lock(&self.inner.pending_access);
            p.insert(*cid, now);
            p.len() >= ACCESS_FLUSH_THRESHOLD
        };
        if flush {
            // Non-durable: no fsync on the read path; the next durable commit
            // carries it to disk. Failure only loses access times.
            let _m = read_lock(&self.inner.mutation);
            let _ = flush_access(&self.inner, Durability::None);
        }
    }

    /// Moves a bad file to quarantine and drops its entry. Returns the error
    /// the reader should see.
    pub(crate) fn quarantine(&self, kind: Kind, cid: &Cid, bad_bytes: bool) -> StoreError {
        let inner = &*self.inner;
        let _w = write_lock(&inner.mutation);
        let r = (|| -> Result<bool> {
            if self.remove_entry(kind, cid, "dropping a corrupt entry")?.is_none() {
                return Ok(false);
            }
            self.move_to_quarantine(kind, cid, &object_path(&inner.dir, kind, cid));
            Ok(true)
        })();
        match r {
            Ok(true) => StoreError::Corrupt { cid: *cid },
            // Someone else dropped it meanwhile: a concurrent quarantine (the
            // bytes we read were still bad) or a delete.
            Ok(false) if bad_bytes => StoreError::Corrupt { cid: *cid },
            Ok(false) => StoreError::NotFound { cid: *cid },
            Err(e) => e,
        }
    }

    /// Drops `cid`'s index entry in a transaction of its own and takes it off
    /// the usage totals; the size it had, or `None` when there was no entry
    /// (nothing is committed then). `what` names the operation in an index
    /// error. The caller holds the mutation lock and deals with the file
    /// after this returns: entry first, file second, so a crash in between
    /// leaves an orphan file, which the next open removes, never an entry
    /// without its file.
    fn remove_entry(&self, kind: Kind, cid: &Cid, what: &'static str) -> Result<Option<u64>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, what, e);
        let txn = begin_write(&inner.dir, &inner.db)?;
        let size = {
            let mut t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            let old = t.remove(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))?;
            old.map(|v| kind.record_size(v.value()).unwrap_or(0))
        };
        let Some(size) = size else { return Ok(None) };
        txn.commit().map_err(|e| ix(e.into()))?;
        lock(&inner.usage).sub(kind, 1, size);
        Ok(Some(size))
    }

    /// Best effort, after the entry is dropped: a file that cannot be moved
    /// is removed; if that fails too it is an orphan the next open removes.
    pub(crate) fn move_to_quarantine(&self, kind: Kind, cid: &Cid, path: &Path) {
        let inner = &*self.inner;
        let n = inner.seq.fetch_add(1, Ordering::Relaxed);
        let q = inner.dir.join(QUARANTINE_DIR).join(format!("{}-{cid}-{}-{n}", kind.what(), now()));
        if let Err(e) = inner.io.rename(path, &q)
            && e.kind() != io::ErrorKind::NotFound
        {
            let _ = inner.io.remove_file(path);
        }
    }

    pub(super) fn delete_object(&self, kind: Kind, cid: &Cid) -> Result<bool> {
        let inner = &*self.inner;
        let _w = write_lock(&inner.mutation);
        if self.remove_entry(kind, cid, "deleting")?.is_none() {
            return Ok(false);
        }
        lock(&inner.pending_access).remove(cid);
        // If removal fails the file is an orphan until the next open.
        let _ = inner.io.remove_file(&object_path(&inner.dir, kind, cid));
        Ok(true)
    }
}

/// Threads a batch's file writes use at most. They mostly wait on fsync, so
/// this is about overlapping waits, not cores.
pub(super) const WRITE_PARALLELISM: usize = 4;

/// `items.iter().map(f)`, spread over up to [`WRITE_PARALLELISM`] scoped
/// threads; results in input order. Runs inline for a single item.
pub(super) fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = items.len().min(WRITE_PARALLELISM);
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let f = &f;
    let mut out: Vec<Option<R>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    items.iter().enumerate().skip(w).step_by(workers).map(|(i, t)| (i, f(t))).collect::<Vec<_>>()
                })
            })
            .collect();
        let mut out: Vec<Option<R>> = (0..items.len()).map(|_| None).collect();
        for h in handles {
            // A panic in `f` is a bug; re-raise it on the caller's thread.
            let done = h.join().unwrap_or_else(|p| std::panic::resume_unwind(p));
            for (i, r) in done {
                out[i] = Some(r);
            }
        }
        out
    });
    // Every index was filled by exactly one worker.
    out.iter_mut().filter_map(Option::take).collect()
}

pub(super) fn decode_key(k: &[u8]) -> Result<Cid> {
    Cid::from_bytes(k).map_err(|e| StoreError::BadRecord { key: hex(k), source: RecordError::BadCid(e.to_string()) })
}

pub(super) fn bad_record(cid: &Cid, e: RecordError) -> StoreError {
    StoreError::BadRecord { key: cid.to_string(), source: e }
}

pub(super) fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
