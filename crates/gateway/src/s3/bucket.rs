//! Service and bucket operations: list, create, head, location, delete.

use datamesh_services::perms::{Action, Decision, PermError, ResourceRef};
use datamesh_services::ratelimit::RouteClass;
use s3s::dto::*;
use s3s::{S3Request, S3Response, S3Result, s3_error};

use super::S3Gateway;
use super::access::{db, unavailable};
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

/// The buckets the caller may list; the owner named is the caller, as in S3.
pub(super) async fn list_buckets(
    gw: &S3Gateway,
    req: S3Request<ListBucketsInput>,
) -> S3Result<S3Response<ListBucketsOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    let buckets = gw.index.run(|ix| ix.buckets()).await?;
    let mut list = Vec::new();
    for (name, created) in buckets {
        let Ok(res) = ResourceRef::bucket(&name) else { continue };
        if gw.services.check(Some(&c.principal), Action::List, &res).await.map_err(db)? == Decision::Allow {
            list.push(Bucket { name: Some(name), creation_date: Some(ts(created)), ..Default::default() });
        }
    }
    let owner = Owner { display_name: Some(c.principal.name().to_string()), id: Some(c.principal.name().to_string()) };
    Ok(S3Response::new(ListBucketsOutput { buckets: Some(list), owner: Some(owner), ..Default::default() }))
}

/// Registers the bucket as the caller's (names are global: one taken by
/// another user is `BucketAlreadyExists`), then makes it in the index.
pub(super) async fn create_bucket(
    gw: &S3Gateway,
    req: S3Request<CreateBucketInput>,
) -> S3Result<S3Response<CreateBucketOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    let name = req.input.bucket.clone();
    let res = ResourceRef::bucket(&name).map_err(|e| s3_error!(InvalidBucketName, "{e}"))?;
    let mine = match gw.services.create_resource(&c.principal, &res).await {
        Ok(()) => true,
        Err(PermError::NameTaken) => {
            // Taken: by the caller (who may go on, in case the index lost it),
            // or by someone else.
            if gw.services.check(Some(&c.principal), Action::Admin, &res).await.map_err(db)? != Decision::Allow {
                return Err(s3_error!(BucketAlreadyExists, "bucket name {name} is taken: choose another"));
            }
            false
        }
        Err(PermError::Database(db)) => return Err(unavailable(&db)),
        Err(_) => return Err(s3_error!(AccessDenied, "this key may not create buckets")),
    };
    let n = name.clone();
    match gw.index.run(move |ix| ix.create_bucket(&n)).await {
        Ok(true) => Ok(S3Response::new(CreateBucketOutput { location: Some(format!("/{name}")) })),
        Ok(false) => Err(s3_error!(BucketAlreadyOwnedByYou, "bucket {name} already exists and is yours")),
        Err(e) => {
            if mine && let Err(e) = gw.services.delete_resource(&c.principal, &res).await {
                tracing::warn!(error = %e, bucket = %name, "could not undo a bucket's registration");
            }
            Err(e.into())
        }
    }
}

pub(super) async fn head_bucket(
    gw: &S3Gateway,
    req: S3Request<HeadBucketInput>,
) -> S3Result<S3Response<HeadBucketOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    gw.allow_bucket(&c, Action::Read, &req.input.bucket).await?;
    gw.need_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(HeadBucketOutput::default()))
}

pub(super) async fn get_bucket_location(
    gw: &S3Gateway,
    req: S3Request<GetBucketLocationInput>,
) -> S3Result<S3Response<GetBucketLocationOutput>> {
    let c = gw.caller(&req, RouteClass::Read).await?;
    gw.allow_bucket(&c, Action::Read, &req.input.bucket).await?;
    gw.need_bucket(&req.input.bucket).await?;
    Ok(S3Response::new(GetBucketLocationOutput::default()))
}

pub(super) async fn delete_bucket(
    gw: &S3Gateway,
    req: S3Request<DeleteBucketInput>,
) -> S3Result<S3Response<DeleteBucketOutput>> {
    let c = gw.caller(&req, RouteClass::Write).await?;
    gw.allow_bucket(&c, Action::Delete, &req.input.bucket).await?;
    let b = req.input.bucket.clone();
    match gw.index.run(move |ix| ix.delete_bucket(&b)).await? {
        None => Err(s3_error!(NoSuchBucket, "bucket {} does not exist", req.input.bucket)),
        Some(false) => Err(s3_error!(
            BucketNotEmpty,
            "bucket {} still holds objects or multipart uploads; delete or abort them first",
            req.input.bucket
        )),
        Some(true) => {
            let res = ResourceRef::bucket(&req.input.bucket).map_err(|e| s3_error!(InvalidBucketName, "{e}"))?;
            if let Err(e) = gw.services.delete_resource(&c.principal, &res).await {
                tracing::warn!(error = %e, bucket = %req.input.bucket, "could not drop a deleted bucket's ownership");
            }
            Ok(S3Response::new(DeleteBucketOutput::default()))
        }
    }
}
