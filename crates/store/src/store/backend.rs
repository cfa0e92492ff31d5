//! The index database's plumbing: redb over the store's IO layer (so fault
//! injection reaches it), write transactions, and access-time batching.

#[allow(clippy::wildcard_imports)]
use super::*;

#[derive(Debug)]
pub(super) struct DynBackend(pub(super) Box<dyn redb::StorageBackend>);

impl redb::StorageBackend for DynBackend {
    fn len(&self) -> std::result::Result<u64, io::Error> {
        self.0.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), io::Error> {
        self.0.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::result::Result<(), io::Error> {
        self.0.set_len(len)
    }
    fn sync_data(&self) -> std::result::Result<(), io::Error> {
        self.0.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), io::Error> {
        self.0.write(offset, data)
    }
    fn close(&self) -> std::result::Result<(), io::Error> {
        self.0.close()
    }
    fn try_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.try_lock_range(start, end)
    }
    fn try_lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.try_lock_shared_range(start, end)
    }
    fn lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.lock_range(start, end)
    }
    fn lock_shared_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.lock_shared_range(start, end)
    }
    fn unlock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<(), redb::BackendError> {
        self.0.unlock_range(start, end)
    }
    fn query_lock_range(
        &self,
        start: std::ops::Bound<u64>,
        end: std::ops::Bound<u64>,
    ) -> std::result::Result<bool, redb::BackendError> {
        self.0.query_lock_range(start, end)
    }
}

/// Starts a write transaction that is durable when `commit` returns.
pub(crate) fn begin_write(dir: &Path, db: &Database) -> Result<redb::WriteTransaction> {
    let mut txn = db.begin_write().map_err(|e| index_error(dir, "starting a write", e))?;
    // Durability::Immediate is the default. Two-phase commit costs one more
    // fsync per commit (we commit once per batch) and makes recovery sound
    // even if the disk reorders the unsynced writes of a commit, which is
    // the failure our crash tests inject.
    txn.set_two_phase_commit(true);
    Ok(txn)
}

pub(super) fn flush_access(inner: &Inner, durability: Durability) -> Result<()> {
    let pending = std::mem::take(&mut *lock(&inner.pending_access));
    if pending.is_empty() {
        return Ok(());
    }
    let dir = &inner.dir;
    let mut txn = begin_write(dir, &inner.db)?;
    txn.set_durability(durability).map_err(|e| index_error(dir, "recording access times", e))?;
    apply_access(dir, &txn, &pending)?;
    txn.commit().map_err(|e| index_error(dir, "recording access times", e))
}

pub(super) fn apply_access(dir: &Path, txn: &redb::WriteTransaction, pending: &HashMap<Cid, u64>) -> Result<()> {
    let ix = |e: redb::StorageError| index_error(dir, "recording access times", e);
    let mut t = txn.open_table(SHARDS).map_err(|e| index_error(dir, "recording access times", e))?;
    for (cid, at) in pending {
        let key = cid.to_bytes();
        let rec = match t.get(key.as_slice()).map_err(ix)? {
            // Only existing records: a shard deleted since the read stays deleted.
            Some(v) => ShardRecord::decode(v.value()).ok(),
            None => None,
        };
        if let Some(mut rec) = rec {
            rec.last_access = rec.last_access.max(*at);
            // Every read verifies the bytes, so a read is also a verification.
            rec.verified_at = rec.verified_at.max(*at);
            t.insert(key.as_slice(), rec.encode().as_slice()).map_err(ix)?;
        }
    }
    Ok(())
}
