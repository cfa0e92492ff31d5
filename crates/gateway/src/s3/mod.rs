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
//!
//! Every request is a user's: [`access`] authenticates its access key
//! against the accounts database (a revoked key fails on its next request),
//! counts it against the user's rate limit (503 `SlowDown`), checks the
//! permission on the bucket or object with the key's scope before anything
//! is looked up (denied: `AccessDenied`, the same answer whether or not the
//! name exists), and reserves quota before an upload's body is read (403
//! `QuotaExceeded`; multipart parts extend the upload's reservation, so the
//! part that would exceed the quota is the one refused). Buckets are owned
//! (`create_resource`): a name taken by another user is
//! `BucketAlreadyExists`, and storage counts against the bucket's owner.
//!
//! The module is split by concern: [`access`] (principal, permission,
//! quota), [`bucket`] (service and bucket
//! operations), [`object`] (single-object reads and writes), [`multipart`],
//! [`listing`], [`limits`] (S3's size and validity limits, checked
//! before a body is read), [`checksum`] (the digests a client may send), [`convert`]
//! (between the index's rows and S3's types) and [`service`] (the s3s
//! service, SigV4 keys, virtual hosts, the listener). **Architecture
//! invariant:** `s3s` types appear in this module only.

mod access;
mod bucket;
mod checksum;
mod convert;
mod limits;
mod listing;
mod multipart;
mod object;
mod service;

use s3s::dto::*;
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};

use crate::index::{Index, IndexError};
use crate::keys::AccessKeys;
use crate::objects::ObjectPipeline;

pub(crate) use access::{RecentKeys, Reservations, S3Keys};

pub(crate) use multipart::UploadExpiry;
pub use service::VirtualHosts;

/// The S3 service state.
#[derive(Clone)]
pub struct S3Gateway {
    pub(crate) index: Index,
    pub(crate) keys: AccessKeys,
    pub(crate) pipeline: ObjectPipeline,
    pub(crate) events: crate::events::EventBus,
    pub(crate) services: datamesh_services::Services,
    /// The node's administrator, for questions no caller may ask (whose a
    /// bucket is, to count its storage against its owner).
    pub(crate) admin: datamesh_services::Principal,
    pub(crate) reservations: Reservations,
    /// Principals of keys just looked up by the signature check.
    pub(crate) recent: RecentKeys,
    /// Counts refusals by rate limits.
    pub(crate) metrics: crate::metrics::Metrics,
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    tracing::error!(error = %e, "S3 request failed");
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

/// Logs a refused request at DEBUG: a client's mistake (a missing key, a
/// denied permission, a bad argument) is no server error, and `s3s`'s own
/// ERROR line for it is filtered out by the daemon. Server faults were
/// logged where they happened ([`internal`]).
fn refused<T>(op: &'static str, r: S3Result<T>) -> S3Result<T> {
    if let Err(e) = &r {
        tracing::debug!(op, code = e.code().as_str(), message = e.message().unwrap_or(""), "S3 request refused");
    }
    r
}

impl From<IndexError> for S3Error {
    fn from(e: IndexError) -> Self {
        internal(e)
    }
}

/// Each operation is a function of the module of its concern.
#[async_trait::async_trait]
impl S3 for S3Gateway {
    async fn list_buckets(&self, _req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        refused("list_buckets", bucket::list_buckets(self, _req).await)
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        refused("create_bucket", bucket::create_bucket(self, req).await)
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        refused("head_bucket", bucket::head_bucket(self, req).await)
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        refused("get_bucket_location", bucket::get_bucket_location(self, req).await)
    }

    async fn delete_bucket(&self, req: S3Request<DeleteBucketInput>) -> S3Result<S3Response<DeleteBucketOutput>> {
        refused("delete_bucket", bucket::delete_bucket(self, req).await)
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        refused("put_object", object::put_object(self, req).await)
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        refused("get_object", object::get_object(self, req).await)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        refused("head_object", object::head_object(self, req).await)
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        refused("delete_object", object::delete_object(self, req).await)
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        refused("delete_objects", object::delete_objects(self, req).await)
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        refused("copy_object", object::copy_object(self, req).await)
    }

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        refused("list_objects", listing::list_objects(self, req).await)
    }

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        refused("list_objects_v2", listing::list_objects_v2(self, req).await)
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        refused("list_object_versions", listing::list_object_versions(self, req).await)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        refused("create_multipart_upload", multipart::create_multipart_upload(self, req).await)
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        refused("upload_part", multipart::upload_part(self, req).await)
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        refused("upload_part_copy", multipart::upload_part_copy(self, req).await)
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        refused("complete_multipart_upload", multipart::complete_multipart_upload(self, req).await)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        refused("abort_multipart_upload", multipart::abort_multipart_upload(self, req).await)
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        refused("list_parts", multipart::list_parts(self, req).await)
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        refused("list_multipart_uploads", multipart::list_multipart_uploads(self, req).await)
    }
}
