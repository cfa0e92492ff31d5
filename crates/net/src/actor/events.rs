//! Swarm events: the shard protocol's requests and answers, Kademlia query
//! progress, connections and listen addresses.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Actor {
    pub(super) fn on_swarm_event(&mut self, ev: SwarmEvent<BehaviourEvent>) {
        let now = Instant::now();
        match ev {
            SwarmEvent::Behaviour(BehaviourEvent::Shard(ev)) => self.on_shard_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(ev)) => self.on_kad_event(ev),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                if info.protocol_version != ID_PROTOCOL_VERSION {
                    tracing::debug!(peer = %peer_id, version = %info.protocol_version, "not a DataMesh peer");
                    return;
                }
                let e = self.peers.entry(peer_id, now);
                e.last_seen = Some(now);
                e.addrs.clear();
                for a in info.listen_addrs.iter().take(16) {
                    e.add_addr(a.clone());
                }
                self.drain_evicted();
                if info.protocols.contains(&KAD_PROTOCOL) {
                    for a in info.listen_addrs.into_iter().take(16) {
                        self.swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result: Ok(_), .. })) => {
                self.peers.seen(&peer, now);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found.into_iter().take(64) {
                    if peer == self.local {
                        continue;
                    }
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    if !self.swarm.is_connected(&peer) {
                        let opts = DialOpts::peer_id(peer)
                            .addresses(vec![addr])
                            .condition(PeerCondition::DisconnectedAndNotDialing)
                            .build();
                        let _ = self.swarm.dial(opts);
                    }
                }
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                established_in,
                ..
            } => {
                tracing::debug!(peer = %peer_id, ?established_in, dialer = endpoint.is_dialer(), "connection established");
                let e = self.peers.entry(peer_id, now);
                e.connections = num_established.get() as usize;
                if endpoint.is_dialer() {
                    e.add_addr(endpoint.get_remote_address().clone());
                }
                self.drain_evicted();
                let hits = self.boot.connected(connection_id, peer_id);
                for &i in &hits {
                    let addr = self.boot.entries[i].addr.clone();
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
                if !hits.is_empty() {
                    tracing::info!(peer = %peer_id, "connected to a bootstrap peer");
                    // Join at once on the first one; afterwards Kademlia
                    // bootstraps by itself while its table is small, and
                    // refreshes buckets on its timer.
                    if self.last_join.is_none() {
                        self.last_join = Some(Instant::now());
                        let _ = self.swarm.behaviour_mut().kad.bootstrap();
                    }
                }
                if num_established.get() == 1 {
                    self.send_heartbeat(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established, .. } => {
                if let Some(e) = self.peers.get_mut(&peer_id) {
                    e.connections = num_established as usize;
                }
                if num_established == 0 {
                    self.boot.disconnected(peer_id, now);
                }
            }
            SwarmEvent::OutgoingConnectionError { connection_id, peer_id, error } => {
                tracing::debug!(?peer_id, %error, "dial failed");
                self.boot.dial_failed(connection_id, now, matches!(error, DialError::LocalPeerId { .. }));
            }
            SwarmEvent::NewListenAddr { address, .. } => self.on_new_listen_addr(address),
            SwarmEvent::ExpiredListenAddr { address, .. } if !self.announce_fixed => {
                self.swarm.remove_external_address(&address);
            }
            _ => {}
        }
    }

    /// Provider records carry the provider's external addresses; a record
    /// without any is only useful to nodes that already have the provider
    /// in their routing table, so lookups fail in large networks (measured:
    /// half of them at 300 nodes). Listen addresses are announced unless
    /// the operator named the addresses to announce.
    pub(super) fn on_new_listen_addr(&mut self, address: Multiaddr) {
        tracing::info!(%address, "listening");
        if !self.announce_fixed {
            self.swarm.add_external_address(address);
        }
    }

    pub(super) fn on_shard_event(&mut self, ev: request_response::Event<StreamRequest, StreamResponse>) {
        let now = Instant::now();
        match ev {
            request_response::Event::Message { peer, message, .. } => match message {
                Message::Request { request, channel, .. } => self.on_inbound(peer, request, channel),
                Message::Response { request_id, response } => {
                    self.peers.seen(&peer, now);
                    let StreamResponse::Response(response) = response else {
                        // `read_response` only ever yields responses.
                        return;
                    };
                    match self.pending.remove(&request_id) {
                        Some(Pending::Heartbeat(p)) => {
                            if let Some(e) = self.peers.get_mut(&p) {
                                e.heartbeat_in_flight = false;
                                if let Response::Heartbeat(hb) = response {
                                    e.last_heartbeat = Some(hb);
                                }
                            }
                        }
                        Some(Pending::User(reply)) => {
                            self.peers.used(&peer, now);
                            let _ = reply.send(Ok(response));
                        }
                        None => {}
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                let violation = matches!(&error, OutboundFailure::Io(e) if e.kind() == std::io::ErrorKind::InvalidData);
                let err = match error {
                    OutboundFailure::DialFailure | OutboundFailure::ConnectionClosed => NetError::PeerUnreachable,
                    OutboundFailure::Timeout => NetError::Timeout,
                    OutboundFailure::UnsupportedProtocols => {
                        NetError::Protocol(format!("the peer does not speak {PROTOCOL}"))
                    }
                    OutboundFailure::Io(e) if e.to_string().contains("max sub-streams") => NetError::Busy,
                    OutboundFailure::Io(e) => NetError::Protocol(e.to_string()),
                };
                if violation {
                    self.strike(peer, &format!("bad response: {err}"));
                }
                match self.pending.remove(&request_id) {
                    Some(Pending::Heartbeat(p)) => {
                        if let Some(e) = self.peers.get_mut(&p) {
                            e.heartbeat_in_flight = false;
                        }
                    }
                    Some(Pending::User(reply)) => {
                        let _ = reply.send(Err(err));
                    }
                    None => {}
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    pub(super) fn on_kad_event(&mut self, ev: kad::Event) {
        let kad::Event::OutboundQueryProgressed { id, result, step, stats } = ev else {
            return;
        };
        if step.last {
            tracing::debug!(
                ?id,
                requests = stats.num_requests(),
                ok = stats.num_successes(),
                failed = stats.num_failures(),
                took = ?stats.duration(),
                "kad query finished"
            );
        }
        match result {
            QueryResult::GetClosestPeers(r) => {
                if let Some(QueryWait::Closest(reply)) = self.queries.remove(&id) {
                    let peers = match r {
                        Ok(ok) => Ok(ok.peers),
                        Err(kad::GetClosestPeersError::Timeout { peers, .. }) if !peers.is_empty() => Ok(peers),
                        Err(_) => Err(NetError::Timeout),
                    };
                    // Kademlia forgets the addresses a lookup learnt once it
                    // ends (peers outside the k-buckets); hand them to the
                    // swarm so a request to one of these peers can dial it.
                    let out = peers.map(|peers| {
                        peers
                            .into_iter()
                            .map(|p| {
                                for a in p.addrs {
                                    self.swarm.add_peer_address(p.peer_id, a);
                                }
                                p.peer_id
                            })
                            .collect()
                    });
                    let _ = reply.send(out);
                }
            }
            QueryResult::GetProviders(r) => {
                let Some(QueryWait::Providers { found, .. }) = self.queries.get_mut(&id) else {
                    return;
                };
                let timed_out = match r {
                    Ok(GetProvidersOk::FoundProviders { providers, .. }) => {
                        found.extend(providers);
                        false
                    }
                    Ok(GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => false,
                    Err(_) => true,
                };
                if step.last || found.len() >= K || timed_out {
                    if !step.last
                        && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
                    {
                        q.finish();
                    }
                    if let Some(QueryWait::Providers { found, reply }) = self.queries.remove(&id) {
                        let out = if found.is_empty() && timed_out {
                            Err(NetError::Timeout)
                        } else {
                            Ok(ProviderLookup {
                                providers: found.into_iter().collect(),
                                peers_contacted: stats.num_requests(),
                                peers_answered: stats.num_successes(),
                            })
                        };
                        let _ = reply.send(out);
                    }
                }
            }
            QueryResult::StartProviding(r) => {
                if let Some(QueryWait::Provide(reply)) = self.queries.remove(&id) {
                    // The record is stored locally and republished either
                    // way; a timeout means too few peers took it yet.
                    let _ = reply.send(r.map(|_| ()).map_err(|_| NetError::Timeout));
                }
            }
            _ => {}
        }
    }
}
