//! The `request_response` codec: what the swarm reads off an inbound stream
//! and writes on an outbound one, under the node's inbound memory budget.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The codec's request type, in both directions. Read off an inbound
/// stream it is a request for the handler, an answer already settled while
/// reading (a streamed body), or the reason the message broke the protocol;
/// sent, it is always `Request` (the name says what it is on the stream, not
/// which way it goes). `request_response` does not report
/// `read_request` errors to the behaviour, so violations travel as values to
/// reach the actor, which strikes the sender and drops the stream.
///
/// An inbound request holds its share of the [`InboundBudget`] until it is
/// dropped, i.e. until the handler is done with it.
#[derive(Debug)]
pub(crate) enum StreamRequest {
    Request(Request, Option<OwnedSemaphorePermit>),
    /// A body went into the handler's sink; this is the answer, and the
    /// strike reason when the bytes did not match their CID.
    Answered(Response, Option<String>),
    Violation(String),
}

/// The codec's response type, in both directions: a response, or a body
/// streamed from a source.
#[derive(Debug)]
pub(crate) enum StreamResponse {
    Response(Response),
    Source(BodySource),
}

/// The `request_response` codec of `/datamesh/shard/2.0.0`. `request_response`
/// clones it for every stream, so `answer_limit` (set when a request is
/// written) bounds the answer read on the same stream.
#[derive(Clone)]
pub(crate) struct ShardCodec {
    pub(crate) budget: InboundBudget,
    pub(crate) handler: Arc<dyn Handler>,
    /// StreamRequest bodies being streamed into sinks at once (they wait for a slot).
    pub(crate) bodies: Arc<Semaphore>,
    pub(crate) answer_limit: usize,
}

impl ShardCodec {
    pub(crate) fn new(budget: InboundBudget, handler: Arc<dyn Handler>, max_bodies: usize) -> Self {
        Self { budget, handler, bodies: Arc::new(Semaphore::new(max_bodies.max(1))), answer_limit: MAX_FRAME }
    }

    /// Reads an inbound body announced by its frame: into the handler's sink
    /// if it has one, else buffered for `handle`.
    async fn read_body_for<T: AsyncRead + Unpin + Send>(
        &self,
        io: &mut T,
        kind: BodyKind,
        cid: Cid,
        len: usize,
    ) -> io::Result<StreamRequest> {
        let _slot = self.bodies.clone().acquire_owned().await.map_err(|_| io::Error::other("closed"))?;
        let handler = self.handler.clone();
        let sink = tokio::task::spawn_blocking(move || handler.body_sink(kind, cid, len as u64))
            .await
            .map_err(io::Error::other)?;
        match sink {
            None => {
                let permit = self.budget.acquire(len).await?;
                let data = read_body(io, len).await?;
                let req = match kind {
                    BodyKind::Shard => Request::PutShard { cid, data },
                    BodyKind::Manifest => Request::PutManifest { cid, data },
                };
                Ok(StreamRequest::Request(req, Some(permit)))
            }
            Some(Err(answer)) => {
                drain_body(io, len).await?;
                Ok(StreamRequest::Answered(answer, None))
            }
            Some(Ok(sink)) => {
                let _piece = self.budget.acquire(PIECE).await?;
                Ok(match stream_into_sink(io, sink, len).await? {
                    Ok(()) => StreamRequest::Answered(Response::Ok, None),
                    Err(BodyError::Refused(why)) => StreamRequest::Answered(Response::Refused(why), None),
                    Err(BodyError::Mismatch(why)) => StreamRequest::Answered(Response::Refused(why.clone()), Some(why)),
                })
            }
        }
    }
}

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = StreamRequest;
    type Response = StreamResponse;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<StreamRequest>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = async {
            let (frame, permit) = read_frame_within(io, Some(&self.budget)).await?;
            match decode_request_head(frame)? {
                RequestHead::Message(req) => Ok(StreamRequest::Request(req, permit)),
                RequestHead::Body { kind, cid, len } => {
                    drop(permit);
                    self.read_body_for(io, kind, cid, len).await
                }
            }
        };
        match read.await {
            Ok(inbound) => Ok(inbound),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(StreamRequest::Violation(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<StreamResponse>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(StreamResponse::Response(read_response(io, self.answer_limit).await?))
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: StreamRequest) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match &req {
            StreamRequest::Request(r, _) => {
                self.answer_limit = r.answer_limit();
                write_message(io, encode_request(r)?).await
            }
            StreamRequest::Answered(..) | StreamRequest::Violation(_) => Err(invalid("only requests are sent")),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: StreamResponse) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match resp {
            StreamResponse::Response(r) => write_message(io, encode_response(&r)?).await,
            StreamResponse::Source(src) => write_source(io, src).await,
        }
    }
}
