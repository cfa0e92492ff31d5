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
    if let Some(why) = bucket_name_problem(&name) {
        return Err(s3_error!(InvalidBucketName, "{name:?} is not a valid bucket name: {why}"));
    }
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

/// Why S3's naming rules for general purpose buckets refuse `name`, if
/// they do: 3 to 63 characters of lowercase letters, digits, dots and
/// hyphens, starting and ending with a letter or digit; no `..`, `.-` or
/// `-.`; not shaped like an IP address; none of the prefixes and suffixes
/// S3 reserves. New buckets only: a bucket that exists keeps working.
pub(super) fn bucket_name_problem(name: &str) -> Option<&'static str> {
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    let b = name.as_bytes();
    if !(3..=63).contains(&b.len()) {
        return Some("a bucket name has 3 to 63 characters");
    }
    if !b.iter().all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-') {
        return Some("only lowercase letters, digits, dots and hyphens are allowed");
    }
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !edge(b[0]) || !edge(b[b.len() - 1]) {
        return Some("a bucket name starts and ends with a letter or a digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return Some("two dots, or a dot and a hyphen, may not be adjacent");
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())) {
        return Some("a bucket name may not look like an IP address");
    }
    if PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some("the prefixes xn--, sthree- and amzn-s3-demo- are reserved");
    }
    if SUFFIXES.iter().any(|s| name.ends_with(s)) {
        return Some("the suffixes -s3alias, --ol-s3, .mrap, --x-s3 and --table-s3 are reserved");
    }
    None
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

#[cfg(test)]
mod tests {
    use super::bucket_name_problem;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for ok in ["abc", "my-bucket.logs", "a1.b2-c3", &"a".repeat(63), "1.2.3.4a", "xn-a"] {
            assert_eq!(bucket_name_problem(ok), None, "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64) as &str,
            "Abc",
            "a_b",
            "-abc",
            "abc-",
            ".abc",
            "a..b",
            "foo-.bar",
            "foo.-bar",
            "192.168.5.4",
            "xn--abc",
            "sthree-foo",
            "amzn-s3-demo-x",
            "foo-s3alias",
            "foo--ol-s3",
            "foo.mrap",
            "foo--x-s3",
            "foo--table-s3",
        ] {
            assert!(bucket_name_problem(bad).is_some(), "{bad}");
        }
    }
}
