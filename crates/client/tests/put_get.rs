//! The orchestration over an in-memory transport: puts of boundary sizes,
//! then whole and ranged reads; corruption caught on read; a failed or
//! dropped put aborts its session; a bounded number of chunks in flight.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datamesh_api::ChunkReceipt;
use datamesh_client::{Client, ClientConfig, GetError, OpenFile, PutError, PutOptions, Rechunker, Session, Transport};
use datamesh_core::{Chunking, Cid, Cipher, Compression, Encryption, Erasure, Manifest};
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::keys::{UserKey, WrapKind, wrap_for};
use datamesh_pipeline::seal::ChunkSealer;
use futures::StreamExt;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MemError(String);

#[derive(Default)]
struct State {
    sessions: HashMap<String, Erasure>,
    aborted: Vec<String>,
    chunks: HashMap<Cid, Bytes>,
    manifests: HashMap<Cid, Vec<u8>>,
    next: usize,
    in_flight: usize,
    max_in_flight: usize,
}

/// A node in a map: chunks by CID, manifests by CID.
#[derive(Clone, Default)]
struct Mem {
    st: Arc<Mutex<State>>,
    /// Fail the put of the chunk whose stored form is the n-th sent.
    fail_put: Arc<Mutex<Option<usize>>>,
    /// Flip a bit of every chunk served.
    corrupt: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl Transport for Mem {
    type Error = MemError;

    async fn begin_upload(&self, erasure: Option<Erasure>) -> Result<Session, MemError> {
        let mut st = self.st.lock().unwrap();
        st.next += 1;
        let id = format!("u{}", st.next);
        let erasure = erasure.unwrap_or(Erasure { k: 4, m: 2 });
        st.sessions.insert(id.clone(), erasure);
        // The node's key, which the manifest must name as its writer.
        Ok(Session { id, erasure, writer: Some([7; 32]) })
    }

    async fn put_chunk(&self, upload: &str, stored: Bytes) -> Result<ChunkReceipt, MemError> {
        let (n, erasure) = {
            let mut st = self.st.lock().unwrap();
            let Some(&erasure) = st.sessions.get(upload) else {
                return Err(MemError(format!("no session {upload}")));
            };
            st.in_flight += 1;
            st.max_in_flight = st.max_in_flight.max(st.in_flight);
            (st.chunks.len(), erasure)
        };
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        let mut st = self.st.lock().unwrap();
        st.in_flight -= 1;
        if *self.fail_put.lock().unwrap() == Some(n) {
            return Err(MemError("disk full".into()));
        }
        let cid = Cid::raw_blake3(&stored);
        st.chunks.insert(cid, stored);
        // Stand-in shard CIDs: the manifest must list k+m per chunk.
        let shards = (0..erasure.total()).map(|i| Cid::raw_blake3(format!("{cid}/{i}").as_bytes())).collect();
        Ok(ChunkReceipt { cid, shards })
    }

    async fn complete_upload(&self, upload: &str, manifest: Vec<u8>, _name: Option<String>) -> Result<Cid, MemError> {
        let mut st = self.st.lock().unwrap();
        if st.sessions.remove(upload).is_none() {
            return Err(MemError(format!("no session {upload}")));
        }
        let cid = Cid::dag_cbor_blake3(&manifest);
        st.manifests.insert(cid, manifest);
        Ok(cid)
    }

    async fn abort_upload(&self, upload: &str) {
        let mut st = self.st.lock().unwrap();
        st.sessions.remove(upload);
        st.aborted.push(upload.to_string());
    }

    async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), MemError> {
        let st = self.st.lock().unwrap();
        let bytes = st.manifests.get(&cid).ok_or_else(|| MemError(format!("{cid} not found")))?;
        let m = Manifest::decode_verified(&cid, bytes).map_err(|e| MemError(e.to_string()))?;
        Ok((cid, Arc::new(m)))
    }

    async fn chunk(&self, file: Cid, index: usize) -> Result<Bytes, MemError> {
        let (_, m) = self.manifest(file).await?;
        let entry = m.chunks.get(index).ok_or_else(|| MemError(format!("no chunk {index}")))?;
        let st = self.st.lock().unwrap();
        let b = st.chunks.get(&entry.cid).cloned().ok_or_else(|| MemError("chunk gone".into()))?;
        if self.corrupt.load(Ordering::Relaxed) > 0 {
            let mut v = b.to_vec();
            v[0] ^= 1;
            return Ok(Bytes::from(v));
        }
        Ok(b)
    }
}

const CHUNK: usize = 1000;

fn data(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
}

async fn put(client: &Client<Mem>, body: &[u8], key: &DataKey) -> Result<Cid, PutError<MemError>> {
    let sealer = ChunkSealer::encrypted(Compression::Zstd, Cipher::Aes256Gcm, key.clone(), false);
    let opts = PutOptions { chunking: Chunking::Fixed { size: CHUNK as u32 }, erasure: None, name: Some("f".into()) };
    let mut up = client.begin_put(sealer, opts).await?;
    let mut r = Rechunker::new(CHUNK);
    // Odd-sized pieces, as a request body arrives.
    for piece in body.chunks(333) {
        for c in r.push(Bytes::copy_from_slice(piece)) {
            up.push(c).await?;
        }
    }
    if let Some(c) = r.finish() {
        up.push(c).await?;
    }
    let owner = UserKey::generate().public();
    let enc = Encryption {
        cipher: Cipher::Aes256Gcm,
        convergent: false,
        wrapped_keys: vec![wrap_for(key, &owner, WrapKind::X25519)],
    };
    let stored = up.finish(Some(enc), None, None).await?;
    assert_eq!(stored.size, body.len() as u64);
    assert_eq!(stored.chunks, body.len().div_ceil(CHUNK));
    Ok(stored.manifest)
}

async fn read(
    client: &Client<Mem>,
    file: &OpenFile,
    range: std::ops::Range<u64>,
) -> Result<Vec<u8>, GetError<MemError>> {
    let mut out = Vec::new();
    let mut s = client.read(file, range);
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

#[tokio::test]
async fn put_then_whole_and_ranged_reads_at_boundary_sizes() {
    let mem = Mem::default();
    let client = Client::new(mem.clone(), ClientConfig { concurrency: 3 });
    let key = DataKey::random();
    for size in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 123] {
        let body = data(size);
        let cid = put(&client, &body, &key).await.unwrap();
        let (mcid, m) = client.manifest(cid).await.unwrap();
        assert_eq!(mcid, cid);
        assert_eq!(m.size, size as u64);
        assert_eq!(
            m.writer.as_deref(),
            Some([7u8; 32].as_slice()),
            "the manifest does not name the node as its writer"
        );
        let file = OpenFile::new(mcid, m, Some(key.clone()));
        assert_eq!(read(&client, &file, 0..u64::MAX).await.unwrap(), body, "size {size}");
        let n = size as u64;
        for (a, b) in [(0, 1), (1, n), (n / 2, n / 2 + 1), (CHUNK as u64 - 1, CHUNK as u64 + 1), (n, n + 5), (3, 2)] {
            let want = body.get(a.min(n) as usize..b.min(n).max(a.min(n)) as usize).unwrap_or(&[]);
            assert_eq!(read(&client, &file, a..b).await.unwrap(), want, "size {size} range {a}..{b}");
        }
    }
    let st = mem.st.lock().unwrap();
    assert!(st.sessions.is_empty() && st.aborted.is_empty());
    assert!(st.max_in_flight <= 3, "{} chunks were in flight", st.max_in_flight);
}

#[tokio::test]
async fn a_corrupt_chunk_or_a_missing_key_fails_the_read() {
    let mem = Mem::default();
    let client = Client::new(mem.clone(), ClientConfig::default());
    let key = DataKey::random();
    let cid = put(&client, &data(3 * CHUNK), &key).await.unwrap();
    let (mcid, m) = client.manifest(cid).await.unwrap();
    let no_key = OpenFile::new(mcid, m.clone(), None);
    assert!(matches!(read(&client, &no_key, 0..10).await, Err(GetError::NoKey(_))));
    mem.corrupt.store(1, Ordering::Relaxed);
    let file = OpenFile::new(mcid, m, Some(key));
    let err = read(&client, &file, 0..u64::MAX).await.unwrap_err();
    assert!(matches!(err, GetError::Open(_)), "{err}");
}

#[tokio::test]
async fn a_failed_chunk_aborts_the_session_and_a_dropped_upload_too() {
    let mem = Mem::default();
    *mem.fail_put.lock().unwrap() = Some(2);
    let client = Client::new(mem.clone(), ClientConfig { concurrency: 2 });
    let err = put(&client, &data(10 * CHUNK), &DataKey::random()).await.unwrap_err();
    assert!(matches!(err, PutError::Transport(_)), "{err}");
    {
        let st = mem.st.lock().unwrap();
        assert_eq!(st.aborted, ["u1"]);
        assert!(st.sessions.is_empty() && st.manifests.is_empty());
    }

    *mem.fail_put.lock().unwrap() = None;
    let opts = PutOptions { chunking: Chunking::Fixed { size: CHUNK as u32 }, erasure: None, name: None };
    let mut up = client.begin_put(ChunkSealer::public(Compression::None), opts).await.unwrap();
    up.push(Bytes::from(data(CHUNK))).await.unwrap();
    drop(up);
    // The abort runs in the background.
    for _ in 0..100 {
        if mem.st.lock().unwrap().aborted.len() == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let st = mem.st.lock().unwrap();
    assert_eq!(st.aborted, ["u1", "u2"]);
    assert!(st.sessions.is_empty() && st.manifests.is_empty());
}

#[tokio::test]
async fn a_public_file_reads_without_a_key() {
    let mem = Mem::default();
    let client = Client::new(mem, ClientConfig::default());
    let body = data(2 * CHUNK + 5);
    let opts = PutOptions {
        chunking: Chunking::Fixed { size: CHUNK as u32 },
        erasure: Some(Erasure { k: 2, m: 1 }),
        name: None,
    };
    let mut up = client.begin_put(ChunkSealer::public(Compression::Zstd), opts).await.unwrap();
    assert_eq!(up.erasure(), Erasure { k: 2, m: 1 });
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    up.on_progress(move |n| {
        s.fetch_add(n as usize, Ordering::Relaxed);
    });
    for c in body.chunks(CHUNK) {
        up.push(Bytes::copy_from_slice(c)).await.unwrap();
    }
    let stored = up.finish(None, None, None).await.unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), body.len());
    let (mcid, m) = client.manifest(stored.manifest).await.unwrap();
    assert_eq!(m.erasure, Erasure { k: 2, m: 1 });
    let file = OpenFile::new(mcid, m, None);
    assert_eq!(read(&client, &file, 0..u64::MAX).await.unwrap(), body);
}
