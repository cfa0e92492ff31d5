//! Measures the hot path: durable puts of 1 MiB shards in batches of six
//! (one 4 MiB chunk at 4+2), then verified reads, then a GC of it all.
//!
//! `cargo run --release -p datamesh-store --example put_bench -- [MiB] [threads] [dir]`
//! (default 256 MiB, 1 thread, in a temp dir; pass a dir on the disk you
//! care about). With several threads, batches are put concurrently, as the
//! node does for the chunks of one upload.

// StoreError carries CIDs inline by design (see the crate root).
#![allow(clippy::result_large_err)]

use std::time::Instant;

use datamesh_core::Cid;
use datamesh_store::{ShardMeta, Store, StoreConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(256);
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1).max(1);
    let tmp = tempfile::tempdir()?;
    let dir = args.next().map_or_else(|| tmp.path().join("store"), Into::into);
    let (store, _) = Store::open(&dir, StoreConfig { capacity_bytes: u64::MAX, cache_bytes: 0 })?;

    const SHARD: usize = 1 << 20;
    let batches = mib.div_ceil(6).max(1);
    // Distinct shards: a counter in the first bytes of otherwise fixed data.
    let base: Vec<u8> = (0..SHARD).map(|i| (i * 31 % 251) as u8).collect();
    let t = Instant::now();
    let cids: Vec<Cid> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|w| {
                let (store, base) = (&store, &base);
                scope.spawn(move || -> Result<Vec<Cid>, datamesh_store::StoreError> {
                    let mut cids = Vec::new();
                    for b in (w..batches).step_by(threads) {
                        let shards: Vec<Vec<u8>> = (0..6u64)
                            .map(|j| {
                                let mut s = base.clone();
                                s[..8].copy_from_slice(&((b as u64) * 6 + j).to_le_bytes());
                                s
                            })
                            .collect();
                        let batch: Vec<(Cid, &[u8], ShardMeta)> = shards
                            .iter()
                            .enumerate()
                            .map(|(j, s)| {
                                (
                                    Cid::raw_blake3(s),
                                    s.as_slice(),
                                    ShardMeta { chunk: Cid::raw_blake3(b"c"), index: j as u16 },
                                )
                            })
                            .collect();
                        store.put_shards(&batch, None)?;
                        cids.extend(batch.iter().map(|x| x.0));
                    }
                    Ok(cids)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("worker panicked")).collect::<Result<Vec<_>, _>>()
    })?
    .into_iter()
    .flatten()
    .collect();
    let put = t.elapsed();
    let total = (cids.len() * SHARD) as f64 / (1 << 20) as f64;
    println!(
        "put  {} shards ({total:.0} MiB) in {put:.2?}: {:.0} MiB/s, {:.0} shards/s",
        cids.len(),
        total / put.as_secs_f64(),
        cids.len() as f64 / put.as_secs_f64()
    );

    let t = Instant::now();
    for c in &cids {
        store.get_shard(c)?;
    }
    let get = t.elapsed();
    println!("get  (verified, page cache warm) in {get:.2?}: {:.0} MiB/s", total / get.as_secs_f64());

    let t = Instant::now();
    let r = store.gc()?;
    println!("gc   removed {} shards in {:.2?}", r.shards_removed, t.elapsed());
    Ok(())
}
