//! Disk measurements in the directory the node will use.
//!
//! - The **fsynced sequential write** is the ceiling the targets use: 4 MiB
//!   blocks into one temp file, then one fsync, timed together (what `dd
//!   bs=4M conv=fsync` measures).
//! - The **store write** is a diagnostic: the node's real write path
//!   (`Store::put_shards`: one temp file per shard, write, fsync, rename,
//!   directory fsyncs, one index commit) for the 4+2 shards of 4 MiB sealed
//!   chunks, on one thread and on as many threads as the CLI keeps chunks
//!   in flight. Put against the sequential rate it shows what the per-shard
//!   durability costs.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use datamesh_core::Cid;
use datamesh_pipeline::erasure;
use datamesh_store::{ShardMeta, Store, StoreConfig};
use serde::Serialize;

use crate::data::Rng;
use crate::stages::{CHUNK, ERASURE};

/// The fsynced sequential write.
#[derive(Debug, Clone, Serialize)]
pub struct SeqWrite {
    /// Bytes written.
    pub bytes: u64,
    /// MB/s including the final fsync.
    pub mbps: f64,
}

/// Writes `bytes` (rounded up to whole 4 MiB blocks) to a temp file in
/// `dir`, fsyncs it, and returns the rate. The file is removed.
pub fn sequential_write(dir: &Path, bytes: u64) -> Result<SeqWrite> {
    let mut block = vec![0u8; CHUNK];
    let mut rng = Rng::new(0xD15C);
    rng.fill(&mut block);
    let blocks = bytes.div_ceil(CHUNK as u64);
    let tmp =
        tempfile::NamedTempFile::new_in(dir).with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut f: &File = tmp.as_file();
    let start = Instant::now();
    for _ in 0..blocks {
        // Random blocks, each with a fresh head, so no layer below can
        // compress or deduplicate the writes.
        rng.fill(&mut block[..64]);
        f.write_all(&block).context("writing the disk test file")?;
    }
    f.sync_all().context("fsync of the disk test file")?;
    let secs = start.elapsed().as_secs_f64();
    let written = blocks * CHUNK as u64;
    drop(tmp);
    Ok(SeqWrite { bytes: written, mbps: written as f64 / secs / 1e6 })
}

/// A sealed chunk's CID, its shards and their CIDs.
type Encoded = (Cid, Vec<Vec<u8>>, Vec<Cid>);

/// The node's store write path.
#[derive(Debug, Clone, Serialize)]
pub struct StoreWrite {
    /// Sealed 4 MiB chunks written per run.
    pub chunks: usize,
    /// Chunk MB/s (shard bytes are 1.5× that), one writer.
    pub one_thread_mbps: f64,
    /// Chunk MB/s with `threads` concurrent writers.
    pub threads_mbps: f64,
    /// Concurrent writers of the second run.
    pub threads: usize,
}

/// Encodes `chunks` random chunks per run and times `Store::put_shards` of
/// their shards, first on one thread, then on `threads` threads (fresh
/// chunks, so nothing is already stored).
pub fn store_write(dir: &Path, chunks: usize, threads: usize) -> Result<StoreWrite> {
    let store_dir = tempfile::tempdir_in(dir).context("creating the store test dir")?;
    let (store, _) = Store::open(store_dir.path(), StoreConfig { capacity_bytes: u64::MAX / 2, cache_bytes: 0 })
        .context("opening the test store")?;
    let mut rng = Rng::new(0x5708E);
    let mut make = |n: usize| -> Result<Vec<Encoded>> {
        (0..n)
            .map(|_| {
                let mut chunk = vec![0u8; CHUNK];
                rng.fill(&mut chunk);
                let shards = erasure::encode(ERASURE, &chunk)?;
                let cids = erasure::shard_cids(&shards);
                Ok((Cid::raw_blake3(&chunk), shards, cids))
            })
            .collect()
    };
    let put = |set: &[Encoded]| -> Result<()> {
        for (chunk, shards, cids) in set {
            let batch: Vec<(Cid, &[u8], ShardMeta)> = shards
                .iter()
                .zip(cids)
                .enumerate()
                .map(|(i, (b, c))| (*c, b.as_slice(), ShardMeta { chunk: *chunk, index: i as u16 }))
                .collect();
            store.put_shards(&batch, None)?;
        }
        Ok(())
    };
    let bytes = (chunks * CHUNK) as f64;

    let one = make(chunks)?;
    let start = Instant::now();
    put(&one)?;
    let one_thread_mbps = bytes / start.elapsed().as_secs_f64() / 1e6;
    drop(one);

    let threads = threads.max(1);
    let per = chunks.div_ceil(threads);
    let sets: Vec<_> = (0..threads).map(|_| make(per)).collect::<Result<_>>()?;
    let start = Instant::now();
    std::thread::scope(|s| {
        let hs: Vec<_> = sets.iter().map(|set| s.spawn(|| put(set))).collect();
        hs.into_iter().try_for_each(|h| h.join().map_err(|_| anyhow::anyhow!("a store writer panicked"))?)
    })?;
    let threads_mbps = (per * threads * CHUNK) as f64 / start.elapsed().as_secs_f64() / 1e6;
    drop(store);
    Ok(StoreWrite { chunks, one_thread_mbps, threads_mbps, threads })
}
