//! The CLI's handle on a node's API v1: where the node is and its token.
//! The calls themselves go through `datamesh-client`'s [`HttpTransport`],
//! which put and get share with every other client.
//!
//! Where the node is: `--api` / `DATAMESH_API` (`http://HOST:PORT`,
//! `https://HOST:PORT` or `HOST:PORT`), else the `api.url` file the node
//! wrote into its data dir. An https node whose certificate no system root
//! signed is trusted with `--ca-cert` / `DATAMESH_CA_CERT`.
//! The token: `--token` / `DATAMESH_TOKEN`, else the data dir's `api.token`.

use std::path::Path;

use anyhow::{Context, Result};
pub use datamesh_client::http::ApiError;
use datamesh_client::http::{HttpError, HttpTransport};
use datamesh_core::Cid;
use reqwest::{Method, RequestBuilder};
use serde::de::DeserializeOwned;

/// A handle on one node's API. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    http: HttpTransport,
}

/// A transport error as the CLI reports it: the node's own error answers
/// stay [`ApiError`]s, which decide the exit code.
pub fn http_error(e: HttpError) -> anyhow::Error {
    match e {
        HttpError::Api(a) => a.into(),
        other => other.into(),
    }
}

impl Client {
    /// Finds the node and its token from flags, environment or data dir.
    pub fn connect(api: Option<&str>, token: Option<&str>, data_dir: &Path, ca_cert: Option<&Path>) -> Result<Client> {
        let base = Client::base_url(api, data_dir)?;
        let token = match token {
            Some(t) => t.to_string(),
            None => Client::node_token(data_dir)?,
        };
        Ok(Client { http: HttpTransport::with_ca_cert(&base, &token, ca_cert).map_err(http_error)? })
    }

    /// The node's base URL: `api` if given, else the node's `api.url` file.
    pub fn base_url(api: Option<&str>, data_dir: &Path) -> Result<String> {
        let base = match api {
            Some(a) => a.to_string(),
            None => {
                let p = data_dir.join("api.url");
                std::fs::read_to_string(&p).with_context(|| {
                    format!(
                        "no node found: {} does not exist. Start one with `datamesh node`, or point at one with --api / DATAMESH_API",
                        p.display()
                    )
                })?
            }
        };
        Ok(datamesh_client::http::normalize_url(&base))
    }

    /// The node token from its data dir (the node's administrator).
    pub fn node_token(data_dir: &Path) -> Result<String> {
        let p = data_dir.join("api.token");
        std::fs::read_to_string(&p).with_context(|| {
            format!(
                "no credential: log in with `datamesh account login`, set DATAMESH_TOKEN, or pass --data-dir of the node to use its api.token ({} is not readable)",
                p.display()
            )
        })
    }

    /// The transport put and get run over.
    pub fn transport(&self) -> &HttpTransport {
        &self.http
    }

    /// A request to `path` (below the base URL) with the token.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, path)
    }

    /// Sends `rb` and reads the answer as `T`.
    pub async fn call<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        self.http.call(rb).await.map_err(http_error)
    }

    /// GET `path`, answered as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.request(Method::GET, path)).await
    }

    /// POST to `path` with an empty body, answered as `T`.
    pub async fn post<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.call(self.request(Method::POST, path)).await
    }

    /// The manifest bytes and the manifest CID.
    pub async fn manifest(&self, cid: &Cid) -> Result<(Cid, Vec<u8>)> {
        self.http.manifest_bytes(cid).await.map_err(http_error)
    }
}
