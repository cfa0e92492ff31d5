//! Joining through bootstrap peers, and staying joined.
//!
//! Every configured entry is dialed, in list order (its priority), as soon as
//! the node starts. Each entry then lives on its own schedule:
//!
//! ```text
//!            dial ok                      disconnected
//! Waiting ─────────► Dialing ──────────► Connected ─────────► Waiting (backoff = start)
//!   ▲                   │ dial failed
//!   └───────────────────┘ backoff = min(2 × backoff, max)
//! ```
//! Backoff starts at 1 s and doubles to a 60 s cap, forever, so a dead entry
//! never blocks the others and a peer that comes back is reconnected. An
//! entry with `/p2p/<id>` is dialed with that id (and its address goes into
//! Kademlia at once); without one, the id is learned from the connection.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Waiting {
        next: Instant,
    },
    Dialing(ConnectionId),
    Connected,
    /// The entry is this node itself.
    Disabled,
}

#[derive(Debug)]
pub(crate) struct Entry {
    /// The address without its `/p2p` suffix.
    pub addr: Multiaddr,
    pub peer: Option<PeerId>,
    pub phase: Phase,
    pub backoff: Duration,
}

pub(crate) struct Bootstrap {
    pub entries: Vec<Entry>,
    start: Duration,
    max: Duration,
}

/// Splits `/…/p2p/<id>` into the address and the id.
pub(crate) fn split_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut a = addr.clone();
    match a.iter().last() {
        Some(Protocol::P2p(id)) => {
            a.pop();
            (a, Some(id))
        }
        _ => (a, None),
    }
}

impl Bootstrap {
    pub fn new(list: &[Multiaddr], local: PeerId, start: Duration, max: Duration, now: Instant) -> Self {
        let entries = list
            .iter()
            .map(|m| {
                let (addr, peer) = split_p2p(m);
                let phase = if peer == Some(local) { Phase::Disabled } else { Phase::Waiting { next: now } };
                Entry { addr, peer, phase, backoff: start }
            })
            .collect();
        Self { entries, start, max }
    }

    /// Entries due for a dial, in priority order.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.entries.len())
            .filter(|&i| matches!(self.entries[i].phase, Phase::Waiting { next } if next <= now))
            .collect()
    }

    pub fn dialing(&mut self, i: usize, id: ConnectionId) {
        self.entries[i].phase = Phase::Dialing(id);
    }

    /// A connection is up. Returns the indices of entries it satisfies (the
    /// dial's own entry, plus entries for the same peer).
    pub fn connected(&mut self, id: ConnectionId, peer: PeerId) -> Vec<usize> {
        let mut hit = Vec::new();
        for (i, e) in self.entries.iter_mut().enumerate() {
            let mine = e.phase == Phase::Dialing(id);
            if mine && e.peer.is_none() {
                e.peer = Some(peer);
            }
            if mine || (e.peer == Some(peer) && e.phase != Phase::Disabled) {
                e.phase = Phase::Connected;
                e.backoff = self.start;
                hit.push(i);
            }
        }
        hit
    }

    /// A dial failed: back off.
    pub fn dial_failed(&mut self, id: ConnectionId, now: Instant, is_self: bool) {
        for e in &mut self.entries {
            if e.phase == Phase::Dialing(id) {
                if is_self {
                    e.phase = Phase::Disabled;
                    continue;
                }
                e.phase = Phase::Waiting { next: now + e.backoff };
                e.backoff = (e.backoff * 2).min(self.max);
            }
        }
    }

    /// The last connection to `peer` closed: reconnect, starting again at
    /// the first backoff step.
    pub fn disconnected(&mut self, peer: PeerId, now: Instant) {
        for e in &mut self.entries {
            if e.peer == Some(peer) && e.phase == Phase::Connected {
                e.phase = Phase::Waiting { next: now + e.backoff };
                e.backoff = (e.backoff * 2).min(self.max);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_and_resets_on_connect() {
        let me = PeerId::random();
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let t0 = Instant::now();
        let mut b = Bootstrap::new(&[a], me, Duration::from_secs(1), Duration::from_secs(60), t0);
        let mut now = t0;
        let mut delays = vec![];
        for n in 0..9 {
            assert_eq!(b.due(now), vec![0]);
            let id = ConnectionId::new_unchecked(n);
            b.dialing(0, id);
            assert!(b.due(now).is_empty());
            b.dial_failed(id, now, false);
            let Phase::Waiting { next } = b.entries[0].phase else { panic!() };
            delays.push((next - now).as_secs());
            now = next;
        }
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let id = ConnectionId::new_unchecked(100);
        b.dialing(0, id);
        let p = PeerId::random();
        assert_eq!(b.connected(id, p), vec![0]);
        assert_eq!(b.entries[0].peer, Some(p), "id learned from the connection");
        b.disconnected(p, now);
        let Phase::Waiting { next } = b.entries[0].phase else { panic!() };
        assert_eq!((next - now).as_secs(), 1, "reconnect starts at 1 s");
    }

    #[test]
    fn p2p_suffix_is_split_and_self_is_skipped() {
        let me = PeerId::random();
        let m: Multiaddr = format!("/ip4/10.0.0.1/tcp/4001/p2p/{me}").parse().unwrap();
        let (a, p) = split_p2p(&m);
        assert_eq!(a.to_string(), "/ip4/10.0.0.1/tcp/4001");
        assert_eq!(p, Some(me));
        let b = Bootstrap::new(&[m], me, Duration::from_secs(1), Duration::from_secs(60), Instant::now());
        assert!(b.due(Instant::now()).is_empty());
    }
}
