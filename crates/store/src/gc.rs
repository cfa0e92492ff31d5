//! Mark-and-sweep garbage collection of unpinned manifests and unreferenced
//! shards.
//!
//! **Mark** (no lock held): every pinned manifest (through its alias if the
//! pin names a public CID) is read, verified and decoded; its chunks' shards
//! are live. **Sweep**, in batches, each under the mutation write lock:
//! anything not live and not in a live [`crate::UploadGuard`] has its entry
//! removed in one commit, then its file removed.
//!
//! Races: a pin commits and bumps `pin_epoch` under the read lock; a batch
//! that sees the epoch moved re-marks before deleting anything. A put adds
//! its CIDs to its guard under the read lock before deciding a shard is
//! already stored; a batch checks guards under the write lock. Shards put
//! after the mark are not candidates at all.
//!
//! If a pinned manifest is missing or unreadable, GC cannot know which shards
//! it needs, so it sweeps no shards at all (only manifests) and says so in
//! [`GcReport::pins_without_manifest`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use datamesh_core::{Cid, Manifest};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::error::{StoreError, index_error, io_error};
use crate::store::{ALIASES, Kind, MANIFESTS, PINS, SHARDS, Store, begin_write, object_path};
use crate::{lock, write_lock};

type Result<T> = std::result::Result<T, StoreError>;

/// Entries deleted per commit: bounds how long puts wait behind a sweep.
const GC_BATCH: usize = 512;

/// What a GC freed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Shards removed.
    pub shards_removed: u64,
    /// Manifests removed.
    pub manifests_removed: u64,
    /// Bytes of shards and manifests removed.
    pub bytes_freed: u64,
    /// Pins whose manifest is not stored here or does not decode. While
    /// this is non-zero no shards are swept; fetch those manifests or unpin.
    pub pins_without_manifest: u64,
    /// Aliases dropped because their manifest was removed.
    pub aliases_removed: u64,
}

/// The live set.
struct Mark {
    /// Pinned manifests (pin keys and the manifests their aliases name).
    manifests: HashSet<Cid>,
    /// Shards referenced by pinned manifests.
    shards: HashSet<Cid>,
    /// Pins whose manifest could not be read.
    unresolved: u64,
}

impl Store {
    /// Removes every manifest that is not pinned and every shard that no
    /// pinned manifest references, except what a live [`crate::UploadGuard`]
    /// protects. Safe to run alongside puts (see the module docs in `gc.rs`).
    pub fn gc(&self) -> Result<GcReport> {
        let inner = &*self.inner;
        let _one = lock(&inner.gc_lock);
        let mut report = GcReport::default();

        let mut epoch = inner.pin_epoch.load(Ordering::SeqCst);
        let mut mark = self.mark()?;
        let work = self.candidates(&mark)?;
        let mut removed_manifests = HashSet::new();

        for batch in work.chunks(GC_BATCH) {
            let _w = write_lock(&inner.mutation);
            let now_epoch = inner.pin_epoch.load(Ordering::SeqCst);
            if now_epoch != epoch {
                // Re-mark under the lock so no further pin can slip in. The
                // mark takes no store lock, so this cannot deadlock.
                mark = self.mark()?;
                epoch = now_epoch;
            }
            report.pins_without_manifest = mark.unresolved;
            let ix = |e: redb::Error| index_error(&inner.dir, "collecting garbage", e);
            let txn = begin_write(&inner.dir, &inner.db)?;
            let mut removed: Vec<(Kind, Cid, u64)> = Vec::new();
            {
                let mut shards = txn.open_table(SHARDS).map_err(|e| ix(e.into()))?;
                let mut manifests = txn.open_table(MANIFESTS).map_err(|e| ix(e.into()))?;
                for (kind, cid) in batch {
                    let live = match kind {
                        Kind::Shard => mark.unresolved > 0 || mark.shards.contains(cid),
                        Kind::Manifest => mark.manifests.contains(cid),
                    };
                    if live || inner.guards.is_protected(cid) {
                        continue;
                    }
                    let table = match kind {
                        Kind::Shard => &mut shards,
                        Kind::Manifest => &mut manifests,
                    };
                    let old = table.remove(cid.to_bytes().as_slice()).map_err(|e| ix(e.into()))?;
                    if let Some(v) = old {
                        removed.push((*kind, *cid, kind.record_size(v.value()).unwrap_or(0)));
                    }
                }
            }
            txn.commit().map_err(|e| ix(e.into()))?;
            // Entries are gone durably; now the files (a crash here leaves
            // orphans, which open removes).
            let mut usage = lock(&inner.usage);
            for (kind, cid, size) in removed {
                let _ = inner.io.remove_file(&object_path(&inner.dir, kind, &cid));
                usage.sub(kind, 1, size);
                report.bytes_freed += size;
                match kind {
                    Kind::Shard => report.shards_removed += 1,
                    Kind::Manifest => {
                        report.manifests_removed += 1;
                        removed_manifests.insert(cid);
                    }
                }
            }
        }
        if work.is_empty() {
            report.pins_without_manifest = mark.unresolved;
        }

        if !removed_manifests.is_empty() {
            let ix = |e: redb::Error| index_error(&inner.dir, "dropping aliases", e);
            let txn = begin_write(&inner.dir, &inner.db)?;
            {
                let mut t = txn.open_table(ALIASES).map_err(|e| ix(e.into()))?;
                let before = t.len().map_err(|e| ix(e.into()))?;
                t.retain(|_, to| Cid::from_bytes(to).map_or(true, |c| !removed_manifests.contains(&c)))
                    .map_err(|e| ix(e.into()))?;
                let after = t.len().map_err(|e| ix(e.into()))?;
                report.aliases_removed = before - after;
            }
            txn.commit().map_err(|e| ix(e.into()))?;
        }
        Ok(report)
    }

    /// Computes the live set from the pins. Reads manifests without
    /// quarantining (that would need the write lock, which a re-mark holds).
    fn mark(&self) -> Result<Mark> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "marking live data", e);
        // (pin, the manifest its alias names, if any)
        let mut pinned: Vec<(Cid, Option<Cid>)> = Vec::new();
        {
            let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
            let pins = txn.open_table(PINS).map_err(|e| ix(e.into()))?;
            let aliases = txn.open_table(ALIASES).map_err(|e| ix(e.into()))?;
            for row in pins.iter().map_err(|e| ix(e.into()))? {
                let (k, _) = row.map_err(|e| ix(e.into()))?;
                let Ok(cid) = Cid::from_bytes(k.value()) else {
                    continue;
                };
                let alias =
                    aliases.get(k.value()).map_err(|e| ix(e.into()))?.and_then(|to| Cid::from_bytes(to.value()).ok());
                pinned.push((cid, alias));
            }
        }
        let mut mark = Mark { manifests: HashSet::new(), shards: HashSet::new(), unresolved: 0 };
        let mut decoded: HashMap<Cid, bool> = HashMap::new();
        for (pin, alias) in pinned {
            let mut resolved = false;
            for cid in std::iter::once(pin).chain(alias) {
                mark.manifests.insert(cid);
                let ok = match decoded.get(&cid) {
                    Some(ok) => *ok,
                    None => {
                        let m = self.read_manifest_quietly(&cid)?;
                        for chunk in m.iter().flat_map(|m| &m.chunks) {
                            mark.shards.extend(chunk.shards.iter().copied());
                        }
                        decoded.insert(cid, m.is_some());
                        m.is_some()
                    }
                };
                resolved |= ok;
            }
            if !resolved {
                mark.unresolved += 1;
            }
        }
        Ok(mark)
    }

    /// The pinned manifest, or `None` if it is not stored, its file is gone
    /// or it does not verify and decode (the pin is then unresolved). An
    /// I/O error fails the GC: sweeping on a partial mark is not safe, and
    /// sweeping less without saying why would hide a failing disk.
    fn read_manifest_quietly(&self, cid: &Cid) -> Result<Option<Manifest>> {
        let inner = &*self.inner;
        let Some((size, _)) = self.lookup(Kind::Manifest, cid)? else {
            return Ok(None);
        };
        let path = object_path(&inner.dir, Kind::Manifest, cid);
        match inner.io.read(&path, size + 1) {
            Ok(bytes) if bytes.len() as u64 == size => Ok(Manifest::decode_verified(cid, &bytes).ok()),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error(&inner.dir, "read", &path, e)),
        }
    }

    /// Everything indexed that the mark does not keep, manifests first (so
    /// their aliases can be dropped) then shards.
    fn candidates(&self, mark: &Mark) -> Result<Vec<(Kind, Cid)>> {
        let inner = &*self.inner;
        let ix = |e: redb::Error| index_error(&inner.dir, "listing garbage", e);
        let txn = inner.db.begin_read().map_err(|e| ix(e.into()))?;
        let mut out = Vec::new();
        for kind in [Kind::Manifest, Kind::Shard] {
            if kind == Kind::Shard && mark.unresolved > 0 {
                continue;
            }
            let t = txn.open_table(kind.table()).map_err(|e| ix(e.into()))?;
            for row in t.iter().map_err(|e| ix(e.into()))? {
                let (k, _) = row.map_err(|e| ix(e.into()))?;
                let Ok(cid) = Cid::from_bytes(k.value()) else {
                    continue;
                };
                let live = match kind {
                    Kind::Shard => mark.shards.contains(&cid),
                    Kind::Manifest => mark.manifests.contains(&cid),
                };
                if !live {
                    out.push((kind, cid));
                }
            }
        }
        Ok(out)
    }
}
