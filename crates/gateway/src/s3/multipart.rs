//! Multipart uploads: create, upload a part (or copy one), complete,
//! abort, list parts and uploads; and the expiry of idle uploads.
//!
//! An upload belongs to the user who created it: only they, or whoever
//! administers the bucket (its owner, the administrator), may upload or
//! copy its parts, list them, complete or abort it; anyone else is
//! `AccessDenied`, even with write on the bucket. ListMultipartUploads
//! shows every upload to those who may list the bucket, and to a key that
//! may only write there, just its own user's.

use std::time::Duration;

use datamesh_core::clock::unix_secs;
use md5::Digest;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::access::Caller;
use super::access::quota_error;
use super::checksum::{Digests, Expected, checksums_in, with_checksums};
use super::convert::{etag, metadata_json, source_of, ts};
use super::{S3Gateway, internal};
use crate::index::{ObjectRow, PartRow, Segment, UploadRow};
use crate::objects::Written;
use crate::ownership::upload_owner;
use datamesh_services::perms::Action;
use datamesh_services::ratelimit::RouteClass;

pub(super) fn part_number_ok(n: i32) -> S3Result<u32> {
    if (1..=10_000).contains(&n) {
        Ok(n as u32)
    } else {
        Err(s3_error!(InvalidArgument, "part number must be an integer between 1 and 10000"))
    }
}

pub(super) fn multipart_etag(parts: &[PartRow]) -> S3Result<String> {
    let mut h = md5::Md5::new();
    for p in parts {
        let bin = hex::decode(&p.md5).map_err(internal)?;
        h.update(&bin);
    }
    Ok(format!("{}-{}", hex::encode(h.finalize()), parts.len()))
}

pub(super) async fn create_multipart_upload(
    gw: &S3Gateway,
    req: S3Request<CreateMultipartUploadInput>,
) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    gw.need_bucket(&i.bucket).await?;
    let row = UploadRow {
        id: hex::encode(rand::random::<[u8; 16]>()),
        bucket: i.bucket.clone(),
        key: i.key.clone(),
        key_id: c.key_id.clone(),
        content_type: i.content_type,
        metadata: metadata_json(&i.metadata),
        created: unix_secs() as i64,
        initiator: Some(c.principal.user().0),
    };
    let id = row.id.clone();
    // The upload is one file for the quota: its parts extend this
    // reservation, so the part that would exceed a quota is refused.
    let owner = gw.bucket_owner(&i.bucket).await?;
    let reservation = gw.services.reserve(owner, 0, 1).await.map_err(quota_error)?;
    if let Err(e) = gw.index.run(move |ix| ix.create_upload(&row)).await {
        gw.unreserve(reservation).await;
        return Err(e.into());
    }
    *gw.reservations.slot(&id).lock().await = Some(reservation);
    Ok(S3Response::new(CreateMultipartUploadOutput {
        bucket: Some(i.bucket),
        key: Some(i.key),
        upload_id: Some(id),
        ..Default::default()
    }))
}

pub(super) async fn upload_part(
    gw: &S3Gateway,
    req: S3Request<UploadPartInput>,
) -> S3Result<S3Response<UploadPartOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let trailers = req.trailing_headers.clone();
    let i = req.input;
    let number = part_number_ok(i.part_number)?;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    let up = gw.upload_of(&c, &i.upload_id, &i.bucket, &i.key).await?;
    let declared = i.content_length.unwrap_or(0).max(0) as u64;
    gw.extend_upload(&up, declared).await?;
    let user = gw.user_key(&c).await?;
    let expected = Expected::new(&req.headers, i.content_md5.clone(), i.checksum_algorithm.as_ref(), checksums_in!(i));
    let name = format!("s3://{}/{}#upload={}&part={number}", up.bucket, up.key, up.id);
    let w = gw.write_body(&user, i.body, expected, trailers, name, upload_owner(&c.principal)).await?;
    if w.size > declared
        && let Err(e) = gw.extend_upload(&up, w.size - declared).await
    {
        gw.release(w.segments("").into_iter().map(|s| s.manifest).collect()).await;
        return Err(e);
    }
    let md5 = hex::encode(w.digest.md5);
    let c = w.digest.checksums.clone();
    gw.record_part(&up.id, number, w, &user.id, md5.clone()).await?;
    Ok(S3Response::new(with_checksums!(UploadPartOutput { e_tag: Some(etag(&md5)), ..Default::default() }, c)))
}

pub(super) async fn upload_part_copy(
    gw: &S3Gateway,
    req: S3Request<UploadPartCopyInput>,
) -> S3Result<S3Response<UploadPartCopyOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    let number = part_number_ok(i.part_number)?;
    let (sb, sk) = source_of(&i.copy_source)?;
    gw.allow_object(&c, Action::Read, &sb, &sk).await?;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    let up = gw.upload_of(&c, &i.upload_id, &i.bucket, &i.key).await?;
    let (src, segments) = gw.lookup(&sb, &sk).await?;
    let range = match &i.copy_source_range {
        None => 0..src.size,
        Some(r) => {
            let r = r.strip_prefix("bytes=").unwrap_or(r);
            let (a, b) = r.split_once('-').ok_or_else(|| s3_error!(InvalidArgument, "bad x-amz-copy-source-range"))?;
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
    gw.extend_upload(&up, range.end - range.start).await?;
    crate::quota_alerts::charge_download(&gw.events, &gw.services, &c.principal, range.end - range.start)
        .await
        .map_err(quota_error)?;
    let user = gw.user_key(&c).await?;
    let name = format!("s3://{}/{}#upload={}&part={number}", up.bucket, up.key, up.id);
    let w = gw.copy_range(&user, segments, range, name, upload_owner(&c.principal)).await?;
    let md5 = hex::encode(w.digest.md5);
    gw.record_part(&up.id, number, w, &user.id, md5.clone()).await?;
    Ok(S3Response::new(UploadPartCopyOutput {
        copy_part_result: Some(CopyPartResult {
            e_tag: Some(etag(&md5)),
            last_modified: Some(ts(unix_secs() as i64)),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

pub(super) async fn complete_multipart_upload(
    gw: &S3Gateway,
    req: S3Request<CompleteMultipartUploadInput>,
) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    let up = gw.upload_of(&c, &i.upload_id, &i.bucket, &i.key).await?;
    let id = up.id.clone();
    let have = gw.index.run(move |ix| ix.parts(&id)).await?;
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
        let found =
            have.iter().find(|h| h.number == n).ok_or_else(|| s3_error!(InvalidPart, "part {n} was not uploaded"))?;
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
        return Err(s3_error!(EntityTooSmall, "part {} is smaller than 5 MiB and is not the last part", small.number));
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
        modified: unix_secs() as i64,
        parts: chosen.len() as u32,
    };
    let size = row.size;
    let (b, k) = (up.bucket.clone(), up.key.clone());
    let old_size = gw.index.run(move |ix| ix.object(&b, &k)).await?.map(|(o, _)| o.size);
    let id = up.id.clone();
    let gone = gw
        .index
        .run(move |ix| ix.complete_upload(&id, &row, &segments))
        .await?
        .ok_or_else(|| s3_error!(NoSuchUpload, "the upload was completed or aborted meanwhile"))?;
    gw.settle_upload(&up, size, old_size).await;
    gw.release(gone).await;
    Ok(S3Response::new(CompleteMultipartUploadOutput {
        bucket: Some(up.bucket.clone()),
        key: Some(up.key.clone()),
        e_tag: Some(etag(&etag_s)),
        location: Some(format!("/{}/{}", up.bucket, up.key)),
        ..Default::default()
    }))
}

pub(super) async fn abort_multipart_upload(
    gw: &S3Gateway,
    req: S3Request<AbortMultipartUploadInput>,
) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Write, &i.bucket, &i.key).await?;
    let up = gw.upload_of(&c, &i.upload_id, &i.bucket, &i.key).await?;
    gw.abort_upload(&up.id).await?;
    Ok(S3Response::with_status(AbortMultipartUploadOutput::default(), http::StatusCode::NO_CONTENT))
}

pub(super) async fn list_parts(
    gw: &S3Gateway,
    req: S3Request<ListPartsInput>,
) -> S3Result<S3Response<ListPartsOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_object(&c, Action::Read, &i.bucket, &i.key).await?;
    let up = gw.upload_of(&c, &i.upload_id, &i.bucket, &i.key).await?;
    let id = up.id.clone();
    let marker = i.part_number_marker.unwrap_or(0);
    let max = i.max_parts.unwrap_or(1000).clamp(1, 1000) as usize;
    let all: Vec<PartRow> =
        gw.index.run(move |ix| ix.parts(&id)).await?.into_iter().filter(|p| p.number as i32 > marker).collect();
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

pub(super) async fn list_multipart_uploads(
    gw: &S3Gateway,
    req: S3Request<ListMultipartUploadsInput>,
) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    // Who may list the bucket sees every upload; a key that may only
    // write there sees its own user's.
    let only_own = match gw.allow_list(&c, &i.bucket, i.prefix.as_deref()).await {
        Ok(()) => false,
        Err(denied) => {
            if gw.allow_bucket(&c, Action::Write, &i.bucket).await.is_err() {
                return Err(denied);
            }
            true
        }
    };
    gw.need_bucket(&i.bucket).await?;
    let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
    let (b, p) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default());
    let (km, um) = (i.key_marker.clone(), i.upload_id_marker.clone());
    let (mut ups, truncated) =
        gw.index.run(move |ix| ix.uploads_page(&b, &p, km.as_deref(), um.as_deref(), max)).await?;
    // The markers follow the unfiltered page, so paging goes on past it.
    let last = ups.last().filter(|_| truncated).map(|u| (u.key.clone(), u.id.clone()));
    if only_own {
        let me = c.principal.user().0;
        let mut mine = Vec::with_capacity(ups.len());
        for u in ups {
            if u.initiator == Some(me) || (u.initiator.is_none() && gw.owns_upload(&c, &u).await?) {
                mine.push(u);
            }
        }
        ups = mine;
    }
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

impl S3Gateway {
    /// Upload `id` of `bucket`/`key`, if `c` may act on it
    /// ([`S3Gateway::owns_upload`], else `AccessDenied`).
    async fn upload_of(&self, c: &Caller, id: &str, bucket: &str, key: &str) -> S3Result<UploadRow> {
        let i = id.to_string();
        match self.index.run(move |ix| ix.upload(&i)).await? {
            Some(u) if u.bucket == bucket && u.key == key => {
                if self.owns_upload(c, &u).await? {
                    Ok(u)
                } else {
                    Err(s3_error!(AccessDenied, "this multipart upload was started by another user"))
                }
            }
            _ => Err(s3_error!(
                NoSuchUpload,
                "upload {id} does not exist for {bucket}/{key}: it was completed, aborted or expired"
            )),
        }
    }

    /// Whether `c` may act on upload `up`: its initiator, or whoever
    /// administers its bucket.
    async fn owns_upload(&self, c: &Caller, up: &UploadRow) -> S3Result<bool> {
        let initiator = match up.initiator {
            Some(u) => Some(u),
            // From before initiators were recorded: its access key's user.
            None => self.services.s3_credentials(&up.key_id).await.ok().map(|k| k.principal.user().0),
        };
        if initiator == Some(c.principal.user().0) {
            return Ok(true);
        }
        Ok(self.allow_bucket(c, Action::Admin, &up.bucket).await.is_ok())
    }

    async fn record_part(
        &self,
        upload: &str,
        number: u32,
        w: Written<Digests>,
        key_id: &str,
        md5: String,
    ) -> S3Result<()> {
        let part = PartRow { number, segments: w.segments(key_id), size: w.size, md5, modified: unix_secs() as i64 };
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
        if let Some(slot) = self.reservations.take(id)
            && let Some(r) = slot.lock().await.take()
        {
            self.unreserve(r).await;
        }
        self.release(gone).await;
        Ok(())
    }

    /// Adds `bytes` to the upload's reservation (reserving afresh for an
    /// upload this process has none for, after a restart); refused with
    /// `QuotaExceeded` when it would exceed a quota.
    async fn extend_upload(&self, up: &UploadRow, bytes: u64) -> S3Result<()> {
        let slot = self.reservations.slot(&up.id);
        let mut held = slot.lock().await;
        let r = match held.as_mut() {
            Some(r) => {
                self.services.extend(r, bytes).await.map_err(quota_error)?;
                r
            }
            None => {
                let owner = self.bucket_owner(&up.bucket).await?;
                held.insert(self.services.reserve(owner, bytes, 1).await.map_err(quota_error)?)
            }
        };
        crate::quota_alerts::observe(&self.events, &self.services, r.user, &r.warnings).await;
        Ok(())
    }

    /// The upload completed as an object of `size` bytes (replacing one of
    /// `old_size`): its reservation becomes usage, less what was reserved
    /// for parts that were re-sent or left out.
    async fn settle_upload(&self, up: &UploadRow, size: u64, old_size: Option<u64>) {
        let reserved = match self.reservations.take(&up.id) {
            Some(slot) => slot.lock().await.take(),
            None => None,
        };
        let Ok(owner) = self.bucket_owner(&up.bucket).await else { return };
        let mut over = old_size.unwrap_or(0);
        let files = u64::from(old_size.is_some());
        match reserved {
            Some(r) => {
                over += r.bytes.saturating_sub(size);
                if let Err(e) = self.services.commit(r).await {
                    tracing::warn!(error = %e, "could not commit an upload's quota reservation");
                }
            }
            // Nothing reserved here (a restart lost it): count the object now.
            None => match self.services.reserve(owner, size, 1).await {
                Ok(r) => {
                    if let Err(e) = self.services.commit(r).await {
                        tracing::warn!(error = %e, "could not count a completed upload");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "a completed upload exceeds its owner's quota"),
            },
        }
        self.uncount(owner, over, files).await;
    }

    /// Aborts multipart uploads idle longer than `idle`; returns how many.
    pub async fn expire_uploads(&self, idle: Duration) -> usize {
        let cutoff = unix_secs() as i64 - idle.as_secs() as i64;
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
