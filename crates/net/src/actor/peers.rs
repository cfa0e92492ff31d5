//! Strikes, bans and peer health: heartbeats, the periodic tick, rejoining
//! the DHT when the routing table runs thin, pruning idle connections and
//! retrying bootstrap peers.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Actor {
    pub(super) fn strike(&mut self, peer: PeerId, why: &str) {
        let now = Instant::now();
        let max = self.tuning.max_strikes;
        let ban = self.tuning.ban_duration;
        let e = self.peers.entry(peer, now);
        e.strikes = e.strikes.saturating_add(1);
        tracing::warn!(%peer, strikes = e.strikes, %why, "strike against peer");
        if e.strikes >= max && e.banned_until.is_none() {
            e.banned_until = Some(now + ban);
            tracing::warn!(%peer, ban_secs = ban.as_secs(), "peer banned: disconnected and refused");
            let b = self.swarm.behaviour_mut();
            b.block.block_peer(peer);
            b.kad.remove_peer(&peer);
        }
        self.drain_evicted();
    }

    pub(super) fn drain_evicted(&mut self) {
        for p in self.peers.take_evicted() {
            self.swarm.behaviour_mut().block.unblock_peer(p);
        }
    }

    pub(super) fn send_heartbeat(&mut self, peer: PeerId) {
        if self.pending.len() >= self.tuning.max_pending {
            return;
        }
        let hb = *self.local_heartbeat.borrow();
        let next = Instant::now() + self.peers.timers.heartbeat_interval;
        if let Some(e) = self.peers.get_mut(&peer) {
            e.heartbeat_in_flight = true;
            e.next_heartbeat = next;
        }
        let id =
            self.swarm.behaviour_mut().shard.send_request(&peer, StreamRequest::Request(Request::Heartbeat(hb), None));
        self.pending.insert(id, Pending::Heartbeat(peer));
    }

    pub(super) fn on_tick(&mut self) {
        let now = Instant::now();
        let mut unban = Vec::new();
        let mut due = Vec::new();
        for (p, e) in self.peers.iter_mut() {
            if e.banned_until.is_some_and(|t| t <= now) {
                e.banned_until = None;
                e.strikes = 0;
                unban.push(*p);
            }
            if e.connections > 0 && e.banned_until.is_none() && !e.heartbeat_in_flight && e.next_heartbeat <= now {
                due.push(*p);
            }
        }
        for p in unban {
            tracing::info!(peer = %p, "ban over");
            self.swarm.behaviour_mut().block.unblock_peer(p);
        }
        for p in due {
            self.send_heartbeat(p);
        }
        for i in self.boot.due(now) {
            self.dial_bootstrap(i, now);
        }
        self.prune_connections(now);
        self.rejoin_if_small(now);
    }

    /// Bootstraps again while the routing table holds fewer than k peers.
    /// Kademlia does so by itself only when a peer enters the table: a
    /// first bootstrap whose answers could not be dialed (a busy network
    /// refusing connections) left a joining node knowing just its
    /// bootstrap peers until the bucket refresh, minutes later.
    pub(super) fn rejoin_if_small(&mut self, now: Instant) {
        let Some(last) = self.last_join else { return };
        if now.saturating_duration_since(last) < REJOIN_EVERY {
            return;
        }
        let known: usize = self.swarm.behaviour_mut().kad.kbuckets().map(|b| b.num_entries()).sum();
        if known > 0 && known < K {
            tracing::debug!(known, "routing table still small; bootstrapping again");
            self.last_join = Some(now);
            let _ = self.swarm.behaviour_mut().kad.bootstrap();
        }
    }

    /// Above [`crate::Tuning::keep_connections`] connected peers,
    /// disconnects and forgets the least recently used ones that nothing
    /// needs (see the tuning's doc for what is kept).
    pub(super) fn prune_connections(&mut self, now: Instant) {
        let keep = self.tuning.keep_connections;
        let recent = self.tuning.idle_connection_timeout;
        let boot: HashSet<PeerId> = self.boot.entries.iter().filter_map(|e| e.peer).collect();
        let mut connected = 0;
        let mut candidates: Vec<(PeerId, Instant)> = Vec::new();
        for (p, e) in self.peers.iter_mut() {
            if e.connections == 0 {
                continue;
            }
            connected += 1;
            // A new connection counts as in use: a node joining through
            // this one needs it for its first lookups (pruned at once, joins
            // stalled at 500 nodes), and a pruned peer that comes back is
            // not pruned again for a while (no handshake churn).
            let last = e.last_used.unwrap_or(e.first_seen);
            let busy = now.saturating_duration_since(last) < recent;
            if !busy && e.strikes == 0 && e.banned_until.is_none() && !boot.contains(p) {
                candidates.push((*p, last));
            }
        }
        if connected <= keep {
            return;
        }
        let table: HashSet<PeerId> = self
            .swarm
            .behaviour_mut()
            .kad
            .kbuckets()
            .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
            .collect();
        // Outside the routing table first, then the least recently used.
        candidates.sort_by_key(|&(p, t)| (table.contains(&p), t));
        let excess = connected - keep;
        for (p, _) in candidates.into_iter().take(excess) {
            tracing::debug!(peer = %p, "pruning an idle connection");
            self.peers.forget(&p);
            let _ = self.swarm.disconnect_peer_id(p);
        }
    }

    pub(super) fn dial_bootstrap(&mut self, i: usize, now: Instant) {
        let e = &self.boot.entries[i];
        let opts = match e.peer {
            Some(p) if self.swarm.is_connected(&p) => {
                let id = libp2p::swarm::ConnectionId::new_unchecked(usize::MAX);
                self.boot.dialing(i, id);
                self.boot.connected(id, p);
                return;
            }
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![e.addr.clone()])
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build(),
            None => DialOpts::unknown_peer_id().address(e.addr.clone()).build(),
        };
        let id = opts.connection_id();
        tracing::debug!(addr = %e.addr, "dialing bootstrap peer");
        self.boot.dialing(i, id);
        if let Err(err) = self.swarm.dial(opts) {
            tracing::debug!(%err, "bootstrap dial not started");
            self.boot.dial_failed(id, now, matches!(err, DialError::LocalPeerId { .. }));
        }
    }
}
