//! The in-memory measurements: every put stage alone on one thread, and the
//! whole per-chunk put pipeline on one thread and on all cores, for random
//! and for text-like input, with the serial composition of the stages.
//!
//! **Interleaved rounds.** The machines are shared and noisy, and the
//! targets are ratios between measurements. So every measurement runs once
//! per round, rounds repeat, and each reports the median of its rounds: a
//! burst of someone else's build then hits all of them alike instead of
//! skewing the one that happened to run during it.
//!
//! **What each stage is fed.** A stage alone gets exactly the bytes the
//! pipeline feeds it: chunking, compression and memcpy see the plaintext;
//! encryption sees the compressed chunk when compression paid (on text),
//! chunk hashing and erasure coding see the sealed chunk, shard hashing sees
//! the shards. Each rate is MB/s of the bytes that stage processes, and the
//! serial composition weighs it by how many such bytes there are per byte
//! of plaintext (see [`serial_composition`]).

use std::hint::black_box;
use std::io::{self, Read};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use datamesh_core::{Chunking, Cid, Cipher, Compression, Erasure};
use datamesh_pipeline::chunker::{Chunker, DEFAULT_CHUNK_SIZE};
use datamesh_pipeline::compress::compress_if_pays;
use datamesh_pipeline::crypto::{DataKey, NonceMode, seal_chunk};
use datamesh_pipeline::erasure;
use datamesh_pipeline::seal::{ChunkSealer, shard_chunk};
use serde::Serialize;

use crate::data;

/// The chunk size every measurement uses: the put path's default.
pub const CHUNK: usize = DEFAULT_CHUNK_SIZE as usize;
/// The erasure code every measurement uses: the node's default.
pub const ERASURE: Erasure = Erasure::DEFAULT;
/// The cipher every measurement uses: the CLI's default.
const CIPHER: Cipher = Cipher::Aes256Gcm;
/// The compression every measurement uses: the CLI's default.
const COMPRESSION: Compression = Compression::Zstd;

/// How long and how often to measure.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Settings {
    /// Bytes of each input kind held in memory.
    pub input_bytes: usize,
    /// Rounds; each measurement reports its median round.
    pub rounds: usize,
    /// A stage's round repeats its pass until at least this long.
    #[serde(serialize_with = "secs")]
    pub min_round: Duration,
    /// A pipeline pass goes over the input this many times, so the
    /// all-cores run is not dominated by its start and its tail.
    pub pipeline_passes: usize,
    /// Worker threads of the all-cores pipeline.
    pub threads: usize,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// The two input kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// Incompressible bytes: compression is skipped after its sample.
    Random,
    /// Generated words: zstd keeps about 1/2.7 of the bytes.
    Text,
}

impl InputKind {
    /// Both kinds, in table order.
    pub const ALL: [InputKind; 2] = [InputKind::Random, InputKind::Text];

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            InputKind::Random => "random",
            InputKind::Text => "text",
        }
    }
}

/// A stage of the put path (plus memcpy, the reference ceiling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `Chunker` with fixed 4 MiB chunks over an in-memory reader.
    Chunking,
    /// `compress_if_pays(Zstd)`: on random input only the LZ4 sample runs.
    Compression,
    /// `seal_chunk` AES-256-GCM, random nonce.
    Encryption,
    /// BLAKE3 of the sealed chunk: the chunk CID.
    Hashing,
    /// `erasure::encode` 4+2 of the sealed chunk.
    Erasure,
    /// BLAKE3 of every shard: the shard CIDs.
    ShardHashing,
    /// `copy_from_slice` of the plaintext into a reused buffer.
    Memcpy,
}

impl Stage {
    /// Every stage, in table order.
    pub const ALL: [Stage; 7] = [
        Stage::Chunking,
        Stage::Hashing,
        Stage::Compression,
        Stage::Encryption,
        Stage::Erasure,
        Stage::ShardHashing,
        Stage::Memcpy,
    ];

    /// The stages the put pipeline runs, in its order (memcpy is not one:
    /// the copies it makes are inside chunking, sealing and encoding).
    pub const PIPELINE: [Stage; 6] =
        [Stage::Chunking, Stage::Compression, Stage::Encryption, Stage::Hashing, Stage::Erasure, Stage::ShardHashing];

    /// Name and what exactly is measured, for the table.
    pub fn describe(self) -> (&'static str, &'static str) {
        match self {
            Stage::Chunking => ("chunking", "Chunker, fixed 4 MiB, from memory"),
            Stage::Hashing => ("hashing", "BLAKE3 chunk CID of the sealed chunk"),
            Stage::Compression => ("compression", "compress_if_pays zstd-1 (random: sample only)"),
            Stage::Encryption => ("encryption", "seal_chunk AES-256-GCM"),
            Stage::Erasure => ("erasure", "RS 4+2 encode of the sealed chunk"),
            Stage::ShardHashing => ("shard hashing", "BLAKE3 shard CIDs (6 shards)"),
            Stage::Memcpy => ("memcpy", "copy into a reused 4 MiB buffer"),
        }
    }
}

/// One stage's rate on one input kind.
#[derive(Debug, Clone, Serialize)]
pub struct StageRate {
    /// The stage.
    pub stage: Stage,
    /// The input kind.
    pub input: InputKind,
    /// MB/s (10^6 bytes) of the bytes this stage processes.
    pub mbps: f64,
    /// Bytes this stage processes per byte of plaintext.
    pub weight: f64,
}

/// A term of the serial composition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Term {
    /// MB/s of the bytes the stage processes.
    pub rate: f64,
    /// Bytes the stage processes per byte of plaintext.
    pub weight: f64,
}

/// The throughput, in plaintext MB/s, of running the stages one after the
/// other on one core: `1 / Σ (weight / rate)`.
///
/// With every weight 1 this is the issue's `1 / Σ (1 / rate)`; a weight
/// other than 1 says the stage sees fewer (compressed) or more (shards)
/// bytes than the plaintext, so its rate per byte of plaintext is
/// `rate / weight`. Zero or negative rates make no sense and give 0.
pub fn serial_composition(terms: &[Term]) -> f64 {
    if terms.iter().any(|t| t.rate.is_nan() || t.rate <= 0.0) {
        return 0.0;
    }
    let secs_per_mb: f64 = terms.iter().map(|t| t.weight / t.rate).sum();
    if secs_per_mb > 0.0 { 1.0 / secs_per_mb } else { 0.0 }
}

/// The whole pipeline on one input kind.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    /// The input kind.
    pub input: InputKind,
    /// Plaintext bytes per stored byte (what compression achieved).
    pub compression_ratio: f64,
    /// Plaintext MB/s, one thread.
    pub one_core_mbps: f64,
    /// Plaintext MB/s, [`Settings::threads`] threads.
    pub all_cores_mbps: f64,
    /// Serial composition of the stages measured alone.
    pub serial_mbps: f64,
    /// `one_core / serial`; target ≥ 0.8.
    pub ratio: f64,
    /// `all_cores / one_core`; target ≥ 1.6.
    pub scaling: f64,
}

/// How well a trivially parallel kernel (BLAKE3 of a cache-resident
/// buffer, no allocation, no shared data) scales on this machine right now:
/// the most any pipeline could scale. On a shared machine whose other
/// tenants are busy it falls well below the core count.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// MB/s on one thread.
    pub one_core_mbps: f64,
    /// MB/s on [`Settings::threads`] threads.
    pub all_cores_mbps: f64,
    /// `all_cores / one_core`.
    pub scaling: f64,
}

/// Everything this module measures.
#[derive(Debug, Clone, Serialize)]
pub struct InMemory {
    /// How it was measured.
    pub settings: Settings,
    /// Each stage alone, per input kind.
    pub stages: Vec<StageRate>,
    /// The whole pipeline, per input kind.
    pub pipelines: Vec<PipelineResult>,
    /// The machine's parallel scaling ceiling during the run.
    pub ceiling: Ceiling,
}

impl InMemory {
    /// The rate of `stage` on `input`.
    pub fn stage(&self, stage: Stage, input: InputKind) -> Option<&StageRate> {
        self.stages.iter().find(|s| s.stage == stage && s.input == input)
    }

    /// The pipeline result on `input`.
    pub fn pipeline(&self, input: InputKind) -> Option<&PipelineResult> {
        self.pipelines.iter().find(|p| p.input == input)
    }
}

/// One input kind with every intermediate form the pipeline produces, so a
/// stage alone can be fed exactly what the pipeline feeds it.
struct Prepared {
    kind: InputKind,
    plain: Vec<u8>,
    /// Per chunk: the compressed form when compression paid, else the plaintext.
    bodies: Vec<Vec<u8>>,
    /// Per chunk: the sealed (stored) form.
    stored: Vec<Vec<u8>>,
    /// Per chunk: its k+m shards.
    shards: Vec<Vec<Vec<u8>>>,
}

impl Prepared {
    fn new(kind: InputKind, n: usize, key: &DataKey) -> Result<Self> {
        let plain = match kind {
            InputKind::Random => data::random(n, 0xDA7A_0001),
            InputKind::Text => data::text(n, 0xDA7A_0002),
        };
        let bodies: Vec<Vec<u8>> =
            plain.chunks(CHUNK).map(|c| compress_if_pays(COMPRESSION, c).unwrap_or_else(|| c.to_vec())).collect();
        let stored: Vec<Vec<u8>> =
            bodies.iter().enumerate().map(|(i, b)| seal_chunk(CIPHER, key, i as u64, b, NonceMode::Random)).collect();
        let shards = stored.iter().map(|s| erasure::encode(ERASURE, s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Prepared { kind, plain, bodies, stored, shards })
    }

    fn bytes(&self, stage: Stage) -> u64 {
        let sum = |v: &[Vec<u8>]| v.iter().map(|b| b.len() as u64).sum::<u64>();
        match stage {
            Stage::Chunking | Stage::Compression | Stage::Memcpy => self.plain.len() as u64,
            Stage::Encryption => sum(&self.bodies),
            Stage::Hashing | Stage::Erasure => sum(&self.stored),
            Stage::ShardHashing => self.shards.iter().map(|s| sum(s)).sum(),
        }
    }

    fn weight(&self, stage: Stage) -> f64 {
        self.bytes(stage) as f64 / self.plain.len() as f64
    }
}

/// A measurement in the rounds: a pass over `bytes` bytes, repeatable.
struct Bench<'a> {
    bytes: u64,
    /// A repeating pass (stage) or a single long one (pipeline).
    repeat: bool,
    run: Box<dyn FnMut() -> Result<()> + 'a>,
    samples: Vec<f64>,
}

impl<'a> Bench<'a> {
    fn new(bytes: u64, repeat: bool, run: impl FnMut() -> Result<()> + 'a) -> Self {
        Bench { bytes, repeat, run: Box::new(run), samples: Vec::new() }
    }

    fn median(&self) -> f64 {
        median(&self.samples)
    }
}

/// The median of `v` (0 if empty).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

fn run_rounds(benches: &mut [Bench<'_>], settings: &Settings, progress: &mut (dyn FnMut(usize) + Send)) -> Result<()> {
    // Warm-up: fault in buffers, let the allocator settle, train caches.
    for b in benches.iter_mut() {
        (b.run)()?;
    }
    for round in 0..settings.rounds {
        progress(round);
        for b in benches.iter_mut() {
            let start = Instant::now();
            let mut passes = 0u64;
            loop {
                (b.run)()?;
                passes += 1;
                if !b.repeat || start.elapsed() >= settings.min_round {
                    break;
                }
            }
            let secs = start.elapsed().as_secs_f64();
            b.samples.push((b.bytes * passes) as f64 / secs / 1e6);
        }
    }
    Ok(())
}

/// A reader over `data` repeated `times` times, so a pipeline pass can be
/// longer than the input held in memory.
struct Cycle<'a> {
    data: &'a [u8],
    pos: usize,
    left: usize,
}

impl Read for Cycle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.data.len() {
            if self.left == 0 || self.data.is_empty() {
                return Ok(0);
            }
            self.left -= 1;
            self.pos = 0;
        }
        let n = buf.len().min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn cycle(data: &[u8], times: usize) -> Cycle<'_> {
    // Start at the end, so the first read starts pass one.
    Cycle { data, pos: data.len(), left: times }
}

fn fixed() -> Chunking {
    Chunking::Fixed { size: DEFAULT_CHUNK_SIZE }
}

/// One chunk through the put path exactly as the CLI and the node run it:
/// compress_if_pays → seal (AES-256-GCM) → BLAKE3 chunk CID (all three in
/// `ChunkSealer::seal`) → erasure encode → shard CIDs (`shard_chunk`).
fn put_one(sealer: &ChunkSealer, index: u64, plain: &[u8]) -> Result<()> {
    let sealed = sealer.seal(index, plain);
    let out = shard_chunk(ERASURE, &sealed)?;
    black_box((sealed.cid, out));
    Ok(())
}

/// The pipeline on `threads` workers that each take the next chunk from a
/// shared chunker (as the CLI's reader thread hands chunks to its sealing
/// tasks) and run `put_one` on it. One core is the same code with one
/// worker, so the two differ only in the number of threads.
fn pipeline(sealer: &ChunkSealer, input: &[u8], passes: usize, threads: usize) -> Result<()> {
    let source = Mutex::new(Chunker::new(cycle(input, passes), fixed())?.enumerate());
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    loop {
                        // Cut under the lock, seal outside it.
                        let next = source.lock().map_err(|_| anyhow!("a worker panicked"))?.next();
                        let Some((i, chunk)) = next else {
                            return Ok(());
                        };
                        put_one(sealer, i as u64, &chunk?)?;
                    }
                })
            })
            .collect();
        workers.into_iter().try_for_each(|w| w.join().map_err(|_| anyhow!("a pipeline worker panicked"))?)
    })
}

/// What a bench in the rounds measures.
#[derive(Debug, Clone, Copy)]
enum Id {
    /// A stage alone on input `.1` (index into the prepared inputs).
    Stage(Stage, usize),
    /// The pipeline on one thread, on input `.0`.
    One(usize),
    /// The pipeline on all threads, on input `.0`.
    All(usize),
    /// The scaling ceiling kernel on one thread.
    CeilingOne,
    /// The scaling ceiling kernel on all threads.
    CeilingAll,
}

/// Bytes one thread hashes per pass of the ceiling kernel, in a buffer
/// that stays in its core's L2 cache.
const CEILING_BUF: usize = 256 << 10;
const CEILING_REPS: usize = 128;

/// The ceiling kernel: each of `threads` threads hashes its own
/// cache-resident buffer `CEILING_REPS` times.
fn ceiling(threads: usize, bufs: &[Vec<u8>]) {
    std::thread::scope(|s| {
        for buf in bufs.iter().take(threads.max(1)) {
            s.spawn(move || {
                for _ in 0..CEILING_REPS {
                    black_box(blake3::hash(black_box(buf)));
                }
            });
        }
    });
}

/// Runs every in-memory measurement. `progress` is told each round.
///
/// Everything runs off the main thread, as the put path does in the CLI
/// and the node (tokio worker and blocking threads): glibc serves the main
/// thread from a different kind of heap than other threads.
pub fn measure(settings: Settings, progress: &mut (dyn FnMut(usize) + Send)) -> Result<InMemory> {
    std::thread::scope(|s| {
        s.spawn(|| measure_here(settings, progress)).join().map_err(|_| anyhow!("the measuring thread panicked"))?
    })
}

fn measure_here(settings: Settings, progress: &mut (dyn FnMut(usize) + Send)) -> Result<InMemory> {
    let key = DataKey::random();
    let sealer = ChunkSealer::encrypted(COMPRESSION, CIPHER, key.clone(), false);
    let prepared = InputKind::ALL
        .iter()
        .map(|&k| Prepared::new(k, settings.input_bytes, &key))
        .collect::<Result<Vec<_>>>()
        .context("preparing the inputs")?;
    let threads = settings.threads.max(1);
    let ceiling_bufs: Vec<Vec<u8>> = (0..threads).map(|i| data::random(CEILING_BUF, i as u64)).collect();

    let mut benches = Vec::new();
    let mut ids = Vec::new();
    for (pi, p) in prepared.iter().enumerate() {
        for stage in Stage::ALL {
            benches.push(stage_bench(stage, p, &key));
            ids.push(Id::Stage(stage, pi));
        }
        let passes = settings.pipeline_passes;
        let bytes = (p.plain.len() * passes) as u64;
        let (s1, s2) = (&sealer, &sealer);
        let input = &p.plain;
        benches.push(Bench::new(bytes, false, move || pipeline(s1, input, passes, 1)));
        ids.push(Id::One(pi));
        benches.push(Bench::new(bytes, false, move || pipeline(s2, input, passes, threads)));
        ids.push(Id::All(pi));
    }
    let bufs = &ceiling_bufs;
    let per_thread = (CEILING_BUF * CEILING_REPS) as u64;
    benches.push(Bench::new(per_thread, true, move || {
        ceiling(1, bufs);
        Ok(())
    }));
    ids.push(Id::CeilingOne);
    benches.push(Bench::new(per_thread * threads as u64, true, move || {
        ceiling(threads, bufs);
        Ok(())
    }));
    ids.push(Id::CeilingAll);
    run_rounds(&mut benches, &settings, progress)?;

    let mut stages = Vec::new();
    let mut one = vec![0.0; prepared.len()];
    let mut all = vec![0.0; prepared.len()];
    let (mut ceil_one, mut ceil_all) = (0.0, 0.0);
    for (b, id) in benches.iter().zip(&ids) {
        match *id {
            Id::Stage(stage, pi) => {
                let p = &prepared[pi];
                stages.push(StageRate { stage, input: p.kind, mbps: b.median(), weight: p.weight(stage) })
            }
            Id::One(pi) => one[pi] = b.median(),
            Id::All(pi) => all[pi] = b.median(),
            Id::CeilingOne => ceil_one = b.median(),
            Id::CeilingAll => ceil_all = b.median(),
        }
    }
    let pipelines = prepared
        .iter()
        .enumerate()
        .map(|(pi, p)| {
            let terms: Vec<Term> = Stage::PIPELINE
                .iter()
                .filter_map(|&st| stages.iter().find(|r| r.stage == st && r.input == p.kind))
                .map(|r| Term { rate: r.mbps, weight: r.weight })
                .collect();
            let serial = serial_composition(&terms);
            PipelineResult {
                input: p.kind,
                compression_ratio: p.plain.len() as f64 / p.bytes(Stage::Hashing) as f64,
                one_core_mbps: one[pi],
                all_cores_mbps: all[pi],
                serial_mbps: serial,
                ratio: ratio(one[pi], serial),
                scaling: ratio(all[pi], one[pi]),
            }
        })
        .collect();
    let ceiling = Ceiling { one_core_mbps: ceil_one, all_cores_mbps: ceil_all, scaling: ratio(ceil_all, ceil_one) };
    Ok(InMemory { settings, stages, pipelines, ceiling })
}

/// `a / b`, 0 when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn stage_bench<'a>(stage: Stage, p: &'a Prepared, key: &'a DataKey) -> Bench<'a> {
    let bytes = p.bytes(stage);
    match stage {
        Stage::Chunking => Bench::new(bytes, true, move || {
            for c in Chunker::new(&p.plain[..], fixed())? {
                black_box(c?);
            }
            Ok(())
        }),
        Stage::Compression => Bench::new(bytes, true, move || {
            for c in p.plain.chunks(CHUNK) {
                black_box(compress_if_pays(COMPRESSION, c));
            }
            Ok(())
        }),
        Stage::Encryption => Bench::new(bytes, true, move || {
            for (i, b) in p.bodies.iter().enumerate() {
                black_box(seal_chunk(CIPHER, key, i as u64, b, NonceMode::Random));
            }
            Ok(())
        }),
        Stage::Hashing => Bench::new(bytes, true, move || {
            for s in &p.stored {
                black_box(Cid::raw_blake3(s));
            }
            Ok(())
        }),
        Stage::Erasure => Bench::new(bytes, true, move || {
            for s in &p.stored {
                black_box(erasure::encode(ERASURE, s)?);
            }
            Ok(())
        }),
        Stage::ShardHashing => Bench::new(bytes, true, move || {
            for s in &p.shards {
                black_box(erasure::shard_cids(s));
            }
            Ok(())
        }),
        Stage::Memcpy => {
            let mut dst = vec![0u8; CHUNK];
            Bench::new(bytes, true, move || {
                for c in p.plain.chunks(CHUNK) {
                    dst[..c.len()].copy_from_slice(c);
                    black_box(&dst);
                }
                Ok(())
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn serial_composition_is_the_harmonic_sum() {
        let t = |rate, weight| Term { rate, weight };
        // Two stages at 1000 MB/s each: 500 MB/s in series.
        assert!((serial_composition(&[t(1000.0, 1.0), t(1000.0, 1.0)]) - 500.0).abs() < 1e-9);
        // 600, 300, 200 MB/s: 1 / (1/600 + 1/300 + 1/200) = 100.
        assert!((serial_composition(&[t(600.0, 1.0), t(300.0, 1.0), t(200.0, 1.0)]) - 100.0).abs() < 1e-9);
        // A stage that sees a third of the bytes counts three times its rate.
        assert!((serial_composition(&[t(300.0, 1.0), t(100.0, 1.0 / 3.0)]) - 150.0).abs() < 1e-9);
        // Shards: 1.5 bytes per plaintext byte divide the rate by 1.5.
        assert!((serial_composition(&[t(1500.0, 1.5)]) - 1000.0).abs() < 1e-9);
        assert_eq!(serial_composition(&[t(0.0, 1.0), t(100.0, 1.0)]), 0.0);
        assert_eq!(serial_composition(&[]), 0.0);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn cycle_repeats_the_input() {
        let mut out = Vec::new();
        cycle(b"abc", 3).read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abcabcabc");
        out.clear();
        cycle(b"abc", 0).read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn pipelines_process_every_chunk() {
        let key = DataKey::random();
        let sealer = ChunkSealer::encrypted(COMPRESSION, CIPHER, key, false);
        let input = data::text(3 * CHUNK + 5, 1);
        pipeline(&sealer, &input, 2, 1).unwrap();
        pipeline(&sealer, &input, 2, 3).unwrap();
    }
}
