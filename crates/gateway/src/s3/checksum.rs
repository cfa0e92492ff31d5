//! The digests a client may send with a body (`Content-MD5`,
//! `x-amz-checksum-*` in headers or an aws-chunked trailer), computed over
//! the body in order as the pipeline reads it, and checked before the
//! object exists.

use base64::Engine;
use md5::Digest;
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;

use crate::objects::{BodyDigest, WriteError};

/// The five `checksum_*` fields s3s repeats on its input and output types
/// (rather than nesting a [`Checksum`]), read as one [`Checksum`].
macro_rules! checksums_in {
    ($x:expr) => {
        Checksum {
            checksum_crc32: $x.checksum_crc32.clone(),
            checksum_crc32c: $x.checksum_crc32c.clone(),
            checksum_crc64nvme: $x.checksum_crc64nvme.clone(),
            checksum_sha1: $x.checksum_sha1.clone(),
            checksum_sha256: $x.checksum_sha256.clone(),
            ..Default::default()
        }
    };
}

/// `$out`, an s3s output, with its five `checksum_*` fields set from `$c`,
/// a [`Checksum`].
macro_rules! with_checksums {
    ($out:expr, $c:expr) => {{
        let c: Checksum = $c;
        let mut out = $out;
        out.checksum_crc32 = c.checksum_crc32;
        out.checksum_crc32c = c.checksum_crc32c;
        out.checksum_crc64nvme = c.checksum_crc64nvme;
        out.checksum_sha1 = c.checksum_sha1;
        out.checksum_sha256 = c.checksum_sha256;
        out
    }};
}
pub(super) use {checksums_in, with_checksums};

/// Checksums the client announced, by algorithm: (header name, expected
/// value if given in a header; None = expected in the trailer).
pub(super) struct Expected {
    content_md5: Option<String>,
    sums: Vec<(&'static str, Option<String>)>,
}

impl Expected {
    /// `given`: the values sent in headers (see [`checksums_in`]).
    pub(super) fn new(
        headers: &http::HeaderMap,
        content_md5: Option<String>,
        algo: Option<&ChecksumAlgorithm>,
        given: Checksum,
    ) -> Self {
        let trailer = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let mut sums = Vec::new();
        for (name, given) in [
            ("x-amz-checksum-crc32", given.checksum_crc32),
            ("x-amz-checksum-crc32c", given.checksum_crc32c),
            ("x-amz-checksum-crc64nvme", given.checksum_crc64nvme),
            ("x-amz-checksum-sha1", given.checksum_sha1),
            ("x-amz-checksum-sha256", given.checksum_sha256),
        ] {
            let algo_named = algo.is_some_and(|a| name.ends_with(&a.as_str().to_ascii_lowercase()));
            if given.is_some() || trailer.split(',').any(|t| t.trim() == name) || algo_named {
                sums.push((name, given));
            }
        }
        Expected { content_md5, sums }
    }

    pub(super) fn hasher(&self) -> ChecksumHasher {
        let mut h = ChecksumHasher::default();
        for (name, _) in &self.sums {
            match *name {
                "x-amz-checksum-crc32" => h.crc32 = Some(Default::default()),
                "x-amz-checksum-crc32c" => h.crc32c = Some(Default::default()),
                "x-amz-checksum-crc64nvme" => h.crc64nvme = Some(Default::default()),
                "x-amz-checksum-sha1" => h.sha1 = Some(Default::default()),
                _ => h.sha256 = Some(Default::default()),
            }
        }
        h
    }

    /// Checks the digests; the trailer is read now, after the body ended.
    pub(super) fn verify(
        self,
        trailers: Option<s3s::TrailingHeaders>,
        md5: &[u8; 16],
        got: &Checksum,
    ) -> Result<(), WriteError> {
        if let Some(want) = &self.content_md5 {
            let have = base64::engine::general_purpose::STANDARD.encode(md5);
            if want.trim() != have {
                return Err(WriteError::Digest(format!(
                    "the Content-MD5 you specified ({want}) did not match the MD5 of the body received ({have}); nothing was stored"
                )));
            }
        }
        for (name, given) in self.sums {
            let want = match given {
                Some(v) => Some(v),
                None => trailers
                    .as_ref()
                    .and_then(|t| t.read(|h| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)).flatten()),
            };
            let have = match name {
                "x-amz-checksum-crc32" => &got.checksum_crc32,
                "x-amz-checksum-crc32c" => &got.checksum_crc32c,
                "x-amz-checksum-crc64nvme" => &got.checksum_crc64nvme,
                "x-amz-checksum-sha1" => &got.checksum_sha1,
                _ => &got.checksum_sha256,
            };
            if let (Some(want), Some(have)) = (want, have)
                && want.trim() != have
            {
                return Err(WriteError::Digest(format!(
                    "the {name} you specified ({want}) did not match the checksum of the body received ({have}); nothing was stored"
                )));
            }
        }
        Ok(())
    }
}

/// MD5 (S3's ETag) and the checksums asked for, over one body.
pub(super) struct S3Digest {
    md5: md5::Md5,
    sums: ChecksumHasher,
}

impl S3Digest {
    /// MD5 plus the checksums `sums` computes.
    pub(super) fn new(sums: ChecksumHasher) -> Self {
        Self { md5: md5::Md5::new(), sums }
    }

    /// The digests of the whole body.
    pub(super) fn finish(self) -> Digests {
        Digests { md5: self.md5.finalize().into(), checksums: self.sums.finalize() }
    }
}

impl BodyDigest for S3Digest {
    fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        self.sums.update(data);
    }
}

/// A body's digests.
pub(super) struct Digests {
    /// MD5 of the plaintext.
    pub(super) md5: [u8; 16],
    /// Checksums computed for the algorithms asked for.
    pub(super) checksums: Checksum,
}
