//! The error body every route answers with, and its codes.

use serde::{Deserialize, Serialize};

/// Every error code the API answers, as the `code` of an [`ErrorBody`]
/// (snake_case on the wire: `not_found`, `invalid_cid`, ...). Each code
/// goes with one HTTP status, which the gateway maps in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the request is malformed; the message names what is wrong.
    BadRequest,
    /// 400: a CID in the path or body does not parse.
    InvalidCid,
    /// 400: an upload's body ended before its end (nothing was stored).
    IncompleteBody,
    /// 401: missing or wrong API token.
    Unauthorized,
    /// 401: a share link needs its password.
    PasswordRequired,
    /// 403: not allowed (an owner's delete signature is missing or wrong).
    Forbidden,
    /// 403: the file is encrypted for a key the gateway does not hold.
    NotDecryptable,
    /// 403: wrong password for a share link.
    WrongPassword,
    /// 403: the request would exceed one of the user's quotas; the message
    /// names it. Nothing was stored or counted.
    QuotaExceeded,
    /// 409: the name (a user, a bucket) is taken.
    NameTaken,
    /// 404: no such file, or no such route.
    NotFound,
    /// 404: no such upload session (finished, aborted or expired).
    UploadNotFound,
    /// 404: no such share link.
    ShareNotFound,
    /// 410: the file was deleted by its owner.
    Deleted,
    /// 410: the share link was revoked.
    ShareRevoked,
    /// 410: the share link has expired.
    ShareExpired,
    /// 410: the share link was downloaded as many times as it allows.
    ShareExhausted,
    /// 413: larger than the node's limit.
    PayloadTooLarge,
    /// 416: the range starts past the end of the file.
    RangeNotSatisfiable,
    /// 422: the manifest does not decode or does not match the upload.
    InvalidManifest,
    /// 426: `/v1/events` is a WebSocket.
    WebsocketRequired,
    /// 429: too many uploads in progress.
    TooManyUploads,
    /// 429: too many requests; `Retry-After` says when to retry.
    RateLimited,
    /// 500: something failed inside the node.
    Internal,
    /// 500: the store failed.
    StorageError,
    /// 500: the access key store failed.
    KeyStoreError,
    /// 503: the node cannot take a file now (`GET /v1/ready`).
    NotReady,
    /// 503: the node runs without the gateway (S3, files over HTTP, shares, events).
    GatewayUnavailable,
    /// 503: not enough shards of the data can be reached now.
    DataUnavailable,
    /// 503: the node runs without the network, or the network failed.
    NetworkUnavailable,
    /// 503: the node is draining and takes no new files.
    Draining,
    /// 503: the accounts database does not answer.
    AccountsUnavailable,
    /// 507: not enough space in the store.
    InsufficientStorage,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 33] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidCid,
        ErrorCode::IncompleteBody,
        ErrorCode::Unauthorized,
        ErrorCode::PasswordRequired,
        ErrorCode::Forbidden,
        ErrorCode::NotDecryptable,
        ErrorCode::WrongPassword,
        ErrorCode::QuotaExceeded,
        ErrorCode::NameTaken,
        ErrorCode::NotFound,
        ErrorCode::UploadNotFound,
        ErrorCode::ShareNotFound,
        ErrorCode::Deleted,
        ErrorCode::ShareRevoked,
        ErrorCode::ShareExpired,
        ErrorCode::ShareExhausted,
        ErrorCode::PayloadTooLarge,
        ErrorCode::RangeNotSatisfiable,
        ErrorCode::InvalidManifest,
        ErrorCode::WebsocketRequired,
        ErrorCode::TooManyUploads,
        ErrorCode::RateLimited,
        ErrorCode::Internal,
        ErrorCode::StorageError,
        ErrorCode::KeyStoreError,
        ErrorCode::NotReady,
        ErrorCode::GatewayUnavailable,
        ErrorCode::DataUnavailable,
        ErrorCode::NetworkUnavailable,
        ErrorCode::Draining,
        ErrorCode::AccountsUnavailable,
        ErrorCode::InsufficientStorage,
    ];

    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::InvalidCid => "invalid_cid",
            ErrorCode::IncompleteBody => "incomplete_body",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PasswordRequired => "password_required",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotDecryptable => "not_decryptable",
            ErrorCode::WrongPassword => "wrong_password",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::NameTaken => "name_taken",
            ErrorCode::NotFound => "not_found",
            ErrorCode::UploadNotFound => "upload_not_found",
            ErrorCode::ShareNotFound => "share_not_found",
            ErrorCode::Deleted => "deleted",
            ErrorCode::ShareRevoked => "share_revoked",
            ErrorCode::ShareExpired => "share_expired",
            ErrorCode::ShareExhausted => "share_exhausted",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RangeNotSatisfiable => "range_not_satisfiable",
            ErrorCode::InvalidManifest => "invalid_manifest",
            ErrorCode::WebsocketRequired => "websocket_required",
            ErrorCode::TooManyUploads => "too_many_uploads",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Internal => "internal",
            ErrorCode::StorageError => "storage_error",
            ErrorCode::KeyStoreError => "key_store_error",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::GatewayUnavailable => "gateway_unavailable",
            ErrorCode::DataUnavailable => "data_unavailable",
            ErrorCode::NetworkUnavailable => "network_unavailable",
            ErrorCode::Draining => "draining",
            ErrorCode::AccountsUnavailable => "accounts_unavailable",
            ErrorCode::InsufficientStorage => "insufficient_storage",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error body every route answers with: `{"code": ..., "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code (`not_found`, `unauthorized`, ...).
    pub code: ErrorCode,
    /// What happened and what to do about it.
    pub message: String,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_their_snake_case_names() {
        for c in ErrorCode::ALL {
            let wire = serde_json::to_string(&c).unwrap();
            assert_eq!(wire, format!("\"{}\"", c.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&wire).unwrap(), c);
        }
        let body = ErrorBody { code: ErrorCode::WebsocketRequired, message: "m".into() };
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"code":"websocket_required","message":"m"}"#);
    }
}
