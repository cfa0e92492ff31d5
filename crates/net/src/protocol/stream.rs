//! Reading and writing messages on a stream: bounded frame reads, bodies
//! streamed in pieces into a sink or out of a source.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Reads one frame with every bound checked.
///
/// Errors of kind `InvalidData` are protocol violations (the peer's fault);
/// other kinds are transport failures (EOF, reset) and are not held against it.
pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    Ok(read_frame_within(io, None).await?.0)
}

/// [`read_frame`], first taking the frame's size out of `budget` when there
/// is one. The permit comes back with the frame and returns the bytes to the
/// budget when dropped; a frame waits while the budget is spent.
pub(crate) async fn read_frame_within<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: Option<&InboundBudget>,
) -> io::Result<(Vec<u8>, Option<OwnedSemaphorePermit>)> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if !(2..=MAX_FRAME).contains(&len) {
        return Err(invalid(format!("frame of {len} bytes announced; the limit is {MAX_FRAME}")));
    }
    let permit = match budget {
        Some(b) => Some(b.acquire(len).await?),
        None => None,
    };
    let buf = read_exactly(io, len, "frame").await?;
    Ok((buf, permit))
}

/// Reads exactly `len` bytes into a buffer that grows as they arrive: a
/// peer that announces much and sends little costs little.
pub(super) async fn read_exactly<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    len: usize,
    what: &str,
) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(len.min(INITIAL_BUFFER));
    (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what} cut short: {} of {len} bytes", buf.len()),
        ));
    }
    Ok(buf)
}

/// After a body: the sender must have closed its side. A byte more is a
/// violation (the body was longer than announced).
pub(super) async fn expect_end<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<()> {
    let mut b = [0u8; 1];
    match io.read(&mut b).await? {
        0 => Ok(()),
        _ => Err(invalid("bytes past the announced body")),
    }
}

/// Reads the next piece of a body (at most `left` bytes) into `buf`; the
/// peer closing early is `UnexpectedEof`.
pub(super) async fn read_piece<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    buf: &mut [u8],
    left: usize,
) -> io::Result<usize> {
    let want = buf.len().min(left);
    let n = io.read(&mut buf[..want]).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("body cut short, {left} bytes missing")));
    }
    Ok(n)
}

/// Reads a body of `len` bytes and the end of the stream into one buffer
/// that grows as the bytes arrive.
pub(super) async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let body = read_exactly(io, len, "body").await?;
    expect_end(io).await?;
    Ok(body)
}

/// Reads the body of an answer to this node's own request, `len` bytes
/// within the limit it set, and the end of the stream: into one buffer of
/// that size, not one that doubles (and is copied) as the bytes arrive, as
/// for bodies a peer sends unasked.
pub(super) async fn read_answer_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => {
            io::Error::new(io::ErrorKind::UnexpectedEof, format!("body cut short: {len} bytes announced"))
        }
        _ => e,
    })?;
    expect_end(io).await?;
    Ok(body)
}

/// Reads and discards a body of `len` bytes (a refused put), so that the
/// sender finishes writing and reads the answer.
pub(super) async fn drain_body<T: AsyncRead + Unpin + Send>(io: &mut T, mut left: usize) -> io::Result<()> {
    let mut buf = vec![0u8; PIECE.min(left.max(1))];
    while left > 0 {
        left -= read_piece(io, &mut buf, left).await?;
    }
    expect_end(io).await
}

/// Streams a body of `len` bytes into `sink` in pieces of [`PIECE`], each
/// written on a blocking thread, then finishes it. The outer error is the
/// transport's (or a violation); the inner one is the sink's answer.
pub(super) async fn stream_into_sink<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    mut sink: Box<dyn BodySink>,
    len: usize,
) -> io::Result<Result<(), BodyError>> {
    let mut buf = vec![0u8; PIECE.min(len.max(1))];
    let mut left = len;
    while left > 0 {
        // A whole piece (or the rest of the body) per hop to the blocking
        // thread: the stream yields bytes a frame at a time.
        let want = buf.len().min(left);
        let mut n = 0;
        while n < want {
            n += read_piece(io, &mut buf[n..want], left - n).await?;
        }
        left -= n;
        let (s, b, r) = tokio::task::spawn_blocking(move || {
            let r = sink.write(&buf[..n]);
            (sink, buf, r)
        })
        .await
        .map_err(io::Error::other)?;
        (sink, buf) = (s, b);
        if let Err(e) = r {
            // The sink gave up (disk full, or the bytes already cannot
            // match): drop it, and read the rest so the sender hears why.
            drop(sink);
            drain_body(io, left).await?;
            return Ok(Err(e));
        }
    }
    expect_end(io).await?;
    tokio::task::spawn_blocking(move || sink.finish()).await.map_err(io::Error::other)
}

/// Writes a frame and its body, the body in pieces of [`PIECE`].
pub(crate) async fn write_message<T: AsyncWrite + Unpin + Send>(io: &mut T, e: Encoded<'_>) -> io::Result<()> {
    io.write_all(&e.head).await?;
    for piece in e.body.chunks(PIECE) {
        io.write_all(piece).await?;
    }
    io.flush().await
}

/// Writes a `Data` answer from a [`BodySource`], read in pieces on blocking
/// threads. A source that fails (e.g. the file turned out corrupt) aborts
/// the stream before its last piece: the requester never gets the whole body.
pub(super) async fn write_source<T: AsyncWrite + Unpin + Send>(io: &mut T, src: BodySource) -> io::Result<()> {
    let len = usize::try_from(src.len).map_err(|_| invalid("body too large"))?;
    io.write_all(&data_head(len)?).await?;
    let mut reader = src.reader;
    let mut buf = vec![0u8; PIECE];
    let mut sent = 0usize;
    loop {
        let (r, b, res) = tokio::task::spawn_blocking(move || {
            let res = reader.read(&mut buf);
            (reader, buf, res)
        })
        .await
        .map_err(io::Error::other)?;
        (reader, buf) = (r, b);
        let n = res?;
        if n == 0 {
            break;
        }
        sent += n;
        if sent > len {
            return Err(io::Error::other(format!("body source yields more than its {len} bytes")));
        }
        io.write_all(&buf[..n]).await?;
    }
    if sent != len {
        return Err(io::Error::other(format!("body source ended after {sent} of {len} bytes")));
    }
    io.flush().await
}

/// Reads a whole request (frame, then its body, buffered) with every bound
/// checked: what a node does for a handler without a [`BodySink`], and what
/// tests use.
pub async fn read_request<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Request> {
    match decode_request_head(read_frame(io).await?)? {
        RequestHead::Message(r) => Ok(r),
        RequestHead::Body { kind, cid, len } => {
            let data = read_body(io, len).await?;
            Ok(match kind {
                BodyKind::Shard => Request::PutShard { cid, data },
                BodyKind::Manifest => Request::PutManifest { cid, data },
            })
        }
    }
}

/// Reads a whole response; a `Data` body may be at most `limit` bytes
/// (see [`Request::answer_limit`]), checked before any of it is read.
pub async fn read_response<T: AsyncRead + Unpin + Send>(io: &mut T, limit: usize) -> io::Result<Response> {
    match decode_response_head(read_frame(io).await?)? {
        ResponseHead::Message(r) => Ok(r),
        ResponseHead::Data { len } => {
            if len > limit {
                return Err(invalid(format!("an answer of {len} bytes announced; the limit is {limit}")));
            }
            Ok(Response::Data(read_answer_body(io, len).await?))
        }
    }
}

/// Memory all inbound frames and bodies being read or served may hold at
/// once, shared by every connection. Counted in KiB.
#[derive(Debug, Clone)]
pub(crate) struct InboundBudget {
    sem: Arc<Semaphore>,
    total_kib: usize,
}

impl InboundBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        // At least one largest frame, so that any valid frame can be read.
        let kib = bytes.max(MAX_FRAME).div_ceil(1024).min(Semaphore::MAX_PERMITS);
        Self { sem: Arc::new(Semaphore::new(kib)), total_kib: kib }
    }

    /// Takes `len` bytes (at most the whole budget: a buffered body larger
    /// than the budget waits until it has it all to itself).
    pub(super) async fn acquire(&self, len: usize) -> io::Result<OwnedSemaphorePermit> {
        let kib = len.div_ceil(1024).min(self.total_kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(kib).await.map_err(|_| io::Error::other("inbound budget closed"))
    }

    #[cfg(test)]
    pub(super) fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }
}
