//! Serving a file's plaintext, for `GET /v1/files/{cid}/content`
//! ([`crate::files`]) and share links (`GET /v1/s/{id}`, [`crate::shares`]):
//! opening the file with a key the gateway holds, conditional and range
//! requests, and a body streamed through the pipeline's bounded reader with
//! `download.progress` events.
//!
//! Downloads fetch only the chunks a range covers. The gateway can open
//! files uploaded through `POST /v1/files`, S3 objects' files, and public
//! files; a file encrypted for someone else's key (the CLI's) is refused
//! with 403 `not_decryptable`, saying so.
//!
//! **Ranges** (RFC 9110): one `bytes=a-b`, `bytes=a-` or `bytes=-n` range
//! is answered 206 with `Content-Range`; a range starting past the end (or
//! `-0`, or any range of an empty file) is 416 with `Content-Range: bytes
//! */size`; several ranges, another unit, or a malformed header are
//! ignored (200, the whole file), as the RFC allows. `If-Range` with
//! another ETag also gives the whole file. The ETag is the manifest CID.
//! A HEAD answers the same headers and sends (and counts) nothing.
//!
//! **Active content**: a file's content type is whatever its uploader
//! said, and it is served from the API's own origin (where the session
//! cookie lives). Every download carries `X-Content-Type-Options: nosniff`
//! and `Content-Security-Policy: sandbox; default-src 'none'`, and only
//! passive types (plain text, raster images, audio, video, PDF, JSON,
//! octet streams) are served inline: anything else (HTML, SVG, XML,
//! scripts, ...) is an attachment, saved rather than rendered.

use std::ops::Range;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datamesh_api::ErrorCode;
use datamesh_core::Cid;
use futures::StreamExt;

use crate::error::{ApiError, ApiResult};
use crate::events::Event;
use crate::index::FileRow;
use crate::objects::{OpenFile, OpenFileError};

/// Progress events at most every this many bytes (uploads also every
/// half second).
pub(crate) const PROGRESS_BYTES: u64 = 4 << 20;

fn open_file_error(e: OpenFileError) -> ApiError {
    match e {
        OpenFileError::Node(n) => n.into(),
        e @ OpenFileError::NotOurs(_) => ApiError::new(ErrorCode::NotDecryptable, e.to_string()),
    }
}

/// Opens a file for reading with the key its row names, or any key the
/// gateway holds.
pub(crate) async fn open(gw: &crate::Gateway, cid: Cid) -> ApiResult<(OpenFile, Option<FileRow>)> {
    let (mcid, _) = gw.node().manifest(cid).await?;
    let key = mcid.to_string();
    let row = gw.index().run(move |ix| ix.file(&key)).await.map_err(ApiError::index)?;
    let users = match row.as_ref().and_then(|r| r.key_id.as_deref()).and_then(|k| gw.keys().owner(k)) {
        Some(u) => vec![u],
        None => gw.keys().all_users(),
    };
    let f = gw.pipeline().open_file(mcid, &users).await.map_err(open_file_error)?;
    Ok((f, row))
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole file (no range, or one to ignore).
    Full,
    /// One satisfiable range.
    Part(Range<u64>),
    /// No byte of the file is in the range (416).
    Unsatisfiable,
}

/// Parses a `Range` header value (RFC 9110 §14.1.2) for a file of `size` bytes.
pub fn parse_range(value: &str, size: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return RangeRequest::Full };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else { return RangeRequest::Full };
    let (a, b) = (a.trim(), b.trim());
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if a.is_empty() {
        let Some(n) = digits(b).then(|| b.parse::<u64>().ok()).flatten() else { return RangeRequest::Full };
        if n == 0 || size == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Part(size - n.min(size)..size);
    }
    let Some(start) = digits(a).then(|| a.parse::<u64>().ok()).flatten() else { return RangeRequest::Full };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match digits(b).then(|| b.parse::<u64>().ok()).flatten() {
            Some(e) if e >= start => e,
            _ => return RangeRequest::Full,
        }
    };
    if start >= size {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Part(start..end.saturating_add(1).min(size))
}

/// Whether a browser may render `content_type` inline: only types that
/// cannot run script or load other content.
fn passive(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    matches!(
        essence.as_str(),
        "text/plain"
            | "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/avif"
            | "application/pdf"
            | "application/json"
            | "application/octet-stream"
    ) || ((essence.starts_with("audio/") || essence.starts_with("video/")) && !essence.contains("xml"))
}

/// The CSP every download carries: a document rendered from a download
/// runs in a unique origin, with no script, plugin or fetch.
pub(crate) const DOWNLOAD_CSP: &str = "sandbox; default-src 'none'";

/// A `Content-Disposition` for a download: `inline` for passive content,
/// `attachment` otherwise, naming the file (safe whatever the name holds).
fn disposition(name: Option<&str>, inline: bool) -> Option<HeaderValue> {
    let kind = if inline { "inline" } else { "attachment" };
    let Some(name) = name else { return (!inline).then(|| HeaderValue::from_static("attachment")) };
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let ascii: String =
        base.chars().map(|c| if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' { c } else { '_' }).collect();
    let mut encoded = String::new();
    for b in base.bytes() {
        if b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&b) {
            encoded.push(b as char);
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")).ok()
}

/// Where a download came from, for its events.
pub(crate) struct Via {
    pub(crate) share: Option<String>,
}

/// Answers a download of `file`: conditional and range handling, headers,
/// and a body streamed through the bounded reader (none for a HEAD).
/// `count(bytes, size)` runs once the request is known to send content
/// (not 304, not 416) with the bytes it will send (0 for a HEAD) and the
/// file's size; its error is the answer instead. A share link's transfer
/// cut off before its end gives the unsent bytes back to the link.
pub(crate) async fn serve(
    gw: &crate::Gateway,
    file: OpenFile,
    row: Option<FileRow>,
    headers: &HeaderMap,
    head: bool,
    via: Via,
    count: impl AsyncFnOnce(u64, u64) -> ApiResult<()>,
) -> ApiResult<Response> {
    let size = file.size;
    let etag = format!("\"{}\"", file.cid);
    let h = |n: header::HeaderName| headers.get(n).and_then(|v| v.to_str().ok());
    if let Some(inm) = h(header::IF_NONE_MATCH)
        && inm.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.trim_start_matches("W/") == etag
        })
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let if_range_ok = h(header::IF_RANGE).is_none_or(|v| v.trim() == etag);
    let range = match h(header::RANGE) {
        Some(r) if if_range_ok => parse_range(r, size),
        _ => RangeRequest::Full,
    };
    let range = match range {
        RangeRequest::Unsatisfiable => {
            let mut r = ApiError::new(
                ErrorCode::RangeNotSatisfiable,
                format!("the range asked for starts past the end of this {size}-byte file"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                r.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return Ok(r);
        }
        RangeRequest::Full => None,
        RangeRequest::Part(r) => Some(r),
    };
    let span = range.clone().unwrap_or(0..size);
    let len = span.end - span.start;
    // An empty file's whole download sends no byte but is one download.
    count(if head { 0 } else { len.max(1) }, size).await?;
    let content_type = row.as_ref().and_then(|r| r.content_type.clone());
    let content_type = content_type.as_deref().unwrap_or("application/octet-stream");
    let name = row.as_ref().and_then(|r| r.name.clone());
    let mut resp = Response::builder()
        .status(if range.is_some() { StatusCode::PARTIAL_CONTENT } else { StatusCode::OK })
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, &etag)
        .header(header::CONTENT_LENGTH, len)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(header::CONTENT_SECURITY_POLICY, DOWNLOAD_CSP);
    if let Some(r) = &range {
        resp = resp.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1));
    }
    if let Some(d) = disposition(name.as_deref(), passive(content_type)) {
        resp = resp.header(header::CONTENT_DISPOSITION, d);
    }
    if head {
        return resp.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string()));
    }
    let cid = file.cid.to_string();
    let stream = gw.pipeline().read_file(file, span);
    let refund = via.share.clone().map(|id| Refund { index: gw.index().clone(), id, size });
    let body = progress(stream, gw.events().clone(), cid, via.share, len, refund);
    resp.body(Body::from_stream(body)).map_err(|e| ApiError::internal(e.to_string()))
}

/// Where a share link's unsent bytes go back when its transfer is cut off.
struct Refund {
    index: crate::index::Index,
    id: String,
    size: u64,
}

/// Publishes `download.progress` as `stream` is sent: every 4 MiB, and
/// once at the end — when the last byte went (`done: true`) or when the
/// response is dropped early (client gone; `done: false`). The end is
/// seen on the last chunk, not at the stream's end: with a Content-Length
/// the server stops polling once it has sent that many bytes.
fn progress(
    stream: impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
    events: crate::events::EventBus,
    cid: String,
    share: Option<String>,
    total: u64,
    refund: Option<Refund>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut t = Progress { events, cid, share, total, sent: 0, reported: 0, finished: false, refund };
    stream.map(move |r| {
        if let Ok(b) = &r {
            t.sent += b.len() as u64;
            if t.sent >= t.total {
                t.finish();
            } else if t.sent - t.reported >= PROGRESS_BYTES {
                t.reported = t.sent;
                t.publish(false);
            }
        }
        r
    })
}

/// One download's progress; reports its end when dropped, if not before.
struct Progress {
    events: crate::events::EventBus,
    cid: String,
    share: Option<String>,
    total: u64,
    sent: u64,
    reported: u64,
    finished: bool,
    refund: Option<Refund>,
}

impl Progress {
    fn publish(&self, done: bool) {
        self.events.publish(Event::DownloadProgress {
            cid: self.cid.clone(),
            share: self.share.clone(),
            bytes: self.sent,
            total: self.total,
            done,
        });
    }

    fn finish(&mut self) {
        if !self.finished {
            self.finished = true;
            self.publish(self.sent >= self.total);
            let unsent = self.total.saturating_sub(self.sent);
            if let Some(r) = self.refund.take()
                && unsent > 0
                && let Ok(rt) = tokio::runtime::Handle::try_current()
            {
                rt.spawn_blocking(move || {
                    if let Err(e) = r.index.refund_share_bytes(&r.id, unsent, r.size) {
                        tracing::warn!(error = %e, "cannot give a cut-off share download's bytes back");
                    }
                });
            }
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_follow_rfc_9110() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-9", 100), Part(0..10));
        assert_eq!(parse_range("bytes=90-", 100), Part(90..100));
        assert_eq!(parse_range("bytes=90-1000", 100), Part(90..100));
        assert_eq!(parse_range("bytes=-10", 100), Part(90..100));
        assert_eq!(parse_range("bytes=-1000", 100), Part(0..100));
        assert_eq!(parse_range("bytes=99-99", 100), Part(99..100));
        assert_eq!(parse_range("bytes=100-", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=-5", 0), Unsatisfiable);
        // Ignored, as the RFC allows: the whole file.
        assert_eq!(parse_range("bytes=5-1", 100), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Full);
        assert_eq!(parse_range("items=0-1", 100), Full);
        assert_eq!(parse_range("bytes=a-b", 100), Full);
        assert_eq!(parse_range("bytes=+1-2", 100), Full);
    }

    #[test]
    fn content_disposition_survives_hostile_names() {
        let d = disposition(Some("a\"b\\c/é.txt"), true).unwrap();
        let s = d.to_str().unwrap();
        assert!(s.starts_with("inline; filename=\"_.txt\""), "{s}");
        assert!(s.ends_with("filename*=UTF-8''%C3%A9.txt"), "{s}");
        assert_eq!(disposition(None, false).unwrap(), "attachment");
        assert!(disposition(None, true).is_none());
    }

    #[test]
    fn only_passive_types_render_inline() {
        for t in ["text/plain; charset=utf-8", "image/png", "video/mp4", "application/octet-stream", "Image/JPEG"] {
            assert!(passive(t), "{t}");
        }
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/javascript",
            "text/css",
            "",
            "nonsense",
        ] {
            assert!(!passive(t), "{t}");
        }
    }
}
