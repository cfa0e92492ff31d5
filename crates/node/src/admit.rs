//! What a node accepts from its peers as a file's location record.
//!
//! A location record decides where reads go and what repair rebuilds, so
//! a peer that could write one at will could take a file over: point it at
//! itself, or freeze it with a `seq` nobody can follow. The rules (also in
//! docs/network.md):
//!
//! - **Shape.** The file's manifest must be stored here already (it is
//!   sent first, `PUT_MANIFEST`), and the record must fit it: one row per
//!   chunk, one holder per shard of the code (`LocationRecord::fits`).
//! - **First record** (this node has none): shape, and a `seq` of at most
//!   [`MAX_SEQ_STEP`]. If the manifest names a writer (the node its owner
//!   uploaded through; the file's CID fixes it, so nobody can name another
//!   for the same file), the record must be the writer's own first record
//!   (seq 1, signed by it) or carry it as its origin (`core::location`),
//!   and every position the record moves away from where the writer put
//!   it must be justified as for a rewrite (below). A peer can then seed a
//!   node that has no record only with where the writer placed the file
//!   and what really moved since. Manifests without a writer (written
//!   before it existed) get shape and `seq` only.
//! - **Rewrite.** `seq` is exactly the stored one plus one (checked: the
//!   ceiling is refused in `core::location`); the signer is the stored
//!   record's writer or one of its holders ([`may_replace`]); per chunk, at
//!   most m positions held by nodes other than the signer change (a repair
//!   can only rebuild what a chunk lost, and a chunk that lost more than m
//!   is unrecoverable); and each such position must be *justified as this
//!   node sees it* ([`Node::justify_moves`]): its previous holder is this
//!   node and no longer has the shard, is OFFLINE here, failed an audit
//!   here, does not answer, says it does not hold the shard, or cannot
//!   prove it does (an audit challenge). A holder moving its own shards (a
//!   drain) needs no justification.
//! - The same record again renews the file's lease; a lower or equal
//!   `seq` is ignored.
//!
//! A node catching up from the file's replicas (`refresh_location`) may
//! jump several `seq`s, at most [`MAX_SEQ_STEP`], and every position the
//! jump moves must be justified the same way.

use std::collections::HashMap;
use std::time::Duration;

use datamesh_core::clock::unix_secs;
use datamesh_core::{Cid, HolderId, LocationRecord, Manifest};
use datamesh_net::{NetClient, PeerId, PeerState, Response};
use datamesh_store::PinInfo;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rand::Rng;

use crate::context::{Node, blocking};
use crate::error::StorageError;
use crate::holder::{holder_id, peer_of};
use crate::records::{location_key, may_replace, newest_vouched};

/// Largest `seq` a first record may carry, and the largest jump a node
/// catching up takes: far more repairs than a file sees, and small enough
/// that nobody can walk a record to the `seq` ceiling.
pub(crate) const MAX_SEQ_STEP: u64 = 1 << 20;

/// How far ahead of this node's clock an upload time may be (clocks
/// differ; a day is far more than they should).
const MAX_CLOCK_AHEAD: u64 = 24 * 3600;

/// How long a previous holder has to answer before its position counts as
/// gone.
const HOLDER_ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Audit challenges to previous holders at once, per record.
const CHALLENGES_IN_FLIGHT: usize = 16;

/// Size of the segment a previous holder must prove.
const CHALLENGE_SEGMENT: u32 = 1024;

/// Why a location record from a peer is refused. Sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RecordRefusal {
    /// Not a decodable, signed record for the key it was sent under.
    #[error("invalid location record: {0}")]
    Invalid(String),
    /// The file's manifest is not stored here.
    #[error("no manifest of {0} here; send it first (PUT_MANIFEST)")]
    NoManifest(Cid),
    /// The record does not fit the manifest.
    #[error("the location record does not fit the manifest of {file}: {why}")]
    Shape {
        /// The file.
        file: Cid,
        /// Why.
        why: String,
    },
    /// This node could not keep it (its capacity budget is spent, or its
    /// store failed): nothing of it was kept.
    #[error("this node did not keep the location record: {0}")]
    Unsaved(String),
    /// The sender made this node keep as many files as it may in this
    /// window (`NodeConfig::adoption_window`, an hour by default).
    #[error("this node keeps no more files for this peer for now; send the record to other replicas or retry later")]
    OverBudget,
    /// A first record naming an upload time ahead of this node's clock.
    #[error("the location record's upload time {0} is ahead of this node's clock")]
    UploadInFuture(u64),
    /// A rewrite that names another upload than the record it rewrites.
    #[error("a rewrite must keep the upload time of the record it rewrites")]
    OtherUpload,
    /// A first record of a file whose manifest names a writer, signed by
    /// someone else and carrying no first record of the writer's.
    #[error("the file's manifest names its writer; a first record must be the writer's, or carry it as its origin")]
    NoOrigin,
    /// The first record is not the writer's.
    #[error("the file's first location record is not signed by the writer its manifest names")]
    NotTheWriter,
    /// A first record at an implausible `seq`.
    #[error("a first location record may not start at seq {0}; at most {MAX_SEQ_STEP}")]
    FirstTooHigh(u64),
    /// Not the next `seq`.
    #[error("seq {got} does not follow this node's seq {have} by one; it catches up from the file's replicas instead")]
    NotNext {
        /// The stored record's `seq`.
        have: u64,
        /// The offered one.
        got: u64,
    },
    /// Not signed by the previous writer or a holder.
    #[error("location record update not signed by a holder of the file or the previous writer")]
    Untrusted,
    /// More positions of one chunk move than the code can have lost.
    #[error("the rewrite moves {moved} shards of chunk {chunk} held by other nodes; a chunk can lose at most {m}")]
    TooManyMoves {
        /// The chunk.
        chunk: usize,
        /// Positions moved away from nodes other than the signer.
        moved: usize,
        /// The code's m.
        m: u16,
    },
    /// A position moves away from a holder that still has its shard.
    #[error("the rewrite moves shard {shard} of chunk {chunk} away from a holder that still proves it holds it")]
    HolderStillThere {
        /// The chunk.
        chunk: usize,
        /// The shard.
        shard: usize,
    },
}

/// A shard position whose holder a record changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Move {
    pub(crate) chunk: usize,
    pub(crate) shard: usize,
    /// The previous holder (node id bytes).
    pub(crate) from: HolderId,
    /// The new holder, when the record names one.
    pub(crate) to: Option<HolderId>,
}

/// Positions of `m` whose holder differs between `old` and `new`, leaving
/// out those `exempt` held (a holder moving its own shards) and those
/// without a previous holder.
pub(crate) fn moves(m: &Manifest, old: &LocationRecord, new: &LocationRecord, exempt: Option<&HolderId>) -> Vec<Move> {
    let mut out = Vec::new();
    for (c, entry) in m.chunks.iter().enumerate() {
        for s in 0..entry.shards.len() {
            let Some(from) = old.holder(c, s) else { continue };
            if new.holder(c, s) != Some(from) && exempt != Some(from) {
                out.push(Move { chunk: c, shard: s, from: from.clone(), to: new.holder(c, s).cloned() });
            }
        }
    }
    out
}

/// A random 1 KiB-aligned segment of a shard of chunk `c` to challenge its
/// holder with: `(start, length)`.
fn challenge_range(m: &Manifest, c: usize, rng: &mut impl Rng) -> (u64, u32) {
    let len = m.erasure.shard_size(m.chunks[c].stored_size as usize) as u64;
    let start = rng.gen_range(0..len.max(1)) & !1023;
    (start, CHALLENGE_SEGMENT.min((len - start.min(len)).max(1) as u32))
}

/// The node id (peer id bytes) of a record's signer.
fn signer_id(r: &LocationRecord) -> Option<HolderId> {
    datamesh_net::peer_id_of_ed25519(&r.signer).map(|p| holder_id(&p))
}

/// Whether `r` descends from the first record of the writer `m` names (true
/// for manifests that name none): what a node without a record of its own
/// requires of a record it reads from others.
pub(crate) fn from_the_writer(m: &Manifest, r: &LocationRecord) -> bool {
    writers_first(m, r).is_ok()
}

/// The first record of the writer `m` names, as `r` carries it (itself at
/// seq 1, else its origin), checked: signed by that writer and fitting the
/// manifest. None when the manifest names no writer (an older file).
fn writers_first(m: &Manifest, r: &LocationRecord) -> Result<Option<LocationRecord>, RecordRefusal> {
    let Some(writer) = &m.writer else { return Ok(None) };
    let first = r.first_record().map_err(|e| RecordRefusal::Invalid(e.to_string()))?.ok_or(RecordRefusal::NoOrigin)?;
    if first.signer != *writer {
        return Err(RecordRefusal::NotTheWriter);
    }
    first.fits(m).map_err(|e| RecordRefusal::Shape { file: r.manifest, why: format!("its first record: {e}") })?;
    Ok(Some(first))
}

/// The checks on `new` that need no network (see the module doc): shape,
/// `seq`, signer, and how many positions of a chunk move. Returns the
/// moves still to be justified.
pub(crate) fn check_update(
    m: &Manifest,
    old: Option<&LocationRecord>,
    new: &LocationRecord,
) -> Result<Vec<Move>, RecordRefusal> {
    new.fits(m).map_err(|e| RecordRefusal::Shape { file: new.manifest, why: e.to_string() })?;
    let Some(old) = old else {
        if new.seq > MAX_SEQ_STEP {
            return Err(RecordRefusal::FirstTooHigh(new.seq));
        }
        // An upload time in the future would keep the owner's deletions
        // from ever covering it.
        if new.uploaded_at > unix_secs().saturating_add(MAX_CLOCK_AHEAD) {
            return Err(RecordRefusal::UploadInFuture(new.uploaded_at));
        }
        let Some(first) = writers_first(m, new)? else { return Ok(Vec::new()) };
        // What moved since the writer placed the file, other than the
        // signer's own shards, must be justified here.
        let signer = signer_id(new);
        return Ok(moves(m, &first, new, signer.as_ref()));
    };
    if old.next_seq() != Some(new.seq) {
        return Err(RecordRefusal::NotNext { have: old.seq, got: new.seq });
    }
    if new.uploaded_at != old.uploaded_at {
        return Err(RecordRefusal::OtherUpload);
    }
    if !may_replace(Some(old), new) {
        return Err(RecordRefusal::Untrusted);
    }
    let signer = signer_id(new);
    let moved = moves(m, old, new, signer.as_ref());
    let mut per_chunk: HashMap<usize, usize> = HashMap::new();
    for mv in &moved {
        *per_chunk.entry(mv.chunk).or_default() += 1;
    }
    if let Some((&chunk, &n)) = per_chunk.iter().filter(|&(_, &n)| n > m.erasure.m as usize).min() {
        return Err(RecordRefusal::TooManyMoves { chunk, moved: n, m: m.erasure.m });
    }
    Ok(moved)
}

impl Node {
    /// Takes a peer's `PutRecord loc/…` if the rules in the module doc
    /// allow it.
    pub(crate) async fn admit_location(&self, from: PeerId, key: &[u8], value: &[u8]) -> Response {
        match self.try_admit_location(from, key, value).await {
            Ok(()) => Response::Ok,
            Err(e) => Response::Refused(e.to_string()),
        }
    }

    async fn try_admit_location(&self, from: PeerId, key: &[u8], value: &[u8]) -> Result<(), RecordRefusal> {
        let r = LocationRecord::decode(value).map_err(|e| RecordRefusal::Invalid(e.to_string()))?;
        if location_key(&r.manifest) != key {
            return Err(RecordRefusal::Invalid("the record names another file than its key".into()));
        }
        let file = r.manifest;
        let tombstone = self.inner.tombstones.get(&file);
        if tombstone.as_ref().is_some_and(|t| t.covers(r.uploaded_at)) {
            // The maintainer renewing a lease learns of the deletion here.
            return Err(RecordRefusal::Invalid(format!("{file} was {}", crate::deletion::DELETED)));
        }
        let m = self.local_manifest(file).await.ok_or(RecordRefusal::NoManifest(file))?;
        let locations = self.inner.locations.clone();
        let old = locations.get(&file);
        if let Some(old) = &old {
            if old.signature == r.signature {
                // The same record again is its maintainer renewing the lease.
                blocking(move || {
                    locations.touch(&file);
                    Ok(())
                })
                .await
                .ok();
                return Ok(());
            }
            if old.seq >= r.seq {
                // Stale: this node has moved on already.
                return Ok(());
            }
        }
        let to_justify = check_update(&m, old.as_ref(), &r)?;
        self.justify_moves(&m, &to_justify).await?;
        // A first record of a file not pinned here makes this node keep it:
        // within the sender's budget.
        let store = self.inner.store.clone();
        let pinned = blocking(move || Ok(store.pin_info(&file)?.is_some())).await.unwrap_or(false);
        let cfg = &self.inner.cfg;
        if old.is_none()
            && !pinned
            && !self.inner.adoptions.take(&from.to_bytes(), cfg.adoptions_per_peer, cfg.adoption_window)
        {
            return Err(RecordRefusal::OverBudget);
        }
        let locations = self.inner.locations.clone();
        // `put` keeps a record that landed meanwhile with the same or a
        // higher seq.
        let store = self.inner.store.clone();
        let (tombstones, m2) = (self.inner.tombstones.clone(), m.clone());
        let relisted = tombstone.is_some();
        blocking(move || {
            if !locations.put(&r)? {
                return Ok(false);
            }
            if relisted {
                // A later upload of a file deleted before: the tombstone
                // covered the old upload only.
                tombstones.remove(&file);
                tracing::info!(%file, "uploaded again after its deletion; kept as a replica again");
            }
            // The record is what makes this node a replica of a file it
            // holds no shard of (the manifest came unpinned, `network.rs`).
            if store.pin_info(&file)?.is_some() {
                return Ok(false);
            }
            if let Some(u) = m2.unixfs {
                store.set_alias(&u, &file)?;
            }
            let info = PinInfo { name: None, size: m2.size, created_at: unix_secs(), replica: true };
            store.pin(&file, info)?;
            Ok(true)
        })
        .await
        .map(|adopted| {
            if adopted && let Some(net) = self.net().cloned() {
                tokio::spawn(async move {
                    let _ = net.provide(&crate::records::dht_key(&file)).await;
                });
            }
        })
        .map_err(|e| {
            tracing::warn!(%file, error = %e, "could not save a location record");
            RecordRefusal::Unsaved(crate::network::ForPeer::for_peer(&e))
        })?;
        Ok(())
    }

    /// The manifest of `file` if this node stores it (never asks the
    /// network).
    pub(crate) async fn local_manifest(&self, file: Cid) -> Option<std::sync::Arc<Manifest>> {
        if let Some(m) = self.inner.manifests.get(&file) {
            return Some(m);
        }
        let store = self.inner.store.clone();
        let bytes = blocking(move || Ok(store.get_manifest(&file)?)).await.ok()?;
        let m = std::sync::Arc::new(Manifest::decode_verified(&file, &bytes).ok()?);
        self.inner.manifests.insert(file, m.clone());
        Some(m)
    }

    /// Checks that each of `moves` takes a shard from a holder that is gone
    /// or failing, as this node sees it (see the module doc).
    pub(crate) async fn justify_moves(&self, m: &Manifest, moves: &[Move]) -> Result<(), RecordRefusal> {
        if moves.is_empty() {
            return Ok(());
        }
        let net = self.net().cloned();
        let me = net.as_ref().map(|n| holder_id(&n.local_peer_id()));
        let states: HashMap<HolderId, PeerState> = match &net {
            Some(n) => n.peers().await.into_iter().map(|p| (holder_id(&p.peer), p.state)).collect(),
            None => HashMap::new(),
        };
        // Positions whose previous holder still has its shard.
        let mut still_held: Vec<(usize, usize)> = Vec::new();
        // Per previous holder still to ask: its positions `(chunk, shard)`.
        let mut ask: HashMap<HolderId, Vec<(usize, usize)>> = HashMap::new();
        for mv in moves {
            let cid = m.chunks[mv.chunk].shards[mv.shard];
            if me.as_ref() == Some(&mv.from) {
                let store = self.inner.store.clone();
                let held = blocking(move || Ok(store.has_shard(&cid)?)).await.unwrap_or(false);
                if held {
                    still_held.push((mv.chunk, mv.shard));
                }
                continue;
            }
            if states.get(&mv.from) == Some(&PeerState::Offline) || self.inner.audit.failed(&cid, mv.from.as_slice()) {
                continue;
            }
            ask.entry(mv.from.clone()).or_default().push((mv.chunk, mv.shard));
        }
        let Some(net) = net else {
            return match still_held.first() {
                Some(&(chunk, shard)) => Err(RecordRefusal::HolderStillThere { chunk, shard }),
                None => Ok(()),
            };
        };
        // Which positions their holders claim.
        let mut claimed: Vec<(PeerId, usize, usize)> = Vec::new();
        let mut asks: FuturesUnordered<_> = ask
            .into_iter()
            .filter_map(|(h, pos)| peer_of(&h).map(|p| (p, pos)))
            .map(|(p, pos)| {
                let net = net.clone();
                let cids: Vec<Cid> = pos.iter().map(|&(c, s)| m.chunks[c].shards[s]).collect();
                async move {
                    let held = tokio::time::timeout(HOLDER_ANSWER_TIMEOUT, crate::locate::shards_held(&net, p, &cids))
                        .await
                        .unwrap_or_default();
                    (p, pos, held)
                }
            })
            .collect();
        while let Some((p, pos, held)) = asks.next().await {
            for (i, (c, s)) in pos.into_iter().enumerate() {
                if held.get(i).copied().flatten() == Some(true) {
                    claimed.push((p, c, s));
                }
            }
        }
        // A claim is only as good as a proof of the bytes.
        let challenges: Vec<(PeerId, usize, usize, Cid, u64, u32)> = {
            let mut rng = rand::thread_rng();
            claimed
                .into_iter()
                .map(|(p, c, s)| {
                    let (start, seg) = challenge_range(m, c, &mut rng);
                    (p, c, s, m.chunks[c].shards[s], start, seg)
                })
                .collect()
        };
        let mut proofs = futures::stream::iter(challenges)
            .map(|(p, c, s, cid, start, seg)| {
                let net = net.clone();
                async move {
                    let r = tokio::time::timeout(HOLDER_ANSWER_TIMEOUT, net.audit(p, cid, start, seg)).await;
                    (c, s, matches!(r, Ok(Ok(_))))
                }
            })
            .buffer_unordered(CHALLENGES_IN_FLIGHT);
        while let Some((chunk, shard, proven)) = proofs.next().await {
            if proven {
                still_held.push((chunk, shard));
            }
        }
        // A holder that proves its shard was not necessarily wrongly moved:
        // a repairer moves the shards of a holder that was unreachable at
        // the time, and that holder may be back (a restart, a healed
        // partition) still holding its old copy. Such a move stands when the
        // new holder proves it holds the shard too: the record then names
        // nodes that really have the bytes, so reads and repair work from
        // it, which is what the rule protects.
        for (chunk, shard) in still_held {
            let to = moves.iter().find(|mv| mv.chunk == chunk && mv.shard == shard).and_then(|mv| mv.to.clone());
            if !self.holder_proves(&net, m, chunk, shard, to.as_ref(), me.as_ref()).await {
                return Err(RecordRefusal::HolderStillThere { chunk, shard });
            }
        }
        Ok(())
    }

    /// Whether `to` (the new holder of a position) holds its shard: this
    /// node by its store, another by answering an audit challenge.
    async fn holder_proves(
        &self,
        net: &NetClient,
        m: &Manifest,
        chunk: usize,
        shard: usize,
        to: Option<&HolderId>,
        me: Option<&HolderId>,
    ) -> bool {
        let Some(to) = to else { return false };
        let cid = m.chunks[chunk].shards[shard];
        if Some(to) == me {
            let store = self.inner.store.clone();
            return blocking(move || Ok(store.has_shard(&cid)?)).await.unwrap_or(false);
        }
        let Some(p) = peer_of(to) else { return false };
        let (start, seg) = challenge_range(m, chunk, &mut rand::thread_rng());
        matches!(tokio::time::timeout(HOLDER_ANSWER_TIMEOUT, net.audit(p, cid, start, seg)).await, Ok(Ok(_)))
    }

    /// Brings this node's copy of a file's location record up to date by
    /// asking the file's replicas and holders for theirs.
    ///
    /// A node that was down or cut off while a repair re-signed the record
    /// keeps its old one: nobody may send it the new one in time, and when
    /// one does, [`crate::records::may_replace`] refuses a record signed by a
    /// repairer that its old record does not name (after two repairs the
    /// chain of signers is broken). A record that a peer we already trust
    /// with the file — a holder named in our record, or its signer, any of
    /// whom could sign a rewrite itself — holds as current is taken over,
    /// and the walk goes on from there with the new record's holders. Taking
    /// over the newest record is what keeps a stale node from repairing from
    /// its old view and forking the record with its own line of `seq`s;
    /// when a fork happened anyway, this is where the node gives up its line
    /// for the one more of the file's replicas hold (the choice is
    /// [`newest_vouched`]).
    ///
    /// Returns the record now held (`rec` when nothing else was vouched
    /// for).
    pub(crate) async fn refresh_location(&self, m: &Manifest, rec: LocationRecord) -> LocationRecord {
        let Some(net) = self.net().cloned() else { return rec };
        let manifest = rec.manifest;
        let ask = self.replica_targets(m, manifest, &rec).await;
        let answers: Vec<(HolderId, LocationRecord)> = ask
            .into_iter()
            .map(|p| {
                let net = net.clone();
                async move {
                    let got =
                        tokio::time::timeout(Duration::from_secs(5), net.get_record(p, location_key(&manifest))).await;
                    match got {
                        Ok(Ok(Some(b))) => LocationRecord::decode(&b)
                            .ok()
                            .filter(|r| r.manifest == manifest && r.fits(m).is_ok() && from_the_writer(m, r))
                            .map(|r| (holder_id(&p), r)),
                        _ => None,
                    }
                }
            })
            .collect::<FuturesUnordered<_>>()
            .filter_map(std::future::ready)
            .collect()
            .await;
        let current = newest_vouched(&rec, &answers);
        if current.signature != rec.signature && !self.may_catch_up(m, &rec, &current).await {
            tracing::warn!(
                file = %manifest,
                seq = current.seq,
                "a newer location record moves shards from holders that still have them; kept this node's"
            );
            return rec;
        }
        if current.signature != rec.signature {
            tracing::info!(file = %manifest, from = rec.seq, to = current.seq, "took over a newer location record");
            let locations = self.inner.locations.clone();
            let r = current.clone();
            let _ = blocking(move || locations.take_over(&r).map_err(|e| StorageError::Store(e).into())).await;
        }
        current
    }

    /// Whether this node may take `new` over `old` when catching up from
    /// the file's replicas: it fits the manifest, its `seq` is ahead by at
    /// most [`MAX_SEQ_STEP`], and every position it moves (other than its
    /// signer's own) is justified here.
    pub(crate) async fn may_catch_up(&self, m: &Manifest, old: &LocationRecord, new: &LocationRecord) -> bool {
        if new.fits(m).is_err() {
            return false;
        }
        if new.seq != old.seq && new.seq.saturating_sub(old.seq) > MAX_SEQ_STEP {
            return false;
        }
        let signer = signer_id(new);
        let moved = moves(m, old, new, signer.as_ref());
        self.justify_moves(m, &moved).await.is_ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use datamesh_core::manifest::{ChunkEntry, Chunking, Compression, Erasure, MANIFEST_VERSION, merkle_root};

    fn key(n: u8) -> ed25519_dalek::SigningKey {
        ed25519_dalek::SigningKey::from_bytes(&[n; 32])
    }

    fn id(n: u8) -> HolderId {
        HolderId::from(datamesh_net::peer_id_of_ed25519(&key(n).verifying_key().to_bytes()).unwrap().to_bytes())
    }

    /// Two chunks of a 2+1 code.
    fn manifest() -> Manifest {
        let chunks: Vec<ChunkEntry> = (0..2u8)
            .map(|i| ChunkEntry {
                plain_size: 10,
                stored_size: 10,
                compression: Compression::None,
                cid: Cid::raw_blake3(&[i]),
                shards: (0..3).map(|j| Cid::raw_blake3(&[i, j])).collect(),
            })
            .collect();
        Manifest {
            version: MANIFEST_VERSION,
            size: 20,
            chunking: Chunking::Fixed { size: 10 },
            erasure: Erasure { k: 2, m: 1 },
            encryption: None,
            unixfs: None,
            owner: None,
            writer: None,
            merkle_root: merkle_root(chunks.iter().map(|c| &c.cid)),
            chunks,
        }
    }

    fn rec(m: &Manifest, seq: u64, rows: &[[u8; 3]], by: u8) -> LocationRecord {
        let rows: Vec<Vec<HolderId>> = rows.iter().map(|r| r.iter().map(|&h| id(h)).collect()).collect();
        LocationRecord::sign(m.cid(), seq, &rows, &key(by))
    }

    /// The hole: a Sybil holding one shard signed `seq = u64::MAX - 1`
    /// naming only itself, and every replica took it. Now the seq must be
    /// the next one and at most m positions of a chunk may move.
    #[test]
    fn a_holder_cannot_take_a_file_over() {
        let m = manifest();
        let old = rec(&m, 1, &[[1, 2, 3], [2, 3, 1]], 1);
        let greedy = rec(&m, u64::MAX - 1, &[[3, 3, 3], [3, 3, 3]], 3);
        assert_eq!(check_update(&m, Some(&old), &greedy), Err(RecordRefusal::NotNext { have: 1, got: u64::MAX - 1 }));
        let greedy = rec(&m, 2, &[[3, 3, 3], [3, 3, 3]], 3);
        assert!(matches!(check_update(&m, Some(&old), &greedy), Err(RecordRefusal::TooManyMoves { m: 1, .. })));
        // A stranger may not rewrite at all.
        let stranger = rec(&m, 2, &[[1, 2, 9], [2, 3, 1]], 9);
        assert_eq!(check_update(&m, Some(&old), &stranger), Err(RecordRefusal::Untrusted));
        // A repair: one lost shard per chunk moves; those are what must be
        // justified.
        let repair = rec(&m, 2, &[[1, 2, 4], [2, 4, 1]], 2);
        let todo = check_update(&m, Some(&old), &repair).unwrap();
        let at: Vec<(usize, usize, HolderId)> = todo.iter().map(|mv| (mv.chunk, mv.shard, mv.from.clone())).collect();
        assert_eq!(at, vec![(0, 2, id(3)), (1, 1, id(3))]);
        // A drain: the signer moves every shard of its own, no justification.
        let drain = rec(&m, 2, &[[4, 2, 3], [2, 3, 5]], 1);
        assert_eq!(check_update(&m, Some(&old), &drain).unwrap(), vec![]);
        // A short record is refused before anything indexes into it.
        let short = LocationRecord::sign(m.cid(), 2, &[vec![id(1), id(2), id(3)], vec![id(2)]], &key(1));
        assert!(matches!(check_update(&m, Some(&old), &short), Err(RecordRefusal::Shape { .. })));
        assert!(matches!(check_update(&m, None, &short), Err(RecordRefusal::Shape { .. })));
        // A first record may not start near the ceiling.
        let high = rec(&m, MAX_SEQ_STEP + 1, &[[1, 2, 3], [2, 3, 1]], 1);
        assert_eq!(check_update(&m, None, &high), Err(RecordRefusal::FirstTooHigh(MAX_SEQ_STEP + 1)));
        check_update(&m, None, &old).unwrap();
    }

    /// The hole: a record one shard short made `rewrite_location` index
    /// past its end and killed the repair worker. Now it is an error.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewriting_a_short_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = crate::config::NodeConfig { data_dir: dir.path().join("node"), ..Default::default() };
        let node = tokio::task::spawn_blocking(move || Node::open(cfg)).await.unwrap().unwrap();
        let m = manifest();
        let short = LocationRecord::sign(m.cid(), 1, &[vec![id(1), id(2), id(3)], vec![id(2)]], &key(1));
        let r = node.rewrite_location(&m, &short, &[(1, 2, id(5))]).await;
        assert!(
            matches!(&r, Err(crate::error::NodeError::Storage(e)) if matches!(**e, crate::error::StorageError::BadRecord { .. })),
            "{r:?}"
        );
        let top = rec(&m, u64::MAX - 1, &[[1, 2, 3], [2, 3, 1]], 1);
        let r = node.rewrite_location(&m, &top, &[(1, 2, id(5))]).await;
        assert!(
            matches!(&r, Err(crate::error::NodeError::Storage(e)) if matches!(**e, crate::error::StorageError::BadRecord { .. })),
            "{r:?}"
        );
    }
}
