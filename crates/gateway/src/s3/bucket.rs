//! Service and bucket operations: list, create, head, location, delete.

use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Gateway;
use super::convert::ts;

impl S3Gateway {
    pub(super) async fn need_bucket(&self, bucket: &str) -> S3Result<()> {
        let b = bucket.to_string();
        if self.index.run(move |ix| ix.bucket_exists(&b)).await? {
            Ok(())
        } else {
            Err(s3_error!(NoSuchBucket, "bucket {bucket} does not exist; create it first"))
        }
    }
}

pub(super) async fn list_buckets(
    gw: &S3Gateway,
    _req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let buckets = gw.index.run(|ix| ix.buckets()).await?;
    let list = buckets
        .into_iter()
        .map(|(name, created)| Bucket { name: Some(name), creation_date: Some(ts(created)), ..Default::default() })
        .collect();
    Ok(S3Response::new(ListBucketsOutput { buckets: Some(list), ..Default::default() }))
}

pub(super) async fn create_bucket(
    gw: &S3Gateway,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let name = req.input.bucket.clone();
    let n = name.clone();
    if !gw.index.run(move |ix| ix.create_bucket(&n)).await? {
        return Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {name} already exists"));
    }
    Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) }))
}

pub(super) async fn head_bucket(
    gw: &S3Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    gw.need_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    gw: &S3Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    gw.need_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

pub(super) async fn delete_bucket(
    gw: &S3Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let b = req.input.bucket.clone();
    match gw.index.run(move |ix| ix.delete_bucket(&b)).await? {
        None => Err(s3_error!(NoSuchBucket, "bucket {} does not exist", req.input.bucket)),
        Some(false) => Err(s3_error!(
            BucketNotEmpty,
            "bucket {} still holds objects or multipart uploads; delete or abort them first",
            req.input.bucket
        )),
        Some(true) => Ok(S3Response::new(DeleteBucketOutput::default())),
    }
}
