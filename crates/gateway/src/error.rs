//! The API's errors: [`ApiError`] is what a handler fails with, and
//! [`status`] the one place an [`ErrorCode`] gets its HTTP status. Every
//! error answers the JSON [`ErrorBody`] `{"code": ..., "message": ...}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datamesh_api::{ErrorBody, ErrorCode};
use datamesh_core::Cid;
use datamesh_node::NodeError;

/// The HTTP status each error code is answered with.
pub fn status(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest | ErrorCode::InvalidCid | ErrorCode::IncompleteBody => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized | ErrorCode::PasswordRequired => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::NotDecryptable | ErrorCode::WrongPassword | ErrorCode::QuotaExceeded => {
            StatusCode::FORBIDDEN
        }
        ErrorCode::NameTaken => StatusCode::CONFLICT,
        ErrorCode::NotFound | ErrorCode::UploadNotFound | ErrorCode::ShareNotFound => StatusCode::NOT_FOUND,
        ErrorCode::Deleted | ErrorCode::ShareRevoked | ErrorCode::ShareExpired | ErrorCode::ShareExhausted => {
            StatusCode::GONE
        }
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
        ErrorCode::InvalidManifest => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::WebsocketRequired => StatusCode::UPGRADE_REQUIRED,
        ErrorCode::TooManyUploads | ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::Internal | ErrorCode::StorageError | ErrorCode::KeyStoreError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::NotReady
        | ErrorCode::GatewayUnavailable
        | ErrorCode::DataUnavailable
        | ErrorCode::NetworkUnavailable
        | ErrorCode::Draining
        | ErrorCode::AccountsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::InsufficientStorage => StatusCode::INSUFFICIENT_STORAGE,
    }
}

/// An error answer: an [`ErrorCode`] (which decides the status) and a
/// message saying what to do.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: String,
    /// Seconds for a `Retry-After` header (rate limits, login lockouts).
    retry_after: Option<u64>,
}

/// What a handler returns.
pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with `code` and `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    /// 429 `rate_limited` with `Retry-After` (whole seconds, at least 1).
    pub(crate) fn rate_limited(message: impl Into<String>, retry_after: std::time::Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self { code: ErrorCode::RateLimited, message: message.into(), retry_after: Some(secs.max(1)) }
    }

    /// 400 `bad_request`.
    pub(crate) fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    /// 500 `internal`, logged.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        let message = message.into();
        tracing::error!(error = %message, "request failed");
        Self::new(ErrorCode::Internal, message)
    }

    /// The gateway's database failed.
    pub(crate) fn index(e: crate::index::IndexError) -> Self {
        Self::internal(e.to_string())
    }

    /// 503 `gateway_unavailable`: the node runs without the gateway.
    pub(crate) fn no_gateway(what: &str) -> Self {
        Self::new(ErrorCode::GatewayUnavailable, format!("this node runs without the {what}"))
    }

    /// The error code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        status(self.code)
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        let code = match &e {
            NodeError::NotFound(_) => ErrorCode::NotFound,
            NodeError::Deleted(_) => ErrorCode::Deleted,
            NodeError::UploadNotFound(_) => ErrorCode::UploadNotFound,
            NodeError::TooManyUploads(_) | NodeError::TooManyUploadsForOwner(_) => ErrorCode::TooManyUploads,
            NodeError::InvalidRequest(_) | NodeError::InvalidConfig(_) => ErrorCode::BadRequest,
            NodeError::Manifest(_) => ErrorCode::InvalidManifest,
            NodeError::NotAuthorized(_) => ErrorCode::Forbidden,
            NodeError::NoSpace(_) => ErrorCode::InsufficientStorage,
            NodeError::Unavailable(_) => ErrorCode::DataUnavailable,
            NodeError::Storage(_) => ErrorCode::StorageError,
            NodeError::Network(_) => ErrorCode::NetworkUnavailable,
            NodeError::Draining(_) => ErrorCode::Draining,
        };
        if status(code).is_server_error() {
            tracing::error!(error = %e, "request failed");
        }
        Self::new(code, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = (status, Json(ErrorBody { code: self.code, message: self.message })).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(secs));
        }
        resp
    }
}

/// A CID from a path or body; 400 `invalid_cid` when it does not parse.
pub(crate) fn parse_cid(s: &str) -> ApiResult<Cid> {
    s.parse::<Cid>().map_err(|e| ApiError::new(ErrorCode::InvalidCid, e.to_string()))
}
