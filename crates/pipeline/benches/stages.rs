//! Criterion benchmarks of each pipeline stage alone, and of one chunk
//! through the whole put composition, all with `Throughput::Bytes` so
//! criterion reports MB/s.
//!
//! ```text
//! cargo bench -p datamesh-pipeline                 # everything, a few minutes
//! cargo bench -p datamesh-pipeline -- erasure      # one group
//! ```
//!
//! Sample counts and times are kept small so the whole run stays short on a
//! shared 2-core machine; pass criterion's own flags (`--sample-size`,
//! `--measurement-time`) for tighter intervals. `datamesh-bench` (crates/bench)
//! measures the same stages in one interleaved run and compares them with
//! the pipeline and the node; these benches are for iterating on one stage.
//!
//! Inputs are 4 MiB (the default chunk) of random bytes, and of text-like
//! bytes (generated words, zstd-1 ratio about 2.7) where the stage's speed
//! depends on the data.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use datamesh_core::{Chunking, Cipher, Compression, Erasure};
use datamesh_pipeline::chunker::{Chunker, DEFAULT_CHUNK_SIZE};
use datamesh_pipeline::compress::compress_if_pays;
use datamesh_pipeline::crypto::{DataKey, NonceMode, seal_chunk};
use datamesh_pipeline::erasure;
use datamesh_pipeline::seal::{ChunkSealer, shard_chunk};

const CHUNK: usize = DEFAULT_CHUNK_SIZE as usize;

// Deterministic incompressible bytes.
use datamesh_core::testdata::pseudo_random as random;

/// Text-like bytes: words from a 2048-word generated vocabulary, picked
/// with a Zipf-like (log-uniform) rank distribution, with sentence
/// punctuation and line breaks. zstd-1 keeps about 1/2.7 of it, like prose.
/// (The same recipe as `datamesh-bench`'s generator.)
fn text(n: usize, seed: u64) -> Vec<u8> {
    const LETTERS: &[u8] =
        b"eeeeeeeeeeeettttttttttaaaaaaaaooooooooiiiiiiinnnnnnnsssssshhhhhhrrrrrrddddllllcccuuummwwffggyyppbbvkjxqz";
    const VOCABULARY: usize = 2048;
    let mut r = random(64, seed).into_iter().map(u64::from).sum::<u64>() | 1;
    let mut next = move || {
        // xorshift64*: plenty for picking words.
        r ^= r >> 12;
        r ^= r << 25;
        r ^= r >> 27;
        r.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut below = |n: usize| (next() % n as u64) as usize;
    let words: Vec<Vec<u8>> = (0..VOCABULARY)
        .map(|_| {
            let len = 2 + below(4) + below(5);
            (0..len).map(|_| LETTERS[below(LETTERS.len())]).collect()
        })
        .collect();
    let mut out = Vec::with_capacity(n + 64);
    let (mut in_sentence, mut sentence_len, mut line) = (0, 0, 0);
    while out.len() < n {
        let u = below(1 << 30) as f64 / (1u64 << 30) as f64;
        let rank = ((VOCABULARY as f64).powf(u) as usize).saturating_sub(1).min(VOCABULARY - 1);
        let word = &words[rank];
        if in_sentence == 0 {
            sentence_len = 6 + below(14);
            out.push(word[0].to_ascii_uppercase());
            out.extend_from_slice(&word[1..]);
        } else {
            out.extend_from_slice(word);
        }
        in_sentence += 1;
        line += word.len() + 1;
        if in_sentence == sentence_len {
            out.push(b'.');
            in_sentence = 0;
        } else if below(12) == 0 {
            out.push(b',');
        }
        if line > 72 {
            out.push(b'\n');
            line = 0;
        } else {
            out.push(b' ');
        }
    }
    out.truncate(n);
    out
}

fn inputs() -> [(&'static str, Vec<u8>); 2] {
    [("random", random(CHUNK, 1)), ("text", text(CHUNK, 2))]
}

fn chunking(c: &mut Criterion) {
    let mut g = c.benchmark_group("chunking");
    let data = random(4 * CHUNK, 3);
    g.throughput(Throughput::Bytes(data.len() as u64));
    let schemes = [
        ("fixed_4MiB", Chunking::Fixed { size: DEFAULT_CHUNK_SIZE }),
        ("fastcdc_256K_1M_4M", Chunking::FastCdc { min: 256 << 10, avg: 1 << 20, max: 4 << 20 }),
    ];
    for (name, scheme) in schemes {
        g.bench_function(name, |b| {
            b.iter(|| {
                for chunk in Chunker::new(&data[..], scheme).expect("valid chunking") {
                    black_box(chunk.expect("reading a slice cannot fail"));
                }
            })
        });
    }
    g.finish();
}

fn hashing(c: &mut Criterion) {
    let mut g = c.benchmark_group("hashing");
    let data = random(CHUNK, 4);
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("blake3", |b| b.iter(|| black_box(blake3::hash(black_box(&data)))));
    g.finish();
}

fn compression(c: &mut Criterion) {
    let mut g = c.benchmark_group("compression");
    for (input, data) in inputs() {
        g.throughput(Throughput::Bytes(data.len() as u64));
        for (algo, name) in [(Compression::Zstd, "zstd"), (Compression::Lz4, "lz4")] {
            // On random input this measures the sampled skip, as the put path runs it.
            g.bench_function(format!("{name}_if_pays/{input}"), |b| {
                b.iter(|| black_box(compress_if_pays(algo, black_box(&data))))
            });
        }
    }
    g.finish();
}

fn encryption(c: &mut Criterion) {
    let mut g = c.benchmark_group("encryption");
    let data = random(CHUNK, 5);
    let key = DataKey::random();
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (cipher, name) in [(Cipher::Aes256Gcm, "aes256gcm_seal"), (Cipher::XChaCha20Poly1305, "xchacha20poly1305_seal")]
    {
        g.bench_function(name, |b| {
            b.iter(|| black_box(seal_chunk(cipher, &key, 7, black_box(&data), NonceMode::Random)))
        });
    }
    g.finish();
}

fn erasure_coding(c: &mut Criterion) {
    let mut g = c.benchmark_group("erasure");
    let data = random(CHUNK, 6);
    g.throughput(Throughput::Bytes(data.len() as u64));
    for (k, m) in [(4u16, 2u16), (10, 4)] {
        let e = Erasure { k, m };
        g.bench_function(format!("rs_{k}+{m}_encode"), |b| {
            b.iter(|| black_box(erasure::encode(e, black_box(&data)).expect("valid parameters")))
        });
        // The worst case for a read: m data shards lost, so the decoder
        // rebuilds as much as it ever has to.
        let shards = erasure::encode(e, &data).expect("valid parameters");
        let lost: Vec<Option<Vec<u8>>> =
            shards.into_iter().enumerate().map(|(i, s)| (i >= m as usize).then_some(s)).collect();
        g.bench_function(format!("rs_{k}+{m}_decode_{m}_lost"), |b| {
            b.iter_batched(
                || lost.clone(),
                |shards| black_box(erasure::decode(e, data.len(), &shards).expect("k shards present")),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut g = c.benchmark_group("memcpy");
    let data = random(CHUNK, 7);
    let mut dst = vec![0u8; CHUNK];
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("into_reused_buffer", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&data));
            black_box(&dst);
        })
    });
    g.finish();
}

/// One chunk through the whole put composition: chunking, compress_if_pays
/// (zstd), seal (AES-256-GCM), BLAKE3 chunk CID, RS 4+2 encode, shard CIDs.
fn pipeline(c: &mut Criterion) {
    let mut g = c.benchmark_group("pipeline");
    let sealer = ChunkSealer::encrypted(Compression::Zstd, Cipher::Aes256Gcm, DataKey::random(), false);
    let fixed = Chunking::Fixed { size: DEFAULT_CHUNK_SIZE };
    for (input, data) in inputs() {
        g.throughput(Throughput::Bytes(data.len() as u64));
        g.bench_function(format!("one_chunk/{input}"), |b| {
            b.iter(|| {
                for (i, chunk) in Chunker::new(&data[..], fixed).expect("valid chunking").enumerate() {
                    let sealed = sealer.seal(i as u64, &chunk.expect("reading a slice cannot fail"));
                    black_box(shard_chunk(Erasure::DEFAULT, &sealed).expect("valid parameters"));
                }
            })
        });
    }
    g.finish();
}

fn config() -> Criterion {
    // Short by default: ~1.5 s per benchmark, ~20 benchmarks.
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = stages;
    config = config();
    targets = chunking, hashing, compression, encryption, erasure_coding, memcpy, pipeline
}
criterion_main!(stages);
