//! The [`Transport`] over a node's HTTP API v1, with `reqwest`. Every body
//! is a `datamesh-api` type; an error answer is read as its
//! [`ErrorBody`] into an [`ApiError`] (status, code, message).
//!
//! | call | route |
//! | --- | --- |
//! | begin_upload | `POST /v1/uploads` [`BeginUpload`] → [`UploadSession`] |
//! | put_chunk | `PUT /v1/uploads/{id}/chunks` (stored form) → [`ChunkReceipt`] |
//! | complete_upload | `POST /v1/uploads/{id}/complete?name=` (CBOR manifest) → [`Completed`] |
//! | abort_upload | `DELETE /v1/uploads/{id}` |
//! | manifest | `GET /v1/files/{cid}/manifest` (bytes; `x-datamesh-manifest`: its CID) |
//! | chunk | `GET /v1/files/{cid}/chunks/{i}` (stored form) |

use std::sync::Arc;

use bytes::Bytes;
use datamesh_api::{BeginUpload, ChunkReceipt, CompleteQuery, Completed, ErrorBody, ErrorCode, UploadSession};
use datamesh_core::{Cid, Erasure, Manifest};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::{Session, Transport};

/// A handle on one node's API. Cheap to clone.
#[derive(Clone)]
pub struct HttpTransport {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// An error answer from the node.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What the node said.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for ApiError {}

/// Why a call to the node failed.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The HTTP client could not be built (TLS backend, resolver).
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    /// The CA certificate file given for the node cannot be used.
    #[error("cannot use {} as the node's CA certificate: {reason} (give --ca-cert / DATAMESH_CA_CERT a PEM file)", path.display())]
    CaCert {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// Nothing answers at the address.
    #[error("cannot reach the node at {base}: is `datamesh node` running? ({error})")]
    Connect {
        /// The node's base URL.
        base: String,
        /// The cause.
        error: reqwest::Error,
    },
    /// The request failed on the way (reset, timeout).
    #[error("request to {base} failed: {error}")]
    Request {
        /// The node's base URL.
        base: String,
        /// The cause.
        error: reqwest::Error,
    },
    /// The node answered with an error.
    #[error(transparent)]
    Api(ApiError),
    /// The node answered an error without an API error body (a proxy?).
    #[error("node answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: StatusCode,
        /// The body, as text.
        body: String,
    },
    /// The answer's body broke off.
    #[error("the node's answer was cut short: {0}")]
    Truncated(reqwest::Error),
    /// The answer is not the type this client expects (another version?).
    #[error("the node's answer is not what this client expects: {body}: {error}")]
    Unexpected {
        /// The body, as text.
        body: String,
        /// Why it did not parse.
        error: serde_json::Error,
    },
    /// The node did not say which manifest it served.
    #[error("node did not name the manifest CID")]
    NoManifestCid,
    /// The manifest served does not hash to its CID, or does not decode.
    #[error("the node served a bad manifest: {0}")]
    BadManifest(String),
}

/// Normalises `HOST:PORT` to `http://HOST:PORT`.
pub fn normalize_url(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") { s.to_string() } else { format!("http://{s}") }
}

/// An HTTP client for a node's API, `http://` or `https://`: the system's
/// root certificates are trusted, and with `ca_cert` (a PEM file of one or
/// more certificates) also that CA or self-signed certificate, for a node
/// whose certificate no public CA signed.
pub fn http_client(ca_cert: Option<&std::path::Path>) -> Result<reqwest::Client, HttpError> {
    let mut b = reqwest::Client::builder().pool_max_idle_per_host(16).tcp_nodelay(true);
    if let Some(path) = ca_cert {
        let bad = |reason: String| HttpError::CaCert { path: path.to_path_buf(), reason };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no -----BEGIN CERTIFICATE----- section found".into()));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().map_err(HttpError::Build)
}

impl HttpTransport {
    /// The node at `base` (`http://HOST:PORT`, `https://HOST:PORT` or
    /// `HOST:PORT`), with `token`.
    pub fn new(base: &str, token: &str) -> Result<Self, HttpError> {
        Self::with_ca_cert(base, token, None)
    }

    /// [`HttpTransport::new`], also trusting the CA certificate in the PEM
    /// file `ca_cert` (see [`http_client`]).
    pub fn with_ca_cert(base: &str, token: &str, ca_cert: Option<&std::path::Path>) -> Result<Self, HttpError> {
        let http = http_client(ca_cert)?;
        Ok(Self { http, base: normalize_url(base), token: token.trim().to_string() })
    }

    /// The node's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (below the base URL) with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends and turns error answers into [`HttpError::Api`].
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response, HttpError> {
        let resp = rb.send().await.map_err(|error| {
            let base = self.base.clone();
            if error.is_connect() { HttpError::Connect { base, error } } else { HttpError::Request { base, error } }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => Err(HttpError::Api(ApiError { status, code: e.code, message: e.message })),
            Err(_) => Err(HttpError::Status { status, body: String::from_utf8_lossy(&body).into_owned() }),
        }
    }

    /// Sends `rb` and reads the answer as `T`.
    pub async fn call<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T, HttpError> {
        let resp = self.send(rb).await?;
        let body = resp.bytes().await.map_err(HttpError::Truncated)?;
        serde_json::from_slice(&body)
            .map_err(|error| HttpError::Unexpected { body: String::from_utf8_lossy(&body).into_owned(), error })
    }

    /// The manifest's CID and its bytes, unchecked (see
    /// [`Transport::manifest`] for the checked, decoded one).
    pub async fn manifest_bytes(&self, cid: &Cid) -> Result<(Cid, Vec<u8>), HttpError> {
        let resp = self.send(self.request(Method::GET, &format!("/v1/files/{cid}/manifest"))).await?;
        let mcid: Cid = resp
            .headers()
            .get("x-datamesh-manifest")
            .and_then(|v| v.to_str().ok())
            .ok_or(HttpError::NoManifestCid)?
            .parse()
            .map_err(|e| HttpError::BadManifest(format!("its CID does not parse: {e}")))?;
        Ok((mcid, resp.bytes().await.map_err(HttpError::Truncated)?.to_vec()))
    }
}

#[async_trait::async_trait]
impl Transport for HttpTransport {
    type Error = HttpError;

    async fn begin_upload(&self, erasure: Option<Erasure>) -> Result<Session, HttpError> {
        let body = BeginUpload { k: erasure.map(|e| e.k), m: erasure.map(|e| e.m) };
        let s: UploadSession = self.call(self.request(Method::POST, "/v1/uploads").json(&body)).await?;
        // A writer that is not a 32-byte hex key is left out: the node
        // then refuses nothing, and peers take records as for old files.
        let writer = s.writer.and_then(|w| hex::decode(w).ok()).and_then(|w| <[u8; 32]>::try_from(w).ok());
        Ok(Session { id: s.upload_id, erasure: Erasure { k: s.k, m: s.m }, writer })
    }

    async fn put_chunk(&self, upload: &str, stored: Bytes) -> Result<ChunkReceipt, HttpError> {
        self.call(self.request(Method::PUT, &format!("/v1/uploads/{upload}/chunks")).body(stored)).await
    }

    async fn complete_upload(&self, upload: &str, manifest: Vec<u8>, name: Option<String>) -> Result<Cid, HttpError> {
        let mut rb = self
            .request(Method::POST, &format!("/v1/uploads/{upload}/complete"))
            .header("content-type", "application/cbor")
            .body(manifest);
        if name.is_some() {
            rb = rb.query(&CompleteQuery { name });
        }
        let done: Completed = self.call(rb).await?;
        Ok(done.cid)
    }

    async fn abort_upload(&self, upload: &str) {
        let _ = self.request(Method::DELETE, &format!("/v1/uploads/{upload}")).send().await;
    }

    async fn manifest(&self, cid: Cid) -> Result<(Cid, Arc<Manifest>), HttpError> {
        let (mcid, bytes) = self.manifest_bytes(&cid).await?;
        let m = Manifest::decode_verified(&mcid, &bytes).map_err(|e| HttpError::BadManifest(e.to_string()))?;
        Ok((mcid, Arc::new(m)))
    }

    async fn chunk(&self, file: Cid, index: usize) -> Result<Bytes, HttpError> {
        // The response body itself, not a copy.
        self.send(self.request(Method::GET, &format!("/v1/files/{file}/chunks/{index}")))
            .await?
            .bytes()
            .await
            .map_err(HttpError::Truncated)
    }
}
