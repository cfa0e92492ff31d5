//! A resumable download on disk: `<out>.datamesh-partial` holds the
//! plaintext written so far, in order, and its sidecar
//! `<out>.datamesh-partial.cid` names the manifest and holds one tag per
//! chunk written (`OpenFile::resume_tag`).
//!
//! Both live beside the output, often in a directory others can write to,
//! so nothing in them is trusted: the files are opened without following
//! links and must be regular files, a new download creates them exclusively
//! (`O_EXCL`), and a resumed download re-reads the prefix and keeps only
//! the chunks it can prove (a public chunk against its CID, an encrypted one
//! against a tag keyed from the data key), truncating at the first chunk
//! that fails. Bytes planted there are fetched again, never copied into the
//! output.
//!
//! ```text
//! sidecar := "datamesh-partial v2 " manifest-cid "\n" { index " " hex(tag) "\n" }
//! ```
//! (A sidecar holding only the manifest CID is an older CLI's; its public
//! chunks still resume, its encrypted ones are fetched again.)

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use datamesh_client::OpenFile;
use datamesh_core::Cid;
use datamesh_pipeline::unixfs::UnixFsHasher;

const HEADER: &str = "datamesh-partial v2";

/// A partial download, open for appending the chunks after `first`.
pub struct Partial {
    /// The partial file's path (renamed over the output when done).
    pub path: PathBuf,
    /// The sidecar's path.
    pub sidecar: PathBuf,
    /// The partial file, positioned after the last verified chunk.
    pub data: File,
    tags: File,
    /// Chunks already on disk and verified.
    pub first: usize,
}

impl Partial {
    /// Opens the partial download of `file` that would become `out`:
    /// resumes the verified prefix of one left by an interrupted get of the
    /// same manifest (feeding it to `unixfs`), else starts a new one.
    /// Refuses a symlink or anything but a regular file at either path.
    pub fn open(out: &Path, file: &OpenFile, mut unixfs: Option<&mut UnixFsHasher>) -> Result<Self> {
        let path = partial_path(out);
        let sidecar = sidecar_path(&path);
        refuse_special(&path)?;
        refuse_special(&sidecar)?;
        let manifest = file.manifest();
        let tags = read_sidecar(&sidecar, file.cid, manifest.chunks.len())?;
        let offsets = manifest.chunk_offsets();
        let mut first = 0usize;
        let data = match &tags {
            Some(tags) if path.exists() => {
                let mut f = open_nofollow(&path, false)?;
                let mut buf = Vec::new();
                while first < manifest.chunks.len() {
                    buf.resize(manifest.chunks[first].plain_size as usize, 0);
                    if f.read_exact(&mut buf).is_err() || !file.verify_resumed(first, &buf, tags.get(first)) {
                        break;
                    }
                    if let Some(h) = unixfs.as_deref_mut() {
                        h.update(&buf);
                    }
                    first += 1;
                }
                f.set_len(offsets[first])?;
                f.seek(SeekFrom::Start(offsets[first]))?;
                f
            }
            _ => {
                remove_regular(&path)?;
                open_nofollow(&path, true)?
            }
        };
        // The sidecar is rewritten with the tags of the chunks kept.
        remove_regular(&sidecar)?;
        let mut w = BufWriter::new(open_nofollow(&sidecar, true)?);
        writeln!(w, "{HEADER} {}", file.cid)?;
        for (i, t) in tags.iter().flatten().take(first).enumerate() {
            writeln!(w, "{i} {}", hex::encode(t))?;
        }
        let tags = w.into_inner().map_err(|e| e.into_error())?;
        Ok(Self { path, sidecar, data, tags, first })
    }

    /// Records that chunk `index` (verified, opened) was written, with its
    /// tag (None for a public file, whose chunks prove themselves).
    pub fn record(&mut self, index: usize, tag: Option<[u8; 32]>) -> Result<()> {
        if let Some(t) = tag {
            // Buffered and not synced: a tag that reaches the disk before
            // its chunk only makes that chunk fail verification next time.
            writeln!(self.tags, "{index} {}", hex::encode(t))
                .context("writing the partial download's sidecar failed")?;
        }
        Ok(())
    }
}

/// The partial download's tags when `sidecar` names manifest `mcid`
/// (`Some(empty)` for an older CLI's sidecar); None when there is no
/// sidecar or it is another download's. Tags must come in order from 0; a
/// line that does not parse ends them.
fn read_sidecar(sidecar: &Path, mcid: Cid, chunks: usize) -> Result<Option<Vec<[u8; 32]>>> {
    let f = match open_nofollow(sidecar, false) {
        Ok(f) => f,
        Err(_) if !sidecar.exists() => return Ok(None),
        Err(e) => return Err(e),
    };
    // A line is at most ~90 bytes; anything longer is not ours.
    let limit = 128 + 100 * chunks as u64;
    let mut text = String::new();
    if f.take(limit).read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    let mut lines = text.lines();
    let want = mcid.to_string();
    match lines.next().map(str::trim) {
        Some(h) if h.strip_prefix(HEADER).map(str::trim) == Some(want.as_str()) => {}
        Some(h) if h == want => return Ok(Some(Vec::new())),
        _ => return Ok(None),
    }
    let mut tags = Vec::new();
    for line in lines {
        let Some((i, t)) = line.split_once(' ') else { break };
        let mut tag = [0u8; 32];
        if i.parse::<usize>().ok() != Some(tags.len()) || hex::decode_to_slice(t.trim(), &mut tag).is_err() {
            break;
        }
        tags.push(tag);
    }
    Ok(Some(tags))
}

/// Errors unless `path` is absent or a regular file: a symlink planted
/// there would make the download write (or truncate) whatever it points to.
fn refuse_special(path: &Path) -> Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => bail!(
            "{} is a symbolic link; a download never writes through one. Remove it (or choose another output) and run the get again",
            path.display()
        ),
        Ok(m) if !m.file_type().is_file() => bail!(
            "{} exists and is not a regular file; remove it (or choose another output) and run the get again",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// Removes a leftover regular file at `path` (a symlink is refused before).
fn remove_regular(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(e).context(format!("cannot remove the stale {}", path.display())))
        }
        _ => Ok(()),
    }
}

/// Opens `path` read-write without following a symlink at its last
/// component; `create` makes a new file and fails if anything (a file, a
/// link) appeared there meanwhile. The result must be a regular file.
fn open_nofollow(path: &Path, create: bool) -> Result<File> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if create {
        o.create_new(true);
    }
    let f = o.open(path).map_err(|e| {
        let hint = if e.raw_os_error() == Some(libc::ELOOP) {
            " (it is a symbolic link; remove it and run the get again)"
        } else if e.kind() == std::io::ErrorKind::AlreadyExists {
            " (something appeared there while the get started; remove it and run the get again)"
        } else {
            ""
        };
        anyhow::Error::from(e).context(format!("cannot open {}{hint}", path.display()))
    })?;
    if !f.metadata()?.file_type().is_file() {
        bail!("{} is not a regular file; remove it and run the get again", path.display());
    }
    Ok(f)
}

/// `<out>.datamesh-partial`.
pub fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".datamesh-partial");
    out.with_file_name(name)
}

/// `<partial>.cid`.
fn sidecar_path(partial: &Path) -> PathBuf {
    let mut s = partial.as_os_str().to_os_string();
    s.push(".cid");
    PathBuf::from(s)
}
