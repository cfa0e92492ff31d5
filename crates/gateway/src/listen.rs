//! The gateway's edge: how the API and S3 ports take connections, in one
//! accept loop ([`Edge::serve`]) for both.
//!
//! - **TLS** (rustls with the `ring` provider, chosen explicitly: libp2p
//!   enables aws-lc-rs too, so the process has no single default): TLS 1.3
//!   preferred, 1.2 allowed, ALPN `h2` and `http/1.1`, when the node is
//!   given `--tls-cert` and `--tls-key`. A port without TLS that listens
//!   beyond loopback is announced loudly at start ([`plaintext_warning`]):
//!   tokens, passwords and cookies would cross the network in clear.
//! - **Connection caps**: at most `max_connections` open connections over
//!   both ports, and `max_connections_per_address` from one source address.
//!   A connection over either cap is closed at once, never queued: a
//!   client that holds connections open cannot starve the others.
//! - **Timeouts**, so a connection that sends nothing holds nothing for
//!   long: the TLS handshake and every request's head (from the moment the
//!   connection waits for it, or its first byte on a kept-alive connection)
//!   must arrive within `header_timeout`; a kept-alive connection with no
//!   request and no traffic is closed after `idle_timeout`; a request body
//!   that sends nothing for `body_idle_timeout` fails ([`IdleBody`]), which
//!   aborts the upload it feeds, releasing its upload session and quota
//!   reservation. A request the server is still working on is never
//!   timed out here.
//!
//! - **Ending a connection cleanly**: an answer sent before its request's
//!   body was read says `Connection: close` (the client may never send the
//!   body, so what follows cannot be parsed as the next request), and a
//!   connection is closed with a lingering close ([`linger`]): the write
//!   side first, then what the client still sends is read and dropped for
//!   a moment, so the kernel does not answer it with a reset that could
//!   destroy the response on its way.
//!
//! Refusals and timeouts are counted in `/metrics`
//! (`datamesh_http_connections_refused_total{reason}`,
//! `datamesh_http_timeouts_total{phase}`).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::{Frame, Incoming};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::metrics::Metrics;

/// How the ports take connections.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Serve TLS with this certificate and key; None: plain HTTP.
    pub tls: Option<TlsFiles>,
    /// The TLS handshake and each request's head must arrive within this.
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long fails.
    pub body_idle_timeout: Duration,
    /// A kept-alive connection with no request and no traffic is closed
    /// after this long.
    pub idle_timeout: Duration,
    /// Open connections over both ports.
    pub max_connections: usize,
    /// Open connections from one source address over both ports.
    pub max_connections_per_address: usize,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            tls: None,
            header_timeout: Duration::from_secs(10),
            body_idle_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_address: 256,
        }
    }
}

/// A PEM certificate chain (leaf first) and its private key.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
}

/// Why the TLS files cannot be used. Each names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// `the TLS certificate` or `the TLS key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file holds no PEM item of the kind needed, or a broken one.
    #[error("{} is not a PEM {what}: {reason}", path.display())]
    Pem {
        /// `certificate chain` or `private key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported key type).
    #[error("cannot use the certificate {} with the key {}: {reason}", cert.display(), key.display())]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },
}

/// The server's TLS settings from the PEM files: TLS 1.3 preferred, 1.2
/// allowed, ALPN `h2` then `http/1.1`.
pub fn load_tls(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let read = |what: &'static str, path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_path_buf(), source })
    };
    let pem = |what: &'static str, path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let cert_pem = read("the TLS certificate", &files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificate chain", &files.cert, &e))?;
    if certs.is_empty() {
        return Err(pem("certificate chain", &files.cert, &"no -----BEGIN CERTIFICATE----- section found"));
    }
    let key_pem = read("the TLS key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            pem("private key", &files.key, &"no PKCS#8, PKCS#1 (RSA) or SEC1 (EC) private key section found")
        }
        other => pem("private key", &files.key, &other),
    })?;
    let pair =
        |e: rustls::Error| TlsError::Pair { cert: files.cert.clone(), key: files.key.clone(), reason: e.to_string() };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(pair)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(pair)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The warning a port without TLS listening beyond loopback gets at start
/// (None: TLS, or loopback only). A function of its own so the decision is
/// tested without binding a public address.
pub fn plaintext_warning(port: &str, addr: SocketAddr, tls: bool) -> Option<String> {
    if tls || addr.ip().is_loopback() {
        return None;
    }
    Some(format!(
        "INSECURE: the {port} port listens on {addr} without TLS, so access tokens, passwords, session cookies and \
         file contents cross the network in clear. Serve TLS with `--tls-cert CERT.pem --tls-key KEY.pem`, or listen \
         on 127.0.0.1 behind a TLS-terminating proxy"
    ))
}

/// A request body that fails when the client sends nothing for `idle`
/// while the handler waits for it. Time the handler spends elsewhere (the
/// bytes wait in the socket) does not count.
pub struct IdleBody {
    inner: Incoming,
    idle: Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    metrics: Metrics,
    /// Set once the body was read to its end (at once for no body).
    ended: Arc<AtomicBool>,
}

/// A request body that stalled.
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body sent nothing for {} s, so the request was dropped; send the body without pauses (the node's --http-body-timeout)",
    .0.as_secs_f64()
)]
pub struct BodyStalled(pub Duration);

impl IdleBody {
    fn new(inner: Incoming, idle: Duration, metrics: Metrics, ended: Arc<AtomicBool>) -> Self {
        ended.store(http_body::Body::is_end_stream(&inner), Ordering::Relaxed);
        Self { inner, idle, timer: None, metrics, ended }
    }
}

impl http_body::Body for IdleBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                this.timer = None;
                if r.is_none() || this.inner.is_end_stream() {
                    this.ended.store(true, Ordering::Relaxed);
                }
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.timer = None;
                        this.metrics.http_timeout("body");
                        Poll::Ready(Some(Err(Box::new(BodyStalled(idle)))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Open connections, over both ports and per source address.
struct Limits {
    max: usize,
    per_address: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; its place is given back on drop.
struct Admitted {
    limits: Arc<Limits>,
    ip: IpAddr,
}

impl Limits {
    /// Admits a connection from `ip`, or says which cap it is over.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Admitted, &'static str> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.0 >= self.max {
            return Err("connection_limit");
        }
        let mine = open.1.entry(ip).or_insert(0);
        if *mine >= self.per_address {
            return Err("address_limit");
        }
        *mine += 1;
        open.0 += 1;
        Ok(Admitted { limits: self.clone(), ip })
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 = open.0.saturating_sub(1);
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

/// What one connection is doing, for its watchdog. Times are milliseconds
/// since `epoch`; `head_since` is 0 when no request head is awaited with
/// bytes pending, else 1 + when the wait began.
struct Activity {
    epoch: Instant,
    last_io: AtomicU64,
    head_since: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        // A new connection owes its first request head at once.
        Self { epoch: Instant::now(), last_io: AtomicU64::new(0), head_since: AtomicU64::new(1), in_flight: 0.into() }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        // Bytes while no request is in flight begin the next request head.
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since.compare_exchange(0, now + 1, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_since.store(0, Ordering::Release);
    }

    fn request_done(&self) {
        self.wrote();
        self.head_since.store(0, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// When the connection times out, and why; None while a request is in
    /// flight (its body has its own timeout).
    fn deadline(&self, cfg: &EdgeConfig) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let at = |ms: u64, d: Duration| self.epoch + Duration::from_millis(ms) + d;
        match self.head_since.load(Ordering::Acquire) {
            0 => Some((at(self.last_io.load(Ordering::Relaxed), cfg.idle_timeout), "idle")),
            since => Some((at(since - 1, cfg.header_timeout), "header")),
        }
    }

    /// Resolves when the connection has timed out, with the phase.
    async fn expired(&self, cfg: &EdgeConfig) -> &'static str {
        loop {
            match self.deadline(cfg) {
                None => tokio::time::sleep(cfg.header_timeout.min(cfg.idle_timeout)).await,
                Some((at, phase)) if Instant::now() >= at => return phase,
                Some((at, _)) => tokio::time::sleep_until(at.into()).await,
            }
        }
    }
}

/// A connection's stream, telling its [`Activity`] about traffic. It holds
/// the connection's place under the caps for as long as the stream lives
/// (a WebSocket upgrade included), and closes it with [`linger`].
struct Tracked<T: IntoTcp> {
    /// Always `Some` until dropped.
    inner: Option<T>,
    activity: Arc<Activity>,
    /// Always `Some` until dropped.
    admitted: Option<Admitted>,
}

impl<T: IntoTcp> Tracked<T> {
    fn new(inner: T, activity: Arc<Activity>, admitted: Admitted) -> Self {
        Tracked { inner: Some(inner), activity, admitted: Some(admitted) }
    }

    fn io(&mut self) -> std::io::Result<Pin<&mut T>> {
        self.inner.as_mut().map(Pin::new).ok_or_else(|| std::io::ErrorKind::NotConnected.into())
    }
}

/// A connection's stream whose TCP socket can be taken back to close it.
trait IntoTcp: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn into_tcp(self) -> tokio::net::TcpStream;
}

impl IntoTcp for tokio::net::TcpStream {
    fn into_tcp(self) -> tokio::net::TcpStream {
        self
    }
}

impl IntoTcp for tokio_rustls::server::TlsStream<tokio::net::TcpStream> {
    fn into_tcp(self) -> tokio::net::TcpStream {
        self.into_inner().0
    }
}

impl<T: IntoTcp> Drop for Tracked<T> {
    fn drop(&mut self) {
        let (Some(io), Some(admitted)) = (self.inner.take(), self.admitted.take()) else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(linger(io.into_tcp(), admitted));
        }
    }
}

/// How long, and how many bytes, a closed connection is drained for.
const LINGER_TIME: Duration = Duration::from_secs(5);
const LINGER_IDLE: Duration = Duration::from_secs(1);
const LINGER_BYTES: usize = 8 << 20;

/// Closes a connection the way nginx's "lingering close" does. A response
/// can be sent before its request's body was read (a refused PUT: 403,
/// 400, a quota refusal), and hyper then ends the connection; closing a
/// socket with unread bytes in it makes the kernel answer with a reset,
/// and a reset that reaches the client before it read the response
/// destroys the response in the client's buffers: the client sees a
/// broken connection, not the error (how often depends on timing, so on
/// load). So the write side is shut first (the client sees the end of the
/// response), and what the client still sends is read and dropped until
/// it closes its side, goes quiet for [`LINGER_IDLE`], or [`LINGER_TIME`]
/// or [`LINGER_BYTES`] run out. The connection keeps its place under the
/// caps meanwhile, so lingering cannot be used to exceed them.
async fn linger(mut tcp: tokio::net::TcpStream, admitted: Admitted) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut buf = vec![0u8; 16 * 1024];
    let mut left = LINGER_BYTES;
    loop {
        let until = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
        match tokio::time::timeout_at(until, tcp.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 && n <= left => left -= n,
            _ => break,
        }
    }
    drop(admitted);
}

impl<T: IntoTcp> AsyncRead for Tracked<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = self.io()?.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl<T: IntoTcp> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = self.io()?.poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = self.io()?.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io()?.poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.io()?.poll_shutdown(cx)
    }
}

/// The edge both ports share: the settings, TLS, and the caps.
pub(crate) struct Edge {
    cfg: EdgeConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: Arc<Limits>,
    metrics: Metrics,
}

/// Boxed errors, as hyper takes them.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the edge serves: a request and its peer's address, to a future of
/// the response. Any such function is one (the REST router through
/// [`axum_handler`], the S3 service); the trait only names the bounds once.
pub(crate) trait Handler: Clone + Send + Sync + 'static {
    /// The response body.
    type Body: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static;
    /// The handler's error.
    type Error: Into<BoxError>;
    /// The response future.
    type Future: Future<Output = Result<http::Response<Self::Body>, Self::Error>> + Send + 'static;

    /// Serves one request from `peer`.
    fn call(&self, peer: SocketAddr, req: http::Request<IdleBody>) -> Self::Future;
}

impl<H, F, B, E> Handler for H
where
    H: Fn(SocketAddr, http::Request<IdleBody>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<http::Response<B>, E>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Body = B;
    type Error = E;
    type Future = F;

    fn call(&self, peer: SocketAddr, req: http::Request<IdleBody>) -> F {
        self(peer, req)
    }
}

impl Edge {
    /// The edge of `cfg`; reads the TLS files (a clear error naming the
    /// file when they cannot be used).
    pub(crate) fn new(cfg: EdgeConfig, metrics: Metrics) -> Result<Edge, TlsError> {
        let tls = cfg.tls.as_ref().map(load_tls).transpose()?.map(tokio_rustls::TlsAcceptor::from);
        let limits = Arc::new(Limits {
            max: cfg.max_connections.max(1),
            per_address: cfg.max_connections_per_address.max(1),
            open: Mutex::new((0, HashMap::new())),
        });
        Ok(Edge { cfg, tls, limits, metrics })
    }

    /// Whether the ports serve TLS.
    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves `handler` on `listener` until `shutdown` resolves; then
    /// stops accepting, asks open connections to finish, and gives them 10
    /// s before they are dropped. `port` names the port in logs.
    pub(crate) async fn serve<H: Handler>(
        self: Arc<Self>,
        port: &'static str,
        listener: tokio::net::TcpListener,
        handler: H,
        shutdown: impl Future<Output = ()> + Send,
    ) {
        if let Ok(addr) = listener.local_addr()
            && let Some(w) = plaintext_warning(port, addr, self.tls())
        {
            tracing::warn!("{w}");
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let conns = tokio_util::task::TaskTracker::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(port, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let admitted = match self.limits.admit(peer.ip()) {
                Ok(a) => a,
                Err(reason) => {
                    // Closed at once: nothing queues behind a full cap.
                    self.metrics.connection_refused(reason);
                    tracing::debug!(port, %peer, reason, "connection refused");
                    drop(tcp);
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let (edge, handler, stop) = (self.clone(), handler.clone(), stop_rx.clone());
            conns.spawn(async move { edge.connection(port, tcp, peer, admitted, handler, stop).await });
        }
        let _ = stop_tx.send(true);
        conns.close();
        // In-flight requests get a grace period, then are dropped (their
        // uploads abort and leave nothing behind).
        let _ = tokio::time::timeout(Duration::from_secs(10), conns.wait()).await;
    }

    /// One connection: the TLS handshake if any, then HTTP/1.1 or HTTP/2
    /// under the watchdog.
    async fn connection<H: Handler>(
        &self,
        port: &'static str,
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        admitted: Admitted,
        handler: H,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let activity = Arc::new(Activity::new());
        match &self.tls {
            None => {
                let io = Tracked::new(tcp, activity.clone(), admitted);
                self.http(port, io, peer, activity, handler, stop).await;
            }
            Some(acceptor) => {
                match tokio::time::timeout(self.cfg.header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let io = Tracked::new(tls, activity.clone(), admitted);
                        self.http(port, io, peer, activity, handler, stop).await;
                    }
                    Ok(Err(e)) => {
                        // Plain HTTP on the TLS port lands here: nothing is
                        // served in clear.
                        self.metrics.connection_refused("tls_handshake");
                        tracing::debug!(port, %peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        self.metrics.http_timeout("tls_handshake");
                        tracing::debug!(port, %peer, "TLS handshake timed out");
                    }
                }
            }
        }
    }

    async fn http<I, H: Handler>(
        &self,
        port: &'static str,
        io: I,
        peer: SocketAddr,
        activity: Arc<Activity>,
        handler: H,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (body_idle, metrics) = (self.cfg.body_idle_timeout, self.metrics.clone());
        let service = {
            let activity = activity.clone();
            hyper::service::service_fn(move |req: http::Request<Incoming>| {
                activity.request_started();
                let done = InFlight(activity.clone());
                let ended = Arc::new(AtomicBool::new(false));
                let http1 = req.version() <= http::Version::HTTP_11;
                let req = req.map(|b| IdleBody::new(b, body_idle, metrics.clone(), ended.clone()));
                let fut = handler.call(peer, req);
                async move {
                    let mut r = fut.await;
                    drop(done);
                    // An answer given before its request's body was read (a
                    // refusal) ends the connection, and says so. The client
                    // may not have sent the body (it waited for a `100
                    // Continue` that never came, as the AWS SDKs do) or may
                    // send it still: either way the next bytes on this
                    // connection cannot be known to start a request, and
                    // hyper, draining the body, would take the next
                    // request's first bytes for it and answer the rest with
                    // a bare 400. `Connection: close` makes the client open
                    // a new connection instead (RFC 9110, 10.1.1).
                    if http1
                        && !ended.load(Ordering::Relaxed)
                        && let Ok(resp) = &mut r
                    {
                        resp.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                    }
                    r
                }
            })
        };
        let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        let conn = builder.serve_connection_with_upgrades(hyper_util::rt::TokioIo::new(io), service);
        let mut conn = std::pin::pin!(conn);
        let mut stopping = *stop.borrow();
        if stopping {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(port, %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                phase = activity.expired(&self.cfg) => {
                    // Dropping the connection closes the socket.
                    self.metrics.http_timeout(phase);
                    tracing::debug!(port, %peer, phase, "connection timed out");
                    return;
                }
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// A request in flight; done when dropped (answered, or abandoned with its
/// connection).
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_done();
    }
}

/// What the REST handler answers with.
type RestAnswer = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

/// The REST router as an edge handler: the source address as axum's
/// `ConnectInfo`.
pub(crate) fn axum_handler(
    router: axum::Router,
) -> impl Fn(SocketAddr, http::Request<IdleBody>) -> RestAnswer + Clone + Send + Sync + 'static {
    move |peer, req| {
        let mut req = req.map(axum::body::Body::new);
        req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        Box::pin(hyper::service::Service::call(&service, req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_beyond_loopback_is_announced() {
        let public: SocketAddr = "0.0.0.0:7780".parse().unwrap_or_else(|_| unreachable!());
        let w = plaintext_warning("API", public, false).unwrap_or_default();
        assert!(w.contains("0.0.0.0:7780") && w.contains("in clear"), "{w}");
        assert!(w.contains("--tls-cert") && w.contains("--tls-key"), "the warning says how to fix it: {w}");
        let lan: SocketAddr = "192.168.1.20:9000".parse().unwrap_or_else(|_| unreachable!());
        assert!(plaintext_warning("S3", lan, false).is_some_and(|w| w.contains("S3 port")));
        let v6: SocketAddr = "[::]:7780".parse().unwrap_or_else(|_| unreachable!());
        assert!(plaintext_warning("API", v6, false).is_some());
        // TLS, or loopback only: nothing to say.
        assert_eq!(plaintext_warning("API", public, true), None);
        for local in ["127.0.0.1:7780", "[::1]:7780"] {
            let a: SocketAddr = local.parse().unwrap_or_else(|_| unreachable!());
            assert_eq!(plaintext_warning("API", a, false), None, "{local}");
        }
    }

    #[test]
    fn caps_count_per_address_and_in_total() {
        let limits = Arc::new(Limits { max: 3, per_address: 2, open: Mutex::new((0, HashMap::new())) });
        let a: IpAddr = "10.0.0.1".parse().unwrap_or_else(|_| unreachable!());
        let b: IpAddr = "10.0.0.2".parse().unwrap_or_else(|_| unreachable!());
        let a1 = limits.admit(a).ok();
        let a2 = limits.admit(a).ok();
        assert!(a1.is_some() && a2.is_some());
        assert_eq!(limits.admit(a).err(), Some("address_limit"));
        let b1 = limits.admit(b).ok();
        assert!(b1.is_some());
        assert_eq!(limits.admit(b).err(), Some("connection_limit"));
        drop(a1);
        assert!(limits.admit(b).is_ok(), "a closed connection gives its place back");
    }

    #[test]
    fn bad_tls_files_are_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let missing = TlsFiles { cert: dir.path().join("nope.pem"), key: dir.path().join("key.pem") };
        let e = load_tls(&missing).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("nope.pem") && e.contains("cannot read the TLS certificate"), "{e}");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap_or_else(|_| unreachable!());
        let e = load_tls(&TlsFiles { cert: junk.clone(), key: junk.clone() }).err().map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains("junk.pem") && e.contains("not a PEM certificate chain")),
            "{e:?}"
        );
        // A certificate with another certificate's key.
        let one = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap_or_else(|_| unreachable!());
        let two = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap_or_else(|_| unreachable!());
        let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
        std::fs::write(&cert, one.cert.pem()).unwrap_or_else(|_| unreachable!());
        std::fs::write(&key, one.key_pair.serialize_pem()).unwrap_or_else(|_| unreachable!());
        assert!(load_tls(&TlsFiles { cert: cert.clone(), key: key.clone() }).is_ok());
        std::fs::write(&key, "").unwrap_or_else(|_| unreachable!());
        let e = load_tls(&TlsFiles { cert: cert.clone(), key: key.clone() }).err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("key.pem") && e.contains("not a PEM private key")), "{e:?}");
        std::fs::write(&key, two.key_pair.serialize_pem()).unwrap_or_else(|_| unreachable!());
        let e = load_tls(&TlsFiles { cert, key }).err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|e| e.contains("cannot use the certificate")), "{e:?}");
    }
}
