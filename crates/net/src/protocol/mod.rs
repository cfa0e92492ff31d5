//! The shard protocol, `/datamesh/shard/2.0.0`: how nodes move shards,
//! manifests and small records, and how they heartbeat.
//!
//! # Goals
//! - One request, one response, on its own stream (libp2p
//!   `request_response`). No state outlives a stream.
//! - Bulk bytes (a shard, a manifest) are streamed, never buffered whole by
//!   this layer: a small header frame announces the body's exact length, and
//!   the body follows as raw bytes, read and written in pieces of
//!   [`PIECE`] (256 KiB). A node's [`crate::Handler`] takes a PUT's body
//!   piece by piece ([`BodySink`]: the node writes it straight to disk) and
//!   answers a GET from a [`BodySource`] (the node reads the file in
//!   pieces). Memory per transfer in this layer is a piece.
//! - Every size a peer controls is bounded and checked before memory, disk
//!   or capacity is committed to it; a message that breaks the rules is
//!   dropped and counted against the sender (a *strike*).
//! - Content is verified on every hop: a `PutShard`/`PutManifest` body that
//!   does not hash to its CID is refused and struck (by the node's sink,
//!   which hashes as it writes, or here for a handler that does not
//!   stream), and a `GetShard`/`GetManifest` answer is verified by the
//!   requester. A responder streaming from disk verifies the file as it
//!   reads it and aborts the stream before the last piece if it does not
//!   match, so a whole corrupt body is never sent.
//!
//! # Wire
//! ```text
//! message = frame [ body ]
//! frame   = len:u32 BE | version:u8 (= 2) | tag:u8 | fields
//!                                    (len = 2 + fields, 2 ..= MAX_FRAME)
//! body    = exactly n raw bytes, n being the frame's last field, for the
//!           three messages that carry one (PutShard, PutManifest, Data);
//!           then the sender closes its side: a byte past the body is a
//!           violation
//! cid     = n:u8 (1..=64)  | n bytes     (binary CIDv1, as `Cid::to_bytes`)
//! bytes16 = n:u16 BE       | n bytes
//! bytes32 = n:u32 BE       | n bytes     (inside the frame)
//! u64     = 8 bytes BE
//! ```
//! A frame is read with a bounded reader: a length prefix larger than
//! [`MAX_FRAME`] (`MAX_RECORD_VALUE` + 64 KiB) is refused from the 4 bytes
//! alone, before any buffer is allocated; a buffer grows only as bytes
//! actually arrive. Every inner length is checked against its own bound and
//! against the bytes left; trailing bytes are an error. A body's announced
//! length is checked against its own bound (below) from the header alone,
//! before a byte of it is read or any capacity is reserved. A body cut
//! short (the peer died, or aborted) is a transport error: nothing of it is
//! kept, and it is not held against the peer.
//!
//! # Requests
//! | tag  | message        | fields                                    | bounds |
//! |------|----------------|-------------------------------------------|--------|
//! | 0x01 | `PutShard`     | cid, n:u32, then body                     | n ≤ `MAX_STORED_CHUNK_SIZE` |
//! | 0x02 | `GetShard`     | cid                                       | |
//! | 0x03 | `ShardExists`  | n:u16, n × cid                            | n ≤ [`MAX_EXISTS_CIDS`] |
//! | 0x04 | `DeleteShard`  | cid, authorization:bytes16                | ≤ [`MAX_AUTHORIZATION`] |
//! | 0x05 | `PutManifest`  | cid, n:u32, then body                     | n ≤ `MAX_MANIFEST_SIZE` |
//! | 0x06 | `GetManifest`  | cid                                       | |
//! | 0x07 | `PutRecord`    | key:bytes16, value:bytes32 (last)         | key ≤ [`MAX_RECORD_KEY`], value ≤ [`MAX_RECORD_VALUE`] |
//! | 0x08 | `GetRecord`    | key:bytes16                               | key ≤ [`MAX_RECORD_KEY`] |
//! | 0x09 | `Heartbeat`    | free_bytes:u64, shards:u64, uptime_secs:u64, [flags:u8] | flags: see below |
//! | 0x0a | `Audit`        | cid, start:u64, len:u32                   | 1 ≤ len ≤ `core::proof::MAX_SEGMENT` |
//! | 0x0b | `RebuildShard` | chunk:cid, k:u16, m:u16, want:u16, n:u16, n × (cid, holder:bytes16) | n = k+m ≤ `MAX_TOTAL_SHARDS`, k ≥ 1, want < n, holder empty or a peer id ≤ [`MAX_PEER_ID`] |
//!
//! # Responses
//! | tag  | message     | fields |
//! |------|-------------|--------|
//! | 0x81 | `Ok`        | |
//! | 0x82 | `Data`      | n:u32, then body; n ≤ the bound of what was asked (`MAX_STORED_CHUNK_SIZE` for `GetShard`, `MAX_MANIFEST_SIZE` for `GetManifest`, [`MAX_FRAME`] otherwise) |
//! | 0x83 | `Exists`    | n:u16, n × u8 (0 or 1); n ≤ [`MAX_EXISTS_CIDS`] |
//! | 0x84 | `Record`    | present:u8 (0/1), then value:bytes32 if present |
//! | 0x85 | `NotFound`  | |
//! | 0x86 | `Refused`   | reason:bytes16, UTF-8, ≤ [`MAX_REASON`] |
//! | 0x87 | `Heartbeat` | as the request |
//!
//! ## Heartbeat flags
//! `flags` is optional and last: bit 0 set means the node is *draining*
//! (`datamesh drain`: it is moving its shards away and takes no new ones);
//! other bits must be 0. It is written only when some bit is set, so the
//! heartbeat of a node that is not draining is byte for byte the 24-byte
//! body nodes before this field sent, and a frame without it decodes as no
//! flags. (Nodes older than the field refuse the 25-byte form: a draining
//! node is then not heard from by them, which also keeps them from placing
//! on it.)
//!
//! ## RebuildShard
//! Asks a node to rebuild one shard of a chunk and keep it: it fetches any
//! k of the listed shards from their holders (each verified against its
//! CID), decodes, checks the rebuilt shard against `shards[want]`'s CID,
//! stores it durably and answers `Ok` (or `Refused` with the reason). The
//! repair worker sends it to the new holder it picked, so the k shards flow
//! into the node that keeps the result instead of through the repairer: a
//! repair then uses every survivor's link, not the repairer's alone. The
//! holders are hints (everything fetched is verified), and the result is
//! content addressed, so a peer can make a node store nothing but a shard
//! that really is the one named, as with `PutShard`.
//!
//! # Why hand-rolled and not serde + CBOR
//! Eleven small messages, three of which announce one body. A hand-written
//! decoder is short enough to audit line by line, checks each length against
//! its bound *and* against the bytes left before slicing (no library
//! pre-allocating from a declared length), never panics, and lets a body go
//! from the wire to the node's sink (and from its source to the wire) in
//! pieces. The byte layout above is the whole spec.
//!
//! # Limits and what they imply
//! - A frame (everything but a body) is at most [`MAX_FRAME`] ≈ 1 MiB +
//!   64 KiB: the largest is a `PutRecord`. `request_response` reads a whole
//!   frame before the node sees it; the memory this takes is capped for the
//!   whole node by `Tuning::max_inbound_bytes` (256 MiB by default): after
//!   the length prefix, a frame waits until its size fits the budget, and
//!   holds it until the handler is done with the request. A body streamed
//!   into a [`BodySink`] holds one [`PIECE`] of that budget; a body for a
//!   handler without a sink is buffered whole and holds its length (capped
//!   at the whole budget).
//! - Any manifest the node accepts (`MAX_MANIFEST_SIZE`, 64 MiB) can be
//!   replicated with `PutManifest`.
//! - The requester of a `GetShard`/`GetManifest` gets the bytes as one
//!   buffer (it needs them whole to decode), read in pieces and bounded by
//!   what it asked for.
//! - StreamRequest work is bounded by `NetConfig::max_inbound_requests` (beyond
//!   it the answer is `Refused("busy")`; bodies wait for a slot instead),
//!   streams per connection by `Tuning::max_streams_per_connection`,
//!   connections by the connection limits, and each exchange (waiting for
//!   budget and the whole body included) by `NetConfig::request_timeout`.
//!
//! # Versioning
//! The protocol id carries the major version (`/datamesh/shard/2.0.0`); the
//! version byte in every frame must be [`WIRE_VERSION`]. Version 1
//! (`/datamesh/shard/1.0.0`) carried every message, bodies included, in one
//! frame of up to 16 MiB + 64 KiB; it is no longer offered, so a version 1
//! node and this one do not negotiate the shard protocol (the requester
//! sees `NetError::Protocol`). A later version gets a new protocol id and
//! both can be offered side by side.

use std::io;
use std::sync::Arc;

use datamesh_core::Cid;
use datamesh_core::limits::{MAX_MANIFEST_SIZE, MAX_STORED_CHUNK_SIZE};
use futures::prelude::*;
use libp2p::{PeerId, StreamProtocol};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::Handler;

mod codec;
mod decode;
mod encode;
mod stream;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

pub(crate) use self::codec::{ShardCodec, StreamRequest, StreamResponse};
pub use self::decode::{RequestHead, ResponseHead, decode_request_head, decode_response_head};
pub use self::encode::{encode_request_frame, encode_response_frame};
pub(crate) use self::stream::InboundBudget;
pub use self::stream::{read_request, read_response};
#[allow(clippy::wildcard_imports)]
use self::{decode::*, encode::*, stream::*};

/// The protocol id negotiated on every shard stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/datamesh/shard/2.0.0");
/// The version byte every frame of `/datamesh/shard/2.0.0` carries.
pub const WIRE_VERSION: u8 = 2;
/// Largest record value.
pub const MAX_RECORD_VALUE: usize = 1024 * 1024;
/// Largest frame (everything but a body): the largest record plus 64 KiB
/// of headroom.
pub const MAX_FRAME: usize = MAX_RECORD_VALUE + 64 * 1024;
/// Bodies are read and written in pieces of this size. Each piece is one
/// hop to a blocking thread (a file read or write): at 64 KiB, the thread
/// hand-offs (futex wakes and context switches) cost a shard transfer about
/// as much CPU as its Noise encryption, and a repair, which moves four
/// shards per shard it rebuilds, paid them four times over.
pub const PIECE: usize = 256 * 1024;
/// Most CIDs in one `ShardExists`.
pub const MAX_EXISTS_CIDS: usize = 1024;
/// Largest `DeleteShard` authorization (opaque to the network layer).
pub const MAX_AUTHORIZATION: usize = 4 * 1024;
/// Largest record key.
pub const MAX_RECORD_KEY: usize = 1024;
/// Largest `Refused` reason (longer reasons are cut when sent).
pub const MAX_REASON: usize = 1024;
/// Largest peer id in a `RebuildShard` (an Ed25519 peer id is 38 bytes).
pub const MAX_PEER_ID: usize = 64;

/// The bounds of a `RebuildShard`: a code of `n = k + m` shards, at most
/// `MAX_TOTAL_SHARDS`, at least one data shard, and a wanted index in it.
fn check_rebuild(k: u16, m: u16, want: u16, n: usize) -> Result<(), String> {
    let max = datamesh_core::limits::MAX_TOTAL_SHARDS;
    if k == 0 || k as usize + m as usize != n || n > max || want as usize >= n {
        return Err(format!(
            "REBUILD_SHARD of shard {want} of a {k}+{m} code with {n} shards listed: \
             it needs k >= 1, k+m shards (at most {max}) and a wanted index below k+m"
        ));
    }
    Ok(())
}
/// Largest binary CID accepted on the wire.
const MAX_CID_BYTES: usize = 64;
/// First allocation for a frame or a buffered body; it grows as bytes arrive.
const INITIAL_BUFFER: usize = 64 * 1024;

/// What a body holds: its kind sets its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BodyKind {
    /// A shard (or a stored chunk): at most `MAX_STORED_CHUNK_SIZE`.
    Shard,
    /// A manifest: at most `MAX_MANIFEST_SIZE`.
    Manifest,
}

impl BodyKind {
    /// The largest body of this kind.
    pub fn limit(self) -> usize {
        match self {
            BodyKind::Shard => MAX_STORED_CHUNK_SIZE,
            BodyKind::Manifest => MAX_MANIFEST_SIZE,
        }
    }
}

/// Why a [`BodySink`] did not take a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// The bytes do not match the CID (or the announced length): the sender
    /// is answered `Refused` and struck.
    Mismatch(String),
    /// The node cannot take it (disk full, capacity, IO): answered
    /// `Refused`, not held against the sender.
    Refused(String),
}

/// Where the body of an inbound `PutShard`/`PutManifest` goes, piece by
/// piece, as it arrives (see [`crate::Handler::body_sink`]). Its methods
/// block (disk IO); the network layer calls them on blocking threads.
///
/// The sink is dropped without [`BodySink::finish`] when the body is cut
/// short or breaks the protocol: it must then keep nothing.
pub trait BodySink: Send + 'static {
    /// Takes the next piece of the body.
    fn write(&mut self, piece: &[u8]) -> Result<(), BodyError>;
    /// The whole announced body has arrived: check it against the CID and
    /// make it durable. `Ok` is answered `Ok`: the object is durable.
    fn finish(self: Box<Self>) -> Result<(), BodyError>;
}

/// The body of a `Data` answer to a `GetShard`/`GetManifest`, read in
/// pieces as it is sent (see [`crate::Handler::body_source`]).
pub struct BodySource {
    /// Exactly how many bytes `reader` yields.
    pub len: u64,
    /// Blocking; read on blocking threads. It must fail rather than yield
    /// the bytes that complete a body that does not match its CID (verify
    /// before handing out the last piece): the stream is then aborted, and
    /// the requester gets nothing it could take for the object.
    pub reader: Box<dyn io::Read + Send>,
}

impl std::fmt::Debug for BodySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BodySource").field("len", &self.len).finish()
    }
}

/// A request of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a shard. Its bytes travel as a body. A handler with a
    /// [`crate::Handler::body_sink`] receives them there instead; otherwise
    /// the network layer checks `cid.verifies(&data)` before the handler
    /// sees this; a mismatch is answered `Refused` and strikes the sender.
    PutShard {
        /// The shard's CID.
        cid: Cid,
        /// The shard's bytes.
        data: Vec<u8>,
    },
    /// Read a shard (answer: `Data` or `NotFound`).
    GetShard {
        /// The shard's CID.
        cid: Cid,
    },
    /// Which of these shards are held (answer: `Exists`, same order).
    ShardExists {
        /// At most [`MAX_EXISTS_CIDS`].
        cids: Vec<Cid>,
    },
    /// Delete a shard; the node checks the authorization.
    DeleteShard {
        /// The shard's CID.
        cid: Cid,
        /// Opaque to the network layer, at most [`MAX_AUTHORIZATION`] bytes.
        authorization: Vec<u8>,
    },
    /// Store a manifest; verified against `cid` like shards.
    PutManifest {
        /// The manifest's CID.
        cid: Cid,
        /// The manifest's bytes.
        data: Vec<u8>,
    },
    /// Read a manifest (answer: `Data` or `NotFound`).
    GetManifest {
        /// The manifest's CID.
        cid: Cid,
    },
    /// Store a small record the node defines (e.g. a signed location record).
    PutRecord {
        /// At most [`MAX_RECORD_KEY`] bytes.
        key: Vec<u8>,
        /// At most [`MAX_RECORD_VALUE`] bytes.
        value: Vec<u8>,
    },
    /// Read a record (answer: `Record`).
    GetRecord {
        /// At most [`MAX_RECORD_KEY`] bytes.
        key: Vec<u8>,
    },
    /// The sender's health numbers; answered by the network layer itself with
    /// the local numbers (see `NetClient::set_local_heartbeat`).
    Heartbeat(Heartbeat),
    /// Prove the holding of bytes `start..start+len` of a shard (answer:
    /// `Data` with a BLAKE3 verified slice, see `datamesh_core::proof`, or
    /// `NotFound`).
    Audit {
        /// The shard's CID.
        cid: Cid,
        /// First byte of the segment.
        start: u64,
        /// Segment length, 1 ..= `core::proof::MAX_SEGMENT`.
        len: u32,
    },
    /// Rebuild shard `want` of a chunk from any `k` of the others and keep
    /// it (answer: `Ok` once it is durable here, or `Refused`).
    RebuildShard {
        /// The chunk the shards belong to.
        chunk: Cid,
        /// Data shards of the chunk's code.
        k: u16,
        /// Parity shards of the chunk's code.
        m: u16,
        /// The index of the shard to rebuild, `< k + m`.
        want: u16,
        /// Every shard of the chunk in order (`k + m` of them): its CID and
        /// a peer that holds it, if one is known.
        shards: Vec<(Cid, Option<PeerId>)>,
    },
}

/// A response of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done (for puts: durable on the peer).
    Ok,
    /// The bytes asked for (sent as a body). A handler streaming a stored
    /// object from disk answers with a [`BodySource`] instead (see
    /// [`crate::Handler::body_source`]); the requester receives `Data`.
    Data(Vec<u8>),
    /// One flag per CID asked about, in order.
    Exists(Vec<bool>),
    /// The record, if the peer has one.
    Record(Option<Vec<u8>>),
    /// The peer does not have it.
    NotFound,
    /// The peer will not do it; the reason is for people.
    Refused(String),
    /// The peer's health numbers.
    Heartbeat(Heartbeat),
}

/// A node's health numbers, exchanged in heartbeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heartbeat {
    /// Bytes the node can still accept.
    pub free_bytes: u64,
    /// Shards it holds.
    pub shards: u64,
    /// Seconds since it started.
    pub uptime_secs: u64,
    /// It is draining: moving its shards to other nodes before it leaves.
    /// Peers place nothing new on it and keep no new replicas there.
    pub draining: bool,
}

/// Heartbeat flag bit: the node is draining.
const FLAG_DRAINING: u8 = 0x01;

impl Request {
    /// A short name for logs and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::PutShard { .. } => "PUT_SHARD",
            Request::GetShard { .. } => "GET_SHARD",
            Request::ShardExists { .. } => "SHARD_EXISTS",
            Request::DeleteShard { .. } => "DELETE_SHARD",
            Request::PutManifest { .. } => "PUT_MANIFEST",
            Request::GetManifest { .. } => "GET_MANIFEST",
            Request::PutRecord { .. } => "PUT_RECORD",
            Request::GetRecord { .. } => "GET_RECORD",
            Request::Heartbeat(_) => "HEARTBEAT",
            Request::Audit { .. } => "AUDIT",
            Request::RebuildShard { .. } => "REBUILD_SHARD",
        }
    }

    /// Checks the bounds a peer would check on receipt, so that a local caller
    /// learns of an oversized request before it is sent.
    pub fn check_bounds(&self) -> Result<(), String> {
        match self {
            Request::PutShard { data, .. } if data.len() > BodyKind::Shard.limit() => {
                Err(format!("a shard of {} bytes; the limit is {}", data.len(), BodyKind::Shard.limit()))
            }
            Request::PutManifest { data, .. } if data.len() > BodyKind::Manifest.limit() => {
                Err(format!("a manifest of {} bytes; the limit is {}", data.len(), BodyKind::Manifest.limit()))
            }
            Request::ShardExists { cids } if cids.len() > MAX_EXISTS_CIDS => {
                Err(format!("{} CIDs in one SHARD_EXISTS; the limit is {MAX_EXISTS_CIDS}", cids.len()))
            }
            Request::DeleteShard { authorization, .. } if authorization.len() > MAX_AUTHORIZATION => {
                Err(format!("authorization of {} bytes; the limit is {MAX_AUTHORIZATION}", authorization.len()))
            }
            Request::PutRecord { key, value } if key.len() > MAX_RECORD_KEY || value.len() > MAX_RECORD_VALUE => {
                Err(format!(
                    "record key {} / value {} bytes; the limits are {MAX_RECORD_KEY} / {MAX_RECORD_VALUE}",
                    key.len(),
                    value.len()
                ))
            }
            Request::Audit { len, .. } if *len == 0 || *len > datamesh_core::proof::MAX_SEGMENT => {
                Err(format!("audit segment of {len} bytes; the limit is {}", datamesh_core::proof::MAX_SEGMENT))
            }
            Request::GetRecord { key } if key.len() > MAX_RECORD_KEY => {
                Err(format!("record key of {} bytes; the limit is {MAX_RECORD_KEY}", key.len()))
            }
            Request::RebuildShard { k, m, want, shards, .. } => check_rebuild(*k, *m, *want, shards.len()),
            _ => Ok(()),
        }
    }

    /// The largest `Data` body a peer may answer this request with.
    pub fn answer_limit(&self) -> usize {
        match self {
            Request::GetShard { .. } => BodyKind::Shard.limit(),
            Request::GetManifest { .. } => BodyKind::Manifest.limit(),
            _ => MAX_FRAME,
        }
    }
}
