//! Files over plain HTTP: one-request upload, ranged download and metadata.
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | POST | /v1/files?name=&k=&m= | the body is the file; stored encrypted → 201 `{cid, size, ...}` |
//! | GET | /v1/files/{cid}/content | the plaintext; `Range`, `ETag`, `If-None-Match` |
//! | GET | /v1/files/{cid}/metadata | name, content type, tags, size |
//! | PATCH | /v1/files/{cid}/metadata | `{name?, content_type?, tags?}`; `null` clears |
//!
//! HTTP clients cannot encrypt, so an upload runs the pipeline server-side
//! exactly like an S3 PUT ([`crate::objects`]): the body is cut into chunks
//! as it arrives (never held whole), each sealed with the file's random data
//! key, which is wrapped for the gateway's REST key ([`crate::keys`]). The
//! file is pinned, and its row written, only after the whole body arrived:
//! a client that disconnects, or sends less than its `Content-Length`,
//! aborts the node's upload session, and GC reclaims whatever shards were
//! written.
//!
//! A refusal (400, 413, 507, 429) is answered before the body is read
//! when the client asked `Expect: 100-continue`; otherwise up to 8 MiB of
//! the rest of the body is read and discarded first, so that a client still
//! sending sees the error instead of a reset connection.
//!
//! Downloads are served by [`crate::download`] (ranges, conditional
//! requests, progress events), as share links are.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datamesh_api::{ErrorBody, ErrorCode, FileMetadata, MetadataPatch, UploadQuery, Uploaded};
use datamesh_core::clock::unix_secs;
use datamesh_core::{Cid, Erasure};
use futures::StreamExt;

use crate::download::{PROGRESS_BYTES, Via, open, serve};
use crate::error::{ApiError, ApiResult, parse_cid};
use crate::events::Event;
use crate::index::FileRow;
use crate::objects::{BodyError, OpenFileError, WriteError, WriteOptions};
use crate::ownership;
use crate::state::AppState;
use datamesh_services::Principal;
use datamesh_services::perms::Action;

/// Longest file name.
pub const MAX_NAME: usize = 1024;
/// Longest content type.
pub const MAX_CONTENT_TYPE: usize = 255;
/// Most tags per file.
pub const MAX_TAGS: usize = 64;
/// Longest tag key (`[A-Za-z0-9._:-]`).
pub const MAX_TAG_KEY: usize = 128;
/// Longest tag value.
pub const MAX_TAG_VALUE: usize = 1024;
/// Largest metadata PATCH body.
pub const MAX_METADATA_BODY: usize = 128 * 1024;

/// Upload progress events at most every this long (or every
/// [`PROGRESS_BYTES`]).
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

pub(crate) fn check_name(name: &str) -> ApiResult<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::bad(format!("name must be 1 to {MAX_NAME} bytes without control characters")));
    }
    Ok(())
}

pub(crate) fn check_content_type(ct: &str) -> ApiResult<()> {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b));
    let (essence, params) = ct.split_once(';').unwrap_or((ct, ""));
    let ok = ct.len() <= MAX_CONTENT_TYPE
        && essence.split_once('/').is_some_and(|(t, s)| token(t.trim()) && token(s.trim()))
        && params.bytes().all(|b| (0x20..0x7f).contains(&b));
    if !ok {
        return Err(ApiError::bad(format!(
            "content type `{}` is not a MIME type (type/subtype[; params], at most {MAX_CONTENT_TYPE} bytes)",
            ct.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

fn check_tag(k: &str, v: &str) -> ApiResult<()> {
    if k.is_empty() || k.len() > MAX_TAG_KEY || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) {
        return Err(ApiError::bad(format!("tag key `{k}` must be 1 to {MAX_TAG_KEY} bytes of A-Z a-z 0-9 . _ : -")));
    }
    if v.len() > MAX_TAG_VALUE || v.chars().any(char::is_control) {
        return Err(ApiError::bad(format!(
            "tag `{k}`: values are at most {MAX_TAG_VALUE} bytes without control characters"
        )));
    }
    Ok(())
}

/// A body larger than the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("the file is larger than this node's limit of {0} bytes (--max-file-size)")]
struct TooLarge(u64);

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Body(err) => match err.downcast::<TooLarge>() {
            Ok(t) => ApiError::new(ErrorCode::PayloadTooLarge, t.to_string()),
            Err(other) => ApiError::new(
                ErrorCode::IncompleteBody,
                format!("the upload's body failed before its end ({other}); nothing was stored"),
            ),
        },
        WriteError::Digest(m) => ApiError::new(ErrorCode::IncompleteBody, m),
        WriteError::Node(n) => n.into(),
        WriteError::Internal(m) => ApiError::new(ErrorCode::Internal, m),
    }
}

#[utoipa::path(
    post,
    path = "/v1/files",
    tag = "files",
    params(UploadQuery, ("Content-Type" = Option<String>, Header, description = "Kept as the file's content type")),
    request_body(content = Vec<u8>, description = "The file's bytes, streamed", content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "Stored and pinned", body = Uploaded),
        (status = 400, description = "Bad request, or the body ended early (nothing stored)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 413, description = "Larger than --max-file-size", body = ErrorBody),
        (status = 429, description = "Too many uploads", body = ErrorBody),
        (status = 507, description = "Not enough space in the store", body = ErrorBody),
    )
)]
pub(crate) async fn upload_file(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let declared: Option<u64> =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let expects_continue = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));
    let left = Arc::new(std::sync::Mutex::new(None));
    let body = Leftover { inner: Some(body.into_data_stream()), left: left.clone(), received: 0, polled: false };
    // The declared size counts against the caller's quota before a byte is
    // read: an upload over it is refused with nothing stored or counted.
    let answer = match ownership::reserve(&st, &p, declared.unwrap_or(0)).await {
        Err(e) => Err(e),
        Ok(mut reservation) => match upload(&st, query, &headers, declared, body, ownership::upload_owner(&p)).await {
            Ok((resp, cid, size)) => {
                let grown = size.saturating_sub(reservation.bytes);
                let settled = match st.services.extend(&mut reservation, grown).await {
                    Ok(()) => st.services.commit(reservation).await.map_err(crate::accounts::quota_error),
                    Err(e) => {
                        ownership::release(&st, reservation).await;
                        Err(crate::accounts::quota_error(e))
                    }
                };
                match settled {
                    Ok(()) => match ownership::record_owner(&st, &p, cid).await {
                        Ok(()) => Ok(resp),
                        Err(e) => Err(e),
                    },
                    Err(e) => {
                        // Over quota after all (no Content-Length): not kept.
                        if let Ok(g) = st.gateway() {
                            let _ = g.node().unpin(cid).await;
                        }
                        Err(e)
                    }
                }
            }
            Err(e) => {
                ownership::release(&st, reservation).await;
                Err(e)
            }
        },
    };
    if answer.is_err() {
        drain(&left, declared, expects_continue).await;
    }
    answer
}

/// Most bytes of a refused upload's body read and discarded before the
/// error is sent, and for how long at most.
const DRAIN_MAX: u64 = 8 << 20;
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// What is left of a refused upload's body: (stream, bytes read, whether polled).
type Left = std::sync::Mutex<Option<(axum::body::BodyDataStream, u64, bool)>>;

/// The request body as the pipeline reads it. Dropped before its end (the
/// upload was refused), it leaves the rest of the stream in `left`.
struct Leftover {
    inner: Option<axum::body::BodyDataStream>,
    left: Arc<Left>,
    received: u64,
    polled: bool,
}

impl futures::Stream for Leftover {
    type Item = Result<Bytes, axum::Error>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.polled = true;
        let Some(inner) = self.inner.as_mut() else { return std::task::Poll::Ready(None) };
        let r = inner.poll_next_unpin(cx);
        match &r {
            std::task::Poll::Ready(Some(Ok(b))) => self.received += b.len() as u64,
            std::task::Poll::Ready(None) | std::task::Poll::Ready(Some(Err(_))) => self.inner = None,
            std::task::Poll::Pending => {}
        }
        r
    }
}

impl Drop for Leftover {
    fn drop(&mut self) {
        if let Some(s) = self.inner.take() {
            *self.left.lock().unwrap_or_else(|p| p.into_inner()) = Some((s, self.received, self.polled));
        }
    }
}

/// Reads and discards what is left of a refused upload's body, when that
/// is at most [`DRAIN_MAX`] bytes, so that a client still sending reads the
/// error instead of a broken connection. A client that asked `Expect:
/// 100-continue` and was answered before sending anything is not drained:
/// it waits for that answer and sends nothing.
async fn drain(left: &Left, declared: Option<u64>, expects_continue: bool) {
    let Some((mut s, received, polled)) = left.lock().unwrap_or_else(|p| p.into_inner()).take() else { return };
    if (expects_continue && !polled) || declared.is_some_and(|d| d.saturating_sub(received) > DRAIN_MAX) {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, async {
        let mut n = 0u64;
        while let Some(Ok(b)) = s.next().await {
            n += b.len() as u64;
            if n > DRAIN_MAX {
                break;
            }
        }
    })
    .await;
}

async fn upload(
    st: &AppState,
    query: Result<Query<UploadQuery>, QueryRejection>,
    headers: &HeaderMap,
    declared: Option<u64>,
    body: Leftover,
    owner: Option<String>,
) -> ApiResult<(Response, Cid, u64)> {
    let Query(q) = query.map_err(|e| ApiError::bad(e.body_text()))?;
    let gw = st.gateway()?;
    if let Some(n) = &q.name {
        check_name(n)?;
    }
    let content_type = match headers.get(header::CONTENT_TYPE) {
        None => None,
        Some(v) => {
            let ct = v.to_str().map_err(|_| ApiError::bad("Content-Type is not ASCII"))?.trim().to_string();
            check_content_type(&ct)?;
            Some(ct)
        }
    };
    let d = gw.node().config().erasure();
    let erasure = Erasure { k: q.k.unwrap_or(d.k), m: q.m.unwrap_or(d.m) };
    if erasure.k == 0 || erasure.total() > datamesh_core::limits::MAX_TOTAL_SHARDS {
        return Err(ApiError::bad(format!(
            "erasure {}+{} is not supported: k must be ≥ 1 and k+m ≤ {}",
            erasure.k,
            erasure.m,
            datamesh_core::limits::MAX_TOTAL_SHARDS
        )));
    }
    let limit = gw.config().max_file_size;
    if let (Some(len), Some(max)) = (declared, limit)
        && len > max
    {
        return Err(write_error(WriteError::Body(Box::new(TooLarge(max)))));
    }
    if let Some(len) = declared {
        check_room(gw, len, erasure).await?;
    }

    let upload = hex::encode(rand::random::<[u8; 8]>());
    let events = gw.events().clone();
    let (up, name) = (upload.clone(), q.name.clone());
    let mut received = 0u64;
    let mut reported = (0u64, Instant::now());
    let stream = body.map(move |r| {
        let b = r.map_err(|e| -> BodyError { Box::new(e) })?;
        received += b.len() as u64;
        if let Some(max) = limit
            && received > max
        {
            return Err(Box::new(TooLarge(max)) as BodyError);
        }
        if received - reported.0 >= PROGRESS_BYTES || reported.1.elapsed() >= PROGRESS_EVERY {
            reported = (received, Instant::now());
            events.publish(Event::UploadProgress {
                upload: up.clone(),
                name: name.clone(),
                bytes: received,
                total: declared,
            });
        }
        Ok(b)
    });
    let rest = gw.keys().rest();
    let opts = WriteOptions { name: q.name.clone(), erasure: Some(erasure), keep_empty: true, owner };
    let written =
        gw.pipeline().write_with(&rest.user, Box::pin(stream), (), opts, |()| Ok(())).await.map_err(write_error)?;
    let cid = written.manifest.ok_or_else(|| ApiError::internal("the pipeline made no file"))?;
    let now = unix_secs() as i64;
    let row = FileRow {
        cid: cid.to_string(),
        key_id: Some(rest.id.clone()),
        name: q.name.clone(),
        content_type: content_type.clone(),
        tags: "{}".into(),
        size: written.size,
        created: now,
        updated: now,
    };
    if let Err(e) = gw.index().run(move |ix| ix.put_file(&row)).await {
        // Without its row nobody could find the key: do not keep the file.
        let _ = gw.node().unpin(cid).await;
        return Err(ApiError::index(e));
    }
    gw.events().publish(Event::UploadCompleted {
        upload: upload.clone(),
        cid: cid.to_string(),
        size: written.size,
        name: q.name.clone(),
    });
    gw.events().publish(Event::FileAdded {
        cid: cid.to_string(),
        size: written.size,
        name: q.name.clone(),
        source: "rest".into(),
    });
    let body = Uploaded {
        cid: cid.to_string(),
        size: written.size,
        name: q.name,
        content_type,
        k: erasure.k,
        m: erasure.m,
        upload,
    };
    let location = HeaderValue::from_str(&format!("/v1/files/{cid}")).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(((StatusCode::CREATED, [(header::LOCATION, location)], Json(body)).into_response(), cid, written.size))
}

/// Refuses at once a body that cannot fit in a standalone node's store
/// (its shards all stay here). With peers, the shards spread and the store
/// answers as they arrive.
async fn check_room(gw: &crate::Gateway, len: u64, e: Erasure) -> ApiResult<()> {
    if !gw.node().peers().await.is_empty() {
        return Ok(());
    }
    let st = gw.node().status().await?;
    let free = st.store.capacity_bytes.saturating_sub(st.store.used_bytes);
    // Stored size ≈ len × (k+m)/k; compression may shrink it, so this only
    // refuses what cannot fit even at 2:1.
    let need = (len as u128 * e.total() as u128 / e.k.max(1) as u128 / 2) as u64;
    if need > free {
        return Err(ApiError::new(
            ErrorCode::InsufficientStorage,
            format!(
                "a {len}-byte file needs about {} bytes of shards with {}+{} coding, and the store has {free} bytes free; raise --capacity or free space",
                len as u128 * e.total() as u128 / e.k.max(1) as u128,
                e.k,
                e.m
            ),
        ));
    }
    Ok(())
}

#[utoipa::path(
    get,
    path = "/v1/files/{cid}/content",
    tag = "files",
    params(
        ("cid" = String, Path, description = "A file CID (manifest or UnixFS)"),
        ("Range" = Option<String>, Header, description = "`bytes=a-b`, `bytes=a-` or `bytes=-n`"),
        ("If-None-Match" = Option<String>, Header, description = "ETag (the manifest CID, quoted)"),
    ),
    responses(
        (status = 200, description = "The whole file", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "The range asked for, with Content-Range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 304, description = "Not modified"),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 403, description = "Encrypted for a key the gateway does not hold", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 416, description = "Range not satisfiable", body = ErrorBody),
    )
)]
pub(crate) async fn file_content(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    method: axum::http::Method,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Read, cid).await?;
    let (file, row) = open(gw, cid).await?;
    let head = method == axum::http::Method::HEAD;
    // The caller's monthly transfer is charged before a byte is sent, for
    // the bytes this response carries (a range: its length; a HEAD or a
    // 304: nothing).
    let charge = async |bytes: u64, size: u64| {
        let bytes = bytes.min(size);
        crate::quota_alerts::charge_download(gw.events(), &st.services, &p, bytes)
            .await
            .map_err(crate::accounts::quota_error)
    };
    serve(gw, file, row, &headers, head, Via { share: None }, charge).await
}

async fn metadata_of(gw: &crate::Gateway, cid: Cid) -> ApiResult<FileMetadata> {
    let (mcid, manifest) = gw.node().manifest(cid).await?;
    let key = mcid.to_string();
    let k2 = key.clone();
    let row = gw.index().run(move |ix| ix.file(&k2)).await.map_err(ApiError::index)?;
    let readable = match &manifest.encryption {
        None => true,
        Some(_) => match gw.pipeline().open_file(mcid, &gw.keys().all_users()).await {
            Ok(_) => true,
            Err(OpenFileError::NotOurs(_)) => false,
            Err(OpenFileError::Node(e)) => return Err(e.into()),
        },
    };
    let pin_name = {
        let store = gw.node().store().clone();
        tokio::task::spawn_blocking(move || store.pin_info(&mcid).ok().flatten().and_then(|p| p.name))
            .await
            .unwrap_or(None)
    };
    Ok(FileMetadata {
        cid: key,
        size: manifest.size,
        name: row.as_ref().map_or(pin_name, |r| r.name.clone()),
        content_type: row.as_ref().and_then(|r| r.content_type.clone()),
        tags: row.as_ref().and_then(|r| serde_json::from_str(&r.tags).ok()).unwrap_or_default(),
        encrypted: manifest.encryption.is_some(),
        readable,
        created_at: row.as_ref().map(|r| r.created),
        updated_at: row.as_ref().map(|r| r.updated),
    })
}

#[utoipa::path(
    get,
    path = "/v1/files/{cid}/metadata",
    tag = "files",
    params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")),
    responses(
        (status = 200, description = "The file's metadata", body = FileMetadata),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub(crate) async fn get_metadata(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Read, cid).await?;
    Ok(Json(metadata_of(gw, cid).await?).into_response())
}

/// A PATCH body as [`MetadataPatch`], each refusal naming the field (serde's
/// own messages would not say what a field may hold).
fn parse_patch(body: &serde_json::Value) -> ApiResult<MetadataPatch> {
    let obj = body.as_object().ok_or_else(|| ApiError::bad("the body must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !["name", "content_type", "tags"].contains(&k.as_str())) {
        return Err(ApiError::bad(format!("unknown field `{k}`; the fields are name, content_type and tags")));
    }
    // A field: absent, null, or a value.
    let field = |name: &str| match obj.get(name) {
        None => Ok(None),
        Some(serde_json::Value::Null) => Ok(Some(None)),
        Some(serde_json::Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(ApiError::bad(format!("`{name}` must be a string or null"))),
    };
    let tags = match obj.get("tags") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            serde_json::from_value(v.clone())
                .map_err(|_| ApiError::bad("`tags` must be an object of strings (or null to remove a tag)"))?,
        ),
    };
    Ok(MetadataPatch { name: field("name")?, content_type: field("content_type")?, tags })
}

#[utoipa::path(
    patch,
    path = "/v1/files/{cid}/metadata",
    tag = "files",
    params(("cid" = String, Path, description = "A file CID (manifest or UnixFS)")),
    request_body(content = MetadataPatch, content_type = "application/json"),
    responses(
        (status = 200, description = "The metadata after the change", body = FileMetadata),
        (status = 400, description = "Bad request (names the field and its bound)", body = ErrorBody),
        (status = 401, description = "Missing or wrong token", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
    )
)]
pub(crate) async fn patch_metadata(
    State(st): State<Arc<AppState>>,
    axum::Extension(p): axum::Extension<Principal>,
    Path(cid): Path<String>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<Response> {
    let gw = st.gateway()?;
    let cid = parse_cid(&cid)?;
    ownership::require_file(&st, &p, Action::Write, cid).await?;
    let Json(body) = body.map_err(|e| ApiError::bad(format!("the body must be a JSON object: {}", e.body_text())))?;
    let MetadataPatch { name, content_type, tags } = parse_patch(&body)?;
    if let Some(Some(n)) = &name {
        check_name(n)?;
    }
    if let Some(Some(c)) = &content_type {
        check_content_type(c)?;
    }
    let (mcid, manifest) = gw.node().manifest(cid).await?;
    let key = mcid.to_string();
    let now = unix_secs() as i64;
    let size = manifest.size;
    gw.index()
        .run(move |ix| {
            // Read-modify-write under the index's single connection: two
            // PATCHes at once apply one after the other.
            let mut row = ix.file(&key)?.unwrap_or(FileRow {
                cid: key.clone(),
                key_id: None,
                name: None,
                content_type: None,
                tags: "{}".into(),
                size,
                created: now,
                updated: now,
            });
            if let Some(n) = name {
                row.name = n;
            }
            if let Some(c) = content_type {
                row.content_type = c;
            }
            let mut current: BTreeMap<String, String> = serde_json::from_str(&row.tags).unwrap_or_default();
            for (k, v) in tags.unwrap_or_default() {
                match v {
                    Some(v) => current.insert(k, v),
                    None => current.remove(&k),
                };
            }
            if current.len() > MAX_TAGS {
                return Ok(Err(ApiError::bad(format!("a file has at most {MAX_TAGS} tags"))));
            }
            if let Some(Err(e)) = current.iter().map(|(k, v)| check_tag(k, v)).find(Result::is_err) {
                return Ok(Err(e));
            }
            row.tags = serde_json::to_string(&current).unwrap_or_else(|_| "{}".into());
            row.updated = now;
            ix.put_file(&row)?;
            Ok(Ok(()))
        })
        .await
        .map_err(ApiError::index)??;
    Ok(Json(metadata_of(gw, mcid).await?).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_values_are_bounded() {
        assert!(check_content_type("image/png").is_ok());
        assert!(check_content_type("text/plain; charset=utf-8").is_ok());
        assert!(check_content_type("png").is_err());
        assert!(check_content_type("text/plain\r\nX-Evil: 1").is_err());
        assert!(check_content_type(&format!("a/{}", "b".repeat(300))).is_err());
        assert!(check_name("report.pdf").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a\nb").is_err());
        assert!(check_tag("project:x-1", "v").is_ok());
        assert!(check_tag("bad key", "v").is_err());
        assert!(check_tag("k", &"v".repeat(MAX_TAG_VALUE + 1)).is_err());
    }
}
