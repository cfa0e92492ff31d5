//! The CLI's HTTP client for a node's API v1.
//!
//! Where the node is: `--api` / `DATAMESH_API` (`http://HOST:PORT` or
//! `HOST:PORT`), else the `api.url` file the node wrote into its data dir.
//! The token: `--token` / `DATAMESH_TOKEN`, else the data dir's `api.token`.

use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use datamesh_api::{BeginUpload, ChunkReceipt, CompleteQuery, Completed, ErrorBody, ErrorCode, UploadSession};
use datamesh_core::Cid;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

/// A handle on one node's API. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

/// Normalises `HOST:PORT` to `http://HOST:PORT`.
pub fn normalize_url(s: &str) -> String {
    let s = s.trim().trim_end_matches('/');
    if s.starts_with("http://") || s.starts_with("https://") { s.to_string() } else { format!("http://{s}") }
}

impl Client {
    /// Finds the node and its token from flags, environment or data dir.
    pub fn connect(api: Option<&str>, token: Option<&str>, data_dir: &Path) -> Result<Client> {
        let base = match api {
            Some(a) => normalize_url(a),
            None => {
                let p = data_dir.join("api.url");
                let s = std::fs::read_to_string(&p).with_context(|| {
                    format!(
                        "no node found: {} does not exist. Start one with `datamesh node`, or point at one with --api / DATAMESH_API",
                        p.display()
                    )
                })?;
                normalize_url(&s)
            }
        };
        let token = match token {
            Some(t) => t.trim().to_string(),
            None => {
                let p = data_dir.join("api.token");
                std::fs::read_to_string(&p)
                    .with_context(|| {
                        format!(
                            "cannot read the API token {}: pass --data-dir of the node, or set DATAMESH_TOKEN",
                            p.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(16)
            .tcp_nodelay(true)
            .build()
            .context("cannot build the HTTP client")?;
        Ok(Client { http, base, token })
    }

    /// A request to `path` (below the base URL) with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token)
    }

    /// Sends and turns API errors into readable errors.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|e| {
            if e.is_connect() {
                anyhow!("cannot reach the node at {}: is `datamesh node` running? ({e})", self.base)
            } else {
                anyhow!("request to {} failed: {e}", self.base)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body = resp.bytes().await.unwrap_or_default();
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => bail!(ApiError { status, code: e.code, message: e.message }),
            Err(_) => bail!("node answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }

    /// Sends `rb` and reads the answer as `T`.
    pub async fn call<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        let body = resp.bytes().await.context("the node's answer was cut short")?;
        serde_json::from_slice(&body).with_context(|| {
            format!("the node's answer is not what this client expects: {}", String::from_utf8_lossy(&body))
        })
    }

    /// GET `path`, answered as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.request(Method::GET, path)).await
    }

    /// POST to `path` with an empty body, answered as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.request(Method::POST, path)).await
    }

    /// Opens an upload session; returns its id and the erasure code the
    /// node will apply (its default where none was asked for).
    pub async fn begin_upload(&self, k: Option<u16>, m: Option<u16>) -> Result<(String, datamesh_core::Erasure)> {
        let s: UploadSession = self.call(self.request(Method::POST, "/v1/uploads").json(&BeginUpload { k, m })).await?;
        Ok((s.upload_id, datamesh_core::Erasure { k: s.k, m: s.m }))
    }

    /// Sends one chunk's stored form.
    pub async fn put_chunk(&self, upload: &str, stored: Vec<u8>) -> Result<ChunkReceipt> {
        self.call(self.request(Method::PUT, &format!("/v1/uploads/{upload}/chunks")).body(stored)).await
    }

    /// Sends the manifest; returns the CID the node stored it under.
    pub async fn complete(&self, upload: &str, manifest: Vec<u8>, name: Option<&str>) -> Result<Cid> {
        let mut rb = self
            .request(Method::POST, &format!("/v1/uploads/{upload}/complete"))
            .header("content-type", "application/cbor")
            .body(manifest);
        if let Some(n) = name {
            rb = rb.query(&CompleteQuery { name: Some(n.to_string()) });
        }
        let done: Completed = self.call(rb).await?;
        Ok(done.cid)
    }

    /// Aborts an upload (best effort).
    pub async fn abort(&self, upload: &str) {
        let _ = self.request(Method::DELETE, &format!("/v1/uploads/{upload}")).send().await;
    }

    /// The manifest bytes and the manifest CID.
    pub async fn manifest(&self, cid: &Cid) -> Result<(Cid, Vec<u8>)> {
        let resp = self.send(self.request(Method::GET, &format!("/v1/files/{cid}/manifest"))).await?;
        let mcid: Cid = resp
            .headers()
            .get("x-datamesh-manifest")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow!("node did not name the manifest CID"))?
            .parse()?;
        Ok((mcid, resp.bytes().await?.to_vec()))
    }

    /// One chunk's stored form (the response body itself, not a copy).
    pub async fn chunk(&self, file: &Cid, index: usize) -> Result<bytes::Bytes> {
        Ok(self.send(self.request(Method::GET, &format!("/v1/files/{file}/chunks/{index}"))).await?.bytes().await?)
    }
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
