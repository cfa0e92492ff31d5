//! Listings: ListObjects (v1 and v2) and ListObjectVersions.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Gateway;
use super::access::Caller;
use super::convert::{etag, object_entry, ts};
use datamesh_services::perms::{Action, ResourceRef};
use datamesh_services::ratelimit::RouteClass;

impl S3Gateway {
    /// Checks `list` on the bucket, or (for a key scoped to a prefix) on
    /// the prefix listed.
    pub(super) async fn allow_list(&self, c: &Caller, bucket: &str, prefix: Option<&str>) -> S3Result<()> {
        match prefix.filter(|p| !p.is_empty()) {
            Some(p) if self.allow_bucket(c, Action::List, bucket).await.is_err() => {
                self.allow(c, Action::List, ResourceRef::prefix(bucket, p)).await
            }
            Some(_) => Ok(()),
            None => self.allow_bucket(c, Action::List, bucket).await,
        }
    }

    /// The owner shown on listed objects: the bucket owner's user name.
    async fn listing_owner(&self, bucket: &str) -> S3Result<Owner> {
        let name = self.user_name(self.bucket_owner(bucket).await?).await?;
        Ok(Owner { display_name: Some(name.clone()), id: Some(name) })
    }
}

pub(super) fn continuation(token: &str) -> S3Result<String> {
    let bytes = hex::decode(token).map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))?;
    String::from_utf8(bytes).map_err(|_| s3_error!(InvalidArgument, "the continuation token is not valid"))
}

pub(super) async fn list_objects(
    gw: &S3Gateway,
    req: S3Request<ListObjectsInput>,
) -> S3Result<S3Response<ListObjectsOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_list(&c, &i.bucket, i.prefix.as_deref()).await?;
    gw.need_bucket(&i.bucket).await?;
    let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
    let (b, p, d, m) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone(), i.marker.clone());
    let l = gw.index.run(move |ix| ix.list(&b, &p, d.as_deref(), m.as_deref(), max)).await?;
    let owner = gw.listing_owner(&i.bucket).await?;
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: i.prefix,
        delimiter: i.delimiter.clone(),
        marker: i.marker,
        max_keys: Some(max as i32),
        is_truncated: Some(l.next.is_some()),
        next_marker: if i.delimiter.is_some() { l.next.clone() } else { None },
        contents: Some(l.objects.iter().map(|o| Object { owner: Some(owner.clone()), ..object_entry(o) }).collect()),
        common_prefixes: Some(l.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_objects_v2(
    gw: &S3Gateway,
    req: S3Request<ListObjectsV2Input>,
) -> S3Result<S3Response<ListObjectsV2Output>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_list(&c, &i.bucket, i.prefix.as_deref()).await?;
    gw.need_bucket(&i.bucket).await?;
    let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
    let after = match &i.continuation_token {
        Some(t) => Some(continuation(t)?),
        None => i.start_after.clone(),
    };
    let (b, p, d) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone());
    let l = gw.index.run(move |ix| ix.list(&b, &p, d.as_deref(), after.as_deref(), max)).await?;
    let count = l.objects.len() + l.prefixes.len();
    let owner = if i.fetch_owner == Some(true) { Some(gw.listing_owner(&i.bucket).await?) } else { None };
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
        contents: Some(l.objects.iter().map(|o| Object { owner: owner.clone(), ..object_entry(o) }).collect()),
        common_prefixes: Some(l.prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect()),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}

pub(super) async fn list_object_versions(
    gw: &S3Gateway,
    req: S3Request<ListObjectVersionsInput>,
) -> S3Result<S3Response<ListObjectVersionsOutput>> {
    // Versioning is not supported: every object is its only ("null") version.
    let c = gw.caller(&req, RouteClass::Read).await?;
    let i = req.input;
    gw.allow_list(&c, &i.bucket, i.prefix.as_deref()).await?;
    gw.need_bucket(&i.bucket).await?;
    let max = i.max_keys.unwrap_or(1000).clamp(0, 1000) as usize;
    let (b, p, d, m) =
        (i.bucket.clone(), i.prefix.clone().unwrap_or_default(), i.delimiter.clone(), i.key_marker.clone());
    let l = gw.index.run(move |ix| ix.list(&b, &p, d.as_deref(), m.as_deref(), max)).await?;
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
