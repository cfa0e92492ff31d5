//! The DHT store: the file it reloads from disk, and the records and
//! provider records peers ask it to keep. Never panic; a decoded file
//! re-encodes to one that decodes equal; whatever the store holds, it saves
//! to bytes that load back to the same contents.
#![no_main]
use std::time::Duration;

use datamesh_net::kad_store::fuzzing::{Store, decode, encode};
use datamesh_net::{Multiaddr, PeerId};
use libfuzzer_sys::fuzz_target;

/// An Ed25519 peer id whose key bytes are all `b`.
fn peer(b: u8) -> PeerId {
    // Identity multihash of the protobuf public key (type 1 = Ed25519).
    let mut v = vec![0x00, 36, 0x08, 0x01, 0x12, 0x20];
    v.extend_from_slice(&[b; 32]);
    PeerId::from_bytes(&v).expect("an identity peer id")
}

/// A cursor over the fuzz input; empty reads once it runs out.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    /// A peer id: one of a few, or whatever the input spells.
    fn peer(&mut self) -> PeerId {
        let b = self.u8().unwrap_or(0);
        if b < 0xf0 {
            return peer(b % 4);
        }
        let n = self.u8().unwrap_or(0) as usize % 48;
        PeerId::from_bytes(self.take(n)).unwrap_or_else(|_| peer(0))
    }
    /// No expiry, or one far enough away not to pass during the test.
    fn ttl(&mut self) -> Option<Duration> {
        match self.u8().unwrap_or(0) {
            0..=127 => None,
            h => Some(Duration::from_secs(3600 * u64::from(h))),
        }
    }
    /// Keys from a small set, so that operations meet.
    fn key(&mut self) -> Vec<u8> {
        let n = self.u8().unwrap_or(0) as usize % 3;
        self.take(n).iter().map(|b| b % 4).collect()
    }
}

/// What `s` saves loads back, into a fresh store, to the same contents
/// (when `exact`), or to no more than it held.
fn check_saves(s: &Store, exact: bool) {
    let bytes = s.save();
    let file = decode(&bytes).expect("a saved store decodes");
    let mut t = Store::new(peer(0));
    t.restore(file);
    let (before, after) = (s.contents(), t.contents());
    if exact {
        assert_eq!(after, before);
    } else {
        assert!(after.0.iter().all(|r| before.0.contains(r)));
        assert!(after.1.iter().all(|p| before.1.contains(p)));
    }
}

fuzz_target!(|data: &[u8]| {
    // As the store file read from disk on start.
    if let Ok(file) = decode(data) {
        let again = decode(&encode(&file)).expect("a decoded store file re-decodes");
        assert_eq!(again, file);
        let mut s = Store::new(peer(0));
        s.restore(file);
        // Expiries in the file may fall due between save and load.
        check_saves(&s, false);
    }
    // As a run of what peers ask the store to keep or drop.
    let mut s = Store::new(peer(0));
    let mut b = Bytes(data);
    while let Some(op) = b.u8() {
        match op % 5 {
            0 | 1 => {
                let key = b.key();
                let n = b.u8().unwrap_or(0) as usize;
                let value = b.take(n).to_vec();
                let publisher = (op & 0x10 != 0).then(|| b.peer());
                let ttl = b.ttl();
                s.put(&key, value, publisher, ttl);
            }
            2 => {
                let key = b.key();
                let provider = b.peer();
                let addrs = (0..b.u8().unwrap_or(0) % 3)
                    .filter_map(|_| {
                        let n = b.u8().unwrap_or(0) as usize % 24;
                        Multiaddr::try_from(b.take(n).to_vec()).ok()
                    })
                    .collect();
                let ttl = b.ttl();
                s.add_provider(&key, provider, addrs, ttl);
            }
            3 => s.remove(&b.key()),
            _ => {
                let key = b.key();
                s.remove_provider(&key, &b.peer());
            }
        }
    }
    check_saves(&s, true);
});
