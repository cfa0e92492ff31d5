//! Put and get on the user's side: chunking, compression, encryption and
//! verification happen here, so nodes only ever see stored (sealed) forms.
//!
//! The orchestration (sealing and sending, or fetching and opening, up to
//! `n` chunks at once in file order) is `datamesh-client`'s, shared with the
//! gateway, over its HTTP transport. Here: a reader thread cuts the file
//! into a small channel (and hashes a public file's UnixFS CID), keys are
//! chosen and unwrapped, progress is shown, and a get resumes a partial
//! download. Memory is bounded by `(channel + n + 1) × chunk size`,
//! whatever the file size.

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use datamesh_client::http::{HttpError, HttpTransport};
use datamesh_client::{ClientConfig, GetError, OpenFile, PutError};
use datamesh_core::{Chunking, Cid, Cipher, Codec, Compression, Encryption, Erasure};
use datamesh_pipeline::chunker::Chunker;
use datamesh_pipeline::crypto::DataKey;
use datamesh_pipeline::keys::{self, PassphraseParams, UserKey, WrapKind};
use datamesh_pipeline::seal::ChunkSealer;
use datamesh_pipeline::unixfs::UnixFsHasher;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::fs::File;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;

use crate::client::{Client, http_error};
use crate::partial::Partial;

/// How to put a file.
#[derive(Debug, Clone)]
pub struct PutOptions {
    /// Chunking of the plaintext.
    pub chunking: Chunking,
    /// Compression to try per chunk.
    pub compression: Compression,
    /// None = public (unencrypted) file.
    pub cipher: Option<Cipher>,
    /// Convergent encryption (same user + same content = same CID).
    pub convergent: bool,
    /// Wrap the data key with the hybrid post-quantum KEM too.
    pub post_quantum: bool,
    /// Also wrap the data key under this passphrase (wiped when dropped).
    pub passphrase: Option<zeroize::Zeroizing<String>>,
    /// Erasure code (None = the node's default).
    pub erasure: Option<Erasure>,
    /// Chunks in flight.
    pub concurrency: usize,
    /// Name recorded with the pin.
    pub name: Option<String>,
    /// Show a progress bar.
    pub progress: bool,
}

fn progress_bar(len: u64, show: bool, verb: &str) -> ProgressBar {
    if !show || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(verb.to_string());
    pb
}

/// What a put produced.
pub struct PutResult {
    /// The file's CID: the UnixFS CID for public files, else the manifest CID.
    pub cid: Cid,
    /// The manifest CID.
    pub manifest: Cid,
    /// Plaintext bytes.
    pub size: u64,
    /// Chunks.
    pub chunks: usize,
}

fn hash_file(path: &Path) -> Result<[u8; 32]> {
    let mut h = blake3::Hasher::new();
    h.update_reader(File::open(path)?)?;
    Ok(*h.finalize().as_bytes())
}

/// Builds the sealer and the encryption record for a put.
fn sealer_for(opts: &PutOptions, user: &UserKey, path: &Path) -> Result<(ChunkSealer, Option<Encryption>)> {
    let Some(cipher) = opts.cipher else {
        return Ok((ChunkSealer::public(opts.compression), None));
    };
    let key = if opts.convergent {
        // Convergent: the key is a function of the content, the parameters and
        // the user's secret, so only this user's duplicates converge.
        let params = format!("{:?}|{:?}|{:?}", cipher, opts.chunking, opts.compression);
        DataKey::convergent(user.convergence_secret(), &hash_file(path)?, &params)
    } else {
        DataKey::random()
    };
    let me = user.public();
    let mut wrapped =
        vec![keys::wrap_for(&key, &me, if opts.post_quantum { WrapKind::XWing } else { WrapKind::X25519 })];
    if let Some(p) = &opts.passphrase {
        wrapped.push(keys::wrap_with_passphrase(&key, p, PassphraseParams::default()));
    }
    let enc = Encryption { cipher, convergent: opts.convergent, wrapped_keys: wrapped };
    Ok((ChunkSealer::encrypted(opts.compression, cipher, key, opts.convergent), Some(enc)))
}

/// The shared put/get orchestration over the CLI's HTTP transport.
fn orchestrator(client: &Client, concurrency: usize) -> datamesh_client::Client<HttpTransport> {
    datamesh_client::Client::new(client.transport().clone(), ClientConfig { concurrency: concurrency.max(1) })
}

fn put_error(e: PutError<HttpError>) -> anyhow::Error {
    match e {
        PutError::Transport(e) => http_error(e),
        other => other.into(),
    }
}

fn get_error(e: GetError<HttpError>) -> anyhow::Error {
    match e {
        GetError::Transport(e) => http_error(e),
        other => other.into(),
    }
}

/// Streams a file to the node and returns its CID once the node has
/// acknowledged it durable.
pub async fn put(client: &Client, user: &UserKey, path: &Path, opts: &PutOptions) -> Result<PutResult> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        bail!("{} is a directory; put files one at a time for now", path.display());
    }
    let expected = meta.len();
    let (sealer, encryption) = sealer_for(opts, user, path)?;
    let public = encryption.is_none();
    let put_opts =
        datamesh_client::PutOptions { chunking: opts.chunking, erasure: opts.erasure, name: opts.name.clone() };
    let mut upload = orchestrator(client, opts.concurrency).begin_put(sealer, put_opts).await.map_err(put_error)?;
    let pb = progress_bar(expected, opts.progress, "put");
    {
        let pb = pb.clone();
        upload.on_progress(move |n| pb.inc(n));
    }

    // Reader thread: cut chunks (and hash UnixFS for public files) in order.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(2);
    let chunking = opts.chunking;
    let reader = tokio::task::spawn_blocking(move || -> Result<(u64, Option<Cid>)> {
        let mut unixfs = public.then(UnixFsHasher::new);
        let mut total = 0u64;
        for chunk in Chunker::new(file, chunking)? {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let msg = e.to_string();
                    let _ = tx.blocking_send(Err(e));
                    bail!("reading the file failed: {msg}");
                }
            };
            total += chunk.len() as u64;
            if let Some(h) = unixfs.as_mut() {
                h.update(&chunk);
            }
            if tx.blocking_send(Ok(chunk)).is_err() {
                break; // the sender side failed; its error is reported there
            }
        }
        Ok((total, unixfs.map(UnixFsHasher::finalize)))
    });

    // Up to `concurrency` chunks are sealed and sent at once (push waits
    // for a free slot); a failed push has aborted the upload.
    while let Some(item) = rx.recv().await {
        match item {
            Ok(chunk) => upload.push(Bytes::from(chunk)).await.map_err(put_error)?,
            Err(e) => {
                upload.abort().await;
                return Err(anyhow::Error::from(e).context("reading the file failed"));
            }
        }
    }
    let (total, unixfs) = match reader.await? {
        Ok(r) => r,
        Err(e) => {
            upload.abort().await;
            return Err(e);
        }
    };
    if total != expected {
        upload.abort().await;
        bail!(
            "{} changed while it was being read ({expected} bytes at the start, {total} read); nothing was stored, put it again",
            path.display()
        );
    }
    let stored = upload.finish(encryption, unixfs, Some(user.public().ed25519)).await.map_err(put_error)?;
    pb.finish_and_clear();
    Ok(PutResult {
        cid: unixfs.unwrap_or(stored.manifest),
        manifest: stored.manifest,
        size: total,
        chunks: stored.chunks,
    })
}

/// Fetches, verifies and decodes a file into `out` (a path, or `-` for
/// stdout), resuming an interrupted get of the same file.
pub async fn get(
    client: &Client,
    load_user: impl FnOnce() -> Result<UserKey>,
    cid: &Cid,
    out: &Path,
    concurrency: usize,
    progress: bool,
) -> Result<GetResult> {
    let dm = orchestrator(client, concurrency);
    let (mcid, manifest) = dm.manifest(*cid).await.map_err(get_error)?;
    match cid.codec() {
        Codec::DagCbor if mcid != *cid => bail!("asked for {cid} but the node served manifest {mcid}"),
        Codec::DagCbor => {}
        _ if manifest.unixfs != Some(*cid) => bail!("manifest {mcid} does not describe {cid}"),
        _ => {}
    }
    let key = match &manifest.encryption {
        None => None,
        Some(enc) => Some(data_key(enc, load_user, client, &mcid).await?),
    };
    let file = OpenFile::new(mcid, manifest.clone(), key);
    let to_stdout = out == Path::new("-");
    let mut unixfs = manifest.unixfs.map(|_| UnixFsHasher::new());
    // Resume: a partial download of this same manifest continues after its
    // last chunk that verifies again now (see `partial`); a public file's
    // whole UnixFS CID is re-checked at the end.
    let (mut partial, first, sink): (_, _, Box<dyn Write + Send>) = if to_stdout {
        (None, 0, Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout())))
    } else {
        let p = Partial::open(out, &file, unixfs.as_mut())?;
        let data = p.data.try_clone()?;
        let first = p.first;
        (Some(p), first, Box::new(std::io::BufWriter::with_capacity(1 << 20, data)))
    };
    let mut sink = sink;
    let resumed_from = manifest.chunk_offsets()[first];
    let pb = progress_bar(manifest.size, progress && !to_stdout, "get");
    pb.inc(resumed_from);
    // From the first missing chunk on: whole chunks, verified and opened,
    // up to `concurrency` fetched ahead, in order.
    let mut chunks = dm.read(&file, resumed_from..manifest.size);
    let mut written = resumed_from;
    let mut index = first;
    let result: Result<()> = async {
        while let Some(plain) = chunks.next().await {
            let plain = plain.map_err(get_error)?;
            if let Some(h) = unixfs.as_mut() {
                h.update(&plain);
            }
            sink.write_all(&plain).context("writing the output failed")?;
            if let Some(p) = partial.as_mut() {
                p.record(index, file.resume_tag(index, &plain))?;
            }
            index += 1;
            written += plain.len() as u64;
            pb.inc(plain.len() as u64);
        }
        sink.flush()?;
        Ok(())
    }
    .await;
    drop(sink);
    pb.finish_and_clear();
    let Some(partial) = partial else {
        result?;
        if let (Some(h), Some(want)) = (unixfs, manifest.unixfs) {
            let got = h.finalize();
            if got != want {
                bail!("the reassembled file hashes to {got}, not {want}: corrupt data was served");
            }
        }
        return Ok(GetResult { bytes: written, resumed_from });
    };
    let discard = |p: &Partial| {
        let _ = std::fs::remove_file(&p.path);
        let _ = std::fs::remove_file(&p.sidecar);
    };
    if let Err(e) = result {
        if written > 0 {
            return Err(e.context(format!(
                "the verified part is kept in {}; run the same get again to resume",
                partial.path.display()
            )));
        }
        discard(&partial);
        return Err(e);
    }
    if let (Some(h), Some(want)) = (unixfs, manifest.unixfs) {
        let got = h.finalize();
        if got != want {
            discard(&partial);
            bail!("the reassembled file hashes to {got}, not {want}: corrupt data was served");
        }
    }
    std::fs::rename(&partial.path, out)
        .with_context(|| format!("cannot move the file into place at {}", out.display()))?;
    let _ = std::fs::remove_file(&partial.sidecar);
    Ok(GetResult { bytes: written, resumed_from })
}

/// What a get wrote.
pub struct GetResult {
    /// Bytes in the output.
    pub bytes: u64,
    /// Bytes that were already there from an interrupted get.
    pub resumed_from: u64,
}

/// The file's data key: unwrapped with the user's key (from the manifest,
/// else from the wrap the file's owner shared with this user), else with a
/// passphrase when the file has a passphrase wrap.
async fn data_key(
    enc: &Encryption,
    load_user: impl FnOnce() -> Result<UserKey>,
    client: &Client,
    mcid: &Cid,
) -> Result<DataKey> {
    let err = match load_user() {
        Ok(u) => match keys::unwrap_for(&enc.wrapped_keys, &u) {
            Ok(k) => return Ok(k),
            Err(e @ keys::KeyError::NotARecipient) => match shared_key(client, mcid, &u).await? {
                Some(k) => return Ok(k),
                None => anyhow!("{e}"),
            },
            Err(e) => anyhow!("{e}"),
        },
        Err(e) => e,
    };
    let has_pass = enc.wrapped_keys.iter().any(|w| matches!(w, datamesh_core::WrappedKey::Passphrase { .. }));
    if has_pass {
        if let Some(p) = crate::userkey::passphrase("DATAMESH_PASSPHRASE", "Passphrase of this file: ")? {
            return keys::unwrap_with_passphrase(&enc.wrapped_keys, &p).map_err(|e| anyhow!("{e}"));
        }
        bail!("this file is protected by a passphrase: set DATAMESH_PASSPHRASE (stdin is not a terminal)");
    }
    Err(err)
}

/// The data key from the wrap this file's owner made for the user
/// (`datamesh share --to`), if there is one.
async fn shared_key(client: &Client, mcid: &Cid, u: &UserKey) -> Result<Option<DataKey>> {
    let rb = client.request(reqwest::Method::GET, &format!("/v1/files/{mcid}/key"));
    let shared: datamesh_api::FileKey = match client.transport().call(rb).await {
        Ok(k) => k,
        Err(HttpError::Api(a)) if a.status == reqwest::StatusCode::NOT_FOUND => return Ok(None),
        Err(e) => return Err(http_error(e)),
    };
    let bytes = hex::decode(&shared.wrapped_keys).context("the node served a shared key that is not hex")?;
    let wraps: Vec<datamesh_core::WrappedKey> =
        serde_ipld_dagcbor::from_slice(&bytes).context("the node served a shared key that does not decode")?;
    if wraps.len() > datamesh_core::limits::MAX_WRAPPED_KEYS {
        bail!(
            "the node served {} shared keys: at most {} are read",
            wraps.len(),
            datamesh_core::limits::MAX_WRAPPED_KEYS
        );
    }
    keys::unwrap_for(&wraps, u).map(Some).map_err(|e| anyhow!("the key shared with you does not open: {e}"))
}

/// The CID a public put of `path` would produce (its UnixFS CID), without
/// a node, like `ipfs add --only-hash`.
pub fn cid_only(path: &Path) -> Result<Cid> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    Ok(datamesh_pipeline::unixfs::unixfs_cid(std::io::BufReader::with_capacity(1 << 20, file))?)
}

/// Reads stdin or a file fully: only for small inputs such as key files.
pub fn read_small(path: &Path) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin().take(1 << 20).read_to_end(&mut buf)?;
    } else {
        File::open(path)
            .with_context(|| format!("cannot open {}", path.display()))?
            .take(1 << 20)
            .read_to_end(&mut buf)?;
    }
    Ok(buf)
}
