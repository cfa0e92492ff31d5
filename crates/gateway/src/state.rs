//! What every handler of the API v1 shares: the node, the token, the
//! gateway when the node runs one, metrics, and the OpenAPI document once
//! rendered.

use crate::error::{ApiError, ApiResult};

/// The state behind the API router.
pub(crate) struct AppState {
    /// The node every route works on.
    pub(crate) node: datamesh_node::Node,
    /// The node token: the bootstrap administrator's credential.
    pub(crate) token: zeroize::Zeroizing<String>,
    /// Accounts, keys, permissions, quotas, rate limits and audit.
    pub(crate) services: datamesh_services::Services,
    /// The gateway, for the routes that need one (files over HTTP, shares,
    /// events, S3 keys); None on a node without it.
    pub(crate) gateway: Option<crate::Gateway>,
    /// Request counts and timings.
    pub(crate) metrics: crate::metrics::Metrics,
    /// Who owns each open chunk-route upload, with its quota reservation.
    pub(crate) uploads: crate::ownership::UploadOwners,
    /// `/v1/openapi.json`, rendered on first request.
    pub(crate) openapi: std::sync::OnceLock<String>,
}

impl AppState {
    /// The gateway, or 503 `gateway_unavailable`.
    pub(crate) fn gateway(&self) -> ApiResult<&crate::Gateway> {
        self.gateway.as_ref().ok_or_else(|| ApiError::no_gateway("gateway"))
    }
}
