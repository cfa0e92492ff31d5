//! Chunk decoding from hostile shards and sizes: never panic, and never
//! return bytes that do not match the chunk CID.
#![no_main]
use datamesh_core::{ChunkEntry, Cid, Compression, Erasure};
use datamesh_pipeline::{compress, erasure};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let e = Erasure { k: (data[0] % 6 + 1) as u16, m: (data[1] % 4) as u16 };
    let body = &data[4..];
    let shard_len = body.len() / e.total().max(1);
    let shards: Vec<Option<Vec<u8>>> = (0..e.total())
        .map(|i| (data[2] >> (i % 8) & 1 == 0).then(|| body[i * shard_len..(i + 1) * shard_len].to_vec()))
        .collect();
    let cids: Vec<Cid> = shards.iter().map(|s| Cid::raw_blake3(s.as_deref().unwrap_or(&[]))).collect();
    let stored_size = data[3] as usize * 7;
    let entry = ChunkEntry {
        plain_size: stored_size as u32,
        stored_size: stored_size as u32,
        compression: Compression::None,
        cid: Cid::raw_blake3(body),
        shards: cids,
    };
    if let Ok(out) = erasure::decode_chunk(e, &entry, shards) {
        assert!(entry.cid.verifies(&out));
    }
    for algo in [Compression::Zstd, Compression::Lz4] {
        let _ = compress::decompress(algo, body, stored_size);
    }
});
