//! The s3s service: SigV4 with the accounts' S3 keys, path-style and
//! virtual-host addressing, and the listener S3 is served on.

use s3s::S3Result;

use crate::{Gateway, GatewayError, metrics};

impl Gateway {
    /// The S3 service (SigV4 with the secrets of the accounts' S3 keys).
    pub fn s3_service(&self) -> s3s::service::S3Service {
        let mut b = s3s::service::S3ServiceBuilder::new(self.s3.clone());
        b.set_auth(super::S3Keys { services: self.services.clone(), recent: self.s3.recent.clone() });
        b.set_host(VirtualHosts::new(&self.cfg.domain));
        b.set_access(super::limits::RequestLimits);
        let mut config = s3s::config::S3Config::default();
        config.xml_max_body_size = super::limits::XML_MAX_BODY;
        b.set_config(std::sync::Arc::new(s3s::config::StaticConfigProvider::new(std::sync::Arc::new(config))));
        b.build()
    }

    /// Serves S3 on `listener` until `shutdown` resolves, through the
    /// edge both ports share (TLS, caps, timeouts).
    pub(crate) async fn serve_s3(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let service = self.s3_service();
        let metrics = self.metrics.clone();
        let handler = move |_peer, req: http::Request<crate::listen::IdleBody>| {
            let (service, metrics) = (service.clone(), metrics.clone());
            let started = std::time::Instant::now();
            let route = metrics::s3_route(req.uri());
            let method = req.method().to_string();
            let bytes_in = content_length(req.headers());
            async move {
                let resp = service.call(req.map(s3s::Body::http_body_unsync)).await;
                if let Ok(r) = &resp {
                    let out = content_length(r.headers());
                    metrics.request("s3", route, &method, r.status().as_u16(), started, bytes_in, out);
                }
                resp
            }
        };
        self.edge.clone().serve("S3", listener, handler, shutdown).await;
        Ok(())
    }
}

/// A message's declared length (0 when absent).
fn content_length(h: &http::HeaderMap) -> u64 {
    h.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Virtual-host addressing under `domain` (`BUCKET.domain[:port]`); any
/// other Host (an IP, `localhost`) is path-style.
pub struct VirtualHosts {
    domain: String,
}

impl VirtualHosts {
    /// Buckets addressed as subdomains of `domain`.
    pub fn new(domain: &str) -> Self {
        Self { domain: domain.trim_matches('.').to_ascii_lowercase() }
    }
}

impl s3s::host::S3Host for VirtualHosts {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> S3Result<s3s::host::VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(h, p)| if p.parse::<u16>().is_ok() { h } else { host });
        if let Some(bucket) = name.strip_suffix(self.domain.as_str()).and_then(|b| b.strip_suffix('.'))
            && !bucket.is_empty()
        {
            return Ok(s3s::host::VirtualHost::new(host).with_bucket(bucket));
        }
        Ok(s3s::host::VirtualHost::new(host))
    }
}
