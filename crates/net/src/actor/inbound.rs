//! StreamRequest requests: each is served on its own task (CID verification,
//! then the node's handler), and its answer comes back to the actor.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Actor {
    pub(super) fn on_served(&mut self, s: Served) {
        self.inbound_in_flight = self.inbound_in_flight.saturating_sub(1);
        // Err: the stream timed out or closed meanwhile; nothing to do.
        let _ = self.swarm.behaviour_mut().shard.send_response(s.channel, s.response);
        // The strike after the answer: a ban closes the connection, which
        // may still cut the answer short.
        if let Some(why) = &s.strike {
            self.strike(s.peer, why);
        }
    }

    pub(super) fn on_inbound(
        &mut self,
        peer: PeerId,
        request: StreamRequest,
        channel: ResponseChannel<StreamResponse>,
    ) {
        let now = Instant::now();
        let (req, permit) = match request {
            StreamRequest::Violation(why) => {
                // Dropping the channel closes the stream unanswered.
                drop(channel);
                self.strike(peer, &why);
                return;
            }
            StreamRequest::Answered(response, strike) => {
                // A streamed body, settled by the handler's sink as it was read.
                self.peers.seen(&peer, now);
                let _ = self.swarm.behaviour_mut().shard.send_response(channel, StreamResponse::Response(response));
                if let Some(why) = strike {
                    self.strike(peer, &why);
                }
                return;
            }
            StreamRequest::Request(r, permit) => (r, permit),
        };
        self.peers.seen(&peer, now);
        if let Request::Heartbeat(hb) = req {
            if let Some(e) = self.peers.get_mut(&peer) {
                e.last_heartbeat = Some(hb);
            }
            let mine = *self.local_heartbeat.borrow();
            let _ = self
                .swarm
                .behaviour_mut()
                .shard
                .send_response(channel, StreamResponse::Response(Response::Heartbeat(mine)));
            return;
        }
        self.peers.used(&peer, now);
        if self.inbound_in_flight >= self.max_inbound {
            let busy = StreamResponse::Response(Response::Refused("busy".into()));
            let _ = self.swarm.behaviour_mut().shard.send_response(channel, busy);
            return;
        }
        self.inbound_in_flight += 1;
        let handler = self.handler.clone();
        let tx = self.served_tx.clone();
        let hb = *self.local_heartbeat.borrow();
        tokio::spawn(async move {
            let (response, strike) = serve(handler, peer, req, hb, true).await;
            // The request's bytes are gone: give them back to the budget.
            drop(permit);
            // The actor holds the receiver until it stops; if it has, the
            // answer has nowhere to go.
            let _ = tx.send(Served { peer, channel, response, strike }).await;
        });
    }
}

/// Serves one inbound (or self-addressed) request: verify content against its
/// CID, then ask the node's handler. Returns the answer and, when the peer
/// sent data that does not match its CID, the strike reason. With `stream`,
/// a `GetShard`/`GetManifest` is answered from the handler's
/// [`crate::Handler::body_source`] when it has one.
pub(super) async fn serve(
    handler: Arc<dyn Handler>,
    peer: PeerId,
    req: Request,
    local: Heartbeat,
    stream: bool,
) -> (StreamResponse, Option<String>) {
    let req = match req {
        Request::Heartbeat(_) => return (StreamResponse::Response(Response::Heartbeat(local)), None),
        Request::PutShard { cid, data } => match verify(cid, data).await {
            Ok(data) => Request::PutShard { cid, data },
            Err(why) => return (StreamResponse::Response(Response::Refused(why.clone())), Some(why)),
        },
        Request::PutManifest { cid, data } => match verify(cid, data).await {
            Ok(data) => Request::PutManifest { cid, data },
            Err(why) => return (StreamResponse::Response(Response::Refused(why.clone())), Some(why)),
        },
        r => r,
    };
    let body = match &req {
        Request::GetShard { cid } if stream => Some((BodyKind::Shard, *cid)),
        Request::GetManifest { cid } if stream => Some((BodyKind::Manifest, *cid)),
        _ => None,
    };
    if let Some((kind, cid)) = body {
        let h = handler.clone();
        match tokio::task::spawn_blocking(move || h.body_source(kind, cid)).await {
            Ok(Some(Ok(src))) => return (StreamResponse::Source(src), None),
            Ok(Some(Err(resp))) => return (StreamResponse::Response(resp), None),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(%peer, %e, "opening a body source failed");
                return (StreamResponse::Response(Response::Refused("internal error".into())), None);
            }
        }
    }
    // The handler runs on its own task so that a panic in it becomes an
    // answer instead of a lost slot.
    match tokio::spawn(async move { handler.handle(peer, req).await }).await {
        Ok(resp) => (StreamResponse::Response(resp), None),
        Err(e) => {
            tracing::error!(%peer, %e, "request handler failed");
            (StreamResponse::Response(Response::Refused("internal error".into())), None)
        }
    }
}

/// The answer as a [`Response`]: a body source is read whole (on a blocking
/// thread), for requests this node serves itself.
pub(super) async fn into_response(o: StreamResponse) -> Response {
    match o {
        StreamResponse::Response(r) => r,
        StreamResponse::Source(src) => {
            let read = tokio::task::spawn_blocking(move || {
                let mut v = Vec::with_capacity(usize::try_from(src.len).unwrap_or(0));
                std::io::Read::read_to_end(&mut std::io::Read::take(src.reader, src.len), &mut v).map(|_| v)
            })
            .await;
            match read {
                Ok(Ok(v)) => Response::Data(v),
                Ok(Err(e)) => Response::Refused(e.to_string()),
                Err(e) => Response::Refused(e.to_string()),
            }
        }
    }
}

/// Hashes `data` off the async threads and checks it against `cid`.
pub(crate) async fn verify(cid: datamesh_core::Cid, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let checked = if data.len() <= 64 * 1024 {
        let ok = cid.verifies(&data);
        Ok((ok, data))
    } else {
        tokio::task::spawn_blocking(move || (cid.verifies(&data), data)).await.map_err(|e| e.to_string())
    };
    match checked {
        Ok((true, data)) => Ok(data),
        Ok((false, _)) => Err(format!("data does not match {cid}")),
        Err(e) => Err(format!("verifying {cid}: {e}")),
    }
}
