//! Single-object operations: put, get, head, delete, copy; and the reads
//! and writes through the pipeline that multipart uploads share.

use datamesh_core::clock::unix_secs;
use s3s::dto::*;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::S3Gateway;
use super::access::quota_error;
use super::checksum::{Digests, Expected, S3Digest, checksums_in, with_checksums};
use super::convert::{
    checksums_json, checksums_of, etag, matches_etag, metadata_json, source_of, ts, with_row_headers, write_error,
};
use crate::index::{ObjectRow, Segment};
use crate::keys::KeyOwner;
use crate::objects::{WriteOptions, Written};
use crate::ownership::upload_owner;
use datamesh_services::perms::Action;
use datamesh_services::ratelimit::RouteClass;

impl S3Gateway {
    pub(super) async fn lookup(&self, bucket: &str, key: &str) -> S3Result<(ObjectRow, Vec<Segment>)> {
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
    pub(super) async fn release(&self, manifests: Vec<String>) {
        for m in manifests {
            let Ok(cid) = m.parse() else { continue };
            match self.pipeline.node().unpin(cid).await {
                Ok(_) => self.events.publish(crate::events::Event::FileRemoved { cid: m, reason: "unpinned".into() }),
                Err(e) => tracing::warn!(manifest = %m, error = %e, "could not unpin a released object segment"),
            }
        }
    }

    pub(super) async fn write_body(
        &self,
        user: &KeyOwner,
        body: Option<StreamingBlob>,
        expected: Expected,
        trailers: Option<s3s::TrailingHeaders>,
        name: String,
        owner: Option<String>,
    ) -> S3Result<Written<Digests>> {
        let digest = S3Digest::new(expected.hasher());
        let body: futures::stream::BoxStream<'static, Result<bytes::Bytes, s3s::StdError>> = match body {
            Some(b) => Box::pin(b),
            None => Box::pin(futures::stream::empty()),
        };
        let opts = WriteOptions { name: Some(name.clone()), owner, ..Default::default() };
        let w = self
            .pipeline
            .write_with(&user.user, body, digest, opts, move |d| {
                let d = d.finish();
                expected.verify(trailers, &d.md5, &d.checksums)?;
                Ok(d)
            })
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

    /// Deletes an object (a missing one is no error) and stops counting it
    /// against the bucket's owner.
    pub(super) async fn delete_one(&self, bucket: &str, key: &str) -> S3Result<()> {
        let (b, k) = (bucket.to_string(), key.to_string());
        let size = self.index.run(move |ix| ix.object(&b, &k)).await?.map(|(o, _)| o.size);
        let (b, k) = (bucket.to_string(), key.to_string());
        let (existed, gone) = self.index.run(move |ix| ix.delete_object(&b, &k)).await?;
        self.release(gone).await;
        if existed && let Some(size) = size {
            let owner = self.bucket_owner(bucket).await?;
            self.uncount(owner, size, 1).await;
        }
        Ok(())
    }

    pub(super) fn read_stream(&self, segments: Vec<Segment>, range: std::ops::Range<u64>) -> StreamingBlob {
        let keys = self.keys.clone();
        StreamingBlob::wrap(self.pipeline.read(segments, move |id| keys.get(id), range))
    }

    /// Reads a source object's range and writes it as a new file (for
    /// UploadPartCopy).
    pub(super) async fn copy_range(
        &self,
        user: &KeyOwner,
        segments: Vec<Segment>,
        range: std::ops::Range<u64>,
        name: String,
        owner: Option<String>,
    ) -> S3Result<Written<Digests>> {
        let keys = self.keys.clone();
        let stream = self.pipeline.read(segments, move |id| keys.get(id), range);
        let opts = WriteOptions { name: Some(name), owner, ..Default::default() };
        self.pipeline
            .write_with(&user.user, Box::pin(stream), S3Digest::new(Default::default()), opts, |d| Ok(d.finish()))
            .await
            .map_err(write_error)
    }
}

pub(super) async fn put_object(
    gw: &S3Gateway,
    req: S3Request<PutObjectInput>,
) -> S3Result<S3Response<PutObjectOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let trailers = req.trailing_headers.clone();
    let i = req.input;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    gw.need_bucket(&i.bucket).await?;
    let user = gw.user_key(&c).await?;
    // The quota is asked before the body is read: the declared length now,
    // any excess of the actual length once it is known.
    let owner = gw.bucket_owner(&i.bucket).await?;
    let declared = i.content_length.unwrap_or(0).max(0) as u64;
    let mut reservation =
        crate::quota_alerts::reserve(&gw.events, &gw.services, owner, declared, 1).await.map_err(quota_error)?;
    let (b, k) = (i.bucket.clone(), i.key.clone());
    let old_size = gw.index.run(move |ix| ix.object(&b, &k)).await?.map(|(o, _)| o.size);
    let expected = Expected::new(&req.headers, i.content_md5.clone(), i.checksum_algorithm.as_ref(), checksums_in!(i));
    let name = format!("s3://{}/{}", i.bucket, i.key);
    let w = match gw.write_body(&user, i.body, expected, trailers, name, upload_owner(&c.principal)).await {
        Ok(w) => w,
        Err(e) => {
            gw.unreserve(reservation).await;
            return Err(e);
        }
    };
    let excess = w.size.saturating_sub(reservation.bytes);
    if excess > 0
        && let Err(e) = gw.services.extend(&mut reservation, excess).await
    {
        gw.release(w.segments("").into_iter().map(|s| s.manifest).collect()).await;
        gw.unreserve(reservation).await;
        return Err(quota_error(e));
    }
    let md5 = hex::encode(w.digest.md5);
    let row = ObjectRow {
        bucket: i.bucket,
        key: i.key,
        size: w.size,
        etag: md5.clone(),
        content_type: i.content_type,
        metadata: metadata_json(&i.metadata),
        checksums: checksums_json(&w.digest.checksums),
        modified: unix_secs() as i64,
        parts: 0,
    };
    let segs = w.segments(&user.id);
    let gone = match gw.index.run(move |ix| ix.put_object(&row, &segs)).await {
        Ok(g) => g,
        Err(e) => {
            // The bucket vanished or the index failed: release the file.
            gw.release(w.segments("").into_iter().map(|s| s.manifest).collect()).await;
            gw.unreserve(reservation).await;
            return Err(e.into());
        }
    };
    // The reserved bytes become stored; a stored size above what was read
    // (the declared length was larger) is returned.
    let over = reservation.bytes.saturating_sub(w.size);
    if let Err(e) = gw.services.commit(reservation).await {
        tracing::warn!(error = %e, "could not commit an upload's quota reservation");
    }
    gw.uncount(owner, over + old_size.unwrap_or(0), u64::from(old_size.is_some())).await;
    gw.release(gone).await;
    Ok(S3Response::new(with_checksums!(
        PutObjectOutput { e_tag: Some(etag(&md5)), ..Default::default() },
        w.digest.checksums
    )))
}

pub(super) async fn get_object(
    gw: &S3Gateway,
    req: S3Request<GetObjectInput>,
) -> S3Result<S3Response<GetObjectOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Read, &i.bucket, &i.key).await?;
    let (row, segments) = gw.lookup(&i.bucket, &i.key).await?;
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
    // Only a whole-object read carries the whole-object checksum.
    let sums = if whole { checksums_of(&row.checksums) } else { Checksum::default() };
    let len = range.end - range.start;
    // The caller's monthly transfer is charged before anything is served.
    crate::quota_alerts::charge_download(&gw.events, &gw.services, &c.principal, len).await.map_err(quota_error)?;
    let body = gw.read_stream(segments, range);
    let out =
        GetObjectOutput { body: Some(body), content_length: Some(len as i64), content_range, ..Default::default() };
    let out = with_checksums!(with_row_headers!(out, &row), sums);
    if whole { Ok(S3Response::new(out)) } else { Ok(S3Response::with_status(out, http::StatusCode::PARTIAL_CONTENT)) }
}

pub(super) async fn head_object(
    gw: &S3Gateway,
    req: S3Request<HeadObjectInput>,
) -> S3Result<S3Response<HeadObjectOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Read, &i.bucket, &i.key).await?;
    let (row, _) = gw.lookup(&i.bucket, &i.key).await?;
    let out = HeadObjectOutput { content_length: Some(row.size as i64), ..Default::default() };
    Ok(S3Response::new(with_checksums!(with_row_headers!(out, &row), checksums_of(&row.checksums))))
}

pub(super) async fn delete_object(
    gw: &S3Gateway,
    req: S3Request<DeleteObjectInput>,
) -> S3Result<S3Response<DeleteObjectOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Delete, &i.bucket, &i.key).await?;
    gw.need_bucket(&i.bucket).await?;
    // Deleting a missing key succeeds, as in S3.
    gw.delete_one(&i.bucket, &i.key).await?;
    Ok(S3Response::with_status(DeleteObjectOutput::default(), http::StatusCode::NO_CONTENT))
}

pub(super) async fn delete_objects(
    gw: &S3Gateway,
    req: S3Request<DeleteObjectsInput>,
) -> S3Result<S3Response<DeleteObjectsOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    gw.need_bucket(&i.bucket).await?;
    if i.delete.objects.len() > 1000 {
        return Err(s3_error!(MalformedXML, "DeleteObjects takes at most 1000 keys"));
    }
    let quiet = i.delete.quiet.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut errors = Vec::new();
    for o in i.delete.objects {
        // Each key is checked on its own: a denied one is reported as
        // AccessDenied in the answer and left as it is.
        if let Err(e) = gw.allow_object(&c, Action::Delete, &i.bucket, &o.key).await {
            errors.push(Error {
                key: Some(o.key),
                code: Some(e.code().as_str().to_string()),
                message: e.message().map(str::to_string),
                ..Default::default()
            });
            continue;
        }
        gw.delete_one(&i.bucket, &o.key).await?;
        if !quiet {
            deleted.push(DeletedObject { key: Some(o.key), ..Default::default() });
        }
    }
    Ok(S3Response::new(DeleteObjectsOutput {
        deleted: Some(deleted),
        errors: (!errors.is_empty()).then_some(errors),
        ..Default::default()
    }))
}

pub(super) async fn copy_object(
    gw: &S3Gateway,
    req: S3Request<CopyObjectInput>,
) -> S3Result<S3Response<CopyObjectOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    let (sb, sk) = source_of(&i.copy_source)?;
    gw.allow_object(&c, Action::Read, &sb, &sk).await?;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    let (src, segments) = gw.lookup(&sb, &sk).await?;
    gw.need_bucket(&i.bucket).await?;
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
    // The copy counts as a new object of its size for the destination's owner.
    let owner = gw.bucket_owner(&i.bucket).await?;
    let reservation = gw.services.reserve(owner, src.size, 1).await.map_err(quota_error)?;
    let (b, k) = (i.bucket.clone(), i.key.clone());
    let old_size = gw.index.run(move |ix| ix.object(&b, &k)).await?.map(|(o, _)| o.size);
    let modified = unix_secs() as i64;
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
    let gone = match gw.index.run(move |ix| ix.put_object(&row, &segments)).await {
        Ok(g) => g,
        Err(e) => {
            gw.unreserve(reservation).await;
            return Err(e.into());
        }
    };
    if let Err(e) = gw.services.commit(reservation).await {
        tracing::warn!(error = %e, "could not commit a copy's quota reservation");
    }
    gw.uncount(owner, old_size.unwrap_or(0), u64::from(old_size.is_some())).await;
    gw.release(gone).await;
    Ok(S3Response::new(CopyObjectOutput {
        copy_object_result: Some(CopyObjectResult {
            e_tag: Some(etag(&src.etag)),
            last_modified: Some(ts(modified)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}
