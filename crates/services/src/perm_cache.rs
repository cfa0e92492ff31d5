//! Permission levels read under a permission epoch, reused while it holds.
//!
//! A user's request costs one query for the credential and, before this
//! cache, one more for the permission: the level query ran on every read
//! of every file and object (the accounts bench measured 10–20 % of an
//! authenticated 4 KiB GET's throughput in it). The database keeps a
//! counter, the *permission epoch* (migration 4), that its triggers move
//! whenever a permission could have been narrowed: an owner changed, a
//! resource made private or deleted, a grant lowered or removed. Every
//! authentication reads the epoch in the credential's own query
//! ([`crate::Principal`] carries it), so a level read under epoch `e` may
//! serve any request that authenticated under `e`, and a narrowing made on
//! any gateway sharing the database holds from the next request there.
//!
//! Why this is sound: a level is read after its request authenticated, so
//! it reflects the database at epoch `e` or later; an entry is used only by
//! requests of the same epoch. Levels only ever *widen* without moving the
//! epoch (a new resource, a new grant), so a cached level too low for an
//! action is read again, never trusted to deny. Only positive levels are
//! kept: a denial is always fresh.
//!
//! Bounded: at most [`CAPACITY`] entries of fixed size (the resource is kept
//! as a 32-byte hash), cleared whole when full or when the epoch moves; a
//! clear costs one query per resource in use, which is what every request
//! paid without the cache. Hand-written rather than an LRU crate because
//! wholesale clearing on an epoch change is the whole policy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::perms::{Level, ResourceRef};
use crate::users::UserId;

/// Most entries kept (48 bytes each and the map's overhead: a few MiB).
pub(crate) const CAPACITY: usize = 32 * 1024;

/// The cache of one process.
#[derive(Debug, Default)]
pub(crate) struct PermCache {
    state: Mutex<State>,
    /// Checks answered from the cache, and from the database.
    hits: AtomicU64,
    misses: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The epoch every entry was read under (None: empty).
    epoch: Option<i64>,
    /// The epoch of the last narrowing made through this process: a
    /// principal older than it (held across the change) uses no entry.
    floor: i64,
    levels: HashMap<(i64, [u8; 32]), Level>,
}

/// A resource's identity: its kind and full name (the bucket, which the
/// level query also reads, is part of the name).
fn resource_hash(res: &ResourceRef) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(res.kind.as_str().as_bytes());
    h.update(&[0]);
    h.update(res.name.as_bytes());
    *h.finalize().as_bytes()
}

impl PermCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Entries are plain values: a panic elsewhere leaves them valid.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The level `user` had on `res`, read under `epoch`, if kept.
    pub(crate) fn get(&self, epoch: i64, user: UserId, res: &ResourceRef) -> Option<Level> {
        let key = (user.0, resource_hash(res));
        let s = self.lock();
        if s.epoch != Some(epoch) || epoch < s.floor {
            return None;
        }
        s.levels.get(&key).copied()
    }

    /// Keeps `level` (read under `epoch`) for `user` on `res`. A newer
    /// epoch replaces every entry; an older one (a request that
    /// authenticated before the last change) keeps nothing.
    pub(crate) fn put(&self, epoch: i64, user: UserId, res: &ResourceRef, level: Level) {
        if level == Level::None {
            return;
        }
        let key = (user.0, resource_hash(res));
        let mut s = self.lock();
        if epoch < s.floor {
            return;
        }
        match s.epoch {
            Some(e) if e > epoch => return,
            Some(e) if e == epoch && s.levels.len() < CAPACITY => {}
            _ => {
                s.levels.clear();
                s.epoch = Some(epoch);
            }
        }
        s.levels.insert(key, level);
    }

    /// A change made through this process narrowed permissions, and the
    /// database's epoch is `epoch` after it: entries of older epochs go,
    /// and principals from before it use none from now on.
    pub(crate) fn narrowed(&self, epoch: i64) {
        let mut s = self.lock();
        s.floor = s.floor.max(epoch);
        if s.epoch.is_some_and(|e| e < epoch) {
            s.levels.clear();
            s.epoch = None;
        }
    }

    /// Counts a check answered from the cache (`hit`) or the database.
    pub(crate) fn count(&self, hit: bool) {
        let c = if hit { &self.hits } else { &self.misses };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Checks answered from the cache and from the database so far.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (self.hits.load(Ordering::Relaxed), self.misses.load(Ordering::Relaxed))
    }

    /// Entries kept (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().levels.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(name: &str) -> ResourceRef {
        ResourceRef::file(name).unwrap_or_else(|_| unreachable!())
    }

    #[test]
    fn entries_hold_for_their_epoch_only() {
        let c = PermCache::default();
        let (alice, bob) = (UserId(1), UserId(2));
        c.put(5, alice, &res("a"), Level::Read);
        assert_eq!(c.get(5, alice, &res("a")), Some(Level::Read));
        assert_eq!(c.get(5, bob, &res("a")), None, "per user");
        assert_eq!(c.get(5, alice, &res("b")), None, "per resource");
        assert_eq!(c.get(6, alice, &res("a")), None, "a newer epoch sees nothing older");
        // A request from before the change keeps nothing over newer entries.
        c.put(6, bob, &res("a"), Level::Admin);
        c.put(5, alice, &res("b"), Level::Write);
        assert_eq!(c.get(5, alice, &res("b")), None);
        assert_eq!(c.get(6, bob, &res("a")), Some(Level::Admin));
        assert_eq!(c.len(), 1, "the newer epoch cleared the older entries");
        // Denials are never kept.
        c.put(6, alice, &res("c"), Level::None);
        assert_eq!(c.get(6, alice, &res("c")), None);
    }

    #[test]
    fn a_local_narrowing_holds_for_principals_held_across_it() {
        let c = PermCache::default();
        c.put(3, UserId(1), &res("a"), Level::Write);
        c.narrowed(4);
        assert_eq!(c.get(3, UserId(1), &res("a")), None, "the entry went");
        c.put(3, UserId(1), &res("a"), Level::Write);
        assert_eq!(c.get(3, UserId(1), &res("a")), None, "a principal from before the change keeps nothing");
        c.put(4, UserId(1), &res("a"), Level::Read);
        assert_eq!(c.get(4, UserId(1), &res("a")), Some(Level::Read));
    }

    #[test]
    fn it_is_bounded() {
        let c = PermCache::default();
        for i in 0..(CAPACITY + 10) {
            c.put(1, UserId(i as i64), &res("a"), Level::Read);
        }
        assert!(c.len() <= CAPACITY, "{}", c.len());
        assert_eq!(c.get(1, UserId((CAPACITY + 9) as i64), &res("a")), Some(Level::Read));
    }
}
