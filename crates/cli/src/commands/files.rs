//! The file commands: `put`, `get`, `cid`, `ls`, `stat`, `rm`, `pin`,
//! `unpin`, `gc`. The plaintext work (cutting, sealing, verifying) is done
//! here on the user's machine, through `transfer`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use bytesize::ByteSize;
use clap::{Args, Subcommand, ValueEnum};
use datamesh_api as api;
use datamesh_core::{Chunking, Cipher, Compression, Erasure};
use datamesh_pipeline::chunker::DEFAULT_CHUNK_SIZE;
use ed25519_dalek::Signer;
use reqwest::Method;
use serde_json::json;

use super::{ClientOpts, parse_cid, print};
use crate::transfer::{self, PutOptions};
use crate::userkey;

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    Zstd,
    Lz4,
    None,
}

#[derive(Clone, Copy, ValueEnum)]
enum CipherArg {
    #[value(name = "aes-256-gcm")]
    Aes,
    #[value(name = "xchacha20-poly1305")]
    XChaCha,
}

/// How to cut, compress, encrypt and code a file.
#[derive(Args, Clone)]
pub struct PutArgs {
    /// Store unencrypted; the CID is the one `ipfs add --cid-version 1` gives.
    #[arg(long)]
    public: bool,
    /// Convergent encryption: your identical files encrypt identically and are stored once.
    #[arg(long, conflicts_with = "public")]
    convergent: bool,
    /// Chunk cipher.
    #[arg(long, value_enum, default_value = "aes-256-gcm")]
    cipher: CipherArg,
    /// Also wrap the file key with the hybrid post-quantum KEM (X25519 + ML-KEM-768).
    #[arg(long)]
    pq: bool,
    /// Also let a passphrase open this file (read from DATAMESH_PASSPHRASE or prompted on a terminal).
    ///
    /// The passphrase wrap is stored in the file's manifest, which any peer can fetch, so it faces
    /// offline guessing: empty and weak passphrases are refused (zxcvbn score 3 or more required).
    #[arg(long, conflicts_with = "public")]
    passphrase: bool,
    /// Fixed chunk size (e.g. 4MiB).
    #[arg(long, default_value_t = ByteSize::b(DEFAULT_CHUNK_SIZE as u64))]
    chunk_size: ByteSize,
    /// Content-defined chunking (FastCDC) for deduplication: MIN,AVG,MAX (e.g. 256KiB,1MiB,4MiB).
    #[arg(long, value_name = "MIN,AVG,MAX")]
    cdc: Option<String>,
    /// Per-chunk compression, used only when it pays.
    #[arg(long, value_enum, default_value = "zstd")]
    compression: CompressionArg,
    /// Data shards per chunk (default: the node's, 4).
    #[arg(short = 'k', long)]
    data_shards: Option<u16>,
    /// Parity shards per chunk (default: the node's, 2).
    #[arg(short = 'm', long)]
    parity_shards: Option<u16>,
    /// Chunks in flight at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

impl PutArgs {
    fn options(&self, name: Option<String>, progress: bool) -> Result<PutOptions> {
        let chunking = match &self.cdc {
            Some(spec) => {
                let v: Vec<u32> = spec
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<ByteSize>()
                            .map(|b| b.as_u64() as u32)
                            .map_err(|e| anyhow!("--cdc {spec}: {e}"))
                    })
                    .collect::<Result<_>>()?;
                let [min, avg, max] = v[..] else { bail!("--cdc takes MIN,AVG,MAX, e.g. 256KiB,1MiB,4MiB") };
                Chunking::FastCdc { min, avg, max }
            }
            None => {
                Chunking::Fixed { size: u32::try_from(self.chunk_size.as_u64()).context("--chunk-size is too large")? }
            }
        };
        let passphrase = if self.passphrase {
            let p = userkey::passphrase("DATAMESH_PASSPHRASE", "Passphrase for this file: ")?
                .ok_or_else(|| anyhow!("--passphrase needs DATAMESH_PASSPHRASE when stdin is not a terminal"))?;
            let context: Vec<&str> = name.as_deref().into_iter().collect();
            userkey::check_file_passphrase(&p, &context)?;
            Some(p)
        } else {
            None
        };
        let erasure = match (self.data_shards, self.parity_shards) {
            (None, None) => None,
            (k, m) => Some(Erasure { k: k.unwrap_or(Erasure::DEFAULT.k), m: m.unwrap_or(Erasure::DEFAULT.m) }),
        };
        Ok(PutOptions {
            chunking,
            compression: match self.compression {
                CompressionArg::Zstd => Compression::Zstd,
                CompressionArg::Lz4 => Compression::Lz4,
                CompressionArg::None => Compression::None,
            },
            cipher: (!self.public).then_some(match self.cipher {
                CipherArg::Aes => Cipher::Aes256Gcm,
                CipherArg::XChaCha => Cipher::XChaCha20Poly1305,
            }),
            convergent: self.convergent,
            post_quantum: self.pq,
            passphrase,
            erasure,
            concurrency: self.concurrency,
            name,
            progress,
        })
    }
}

/// The file commands, flattened into the top level (`datamesh put`, ...).
#[derive(Subcommand)]
pub enum FilesCmd {
    /// Store a file; prints its CID.
    #[command(alias = "add")]
    Put {
        /// The file.
        file: PathBuf,
        /// Name recorded with the pin (default: the file name).
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        put: PutArgs,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Fetch a file, verifying every byte.
    #[command(alias = "cat")]
    Get {
        /// The file's CID.
        cid: String,
        /// Output path (`-` for stdout; default: a file named after the CID).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Chunks in flight at once.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Print the CID a public put would give a file, without storing anything.
    Cid {
        /// The file.
        file: PathBuf,
        /// Accepted for symmetry with `put --public`; CIDs without a node are public CIDs.
        #[arg(long)]
        public: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List pinned files.
    #[command(alias = "list")]
    Ls(#[command(flatten)] ClientOpts),
    /// Show a file's manifest summary and live shards.
    Stat {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Delete a file (signed with your key).
    #[command(alias = "delete")]
    Rm {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Pin a file so garbage collection keeps it.
    Pin {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Unpin a file; `gc` may then reclaim it.
    Unpin {
        /// The file's CID.
        cid: String,
        #[command(flatten)]
        c: ClientOpts,
    },
    /// Reclaim space held by unpinned data.
    Gc(#[command(flatten)] ClientOpts),
}

/// Runs one file command.
pub async fn run(cmd: FilesCmd) -> Result<()> {
    match cmd {
        FilesCmd::Put { file, name, put, c } => {
            let user = c.user()?;
            let client = c.client()?;
            let name = name.or_else(|| file.file_name().map(|n| n.to_string_lossy().into_owned()));
            let opts = put.options(name, !c.quiet && !c.json)?;
            let r = transfer::put(&client, &user, &file, &opts).await?;
            print(
                c.json,
                &json!({"cid": r.cid, "manifest": r.manifest, "size": r.size, "chunks": r.chunks, "encrypted": opts.cipher.is_some()}),
                || format!("{}", r.cid),
            );
            Ok(())
        }
        FilesCmd::Get { cid, output, concurrency, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let out = output.unwrap_or_else(|| PathBuf::from(cid.to_string()));
            // The key is loaded only if the file is encrypted.
            let r = transfer::get(&client, || c.user(), &cid, &out, concurrency, !c.quiet && !c.json).await?;
            if out != Path::new("-") {
                print(
                    c.json,
                    &json!({"cid": cid, "bytes": r.bytes, "resumed_from": r.resumed_from, "output": out}),
                    String::new,
                );
            }
            Ok(())
        }
        FilesCmd::Cid { file, public: _, json } => {
            let cid = transfer::cid_only(&file)?;
            print(json, &json!({"cid": cid}), || cid.to_string());
            Ok(())
        }
        FilesCmd::Ls(c) => {
            let v: api::FileList = c.client()?.get("/v1/files").await?;
            print(c.json, &v, || {
                v.files
                    .iter()
                    .map(|f| {
                        format!(
                            "{}\t{}\t{}",
                            f.cid,
                            ByteSize::b(f.size).display().iec(),
                            shown(f.name.as_deref().unwrap_or("-"))
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            });
            Ok(())
        }
        FilesCmd::Stat { cid, c } => {
            let cid = parse_cid(&cid)?;
            let v: api::FileStat = c.client()?.get(&format!("/v1/files/{cid}")).await?;
            print(c.json, &v, || {
                let total = u32::from(v.k) + u32::from(v.m);
                let full = v.live_shards.iter().filter(|&&n| u32::from(n) == total).count();
                format!(
                    "cid        {}\nunixfs     {}\nsize       {}\nencrypted  {}\nerasure    {}+{}\npinned     {}\nname       {}\nchunks     {} ({} with all {} shards live)",
                    v.cid,
                    v.unixfs.map_or("-".to_string(), |u| u.to_string()),
                    v.size,
                    v.encrypted,
                    v.k,
                    v.m,
                    v.pinned,
                    shown(v.name.as_deref().unwrap_or("-")),
                    v.live_shards.len(),
                    full,
                    total
                )
            });
            Ok(())
        }
        FilesCmd::Rm { cid, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let (mcid, _) = client.manifest(&cid).await?;
            let user = c.user()?;
            let ts = datamesh_core::clock::unix_secs();
            let sig = user.signing_key().sign(&datamesh_node::delete_message(&mcid, ts));
            let v: api::Removed = client
                .call(
                    client
                        .request(Method::DELETE, &format!("/v1/files/{mcid}"))
                        .header("x-datamesh-timestamp", ts.to_string())
                        .header("x-datamesh-signature", hex::encode(sig.to_bytes())),
                )
                .await?;
            print(c.json, &v, || format!("removed {cid}"));
            Ok(())
        }
        FilesCmd::Pin { cid, c } => {
            let cid = parse_cid(&cid)?;
            let v: api::Pinned = c.client()?.post(&format!("/v1/pins/{cid}")).await?;
            print(c.json, &v, || format!("pinned {cid}"));
            Ok(())
        }
        FilesCmd::Unpin { cid, c } => {
            let cid = parse_cid(&cid)?;
            let client = c.client()?;
            let v: api::Unpinned = client.call(client.request(Method::DELETE, &format!("/v1/pins/{cid}"))).await?;
            print(c.json, &v, || format!("unpinned {cid}"));
            Ok(())
        }
        FilesCmd::Gc(c) => {
            let v: api::GcReport = c.client()?.post("/v1/gc").await?;
            print(c.json, &v, || {
                format!(
                    "removed {} shards and {} manifests, freed {}",
                    v.shards_removed,
                    v.manifests_removed,
                    ByteSize::b(v.bytes_freed).display().iec()
                )
            });
            Ok(())
        }
    }
}

/// A file name as a terminal may show it: control characters (escape
/// sequences, newlines, tabs that would fake columns) and the bidirectional
/// overrides that reorder text are written as `\u{..}` escapes, and so is
/// a backslash (`\\`), so the escaped form is unambiguous. Names are
/// anyone's input: a shared file's name is chosen by whoever stored it.
pub(crate) fn shown(name: &str) -> std::borrow::Cow<'_, str> {
    let bad = |c: char| {
        c.is_control()
            || c == '\\'
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !name.chars().any(bad) {
        return name.into();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            c if bad(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.into()
}
