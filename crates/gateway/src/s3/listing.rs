//! Listings: ListObjects (v1 and v2) and ListObjectVersions.
//!
//! With `EncodingType=url` every key and key-like field of the answer
//! (prefix, delimiter, markers, common prefixes) is percent-encoded, as S3
//! does, so keys holding characters XML 1.0 cannot carry (NUL, ESC, other
//! controls) list safely; clients such as boto3 ask for it by default and
//! decode it (`+` and `%` in a key come back as themselves).

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

/// `EncodingType=url`: percent-encode everything but RFC 3986's unreserved
/// characters and `/`.
#[derive(Clone, Copy)]
struct Encode(bool);

const KEY_SET: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

impl Encode {
    fn of(t: &Option<EncodingType>) -> Self {
        Self(t.as_ref().is_some_and(|t| t.as_str().eq_ignore_ascii_case(EncodingType::URL)))
    }

    fn s(self, v: String) -> String {
        if self.0 { percent_encoding::utf8_percent_encode(&v, KEY_SET).to_string() } else { v }
    }

    fn o(self, v: Option<String>) -> Option<String> {
        v.map(|v| self.s(v))
    }

    fn prefixes(self, p: Vec<String>) -> Option<Vec<CommonPrefix>> {
        Some(p.into_iter().map(|p| CommonPrefix { prefix: Some(self.s(p)) }).collect())
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
    let enc = Encode::of(&i.encoding_type);
    Ok(S3Response::new(ListObjectsOutput {
        name: Some(i.bucket),
        prefix: enc.o(i.prefix),
        delimiter: enc.o(i.delimiter.clone()),
        marker: enc.o(i.marker),
        max_keys: Some(max as i32),
        is_truncated: Some(l.next.is_some()),
        next_marker: if i.delimiter.is_some() { enc.o(l.next.clone()) } else { None },
        contents: Some(
            l.objects
                .iter()
                .map(|o| Object { owner: Some(owner.clone()), key: Some(enc.s(o.key.clone())), ..object_entry(o) })
                .collect(),
        ),
        common_prefixes: enc.prefixes(l.prefixes),
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
    let enc = Encode::of(&i.encoding_type);
    Ok(S3Response::new(ListObjectsV2Output {
        name: Some(i.bucket),
        prefix: enc.o(i.prefix),
        delimiter: enc.o(i.delimiter),
        max_keys: Some(max as i32),
        key_count: Some(count as i32),
        is_truncated: Some(l.next.is_some()),
        continuation_token: i.continuation_token,
        next_continuation_token: l.next.map(|n| hex::encode(n.as_bytes())),
        start_after: enc.o(i.start_after),
        contents: Some(
            l.objects
                .iter()
                .map(|o| Object { owner: owner.clone(), key: Some(enc.s(o.key.clone())), ..object_entry(o) })
                .collect(),
        ),
        common_prefixes: enc.prefixes(l.prefixes),
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
    let enc = Encode::of(&i.encoding_type);
    let versions = l
        .objects
        .iter()
        .map(|o| ObjectVersion {
            key: Some(enc.s(o.key.clone())),
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
        prefix: enc.o(i.prefix),
        delimiter: enc.o(i.delimiter),
        key_marker: enc.o(i.key_marker),
        max_keys: Some(max as i32),
        is_truncated: Some(l.next.is_some()),
        next_key_marker: enc.o(l.next),
        versions: Some(versions),
        common_prefixes: enc.prefixes(l.prefixes),
        encoding_type: i.encoding_type,
        ..Default::default()
    }))
}
