//! Upload guards: keep freshly written data safe from a concurrent GC.
//!
//! # Protocol
//!
//! GC collects everything that no pinned manifest references. During an
//! upload, shards and the manifest exist before the pin does, so they must be
//! protected until the pin is committed:
//!
//! ```text
//! let guard = store.protect();
//! store.put_shards(&chunk_shards, Some(&guard))?;   // adds the shard CIDs to the guard
//! guard.add(manifest_cid);                          // before put_manifest
//! store.put_manifest(&manifest_cid, &bytes)?;
//! store.pin(&manifest_cid, info)?;
//! drop(guard);                                      // now the pin keeps it all alive
//! ```
//!
//! `put_shards` adds the CIDs to the guard *before* it checks whether they
//! are already stored, while holding the store's mutation lock for reading;
//! GC re-checks guards while holding it for writing, just before it deletes.
//! So a shard that is already stored (and so skipped by the put) can never be
//! swept between the put's "already there" answer and the pin. Anything added
//! with [`UploadGuard::add`] before the call that writes or reuses it is
//! covered the same way.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use datamesh_core::Cid;

use crate::lock;

/// The CIDs protected by all live guards, with a count per CID.
#[derive(Debug, Default)]
pub(crate) struct GuardSet {
    counts: Mutex<HashMap<Cid, usize>>,
}

impl GuardSet {
    /// Whether any live guard protects `cid`.
    pub(crate) fn is_protected(&self, cid: &Cid) -> bool {
        lock(&self.counts).contains_key(cid)
    }
}

/// Protects CIDs from GC until dropped. `Send + Sync`; cheap to create.
/// See the module docs for the upload protocol.
#[derive(Debug)]
pub struct UploadGuard {
    set: Arc<GuardSet>,
    mine: Mutex<HashSet<Cid>>,
}

impl UploadGuard {
    pub(crate) fn new(set: Arc<GuardSet>) -> Self {
        UploadGuard { set, mine: Mutex::new(HashSet::new()) }
    }

    /// Protects `cid` until this guard is dropped.
    pub fn add(&self, cid: Cid) {
        self.add_many(std::iter::once(cid));
    }

    /// Protects every CID in `cids` until this guard is dropped.
    pub fn add_many(&self, cids: impl IntoIterator<Item = Cid>) {
        // Lock order: the guard's own set, then the shared counts.
        let mut mine = lock(&self.mine);
        let mut counts = lock(&self.set.counts);
        for cid in cids {
            if mine.insert(cid) {
                *counts.entry(cid).or_insert(0) += 1;
            }
        }
    }

    /// Stops protecting `cids` (e.g. once a pin keeps them instead).
    pub fn release_many<'a>(&self, cids: impl IntoIterator<Item = &'a Cid>) {
        let mut mine = lock(&self.mine);
        let mut counts = lock(&self.set.counts);
        for cid in cids {
            if mine.remove(cid)
                && let Some(n) = counts.get_mut(cid)
            {
                *n -= 1;
                if *n == 0 {
                    counts.remove(cid);
                }
            }
        }
    }

    /// Whether this guard protects `cid`.
    pub fn contains(&self, cid: &Cid) -> bool {
        lock(&self.mine).contains(cid)
    }

    /// How many CIDs this guard protects.
    pub fn len(&self) -> usize {
        lock(&self.mine).len()
    }

    /// Whether this guard protects nothing yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let mine = std::mem::take(&mut *lock(&self.mine));
        let mut counts = lock(&self.set.counts);
        for cid in mine {
            if let Some(n) = counts.get_mut(&cid) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&cid);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_guards_count() {
        let set = Arc::new(GuardSet::default());
        let a = Cid::raw_blake3(b"a");
        let g1 = UploadGuard::new(set.clone());
        let g2 = UploadGuard::new(set.clone());
        g1.add(a);
        g1.add(a);
        g2.add(a);
        assert!(set.is_protected(&a));
        drop(g1);
        assert!(set.is_protected(&a));
        drop(g2);
        assert!(!set.is_protected(&a));
    }
}
