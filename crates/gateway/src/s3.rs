//! The S3-compatible API, on its own address (`--s3 HOST:PORT`).
//!
//! The protocol (XML, SigV4 in headers and query strings, presigned URLs,
//! aws-chunked payload signing and trailers, S3 error bodies) is `s3s`'s;
//! this module maps S3 operations onto the gateway's index and pipeline:
//!
//! | S3 | here |
//! | --- | --- |
//! | bucket | a row in the index |
//! | object | a row plus an ordered list of segments (DataMesh files, pinned) |
//! | PUT / UploadPart | one file through the server-side pipeline |
//! | CompleteMultipartUpload | the parts' segments joined in part order |
//! | CopyObject | the source's segments shared (no data moves) |
//! | UploadPartCopy | the source range re-read and written as a new file |
//!
//! ETags are S3's: MD5 of the plaintext, and for a multipart object the MD5
//! of the parts' binary MD5s followed by `-N`. Checksums the client sends
//! (`x-amz-checksum-*` headers or aws-chunked trailers, `Content-MD5`) are
//! verified before the object exists; a mismatch leaves nothing behind.
//! Range responses never carry the whole-object checksum. Buckets are
//! addressed path-style, or virtual-host style under the configured domain.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use md5::Digest;
use s3s::checksum::ChecksumHasher;
use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use crate::index::{Index, IndexError, ObjectRow, PartRow, Segment, UploadRow};
use crate::keys::{AccessKeys, Principal};
use crate::objects::{Pipeline, WriteError, Written};

/// The S3 service state.
#[derive(Clone)]
pub struct S3Gateway {
    pub(crate) index: Index,
    pub(crate) keys: AccessKeys,
    pub(crate) pipeline: Pipeline,
    pub(crate) events: crate::events::EventBus,
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "S3 request failed");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

impl From<IndexError> for S3Error {
    fn from(e: IndexError) -> Self {
        internal(e)
    }
}

fn write_error(e: WriteError) -> S3Error {
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
                N::TooManyUploads(_) => S3Error::with_message(S3ErrorCode::SlowDown, n.to_string()),
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

fn now_secs() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn ts(secs: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64))
}

fn etag(s: &str) -> ETag {
    ETag::Strong(s.to_string())
}

fn principal<T>(gw: &S3Gateway, req: &S3Request<T>) -> S3Result<Arc<Principal>> {
    let id = req.credentials.as_ref().map(|c| c.access_key.as_str()).ok_or_else(|| s3_error!(AccessDenied))?;
    gw.keys.get(id).ok_or_else(|| s3_error!(InvalidAccessKeyId))
}

/// Checksums the client announced, by algorithm: (header name, expected
/// value if given in a header; None = expected in the trailer).
struct Expected {
    content_md5: Option<String>,
    sums: Vec<(&'static str, Option<String>)>,
}

impl Expected {
    #[allow(clippy::too_many_arguments)]
    fn new(
        headers: &http::HeaderMap,
        content_md5: Option<String>,
        algo: Option<&ChecksumAlgorithm>,
        crc32: Option<String>,
        crc32c: Option<String>,
        crc64: Option<String>,
        sha1: Option<String>,
        sha256: Option<String>,
    ) -> Self {
        let trailer = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()).unwrap_or("").to_ascii_lowercase();
        let mut sums = Vec::new();
        for (name, given) in [
            ("x-amz-checksum-crc32", crc32),
            ("x-amz-checksum-crc32c", crc32c),
            ("x-amz-checksum-crc64nvme", crc64),
            ("x-amz-checksum-sha1", sha1),
            ("x-amz-checksum-sha256", sha256),
        ] {
            let algo_named = algo.is_some_and(|a| name.ends_with(&a.as_str().to_ascii_lowercase()));
            if given.is_some() || trailer.split(',').any(|t| t.trim() == name) || algo_named {
                sums.push((name, given));
            }
        }
        Expected { content_md5, sums }
    }

    fn hasher(&self) -> ChecksumHasher {
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
    fn verify(self, trailers: Option<s3s::TrailingHeaders>, md5: &[u8; 16], got: &Checksum) -> Result<(), WriteError> {
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

fn checksums_json(c: &Checksum) -> String {
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

fn checksums_of(json: &str) -> HashMap<String, String> {
    serde_json::from_str(json).unwrap_or_default()
}

fn metadata_json(m: &Option<Metadata>) -> String {
    serde_json::to_string(&m.clone().unwrap_or_default()).unwrap_or_else(|_| "{}".into())
}

fn metadata_of(json: &str) -> Option<Metadata> {
    let m: Metadata = serde_json::from_str(json).unwrap_or_default();
    (!m.is_empty()).then_some(m)
}

impl S3Gateway {
    async fn need_bucket(&self, bucket: &str) -> S3Result<()> {
        let b = bucket.to_string();
        if self.index.run(move |ix| ix.bucket_exists(&b)).await? {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist; create it first"))
        }
    }

    async fn lookup(&self, bucket: &str, key: &str) -> S3Result<(ObjectRow, Vec<Segment>)> {
        let (b, k) = (bucket.to_string(), key.to_string());
        match self.index.run(move |ix| ix.object(&b, &k)).await? {
            Some(o) => Ok(o),
            None => {
                self.need_bucket(bucket).await?;
                Err(s3_error!(NoSuchKey, "no object {key} in bucket {bucket}"))
            }
        }
    }

    /// Unpins manifests nothing names any more; their shards go to GC.
    async fn release(&self, manifests: Vec<String>) {
        for m in manifests {
            let Ok(cid) = m.parse() else { continue };
            match self.pipeline.node().unpin(cid).await {
                Ok(_) => self.events.publish(crate::events::Event::FileRemoved { cid: m, reason: "unpinned".into() }),
                Err(e) => tracing::warn!(manifest = %m, error = %e, "could not unpin a released object segment"),
            }
        }
    }

    async fn write_body(
        &self,
        user: &Principal,
        body: Option<StreamingBlob>,
        expected: Expected,
        trailers: Option<s3s::TrailingHeaders>,
        name: String,
    ) -> S3Result<Written> {
        let hasher = expected.hasher();
        let body: futures::stream::BoxStream<'static, Result<bytes::Bytes, s3s::StdError>> = match body {
            Some(b) => Box::pin(b),
            None => Box::pin(futures::stream::empty()),
        };
        let w = self
            .pipeline
            .write(&user.user, body, hasher, Some(name.clone()), move |md5, got| expected.verify(trailers, md5, got))
            .await
            .map_err(write_error)?;
        if let Some(cid) = w.manifest {
            self.events.publish(crate::events::Event::FileAdded {
                cid: cid.to_string(),
                size: w.size,
                name: Some(name),
                source: "s3".into(),
            });
        }
        Ok(w)
    }

    fn read_stream(&self, segments: Vec<Segment>, range: std::ops::Range<u64>) -> StreamingBlob {
        let keys = self.keys.clone();
        StreamingBlob::wrap(self.pipeline.read(segments, move |id| keys.get(id), range))
    }

    /// Reads a source object's range and writes it as a new file (for
    /// UploadPartCopy).
    async fn copy_range(
        &self,
        user: &Principal,
        segments: Vec<Segment>,
        range: std::ops::Range<u64>,
        name: String,
    ) -> S3Result<Written> {
        let keys = self.keys.clone();
        let stream = self.pipeline.read(segments, move |id| keys.get(id), range);
        self.pipeline
            .write(&user.user, Box::pin(stream), ChecksumHasher::default(), Some(name), |_, _| Ok(()))
            .await
            .map_err(write_error)
    }
}

fn source_of(c: &CopySource) -> S3Result<(String, String)> {
    match c {
        CopySource::Bucket { bucket, key, .. } => Ok((bucket.to_string(), key.to_string())),
        _ => Err(s3_error!(NotImplemented, "access point copy sources are not supported")),
    }
}

fn matches_etag(c: &ETagCondition, tag: &str) -> bool {
    c.is_any() || c.as_etag().is_some_and(|e| e.value().trim_matches('"') == tag)
}

fn part_number_ok(n: i32) -> S3Result<u32> {
    if (1..=10_000).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(InvalidArgument, "part number must be an integer between 1 and 10000"))
    }
}

fn multipart_etag(parts: &[PartRow]) -> S3Result<String> {
    let mut h = md5::Md5::new();
    for p in parts {
        let bin = hex::decode(&p.md5).map_err(internal)?;
        h.update(&bin);
    }
    Ok(format!("{}-{}", hex::encode(h.finalize()), parts.len()))
}

fn continuation(token: &str) -> S3Result<String> {
    let bytes = hex::decode(token).map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))?;
    String::from_utf8(bytes).map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))
}

fn object_entry(o: &ObjectRow) -> Object {
    Object {
        key: Some(o.key.clone()),
        size: Some(o.size as i64),
        e_tag: Some(etag(&o.etag)),
        last_modified: Some(ts(o.modified)),
        storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
        ..Default::default()
    }
}

#[async_trait::async_trait]
impl S3 for S3Gateway {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = self.index.run(|ix| ix.buckets()).await?;
        let list = buckets
            .into_iter()
            .map(|(name, created)| Bucket { name: Some(name), creation_date: Some(ts(created)), ..Default::default() })
            .collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(list), ..Default::default() }))
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let name = req.input.bucket.clone();
        let n = name.clone();
        if !self.index.run(move |ix| ix.create_bucket(&n)).await? {
            return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {name} already exists"));
        }
        Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.need_bucket(&req.input.bucket).await?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        let b = req.input.bucket.clone();
        match self.index.run(move |ix| ix.delete_bucket(&b)).await? {
            None => Err(s3_error!(NoSuchBucket, "bucket {} does not exist", req.input.bucket)),
            Some(false) => Err(s3_error!(
                BucketNotEmpty,
                "bucket {} still holds objects or multipart uploads; delete or abort them first",
                req.input.bucket
            )),
            Some(true) => Ok(S3Response::new(DeleteBucketOutput::default())),
        }
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let user = principal(self, &req)?;
        let trailers = req.trailing_headers.clone();
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let expected = Expected::new(
            &req.headers,
            i.content_md5.clone(),
            i.checksum_algorithm.as_ref(),
            i.checksum_crc32.clone(),
            i.checksum_crc32c.clone(),
            i.checksum_crc64nvme.clone(),
            i.checksum_sha1.clone(),
            i.checksum_sha256.clone(),
        );
        let name = format!("s3://{}/{}", i.bucket, i.key);
        let w = self.write_body(&user, i.body, expected, trailers, name).await?;
        let md5 = hex::encode(w.md5);
        let row = ObjectRow {
            bucket: i.bucket,
            key: i.key,
            size: w.size,
            etag: md5.clone(),
            content_type: i.content_type,
            metadata: metadata_json(&i.metadata),
            checksums: checksums_json(&w.checksums),
            modified: now_secs(),
            parts: 0,
        };
        let segs = w.segments(&user.id);
        let gone = match self.index.run(move |ix| ix.put_object(&row, &segs)).await {
            Ok(g) => g,
            Err(e) => {
                // The bucket vanished or the index failed: release the file.
                self.release(w.segments("").into_iter().map(|s| s.manifest).collect()).await;
                return Err(e.into());
            }
        };
        self.release(gone).await;
        let c = w.checksums;
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(etag(&md5)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let (row, segments) = self.lookup(&i.bucket, &i.key).await?;
        if let Some(m) = &i.if_match
            && !matches_etag(m, &row.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        if let Some(m) = &i.if_none_match
            && matches_etag(m, &row.etag)
        {
            return Err(S3Error::new(S3ErrorCode::NotModified));
        }
        let (range, content_range) = match &i.range {
            None => (0..row.size, None),
            Some(r) => {
                let rr = r
                    .check(row.size)
                    .map_err(|_| s3_error!(InvalidRange, "the range is outside the object's {} bytes", row.size))?;
                let cr = format!("bytes {}-{}/{}", rr.start, rr.end.saturating_sub(1), row.size);
                (rr, Some(cr))
            }
        };
        let whole = content_range.is_none();
        let sums = if whole { checksums_of(&row.checksums) } else { HashMap::new() };
        let len = range.end - range.start;
        let body = self.read_stream(segments, range);
        let out = GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            content_type: row.content_type.clone(),
            e_tag: Some(etag(&row.etag)),
            last_modified: Some(ts(row.modified)),
            metadata: metadata_of(&row.metadata),
            accept_ranges: Some("bytes".into()),
            parts_count: (row.parts > 0).then_some(row.parts as i32),
            // Only a whole-object read carries the whole-object checksum.
            checksum_crc32: sums.get("crc32").cloned(),
            checksum_crc32c: sums.get("crc32c").cloned(),
            checksum_crc64nvme: sums.get("crc64nvme").cloned(),
            checksum_sha1: sums.get("sha1").cloned(),
            checksum_sha256: sums.get("sha256").cloned(),
            ..Default::default()
        };
        if whole {
            Ok(S3Response::new(out))
        } else {
            Ok(S3Response::with_status(out, http::StatusCode::PARTIAL_CONTENT))
        }
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let (row, _) = self.lookup(&i.bucket, &i.key).await?;
        let sums = checksums_of(&row.checksums);
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(row.size as i64),
            content_type: row.content_type.clone(),
            e_tag: Some(etag(&row.etag)),
            last_modified: Some(ts(row.modified)),
            metadata: metadata_of(&row.metadata),
            accept_ranges: Some("bytes".into()),
            parts_count: (row.parts > 0).then_some(row.parts as i32),
            checksum_crc32: sums.get("crc32").cloned(),
            checksum_crc32c: sums.get("crc32c").cloned(),
            checksum_crc64nvme: sums.get("crc64nvme").cloned(),
            checksum_sha1: sums.get("sha1").cloned(),
            checksum_sha256: sums.get("sha256").cloned(),
            ..Default::default()
        }))
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let (b, k) = (i.bucket.clone(), i.key.clone());
        // Deleting a missing key succeeds, as in S3.
        let (_, gone) = self.index.run(move |ix| ix.delete_object(&b, &k)).await?;
        self.release(gone).await;
        Ok(S3Response::with_status(DeleteObjectOutput::default(), http::StatusCode::NO_CONTENT))
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        if i.delete.objects.len() > 1000 {
            return Err(s3_error!(MalformedXML, "DeleteObjects takes at most 1000 keys"));
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        let mut deleted = Vec::new();
        for o in i.delete.objects {
            let (b, k) = (i.bucket.clone(), o.key.clone());
            let (_, gone) = self.index.run(move |ix| ix.delete_object(&b, &k)).await?;
            self.release(gone).await;
            if !quiet {
                deleted.push(DeletedObject { key: Some(o.key), ..Default::default() });
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput { deleted: Some(deleted), ..Default::default() }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let (sb, sk) = source_of(&i.copy_source)?;
        let (src, segments) = self.lookup(&sb, &sk).await?;
        self.need_bucket(&i.bucket).await?;
        if let Some(m) = &i.copy_source_if_match
            && !matches_etag(m, &src.etag)
        {
            return Err(s3_error!(PreconditionFailed));
        }
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        if sb == i.bucket && sk == i.key && !replace {
            return Err(s3_error!(
                InvalidRequest,
                "copying an object to itself without changing its metadata does nothing; use x-amz-metadata-directive: REPLACE"
            ));
        }
        let modified = now_secs();
        let row = ObjectRow {
            bucket: i.bucket,
            key: i.key,
            size: src.size,
            etag: src.etag.clone(),
            content_type: if replace { i.content_type } else { src.content_type },
            metadata: if replace { metadata_json(&i.metadata) } else { src.metadata },
            checksums: src.checksums,
            modified,
            parts: src.parts,
        };
        // The copy shares the source's files: no data moves, and each file
        // stays pinned while any object names it.
        let gone = self.index.run(move |ix| ix.put_object(&row, &segments)).await?;
        self.release(gone).await;
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(etag(&src.etag)),
                last_modified: Some(ts(modified)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let (b, p, d, m) =
            (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone(), i.marker.clone());
        let l = self.index.run(move |ix| ix.list(&b, &p, d.as_deref(), m.as_deref(), max)).await?;
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter.clone(),
            marker: i.marker,
            max_keys: Some(max as i32),
            is_truncated: Some(l.next.is_some()),
            next_marker: if i.delimiter.is_some() { l.next.clone() } else { None },
            contents: Some(l.objects.iter().map(object_entry).collect()),
            common_prefixes: Some(l.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let after = match &i.continuation_token {
            Some(t) => Some(continuation(t)?),
            None => i.start_after.clone(),
        };
        let (b, p, d) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone());
        let l = self.index.run(move |ix| ix.list(&b, &p, d.as_deref(), after.as_deref(), max)).await?;
        let count = l.objects.len() + l.prefixes.len();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            max_keys: Some(max as i32),
            key_count: Some(count as i32),
            is_truncated: Some(l.next.is_some()),
            continuation_token: i.continuation_token,
            next_continuation_token: l.next.map(|n| hex::encode(n.as_bytes())),
            start_after: i.start_after,
            contents: Some(l.objects.iter().map(object_entry).collect()),
            common_prefixes: Some(l.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        // Versioning is not supported: every object is its only ("null") version.
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
        let (b, p, d, m) =
            (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone(), i.key_marker.clone());
        let l = self.index.run(move |ix| ix.list(&b, &p, d.as_deref(), m.as_deref(), max)).await?;
        let versions = l
            .objects
            .iter()
            .map(|o| ObjectVersion {
                key: Some(o.key.clone()),
                size: Some(o.size as i64),
                e_tag: Some(etag(&o.etag)),
                last_modified: Some(ts(o.modified)),
                is_latest: Some(true),
                version_id: Some("null".into()),
                storage_class: Some(ObjectVersionStorageClass::from_static(ObjectVersionStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            key_marker: i.key_marker,
            max_keys: Some(max as i32),
            is_truncated: Some(l.next.is_some()),
            next_key_marker: l.next,
            versions: Some(versions),
            common_prefixes: Some(l.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let user = principal(self, &req)?;
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let row = UploadRow {
            id: hex::encode(rand::random::<[u8; 16]>()),
            bucket: i.bucket.clone(),
            key: i.key.clone(),
            key_id: user.id.clone(),
            content_type: i.content_type,
            metadata: metadata_json(&i.metadata),
            created: now_secs(),
        };
        let id = row.id.clone();
        self.index.run(move |ix| ix.create_upload(&row)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let user = principal(self, &req)?;
        let trailers = req.trailing_headers.clone();
        let i = req.input;
        let number = part_number_ok(i.part_number)?;
        let up = self.upload_of(&i.upload_id, &i.bucket, &i.key).await?;
        let expected = Expected::new(
            &req.headers,
            i.content_md5.clone(),
            i.checksum_algorithm.as_ref(),
            i.checksum_crc32.clone(),
            i.checksum_crc32c.clone(),
            i.checksum_crc64nvme.clone(),
            i.checksum_sha1.clone(),
            i.checksum_sha256.clone(),
        );
        let name = format!("s3://{}/{}#upload={}&part={number}", up.bucket, up.key, up.id);
        let w = self.write_body(&user, i.body, expected, trailers, name).await?;
        let md5 = hex::encode(w.md5);
        let c = w.checksums.clone();
        self.record_part(&up.id, number, w, &user.id, md5.clone()).await?;
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(etag(&md5)),
            checksum_crc32: c.checksum_crc32,
            checksum_crc32c: c.checksum_crc32c,
            checksum_crc64nvme: c.checksum_crc64nvme,
            checksum_sha1: c.checksum_sha1,
            checksum_sha256: c.checksum_sha256,
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let user = principal(self, &req)?;
        let i = req.input;
        let number = part_number_ok(i.part_number)?;
        let up = self.upload_of(&i.upload_id, &i.bucket, &i.key).await?;
        let (sb, sk) = source_of(&i.copy_source)?;
        let (src, segments) = self.lookup(&sb, &sk).await?;
        let range = match &i.copy_source_range {
            None => 0..src.size,
            Some(r) => {
                let r = r.strip_prefix("bytes=").unwrap_or(r);
                let (a, b) =
                    r.split_once('-').ok_or_else(|| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
                let (a, b): (u64, u64) = (
                    a.parse().map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?,
                    b.parse().map_err(|_| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?,
                );
                if a > b || b >= src.size {
                    return Err(s3_error!(InvalidRange, "copy range is outside the source's {} bytes", src.size));
                }
                a..b + 1
            }
        };
        let name = format!("s3://{}/{}#upload={}&part={number}", up.bucket, up.key, up.id);
        let w = self.copy_range(&user, segments, range, name).await?;
        let md5 = hex::encode(w.md5);
        self.record_part(&up.id, number, w, &user.id, md5.clone()).await?;
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(etag(&md5)),
                last_modified: Some(ts(now_secs())),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let up = self.upload_of(&i.upload_id, &i.bucket, &i.key).await?;
        let id = up.id.clone();
        let have = self.index.run(move |ix| ix.parts(&id)).await?;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        if listed.is_empty() {
            return Err(s3_error!(MalformedXML, "CompleteMultipartUpload lists no parts"));
        }
        let mut chosen: Vec<PartRow> = Vec::with_capacity(listed.len());
        let mut last = 0;
        for p in &listed {
            let n = part_number_ok(p.part_number.unwrap_or(0))?;
            if n <= last {
                return Err(s3_error!(InvalidPartOrder, "parts must be listed in ascending order"));
            }
            last = n;
            let found = have
                .iter()
                .find(|h| h.number == n)
                .ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
            // Parts may be listed with only their ETag (no checksums).
            if let Some(e) = &p.e_tag
                && e.value().trim_matches('"') != found.md5
            {
                return Err(s3_error!(InvalidPart, "part {n}'s ETag does not match the part uploaded"));
            }
            chosen.push(found.clone());
        }
        const MIN_PART: u64 = 5 * 1024 * 1024;
        if let Some(small) = chosen[..chosen.len() - 1].iter().find(|p| p.size < MIN_PART) {
            return Err(s3_error!(
                EntityTooSmall,
                "part {} is smaller than 5 MiB and is not the last part",
                small.number
            ));
        }
        let etag_s = multipart_etag(&chosen)?;
        let segments: Vec<Segment> = chosen.iter().flat_map(|p| p.segments.clone()).collect();
        let row = ObjectRow {
            bucket: up.bucket.clone(),
            key: up.key.clone(),
            size: chosen.iter().map(|p| p.size).sum(),
            etag: etag_s.clone(),
            content_type: up.content_type.clone(),
            metadata: up.metadata.clone(),
            checksums: "{}".into(),
            modified: now_secs(),
            parts: chosen.len() as u32,
        };
        let id = up.id.clone();
        let gone = self
            .index
            .run(move |ix| ix.complete_upload(&id, &row, &segments))
            .await?
            .ok_or_else(|| s3_error!(NoSuchUpload, "the upload was completed or aborted meanwhile"))?;
        self.release(gone).await;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(up.bucket.clone()),
            key: Some(up.key.clone()),
            e_tag: Some(etag(&etag_s)),
            location: Some(format!("/{}/{}", up.bucket, up.key)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        let up = self.upload_of(&i.upload_id, &i.bucket, &i.key).await?;
        self.abort_upload(&up.id).await?;
        Ok(S3Response::with_status(AbortMultipartUploadOutput::default(), http::StatusCode::NO_CONTENT))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let up = self.upload_of(&i.upload_id, &i.bucket, &i.key).await?;
        let id = up.id.clone();
        let marker = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
        let all: Vec<PartRow> =
            self.index.run(move |ix| ix.parts(&id)).await?.into_iter().filter(|p| p.number as i32 > marker).collect();
        let truncated = all.len() > max;
        let page: Vec<PartRow> = all.into_iter().take(max).collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(up.bucket),
            key: Some(up.key),
            upload_id: Some(up.id),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: page.last().map(|p| p.number as i32),
            parts: Some(
                page.iter()
                    .map(|p| Part {
                        part_number: Some(p.number as i32),
                        size: Some(p.size as i64),
                        e_tag: Some(etag(&p.md5)),
                        last_modified: Some(ts(p.modified)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        self.need_bucket(&i.bucket).await?;
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let (b, p) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default());
        let (km, um) = (i.key_marker.clone(), i.upload_id_marker.clone());
        let (ups, truncated) =
            self.index.run(move |ix| ix.uploads_page(&b, &p, km.as_deref(), um.as_deref(), max)).await?;
        let last = ups.last().filter(|_| truncated).map(|u| (u.key.clone(), u.id.clone()));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            next_key_marker: last.as_ref().map(|l| l.0.clone()),
            next_upload_id_marker: last.map(|l| l.1),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            uploads: Some(
                ups.into_iter()
                    .map(|u| MultipartUpload {
                        key: Some(u.key),
                        upload_id: Some(u.id),
                        initiated: Some(ts(u.created)),
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

impl S3Gateway {
    async fn upload_of(&self, id: &str, bucket: &str, key: &str) -> S3Result<UploadRow> {
        let i = id.to_string();
        match self.index.run(move |ix| ix.upload(&i)).await? {
            Some(u) if u.bucket == bucket && u.key == key => Ok(u),
            _ => Err(s3_error!(
                NoSuchUpload,
                "upload {id} does not exist for {bucket}/{key}: it was completed, aborted or expired"
            )),
        }
    }

    async fn record_part(&self, upload: &str, number: u32, w: Written, key_id: &str, md5: String) -> S3Result<()> {
        let part = PartRow { number, segments: w.segments(key_id), size: w.size, md5, modified: now_secs() };
        let id = upload.to_string();
        let p2 = part.clone();
        match self.index.run(move |ix| ix.put_part(&id, &p2)).await? {
            Some(gone) => {
                self.release(gone).await;
                Ok(())
            }
            None => {
                // Aborted while the part was uploading: drop the new file.
                self.release(part.segments.into_iter().map(|s| s.manifest).collect()).await;
                Err(s3_error!(NoSuchUpload, "upload {upload} was aborted while this part was uploading"))
            }
        }
    }

    /// Aborts an upload and releases its parts (also used by the idle reaper).
    pub async fn abort_upload(&self, id: &str) -> S3Result<()> {
        let i = id.to_string();
        let (existed, gone) = self.index.run(move |ix| ix.delete_upload(&i)).await?;
        if !existed {
            return Err(s3_error!(NoSuchUpload));
        }
        self.release(gone).await;
        Ok(())
    }

    /// Aborts multipart uploads idle longer than `idle`; returns how many.
    pub async fn expire_uploads(&self, idle: Duration) -> usize {
        let cutoff = now_secs() - idle.as_secs() as i64;
        let ids = self.index.run(move |ix| ix.idle_uploads(cutoff)).await.unwrap_or_default();
        let mut n = 0;
        for id in ids {
            if self.abort_upload(&id).await.is_ok() {
                n += 1;
            }
        }
        n
    }
}

/// Aborts multipart uploads idle longer than `idle`, releasing their parts,
/// once a minute (or every `idle`, if shorter).
pub(crate) struct UploadExpiry {
    pub(crate) s3: S3Gateway,
    pub(crate) idle: Duration,
}

#[async_trait::async_trait]
impl datamesh_node::workers::Worker for UploadExpiry {
    fn name(&self) -> &'static str {
        "s3-multipart-expiry"
    }

    async fn run(&self, ctx: &datamesh_node::workers::WorkerCtx) {
        let every = Duration::from_secs(60).min(self.idle.max(Duration::from_secs(1)));
        while ctx.idle(every).await {
            let n = self.s3.expire_uploads(self.idle).await;
            if n > 0 {
                tracing::info!(aborted = n, "aborted idle multipart uploads");
            }
        }
    }
}

/// Virtual-host addressing under `domain` (`BUCKET.domain[:port]`); any
/// other Host (an IP, `localhost`) is path-style.
pub struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    /// Buckets addressed as subdomains of `domain`.
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.trim_matches('.').to_ascii_lowercase() }
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(h, p)| if p.parse::<u16>().is_ok() { h } else { host });
        if let Some(bucket) = name.strip_suffix(self.domain.as_str()).and_then(|b| b.strip_suffix('.'))
            && !bucket.is_empty()
        {
            return Ok(s3s::host::VirtualHost::new(host).with_bucket(bucket));
        }
        Ok(s3s::host::VirtualHost::new(host))
    }
}
