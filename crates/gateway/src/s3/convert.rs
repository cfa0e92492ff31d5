//! Between the gateway's errors and index rows and S3's types.

use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::internal;
use crate::index::ObjectRow;
use crate::objects::WriteError;

pub(super) fn write_error(e: WriteError) -> S3Error {
    match e {
        WriteError::Body(err) => match err.downcast::<S3Error>() {
            Ok(s3) => *s3,
            Err(other) => {
                S3Error::with_message(S3ErrorCode::IncompleteBody, format!("the request body failed: {other}"))
            }
        },
        WriteError::Digest(msg) => S3Error::with_message(S3ErrorCode::BadDigest, msg),
        WriteError::Node(n) => {
            use datamesh_node::NodeError as N;
            match n {
                N::TooManyUploads(_) | N::TooManyUploadsForOwner(_) => {
                    S3Error::with_message(S3ErrorCode::SlowDown, n.to_string())
                }
                N::NoSpace(_) => {
                    S3Error::with_message(S3ErrorCode::Custom("InsufficientStorage".into()), n.to_string())
                }
                N::Network(_) | N::Unavailable(_) | N::Draining(_) => {
                    S3Error::with_message(S3ErrorCode::ServiceUnavailable, n.to_string())
                }
                other => internal(other),
            }
        }
        WriteError::Internal(m) => internal(m),
    }
}

/// `$out`, a GET or HEAD output, with the headers an object's index row
/// gives every read of it (type, ETag, date, metadata, ranges, parts
/// count), which s3s repeats on each output type.
macro_rules! with_row_headers {
    ($out:expr, $row:expr) => {{
        use $crate::s3::convert::{etag, metadata_of, ts};
        let row: &$crate::index::ObjectRow = $row;
        let mut out = $out;
        out.content_type = row.content_type.clone();
        out.e_tag = Some(etag(&row.etag));
        out.last_modified = Some(ts(row.modified));
        out.metadata = metadata_of(&row.metadata);
        out.accept_ranges = Some("bytes".into());
        out.parts_count = (row.parts > 0).then_some(row.parts as i32);
        out
    }};
}
pub(super) use with_row_headers;

pub(super) fn ts(secs: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

pub(super) fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

pub(super) fn checksums_json(c: &Checksum) -> String {
    let mut m = serde_json::Map::new();
    for (k, v) in [
        ("crc32", &c.checksum_crc32),
        ("crc32c", &c.checksum_crc32c),
        ("crc64nvme", &c.checksum_crc64nvme),
        ("sha1", &c.checksum_sha1),
        ("sha256", &c.checksum_sha256),
    ] {
        if let Some(v) = v {
            m.insert(k.into(), v.clone().into());
        }
    }
    serde_json::Value::Object(m).to_string()
}

/// The checksums an index row keeps (written by [`checksums_json`]).
pub(super) fn checksums_of(json: &str) -> Checksum {
    let mut m: HashMap<String, String> = serde_json::from_str(json).unwrap_or_default();
    Checksum {
        checksum_crc32: m.remove("crc32"),
        checksum_crc32c: m.remove("crc32c"),
        checksum_crc64nvme: m.remove("crc64nvme"),
        checksum_sha1: m.remove("sha1"),
        checksum_sha256: m.remove("sha256"),
        ..Default::default()
    }
}

pub(super) fn metadata_json(m: &Option<Metadata>) -> String {
    serde_json::to_string(&m.clone().unwrap_or_default()).unwrap_or_else(|_| "{}".into())
}

pub(super) fn metadata_of(json: &str) -> Option<Metadata> {
    let m: Metadata = serde_json::from_str(json).unwrap_or_default();
    (!m.is_empty()).then_some(m)
}

pub(super) fn source_of(c: &CopySource) -> S3Result<(String, String)> {
    match c {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(NotImplemented, "access point copy sources are not supported")),
    }
}

pub(super) fn matches_etag(c: &ETagCondition, tag: &str) -> bool {
    c.is_any() || c.as_etag().is_some_and(|e| e.value().trim_matches('"') == tag)
}

pub(super) fn object_entry(o: &ObjectRow) -> Object {
    Object {
        key: Some(o.key.clone()),
        size: Some(o.size as i64),
        e_tag: Some(etag(&o.etag)),
        last_modified: Some(ts(o.modified)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}
