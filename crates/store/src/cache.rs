//! An in-memory cache of hot chunks, bounded by bytes.
//!
//! quick_cache's CLOCK-Pro-like policy (close to LRU, but scan resistant)
//! with a byte weighter. The store does not fill it itself: the node puts
//! reassembled chunks it expects to serve again.

use bytes::Bytes;
use datamesh_core::Cid;
use quick_cache::Weighter;

/// Bytes charged per entry on top of its length, for the key and the
/// cache's bookkeeping. It also keeps empty values from weighing zero, which
/// quick_cache would never evict.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

/// Weighs an entry by its byte length.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ByteWeighter;

impl Weighter<Cid, Bytes> for ByteWeighter {
    fn weight(&self, _key: &Cid, val: &Bytes) -> u64 {
        val.len() as u64 + ENTRY_OVERHEAD
    }
}

/// The chunk cache.
pub(crate) type ChunkCache = quick_cache::sync::Cache<Cid, Bytes, ByteWeighter>;

/// A cache holding at most `bytes` (none at all if 0).
pub(crate) fn new_cache(bytes: usize) -> Option<ChunkCache> {
    if bytes == 0 {
        return None;
    }
    // quick_cache splits its budget into shards and refuses an item heavier
    // than a shard; it merges shards until each expects >= 32 items. Saying
    // we expect one item per MiB keeps a 32 MiB cache in one shard, so a
    // 4 MiB chunk fits.
    let items = (bytes / (1 << 20)).max(1);
    Some(ChunkCache::with_weighter(items, bytes as u64, ByteWeighter))
}
