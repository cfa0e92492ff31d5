//! Peer health: who we know, when we last heard from them, their last
//! heartbeat, and their strikes.
//!
//! A peer enters the table when it connects. It is *seen* when it is
//! identified (identify with our protocol version) and again on every
//! successful exchange afterwards: a heartbeat either way, any request
//! answered or received, a ping. Its state is a function of the silence
//! since it was last seen:
//!
//! ```text
//! seen ──► Online ──(warning_after)──► Warning ──(offline_after)──► Offline
//!            ▲                                                          │
//!            └──────────────────── seen again ◄────────────────────────┘
//! ```
//! A peer never seen (connected, not identified) is reported `Offline`.
//!
//! The table is bounded ([`crate::Tuning::max_peers`]): beyond it the
//! disconnected, unbanned peer silent the longest is forgotten.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::config::HealthTimers;
use crate::protocol::Heartbeat;

/// Most addresses remembered per peer.
const MAX_ADDRS: usize = 16;

/// A peer's health as its heartbeats show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerState {
    /// Heard from within `warning_after`.
    Online,
    /// Silent for `warning_after`: do not give it new shards.
    Warning,
    /// Silent for `offline_after` (or never identified).
    Offline,
}

/// What the node learns about one peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Its listen addresses as identify reported them (or the address it
    /// connected from, before identify).
    pub addrs: Vec<Multiaddr>,
    /// Its health state.
    pub state: PeerState,
    /// Time since it was last seen (since it connected, if never seen).
    pub since_last_seen: Duration,
    /// The numbers of its last heartbeat.
    pub last_heartbeat: Option<Heartbeat>,
    /// Protocol violations and corrupt data counted against it.
    pub strikes: u32,
    /// Whether a connection to it is open now.
    pub connected: bool,
    /// Whether it is banned now (too many strikes).
    pub banned: bool,
}

#[derive(Debug)]
pub(crate) struct Entry {
    pub addrs: Vec<Multiaddr>,
    pub connections: usize,
    pub first_seen: Instant,
    pub last_seen: Option<Instant>,
    pub last_heartbeat: Option<Heartbeat>,
    pub strikes: u32,
    pub banned_until: Option<Instant>,
    pub next_heartbeat: Instant,
    pub heartbeat_in_flight: bool,
    /// The last request other than a heartbeat, either way: what keeps a
    /// connection from being pruned.
    pub last_used: Option<Instant>,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            addrs: Vec::new(),
            connections: 0,
            first_seen: now,
            last_seen: None,
            last_heartbeat: None,
            strikes: 0,
            banned_until: None,
            next_heartbeat: now,
            heartbeat_in_flight: false,
            last_used: None,
        }
    }

    /// Adds an address, keeping at most [`MAX_ADDRS`] (the newest).
    pub fn add_addr(&mut self, a: Multiaddr) {
        if !self.addrs.contains(&a) {
            if self.addrs.len() == MAX_ADDRS {
                self.addrs.remove(0);
            }
            self.addrs.push(a);
        }
    }
}

/// The health table.
pub(crate) struct PeerTable {
    entries: HashMap<PeerId, Entry>,
    max: usize,
    /// Peers forgotten to keep the table bounded, for the actor to unblock.
    evicted: Vec<PeerId>,
    pub timers: HealthTimers,
}

impl PeerTable {
    pub fn new(max: usize, timers: HealthTimers) -> Self {
        Self { entries: HashMap::new(), max: max.max(1), evicted: Vec::new(), timers }
    }

    #[cfg(test)]
    pub fn get(&self, p: &PeerId) -> Option<&Entry> {
        self.entries.get(p)
    }

    pub fn get_mut(&mut self, p: &PeerId) -> Option<&mut Entry> {
        self.entries.get_mut(p)
    }

    /// The entry of `p`, created (and the table kept bounded) if new.
    pub fn entry(&mut self, p: PeerId, now: Instant) -> &mut Entry {
        if !self.entries.contains_key(&p) && self.entries.len() >= self.max {
            self.evict_one(now);
        }
        self.entries.entry(p).or_insert_with(|| Entry::new(now))
    }

    fn evict_one(&mut self, now: Instant) {
        let silent_since = |e: &Entry| e.last_seen.unwrap_or(e.first_seen);
        // The longest-silent disconnected peer that is not banned; failing
        // that (a flood of banned identities), the ban that ends soonest.
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.connections == 0 && e.banned_until.is_none_or(|t| t <= now))
            .min_by_key(|(_, e)| silent_since(e))
            .or_else(|| self.entries.iter().filter(|(_, e)| e.connections == 0).min_by_key(|(_, e)| e.banned_until))
            .map(|(p, _)| *p);
        if let Some(p) = victim {
            self.entries.remove(&p);
            self.evicted.push(p);
        }
    }

    /// Forgets `p` (a pruned connection): it is reported nowhere until it
    /// connects again, so its silence never reads as OFFLINE.
    pub fn forget(&mut self, p: &PeerId) {
        self.entries.remove(p);
    }

    /// Records a request other than a heartbeat with `p` (callers mark it
    /// seen as well).
    pub fn used(&mut self, p: &PeerId, now: Instant) {
        if let Some(e) = self.entries.get_mut(p) {
            e.last_used = Some(now);
        }
    }

    /// Peers forgotten since the last call.
    pub fn take_evicted(&mut self) -> Vec<PeerId> {
        std::mem::take(&mut self.evicted)
    }

    /// Records a successful exchange with `p` (if we know it).
    pub fn seen(&mut self, p: &PeerId, now: Instant) {
        if let Some(e) = self.entries.get_mut(p) {
            e.last_seen = Some(now);
        }
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&PeerId, &mut Entry)> {
        self.entries.iter_mut()
    }

    pub fn state(&self, e: &Entry, now: Instant) -> PeerState {
        match e.last_seen {
            None => PeerState::Offline,
            Some(t) => {
                let silent = now.saturating_duration_since(t);
                if silent >= self.timers.offline_after {
                    PeerState::Offline
                } else if silent >= self.timers.warning_after {
                    PeerState::Warning
                } else {
                    PeerState::Online
                }
            }
        }
    }

    pub fn info(&self, now: Instant) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .entries
            .iter()
            .map(|(p, e)| PeerInfo {
                peer: *p,
                addrs: e.addrs.clone(),
                state: self.state(e, now),
                since_last_seen: now.saturating_duration_since(e.last_seen.unwrap_or(e.first_seen)),
                last_heartbeat: e.last_heartbeat,
                strikes: e.strikes,
                connected: e.connections > 0,
                banned: e.banned_until.is_some_and(|t| t > now),
            })
            .collect();
        v.sort_by_key(|i| i.peer);
        v
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn timers() -> HealthTimers {
        HealthTimers {
            heartbeat_interval: Duration::from_secs(1),
            warning_after: Duration::from_secs(10),
            offline_after: Duration::from_secs(100),
        }
    }

    #[test]
    fn state_follows_silence() {
        let mut t = PeerTable::new(10, timers());
        let p = PeerId::random();
        let t0 = Instant::now();
        t.entry(p, t0);
        assert_eq!(t.state(t.get(&p).unwrap(), t0), PeerState::Offline, "never seen");
        t.seen(&p, t0);
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(t.state(t.get(&p).unwrap(), at(9)), PeerState::Online);
        assert_eq!(t.state(t.get(&p).unwrap(), at(10)), PeerState::Warning);
        assert_eq!(t.state(t.get(&p).unwrap(), at(100)), PeerState::Offline);
        t.seen(&p, at(100));
        assert_eq!(t.state(t.get(&p).unwrap(), at(101)), PeerState::Online);
    }

    #[test]
    fn table_is_bounded_and_keeps_connected_peers() {
        let mut t = PeerTable::new(3, timers());
        let now = Instant::now();
        let keep: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &keep {
            t.entry(*p, now);
        }
        t.get_mut(&keep[0]).unwrap().connections = 1;
        t.seen(&keep[2], now + Duration::from_secs(1));
        t.entry(PeerId::random(), now);
        assert_eq!(t.info(now).len(), 3);
        assert!(t.get(&keep[0]).is_some(), "connected peers stay");
        assert!(t.get(&keep[1]).is_none(), "the longest-silent disconnected one goes");
    }

    #[test]
    fn addresses_are_bounded() {
        let mut e = Entry::new(Instant::now());
        for port in 0..100u16 {
            e.add_addr(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap());
        }
        assert_eq!(e.addrs.len(), MAX_ADDRS);
    }
}
