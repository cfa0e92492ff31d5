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
//! - Inbound work is bounded by `NetConfig::max_inbound_requests` (beyond
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

// ---------------------------------------------------------------------------
// Encoding

/// A message split in two: the frame (length prefix, version, tag, fields)
/// and the body that follows it, sent as is (empty for most messages).
pub(crate) struct Encoded<'a> {
    pub head: Vec<u8>,
    pub body: &'a [u8],
}

fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let b = cid.to_bytes();
    // Our CIDs are ≤ 38 bytes (version, codec, hash code, length, 32 digest bytes).
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn finish(mut head: Vec<u8>, body: &[u8]) -> io::Result<Encoded<'_>> {
    let frame_len = head.len() - 4;
    if frame_len > MAX_FRAME {
        return Err(invalid(format!("frame of {frame_len} bytes exceeds the limit of {MAX_FRAME}")));
    }
    if u32::try_from(body.len()).is_err() {
        return Err(invalid(format!("body of {} bytes", body.len())));
    }
    head[..4].copy_from_slice(&(frame_len as u32).to_be_bytes());
    Ok(Encoded { head, body })
}

fn start(tag: u8) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(&[0, 0, 0, 0, WIRE_VERSION, tag]);
    head
}

/// Encodes a request into a frame and its body.
pub(crate) fn encode_request(req: &Request) -> io::Result<Encoded<'_>> {
    req.check_bounds().map_err(invalid)?;
    let tag = match req {
        Request::PutShard { .. } => 0x01,
        Request::GetShard { .. } => 0x02,
        Request::ShardExists { .. } => 0x03,
        Request::DeleteShard { .. } => 0x04,
        Request::PutManifest { .. } => 0x05,
        Request::GetManifest { .. } => 0x06,
        Request::PutRecord { .. } => 0x07,
        Request::GetRecord { .. } => 0x08,
        Request::Heartbeat(_) => 0x09,
        Request::Audit { .. } => 0x0a,
        Request::RebuildShard { .. } => 0x0b,
    };
    let mut h = start(tag);
    let mut body: &[u8] = &[];
    match req {
        Request::PutShard { cid, data } | Request::PutManifest { cid, data } => {
            put_cid(&mut h, cid);
            h.extend_from_slice(&(data.len() as u32).to_be_bytes());
            body = data;
        }
        Request::GetShard { cid } | Request::GetManifest { cid } => put_cid(&mut h, cid),
        Request::ShardExists { cids } => {
            h.extend_from_slice(&(cids.len() as u16).to_be_bytes());
            for c in cids {
                put_cid(&mut h, c);
            }
        }
        Request::DeleteShard { cid, authorization } => {
            put_cid(&mut h, cid);
            put_bytes16(&mut h, authorization);
        }
        Request::PutRecord { key, value } => {
            put_bytes16(&mut h, key);
            put_bytes32(&mut h, value);
        }
        Request::GetRecord { key } => put_bytes16(&mut h, key),
        Request::Heartbeat(hb) => put_heartbeat(&mut h, hb),
        Request::Audit { cid, start, len } => {
            put_cid(&mut h, cid);
            h.extend_from_slice(&start.to_be_bytes());
            h.extend_from_slice(&len.to_be_bytes());
        }
        Request::RebuildShard { chunk, k, m, want, shards } => {
            put_cid(&mut h, chunk);
            for v in [*k, *m, *want, shards.len() as u16] {
                h.extend_from_slice(&v.to_be_bytes());
            }
            for (cid, holder) in shards {
                put_cid(&mut h, cid);
                put_bytes16(&mut h, &holder.map(|p| p.to_bytes()).unwrap_or_default());
            }
        }
    }
    finish(h, body)
}

/// A whole request (frame, length prefix included, then its body), as it
/// goes on the wire.
pub fn encode_request_frame(req: &Request) -> io::Result<Vec<u8>> {
    let e = encode_request(req)?;
    let mut v = e.head;
    v.extend_from_slice(e.body);
    Ok(v)
}

/// A whole response (frame, length prefix included, then its body), as it
/// goes on the wire.
pub fn encode_response_frame(resp: &Response) -> io::Result<Vec<u8>> {
    let e = encode_response(resp)?;
    let mut v = e.head;
    v.extend_from_slice(e.body);
    Ok(v)
}

fn put_heartbeat(h: &mut Vec<u8>, hb: &Heartbeat) {
    h.extend_from_slice(&hb.free_bytes.to_be_bytes());
    h.extend_from_slice(&hb.shards.to_be_bytes());
    h.extend_from_slice(&hb.uptime_secs.to_be_bytes());
    // Only when set: the 24-byte form stays what it always was.
    if hb.draining {
        h.push(FLAG_DRAINING);
    }
}

/// The frame of a `Data` answer whose body is `len` bytes.
fn data_head(len: usize) -> io::Result<Vec<u8>> {
    let len = u32::try_from(len).map_err(|_| invalid(format!("body of {len} bytes")))?;
    let mut h = start(0x82);
    h.extend_from_slice(&len.to_be_bytes());
    Ok(finish(h, &[])?.head)
}

/// Encodes a response into a frame and its body. Over-long `Refused`
/// reasons are cut.
pub(crate) fn encode_response(resp: &Response) -> io::Result<Encoded<'_>> {
    let mut h;
    let mut body: &[u8] = &[];
    match resp {
        Response::Ok => h = start(0x81),
        Response::Data(d) => {
            h = start(0x82);
            h.extend_from_slice(&(d.len() as u32).to_be_bytes());
            body = d;
        }
        Response::Exists(flags) => {
            if flags.len() > MAX_EXISTS_CIDS {
                return Err(invalid(format!("{} flags exceed {MAX_EXISTS_CIDS}", flags.len())));
            }
            h = start(0x83);
            h.extend_from_slice(&(flags.len() as u16).to_be_bytes());
            h.extend(flags.iter().map(|&f| f as u8));
        }
        Response::Record(r) => {
            h = start(0x84);
            match r {
                None => h.push(0),
                Some(v) => {
                    if v.len() > MAX_RECORD_VALUE {
                        return Err(invalid(format!("record value of {} bytes exceeds {MAX_RECORD_VALUE}", v.len())));
                    }
                    h.push(1);
                    put_bytes32(&mut h, v);
                }
            }
        }
        Response::NotFound => h = start(0x85),
        Response::Refused(reason) => {
            h = start(0x86);
            let mut end = reason.len().min(MAX_REASON);
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            put_bytes16(&mut h, &reason.as_bytes()[..end]);
        }
        Response::Heartbeat(hb) => {
            h = start(0x87);
            put_heartbeat(&mut h, hb);
        }
    }
    finish(h, body)
}

// ---------------------------------------------------------------------------
// Decoding

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A cursor over one frame body. Every read checks the bytes left.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> io::Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(invalid(format!("{what}: {n} bytes announced, {} left", self.buf.len() - self.pos)));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self, what: &str) -> io::Result<u8> {
        Ok(self.take(1, what)?[0])
    }
    fn u16(&mut self, what: &str) -> io::Result<usize> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    fn u32(&mut self, what: &str) -> io::Result<usize> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    fn u64(&mut self, what: &str) -> io::Result<u64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn cid(&mut self) -> io::Result<Cid> {
        let n = self.u8("cid length")? as usize;
        if n == 0 || n > MAX_CID_BYTES {
            return Err(invalid(format!("cid of {n} bytes")));
        }
        Cid::from_bytes(self.take(n, "cid")?).map_err(|e| invalid(e.to_string()))
    }
    fn bytes16(&mut self, max: usize, what: &str) -> io::Result<Vec<u8>> {
        let n = self.u16(what)?;
        if n > max {
            return Err(invalid(format!("{what} of {n} bytes exceeds {max}")));
        }
        Ok(self.take(n, what)?.to_vec())
    }
    fn heartbeat(&mut self) -> io::Result<Heartbeat> {
        let free_bytes = self.u64("heartbeat")?;
        let shards = self.u64("heartbeat")?;
        let uptime_secs = self.u64("heartbeat")?;
        // The flags byte is optional (absent in the original 24-byte form).
        let flags = if self.pos < self.buf.len() { self.u8("heartbeat flags")? } else { 0 };
        // One encoding per value: a present flags byte is never 0.
        if flags & !FLAG_DRAINING != 0 || (flags == 0 && self.pos > 2 + 24) {
            return Err(invalid(format!("heartbeat flags {flags:#04x}")));
        }
        Ok(Heartbeat { free_bytes, shards, uptime_secs, draining: flags & FLAG_DRAINING != 0 })
    }
    fn end(&self) -> io::Result<()> {
        if self.pos != self.buf.len() {
            return Err(invalid(format!("{} trailing bytes", self.buf.len() - self.pos)));
        }
        Ok(())
    }
}

/// Takes the trailing field of a frame (a u32 length at `pos`, then exactly
/// that many bytes to the end of the frame) without a second allocation.
fn take_tail(mut frame: Vec<u8>, pos: usize, max: usize, what: &str) -> io::Result<Vec<u8>> {
    let mut r = Reader { buf: &frame, pos };
    let n = r.u32(what)?;
    if n > max {
        return Err(invalid(format!("{what} of {n} bytes exceeds {max}")));
    }
    let start = r.pos;
    if frame.len() - start != n {
        return Err(invalid(format!("{what}: {n} bytes announced, {} present", frame.len() - start)));
    }
    frame.drain(..start);
    Ok(frame)
}

fn check_header(frame: &[u8]) -> io::Result<u8> {
    if frame.len() < 2 {
        return Err(invalid("frame shorter than its header"));
    }
    if frame[0] != WIRE_VERSION {
        return Err(invalid(format!("wire version {} (this node speaks {WIRE_VERSION})", frame[0])));
    }
    Ok(frame[1])
}

/// A decoded request frame: a whole request, or the announcement of a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestHead {
    /// A request without a body.
    Message(Request),
    /// A `PutShard`/`PutManifest`: `len` body bytes follow the frame. `len`
    /// is within `kind`'s bound.
    Body {
        /// Shard or manifest.
        kind: BodyKind,
        /// The CID the body must hash to.
        cid: Cid,
        /// The body's exact length.
        len: usize,
    },
}

/// A decoded response frame: a whole response, or a `Data` body's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseHead {
    /// A response without a body.
    Message(Response),
    /// `Data`: `len` body bytes follow the frame (bounded by the reader
    /// against what was asked).
    Data {
        /// The body's exact length.
        len: usize,
    },
}

/// Decodes a request frame (after the length prefix). A body's announced
/// length is checked against its bound here, before anything is read.
pub fn decode_request_head(frame: Vec<u8>) -> io::Result<RequestHead> {
    let tag = check_header(&frame)?;
    // `r` borrows `frame` only for the small fields; the big tail is moved out.
    let mut r = Reader { buf: &frame, pos: 2 };
    let req = match tag {
        0x01 | 0x05 => {
            let kind = if tag == 0x01 { BodyKind::Shard } else { BodyKind::Manifest };
            let cid = r.cid()?;
            let len = r.u32("body length")?;
            r.end()?;
            if len > kind.limit() {
                return Err(invalid(format!(
                    "a {kind:?} body of {len} bytes announced; the limit is {}",
                    kind.limit()
                )));
            }
            return Ok(RequestHead::Body { kind, cid, len });
        }
        0x02 => Request::GetShard { cid: r.cid()? },
        0x03 => {
            let n = r.u16("cid count")?;
            if n > MAX_EXISTS_CIDS {
                return Err(invalid(format!("{n} CIDs exceed {MAX_EXISTS_CIDS}")));
            }
            let mut cids = Vec::with_capacity(n);
            for _ in 0..n {
                cids.push(r.cid()?);
            }
            Request::ShardExists { cids }
        }
        0x04 => {
            let cid = r.cid()?;
            let authorization = r.bytes16(MAX_AUTHORIZATION, "authorization")?;
            Request::DeleteShard { cid, authorization }
        }
        0x06 => Request::GetManifest { cid: r.cid()? },
        0x07 => {
            let key = r.bytes16(MAX_RECORD_KEY, "record key")?;
            let pos = r.pos;
            let value = take_tail(frame, pos, MAX_RECORD_VALUE, "record value")?;
            return Ok(RequestHead::Message(Request::PutRecord { key, value }));
        }
        0x08 => Request::GetRecord { key: r.bytes16(MAX_RECORD_KEY, "record key")? },
        0x09 => Request::Heartbeat(r.heartbeat()?),
        0x0a => {
            let cid = r.cid()?;
            let start = r.u64("audit start")?;
            let len = r.u32("audit length")?;
            if len == 0 || len > datamesh_core::proof::MAX_SEGMENT as usize {
                return Err(invalid(format!("audit segment of {len} bytes")));
            }
            Request::Audit { cid, start, len: len as u32 }
        }
        0x0b => {
            let chunk = r.cid()?;
            let (k, m) = (r.u16("k")?, r.u16("m")?);
            let (want, n) = (r.u16("wanted shard")?, r.u16("shard count")?);
            // Checked before the list is read: `n` bounds the allocation.
            check_rebuild(k as u16, m as u16, want as u16, n).map_err(invalid)?;
            let mut shards = Vec::with_capacity(n);
            for _ in 0..n {
                let cid = r.cid()?;
                let holder = r.bytes16(MAX_PEER_ID, "holder")?;
                let holder = match holder.is_empty() {
                    true => None,
                    false => Some(PeerId::from_bytes(&holder).map_err(|_| invalid("holder is not a peer id"))?),
                };
                shards.push((cid, holder));
            }
            Request::RebuildShard { chunk, k: k as u16, m: m as u16, want: want as u16, shards }
        }
        t => return Err(invalid(format!("unknown request tag {t:#04x}"))),
    };
    r.end()?;
    Ok(RequestHead::Message(req))
}

/// Decodes a response frame (after the length prefix).
pub fn decode_response_head(frame: Vec<u8>) -> io::Result<ResponseHead> {
    let tag = check_header(&frame)?;
    let mut r = Reader { buf: &frame, pos: 2 };
    let resp = match tag {
        0x81 => Response::Ok,
        0x82 => {
            let len = r.u32("body length")?;
            r.end()?;
            return Ok(ResponseHead::Data { len });
        }
        0x83 => {
            let n = r.u16("flag count")?;
            if n > MAX_EXISTS_CIDS {
                return Err(invalid(format!("{n} flags exceed {MAX_EXISTS_CIDS}")));
            }
            let flags = r
                .take(n, "flags")?
                .iter()
                .map(|&b| match b {
                    0 => Ok(false),
                    1 => Ok(true),
                    x => Err(invalid(format!("flag byte {x}"))),
                })
                .collect::<io::Result<Vec<bool>>>()?;
            Response::Exists(flags)
        }
        0x84 => match r.u8("record presence")? {
            0 => Response::Record(None),
            1 => {
                let pos = r.pos;
                let value = take_tail(frame, pos, MAX_RECORD_VALUE, "record value")?;
                return Ok(ResponseHead::Message(Response::Record(Some(value))));
            }
            x => return Err(invalid(format!("record presence byte {x}"))),
        },
        0x85 => Response::NotFound,
        0x86 => {
            let b = r.bytes16(MAX_REASON, "reason")?;
            Response::Refused(String::from_utf8(b).map_err(|_| invalid("reason is not UTF-8"))?)
        }
        0x87 => Response::Heartbeat(r.heartbeat()?),
        t => return Err(invalid(format!("unknown response tag {t:#04x}"))),
    };
    r.end()?;
    Ok(ResponseHead::Message(resp))
}

// ---------------------------------------------------------------------------
// Reading and writing

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
async fn read_exactly<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize, what: &str) -> io::Result<Vec<u8>> {
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
async fn expect_end<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<()> {
    let mut b = [0u8; 1];
    match io.read(&mut b).await? {
        0 => Ok(()),
        _ => Err(invalid("bytes past the announced body")),
    }
}

/// Reads the next piece of a body (at most `left` bytes) into `buf`; the
/// peer closing early is `UnexpectedEof`.
async fn read_piece<T: AsyncRead + Unpin + Send>(io: &mut T, buf: &mut [u8], left: usize) -> io::Result<usize> {
    let want = buf.len().min(left);
    let n = io.read(&mut buf[..want]).await?;
    if n == 0 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("body cut short, {left} bytes missing")));
    }
    Ok(n)
}

/// Reads a body of `len` bytes and the end of the stream into one buffer
/// that grows as the bytes arrive.
async fn read_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
    let body = read_exactly(io, len, "body").await?;
    expect_end(io).await?;
    Ok(body)
}

/// Reads the body of an answer to this node's own request, `len` bytes
/// within the limit it set, and the end of the stream: into one buffer of
/// that size, not one that doubles (and is copied) as the bytes arrive, as
/// for bodies a peer sends unasked.
async fn read_answer_body<T: AsyncRead + Unpin + Send>(io: &mut T, len: usize) -> io::Result<Vec<u8>> {
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
async fn drain_body<T: AsyncRead + Unpin + Send>(io: &mut T, mut left: usize) -> io::Result<()> {
    let mut buf = vec![0u8; PIECE.min(left.max(1))];
    while left > 0 {
        left -= read_piece(io, &mut buf, left).await?;
    }
    expect_end(io).await
}

/// Streams a body of `len` bytes into `sink` in pieces of [`PIECE`], each
/// written on a blocking thread, then finishes it. The outer error is the
/// transport's (or a violation); the inner one is the sink's answer.
async fn stream_into_sink<T: AsyncRead + Unpin + Send>(
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
async fn write_source<T: AsyncWrite + Unpin + Send>(io: &mut T, src: BodySource) -> io::Result<()> {
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
    async fn acquire(&self, len: usize) -> io::Result<OwnedSemaphorePermit> {
        let kib = len.div_ceil(1024).min(self.total_kib);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        self.sem.clone().acquire_many_owned(kib).await.map_err(|_| io::Error::other("inbound budget closed"))
    }

    #[cfg(test)]
    fn available_kib(&self) -> usize {
        self.sem.available_permits()
    }
}

// ---------------------------------------------------------------------------
// The request_response codec

/// What a node reads off an inbound stream: a request for the handler, an
/// answer already settled while reading (a streamed body), or the reason the
/// message broke the protocol. `request_response` does not report
/// `read_request` errors to the behaviour, so violations travel as values to
/// reach the actor, which strikes the sender and drops the stream.
///
/// An inbound request holds its share of the [`InboundBudget`] until it is
/// dropped, i.e. until the handler is done with it.
#[derive(Debug)]
pub(crate) enum Inbound {
    Request(Request, Option<OwnedSemaphorePermit>),
    /// A body went into the handler's sink; this is the answer, and the
    /// strike reason when the bytes did not match their CID.
    Answered(Response, Option<String>),
    Violation(String),
}

/// What goes back on a stream: a response, or a body streamed from a source.
#[derive(Debug)]
pub(crate) enum Outbound {
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
    /// Inbound bodies being streamed into sinks at once (they wait for a slot).
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
    ) -> io::Result<Inbound> {
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
                Ok(Inbound::Request(req, Some(permit)))
            }
            Some(Err(answer)) => {
                drain_body(io, len).await?;
                Ok(Inbound::Answered(answer, None))
            }
            Some(Ok(sink)) => {
                let _piece = self.budget.acquire(PIECE).await?;
                Ok(match stream_into_sink(io, sink, len).await? {
                    Ok(()) => Inbound::Answered(Response::Ok, None),
                    Err(BodyError::Refused(why)) => Inbound::Answered(Response::Refused(why), None),
                    Err(BodyError::Mismatch(why)) => Inbound::Answered(Response::Refused(why.clone()), Some(why)),
                })
            }
        }
    }
}

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Outbound;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        let read = async {
            let (frame, permit) = read_frame_within(io, Some(&self.budget)).await?;
            match decode_request_head(frame)? {
                RequestHead::Message(req) => Ok(Inbound::Request(req, permit)),
                RequestHead::Body { kind, cid, len } => {
                    drop(permit);
                    self.read_body_for(io, kind, cid, len).await
                }
            }
        };
        match read.await {
            Ok(inbound) => Ok(inbound),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Inbound::Violation(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Outbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        Ok(Outbound::Response(read_response(io, self.answer_limit).await?))
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Inbound) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match &req {
            Inbound::Request(r, _) => {
                self.answer_limit = r.answer_limit();
                write_message(io, encode_request(r)?).await
            }
            Inbound::Answered(..) | Inbound::Violation(_) => Err(invalid("only requests are sent")),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Outbound) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match resp {
            Outbound::Response(r) => write_message(io, encode_response(&r)?).await,
            Outbound::Source(src) => write_source(io, src).await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;

    use libp2p::request_response::Codec as _;

    use super::*;

    fn cursor(v: Vec<u8>) -> futures::io::Cursor<Vec<u8>> {
        futures::io::Cursor::new(v)
    }

    fn read_req(wire: Vec<u8>) -> io::Result<Request> {
        futures::executor::block_on(read_request(&mut cursor(wire)))
    }

    fn read_resp(wire: Vec<u8>, limit: usize) -> io::Result<Response> {
        futures::executor::block_on(read_response(&mut cursor(wire), limit))
    }

    fn all_requests() -> Vec<Request> {
        let c = Cid::raw_blake3(b"x");
        vec![
            Request::PutShard { cid: c, data: b"x".to_vec() },
            Request::PutShard { cid: c, data: vec![] },
            Request::PutShard { cid: c, data: vec![7; 3 * PIECE + 5] },
            Request::GetShard { cid: c },
            Request::ShardExists { cids: vec![c; 3] },
            Request::ShardExists { cids: vec![] },
            Request::DeleteShard { cid: c, authorization: vec![7; 100] },
            Request::PutManifest { cid: Cid::dag_cbor_blake3(b"m"), data: b"m".to_vec() },
            Request::GetManifest { cid: c },
            Request::PutRecord { key: b"k".to_vec(), value: vec![1; 1000] },
            Request::PutRecord { key: b"k".to_vec(), value: vec![1; MAX_RECORD_VALUE] },
            Request::GetRecord { key: b"k".to_vec() },
            Request::Heartbeat(Heartbeat { free_bytes: 1, shards: u64::MAX, uptime_secs: 3, draining: false }),
            Request::Heartbeat(Heartbeat { free_bytes: 0, shards: 5, uptime_secs: 3, draining: true }),
            Request::Audit { cid: c, start: u64::MAX, len: 1 },
            Request::Audit { cid: c, start: 0, len: datamesh_core::proof::MAX_SEGMENT },
            Request::RebuildShard {
                chunk: c,
                k: 4,
                m: 2,
                want: 5,
                shards: (0..6u8).map(|i| (Cid::raw_blake3(&[i]), (i % 2 == 0).then(PeerId::random))).collect(),
            },
            Request::RebuildShard {
                chunk: c,
                k: 1,
                m: datamesh_core::limits::MAX_TOTAL_SHARDS as u16 - 1,
                want: 0,
                shards: vec![(c, Some(PeerId::random())); datamesh_core::limits::MAX_TOTAL_SHARDS],
            },
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Data(vec![1, 2, 3]),
            Response::Data(vec![]),
            Response::Data(vec![9; 2 * MAX_FRAME]),
            Response::Exists(vec![true, false, true]),
            Response::Record(None),
            Response::Record(Some(b"v".to_vec())),
            Response::NotFound,
            Response::Refused("busy".into()),
            Response::Heartbeat(Heartbeat { free_bytes: 9, shards: 8, uptime_secs: 7, draining: false }),
            Response::Heartbeat(Heartbeat { free_bytes: 0, shards: 8, uptime_secs: 7, draining: true }),
        ]
    }

    fn has_body(r: &Request) -> bool {
        matches!(r, Request::PutShard { .. } | Request::PutManifest { .. })
    }

    #[test]
    fn round_trips() {
        for r in all_requests() {
            let e = encode_request(&r).unwrap();
            let len = u32::from_be_bytes(e.head[..4].try_into().unwrap()) as usize;
            assert_eq!(len, e.head.len() - 4, "the prefix counts the frame, not the body");
            assert!(len <= MAX_FRAME);
            assert_eq!(read_req(encode_request_frame(&r).unwrap()).unwrap(), r);
        }
        for r in all_responses() {
            assert_eq!(read_resp(encode_response_frame(&r).unwrap(), MAX_MANIFEST_SIZE).unwrap(), r);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        for r in all_requests() {
            let wire = encode_request_frame(&r).unwrap();
            let step = (wire.len() / 200).max(1);
            for cut in (0..wire.len()).step_by(step) {
                assert!(read_req(wire[..cut].to_vec()).is_err(), "{} cut at {cut}", r.kind());
            }
            // A frame with a byte more (its prefix adjusted) is invalid...
            let e = encode_request(&r).unwrap();
            let mut frame = e.head[4..].to_vec();
            frame.push(0);
            let err = decode_request_head(frame).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{} with a trailing byte", r.kind());
            // ...and so is a body longer than announced.
            if has_body(&r) {
                let mut longer = wire.clone();
                longer.push(0);
                assert_eq!(read_req(longer).unwrap_err().kind(), io::ErrorKind::InvalidData, "{}", r.kind());
            }
        }
    }

    /// The 24-byte heartbeat body every node sent before the flags byte
    /// existed still decodes (as not draining), and a draining heartbeat is
    /// that body plus one byte.
    #[test]
    fn the_original_heartbeat_form_still_decodes() {
        let prefixed = |f: Vec<u8>| [(f.len() as u32).to_be_bytes().to_vec(), f].concat();
        let decode_request = |f: Vec<u8>| read_req(prefixed(f));
        let decode_response = |f: Vec<u8>| read_resp(prefixed(f), MAX_FRAME);
        let frame_body = |e: Encoded<'_>| e.head[4..].to_vec();
        let mut old = vec![WIRE_VERSION, 0x09];
        for v in [7u64, 8, 9] {
            old.extend_from_slice(&v.to_be_bytes());
        }
        let hb = Heartbeat { free_bytes: 7, shards: 8, uptime_secs: 9, draining: false };
        assert_eq!(decode_request(old.clone()).unwrap(), Request::Heartbeat(hb));
        assert_eq!(frame_body(encode_request(&Request::Heartbeat(hb)).unwrap()), old, "unchanged on the wire");
        let mut resp = old.clone();
        resp[1] = 0x87;
        assert_eq!(decode_response(resp).unwrap(), Response::Heartbeat(hb));
        let draining = Heartbeat { draining: true, ..hb };
        let mut new = old.clone();
        new.push(0x01);
        assert_eq!(frame_body(encode_request(&Request::Heartbeat(draining)).unwrap()), new);
        for bad in [0x00, 0x02, 0x80] {
            let mut b = old.clone();
            b.push(bad);
            assert!(decode_request(b).is_err(), "flags {bad:#04x}");
        }
    }

    #[test]
    fn a_body_cut_short_is_eof_not_a_violation() {
        let wire =
            encode_request_frame(&Request::PutShard { cid: Cid::raw_blake3(b"x"), data: vec![1; 1000] }).unwrap();
        let e = read_req(wire[..wire.len() - 1].to_vec()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        let wire = encode_response_frame(&Response::Data(vec![1; 1000])).unwrap();
        let e = read_resp(wire[..wire.len() - 10].to_vec(), MAX_FRAME).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    /// A put frame announcing `len` body bytes, followed by 16 bytes.
    fn put_head(tag: u8, len: u32) -> Vec<u8> {
        let mut h = start(tag);
        put_cid(&mut h, &Cid::raw_blake3(b"x"));
        h.extend_from_slice(&len.to_be_bytes());
        let mut wire = finish(h, &[]).unwrap().head;
        wire.extend_from_slice(&[0; 16]);
        wire
    }

    #[test]
    fn an_oversized_body_is_refused_from_its_header_before_reading_it() {
        for (tag, limit) in [(0x01, MAX_STORED_CHUNK_SIZE), (0x05, MAX_MANIFEST_SIZE)] {
            for len in [limit as u32 + 1, u32::MAX] {
                let wire = put_head(tag, len);
                let frame_end = wire.len() as u64 - 16;
                let mut io = cursor(wire);
                let e = futures::executor::block_on(read_request(&mut io)).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert_eq!(io.position(), frame_end, "nothing of the body was read");
            }
            // At the limit the header is fine (the body is then missing).
            let head = decode_request_head(put_head(tag, limit as u32)[4..][..1 + 1 + 1 + 36 + 4].to_vec());
            assert!(matches!(head, Ok(RequestHead::Body { len, .. }) if len == limit));
        }
        // Answers too, against what was asked.
        let wire = encode_response_frame(&Response::Data(vec![1; 100])).unwrap();
        let mut io = cursor(wire);
        let e = futures::executor::block_on(read_response(&mut io, 99)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io.position(), 4 + 2 + 4, "nothing of the body was read");
        let c = Cid::raw_blake3(b"x");
        assert_eq!(Request::GetShard { cid: c }.answer_limit(), MAX_STORED_CHUNK_SIZE);
        assert_eq!(Request::GetManifest { cid: c }.answer_limit(), MAX_MANIFEST_SIZE);
        assert_eq!(Request::Audit { cid: c, start: 0, len: 1 }.answer_limit(), MAX_FRAME);
    }

    #[test]
    fn bounds_are_enforced_on_decode() {
        let c = Cid::raw_blake3(b"x");
        let too_many = Request::ShardExists { cids: vec![c; MAX_EXISTS_CIDS + 1] };
        assert!(encode_request(&too_many).is_err());
        let too_big = Request::PutShard { cid: c, data: vec![0; MAX_STORED_CHUNK_SIZE + 1] };
        assert!(encode_request(&too_big).is_err());
        // Hand-build the oversized message the encoder refuses to write.
        let mut body = vec![WIRE_VERSION, 0x03];
        body.extend_from_slice(&((MAX_EXISTS_CIDS + 1) as u16).to_be_bytes());
        assert!(decode_request_head(body).is_err());
        let mut body = vec![WIRE_VERSION, 0x04];
        let cb = c.to_bytes();
        body.push(cb.len() as u8);
        body.extend_from_slice(&cb);
        body.extend_from_slice(&((MAX_AUTHORIZATION + 1) as u16).to_be_bytes());
        body.extend(std::iter::repeat_n(0, MAX_AUTHORIZATION + 1));
        assert!(decode_request_head(body).is_err());
        assert!(decode_request_head(vec![1, 0x02]).is_err(), "version 1");
        assert!(decode_request_head(vec![WIRE_VERSION, 0x42]).is_err(), "unknown tag");
    }

    #[test]
    fn a_rebuild_outside_its_code_is_refused_before_its_list_is_read() {
        let c = Cid::raw_blake3(b"x");
        let rebuild = |k: u16, m: u16, want: u16, n: usize| Request::RebuildShard {
            chunk: c,
            k,
            m,
            want,
            shards: vec![(c, None); n],
        };
        let max = datamesh_core::limits::MAX_TOTAL_SHARDS;
        for (k, m, want, n) in [(0, 2, 0, 2), (4, 2, 6, 6), (4, 2, 0, 5), (1, max as u16, 0, max + 1)] {
            assert!(encode_request(&rebuild(k, m, want, n)).is_err(), "{k}+{m}, want {want}, {n} listed");
            // Hand-built: a count far beyond the code, with no list behind
            // it, fails on the count (not on running out of bytes).
            let mut body = vec![WIRE_VERSION, 0x0b];
            let cb = c.to_bytes();
            body.push(cb.len() as u8);
            body.extend_from_slice(&cb);
            for v in [k, m, want, n as u16] {
                body.extend_from_slice(&v.to_be_bytes());
            }
            let e = decode_request_head(body).unwrap_err();
            assert!(e.to_string().contains("REBUILD_SHARD"), "{e}");
        }
        // A holder that is not a peer id.
        let mut wire = encode_request_frame(&rebuild(1, 0, 0, 1)).unwrap();
        let n = wire.len();
        wire[n - 2..].copy_from_slice(&0u16.to_be_bytes());
        wire.truncate(n);
        assert_eq!(read_req(wire.clone()).unwrap(), rebuild(1, 0, 0, 1));
        let mut bad = wire[..n - 2].to_vec();
        bad.extend_from_slice(&[0, 3, 1, 2, 3]);
        let len = (bad.len() - 4) as u32;
        bad[..4].copy_from_slice(&len.to_be_bytes());
        assert!(read_req(bad).unwrap_err().to_string().contains("peer id"));
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_reading() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut io = cursor(bytes);
        let e = futures::executor::block_on(read_frame(&mut io)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(io.position(), 4, "nothing past the prefix was read");
    }

    #[tokio::test]
    async fn inbound_frames_wait_for_the_memory_budget() {
        let budget = InboundBudget::new(0); // the minimum: one largest frame
        let total = budget.available_kib();
        let frame = |n: usize| {
            let mut v = (n as u32).to_be_bytes().to_vec();
            v.extend(std::iter::repeat_n(1u8, n));
            cursor(v)
        };
        let big = MAX_FRAME - 1024;
        let (_, first) = read_frame_within(&mut frame(big), Some(&budget)).await.unwrap();
        assert!(budget.available_kib() < total / 2);
        // A second large frame waits while the first is held...
        let b2 = budget.clone();
        let mut second =
            tokio::spawn(
                async move { read_frame_within(&mut frame(big), Some(&b2)).await.map(|(body, _)| body.len()) },
            );
        let waited = tokio::time::timeout(std::time::Duration::from_millis(100), &mut second).await;
        assert!(waited.is_err(), "the second frame must wait for the budget");
        // ...and is read once the first is released.
        drop(first);
        assert_eq!(second.await.unwrap().unwrap(), big);
        assert_eq!(budget.available_kib(), total, "everything returned");
    }

    #[test]
    fn short_frame_is_eof_not_violation() {
        let mut bytes = 100u32.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[1; 10]);
        let e = futures::executor::block_on(read_frame(&mut cursor(bytes))).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn decoding_random_bytes_never_panics() {
        // A small deterministic generator: no extra dependency.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in 0..2000usize {
            let mut v = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                v.push(x as u8);
            }
            if !v.is_empty() {
                v[0] = WIRE_VERSION;
            }
            let _ = decode_request_head(v.clone());
            let _ = decode_response_head(v.clone());
            let _ = read_req(v.clone());
            let _ = read_resp(v, MAX_FRAME);
        }
    }

    // -- bodies into a handler's sink ------------------------------------------

    type Kept = Arc<Mutex<Vec<(Cid, Vec<u8>)>>>;

    /// A handler whose sink records the pieces it gets and keeps the bytes.
    #[derive(Default)]
    struct Recorder {
        pieces: Arc<Mutex<Vec<usize>>>,
        kept: Kept,
        dropped: Arc<Mutex<usize>>,
        refuse: bool,
    }

    struct RecSink {
        cid: Cid,
        buf: Vec<u8>,
        pieces: Arc<Mutex<Vec<usize>>>,
        kept: Kept,
        dropped: Arc<Mutex<usize>>,
        finished: bool,
    }

    impl BodySink for RecSink {
        fn write(&mut self, piece: &[u8]) -> Result<(), BodyError> {
            self.pieces.lock().unwrap().push(piece.len());
            self.buf.extend_from_slice(piece);
            Ok(())
        }
        fn finish(mut self: Box<Self>) -> Result<(), BodyError> {
            self.finished = true;
            if !self.cid.verifies(&self.buf) {
                return Err(BodyError::Mismatch("does not match".into()));
            }
            self.kept.lock().unwrap().push((self.cid, std::mem::take(&mut self.buf)));
            Ok(())
        }
    }

    impl Drop for RecSink {
        fn drop(&mut self) {
            if !self.finished {
                *self.dropped.lock().unwrap() += 1;
            }
        }
    }

    #[async_trait::async_trait]
    impl Handler for Recorder {
        async fn handle(&self, _: libp2p::PeerId, _: Request) -> Response {
            Response::Refused("bodies go to the sink".into())
        }
        fn body_sink(&self, _: BodyKind, cid: Cid, _: u64) -> Option<Result<Box<dyn BodySink>, Response>> {
            if self.refuse {
                return Some(Err(Response::Refused("full".into())));
            }
            Some(Ok(Box::new(RecSink {
                cid,
                buf: Vec::new(),
                pieces: self.pieces.clone(),
                kept: self.kept.clone(),
                dropped: self.dropped.clone(),
                finished: false,
            })))
        }
    }

    /// Yields at most 10,000 bytes per read, as a stream yields a frame at
    /// a time.
    struct Trickle(futures::io::Cursor<Vec<u8>>);

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<io::Result<usize>> {
            let n = buf.len().min(10_000);
            std::pin::Pin::new(&mut self.0).poll_read(cx, &mut buf[..n])
        }
    }

    async fn inbound(h: &Arc<Recorder>, wire: Vec<u8>) -> io::Result<Inbound> {
        let mut codec = ShardCodec::new(InboundBudget::new(0), h.clone(), 4);
        codec.read_request(&PROTOCOL, &mut Trickle(cursor(wire))).await
    }

    #[tokio::test]
    async fn bodies_reach_the_sink_in_pieces_and_only_whole_ones_are_kept() {
        let h = Arc::new(Recorder::default());
        let data: Vec<u8> = (0..(1 << 20) + 3).map(|i| (i % 251) as u8).collect();
        let cid = Cid::raw_blake3(&data);
        let wire = encode_request_frame(&Request::PutShard { cid, data: data.clone() }).unwrap();

        let r = inbound(&h, wire.clone()).await.unwrap();
        assert!(matches!(r, Inbound::Answered(Response::Ok, None)), "{r:?}");
        assert_eq!(h.kept.lock().unwrap().as_slice(), &[(cid, data.clone())]);
        let pieces = h.pieces.lock().unwrap().clone();
        // Whole pieces but the last: one hop to a blocking thread each.
        let (last, whole) = pieces.split_last().unwrap();
        assert!(whole.iter().all(|&n| n == PIECE) && *last <= PIECE, "pieces of {PIECE}: {pieces:?}");
        assert_eq!(pieces.iter().sum::<usize>(), data.len());

        // Cut short: the sink is dropped unfinished, and nothing is kept.
        let e = inbound(&h, wire[..wire.len() - 100].to_vec()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(*h.dropped.lock().unwrap(), 1);
        // Longer than announced: a violation, nothing kept.
        let mut longer = wire.clone();
        longer.push(1);
        assert!(matches!(inbound(&h, longer).await.unwrap(), Inbound::Violation(_)));
        assert_eq!(*h.dropped.lock().unwrap(), 2);
        // Bytes that do not match: refused and struck.
        let forged = encode_request_frame(&Request::PutShard { cid, data: vec![0; data.len()] }).unwrap();
        assert!(matches!(inbound(&h, forged).await.unwrap(), Inbound::Answered(Response::Refused(_), Some(_))));
        // An oversized announcement: a violation before any sink exists.
        let pieces_before = h.pieces.lock().unwrap().len();
        assert!(matches!(
            inbound(&h, put_head(0x01, MAX_STORED_CHUNK_SIZE as u32 + 1)).await.unwrap(),
            Inbound::Violation(_)
        ));
        assert_eq!(h.pieces.lock().unwrap().len(), pieces_before);
        assert_eq!(h.kept.lock().unwrap().len(), 1);

        // A sink refused at once: the body is read and discarded, and the
        // sender gets the answer.
        let h = Arc::new(Recorder { refuse: true, ..Recorder::default() });
        assert!(matches!(inbound(&h, wire).await.unwrap(), Inbound::Answered(Response::Refused(_), None)));
    }

    #[tokio::test]
    async fn a_failing_source_aborts_before_its_last_piece() {
        /// Yields `good` bytes, then fails, as a corrupt file's reader does.
        struct Rotten(usize);
        impl io::Read for Rotten {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "corrupt"));
                }
                let n = buf.len().min(self.0);
                buf[..n].fill(1);
                self.0 -= n;
                Ok(n)
            }
        }
        let len = 3 * PIECE as u64;
        let mut out = futures::io::Cursor::new(Vec::new());
        let src = BodySource { len, reader: Box::new(Rotten(2 * PIECE)) };
        assert!(write_source(&mut out, src).await.is_err());
        let wire = out.into_inner();
        let e = read_resp(wire, MAX_STORED_CHUNK_SIZE).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "the requester sees a body cut short");

        // A good source round-trips.
        let mut out = futures::io::Cursor::new(Vec::new());
        let data = vec![5u8; PIECE + 1];
        write_source(&mut out, BodySource { len: data.len() as u64, reader: Box::new(io::Cursor::new(data.clone())) })
            .await
            .unwrap();
        assert_eq!(read_resp(out.into_inner(), MAX_STORED_CHUNK_SIZE).unwrap(), Response::Data(data));
    }
}
