//! S3's request limits, checked once the request is authenticated and its
//! operation known, before any body is read (`s3s`'s access hook):
//!
//! - a presigned URL may be valid for at most 7 days (`X-Amz-Expires` ≤
//!   604,800 s), else `AuthorizationQueryParametersError`;
//! - user metadata (`x-amz-meta-*`, names after the prefix plus values, in
//!   UTF-8 bytes) is at most 2 KB, else `MetadataTooLarge`: PutObject,
//!   CopyObject and CreateMultipartUpload alike;
//! - a DeleteObjects body (1,000 keys of at most 1,024 bytes each, about
//!   1.05 MB) is at most [`DELETE_OBJECTS_MAX_BODY`], else
//!   `MaxMessageLengthExceeded`,
//!   before a byte of it is parsed. Every other XML body is bounded by
//!   [`XML_MAX_BODY`] (`s3s`'s configuration), which fits a
//!   CompleteMultipartUpload of 10,000 parts with their checksums.
//!
//! Anonymous requests are refused here too (`s3s`'s default check, which
//! this hook replaces).

use s3s::access::{S3Access, S3AccessContext};
use s3s::{S3Result, s3_error};

/// Longest validity of a presigned URL, as S3's (7 days).
pub const PRESIGNED_MAX_EXPIRES_SECS: u64 = 7 * 24 * 3600;
/// Largest total of user metadata names and values, as S3's.
pub const USER_METADATA_MAX: usize = 2 * 1024;
/// Largest DeleteObjects body.
pub const DELETE_OBJECTS_MAX_BODY: u64 = 2 << 20;
/// Largest XML body of any other operation.
pub const XML_MAX_BODY: usize = 4 << 20;

/// The hook enforcing the limits above.
pub struct RequestLimits;

#[async_trait::async_trait]
impl S3Access for RequestLimits {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(s3_error!(AccessDenied, "a signature is required: sign the request with an S3 key"));
        }
        if let Some(expires) = query_param(cx.uri().query().unwrap_or(""), "X-Amz-Expires") {
            match expires.parse::<u64>() {
                Ok(s) if s <= PRESIGNED_MAX_EXPIRES_SECS => {}
                _ => {
                    return Err(s3_error!(
                        AuthorizationQueryParametersError,
                        "X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than {PRESIGNED_MAX_EXPIRES_SECS} seconds"
                    ));
                }
            }
        }
        let meta: usize = cx
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                name.as_str().strip_prefix("x-amz-meta-").map(|n| n.len() + value.as_bytes().len())
            })
            .sum();
        if meta > USER_METADATA_MAX {
            return Err(s3_error!(
                MetadataTooLarge,
                "user metadata is {meta} bytes (names and values); S3 allows at most {USER_METADATA_MAX}"
            ));
        }
        if cx.s3_op().name() == "DeleteObjects" {
            let len = cx
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if len.is_some_and(|l| l > DELETE_OBJECTS_MAX_BODY) {
                return Err(s3_error!(
                    MaxMessageLengthExceeded,
                    "a DeleteObjects body may be at most {DELETE_OBJECTS_MAX_BODY} bytes (1,000 keys); send fewer keys per request"
                ));
            }
        }
        Ok(())
    }
}

/// The raw value of query parameter `name` (case-sensitive, as SigV4's).
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| match kv.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if kv == name => Some(""),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::query_param;

    #[test]
    fn query_params_are_found_by_exact_name() {
        let q = "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Expires=94608000&x-amz-expires=1";
        assert_eq!(query_param(q, "X-Amz-Expires"), Some("94608000"));
        assert_eq!(query_param(q, "X-Amz-Date"), None);
        assert_eq!(query_param("", "X-Amz-Expires"), None);
    }
}
