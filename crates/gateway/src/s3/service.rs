//! The s3s service: SigV4 with the accounts' S3 keys, path-style and
//! virtual-host addressing, and the listener S3 is served on.

use std::time::Duration;

use s3s::S3Result;

use crate::{Gateway, GatewayError, metrics};

impl Gateway {
    /// The S3 service (SigV4 with the secrets of the accounts' S3 keys).
    pub fn s3_service(&self) -> s3s::service::S3Service {
        let mut b = s3s::service::S3ServiceBuilder::new(self.s3.clone());
        b.set_auth(super::S3Keys { services: self.services.clone(), recent: self.s3.recent.clone() });
        b.set_host(VirtualHosts::new(&self.cfg.domain));
        b.build()
    }

    /// Serves S3 on `listener` until `shutdown` resolves.
    pub(crate) async fn serve_s3(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), GatewayError> {
        let service = self.s3_service();
        let mut shutdown = std::pin::pin!(shutdown);
        let conns = tokio_util::task::TaskTracker::new();
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let (stream, _) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "S3 accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let service = service.clone();
                    let metrics = self.metrics.clone();
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (service, metrics) = (service.clone(), metrics.clone());
                        let started = std::time::Instant::now();
                        let route = metrics::s3_route(req.uri());
                        let method = req.method().to_string();
                        let bytes_in = req.headers().get(http::header::CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                        async move {
                            let resp = hyper::service::Service::call(&service, req).await;
                            if let Ok(r) = &resp {
                                let out = r.headers().get(http::header::CONTENT_LENGTH)
                                    .and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0);
                                metrics.request("s3", route, &method, r.status().as_u16(), started, bytes_in, out);
                            }
                            resp
                        }
                    });
                    conns.spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                        if let Err(e) = builder.serve_connection(io, service).await {
                            tracing::debug!(error = %e, "S3 connection ended with an error");
                        }
                    });
                }
            }
        }
        conns.close();
        // In-flight requests get a grace period, then are dropped (their
        // uploads abort and leave nothing behind).
        let _ = tokio::time::timeout(Duration::from_secs(10), conns.wait()).await;
        Ok(())
    }
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
