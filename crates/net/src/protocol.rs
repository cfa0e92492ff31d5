//! The shard protocol, `/datamesh/shard/1.0.0`: how nodes move shards,
//! manifests and small records, and how they heartbeat.
//!
//! # Goals
//! - One request, one response, on its own stream (libp2p
//!   `request_response`). No state outlives a stream.
//! - Every size a peer controls is bounded and checked before memory is
//!   committed to it; a frame that breaks the rules is dropped and counted
//!   against the sender (a *strike*).
//! - Content is verified on every hop: a `PutShard`/`PutManifest` whose bytes
//!   do not hash to its CID is refused before the node's handler sees it, and
//!   a `GetShard`/`GetManifest` answer is verified by the requester.
//!
//! # Frame
//! ```text
//! frame   = len:u32 BE | body            (len = body length, 1 ..= MAX_FRAME)
//! body    = version:u8 (= 1) | tag:u8 | fields
//! cid     = n:u8 (1..=64)  | n bytes     (binary CIDv1, as `Cid::to_bytes`)
//! bytes16 = n:u16 BE       | n bytes
//! bytes32 = n:u32 BE       | n bytes
//! u64     = 8 bytes BE
//! ```
//! A frame is read with a bounded reader: a length prefix larger than
//! [`MAX_FRAME`] (`core::limits::MAX_STORED_CHUNK_SIZE` + 64 KiB) is refused
//! from the 4 bytes alone, before any buffer is allocated; a buffer grows only
//! as bytes actually arrive. Every inner length is checked against its own
//! bound and against the bytes left; trailing bytes are an error.
//!
//! # Requests
//! | tag  | message        | fields                                    | bounds |
//! |------|----------------|-------------------------------------------|--------|
//! | 0x01 | `PutShard`     | cid, data:bytes32 (last)                  | data ≤ frame |
//! | 0x02 | `GetShard`     | cid                                       | |
//! | 0x03 | `ShardExists`  | n:u16, n × cid                            | n ≤ [`MAX_EXISTS_CIDS`] |
//! | 0x04 | `DeleteShard`  | cid, authorization:bytes16                | ≤ [`MAX_AUTHORIZATION`] |
//! | 0x05 | `PutManifest`  | cid, data:bytes32 (last)                  | data ≤ frame |
//! | 0x06 | `GetManifest`  | cid                                       | |
//! | 0x07 | `PutRecord`    | key:bytes16, value:bytes32 (last)         | key ≤ [`MAX_RECORD_KEY`], value ≤ [`MAX_RECORD_VALUE`] |
//! | 0x08 | `GetRecord`    | key:bytes16                               | key ≤ [`MAX_RECORD_KEY`] |
//! | 0x09 | `Heartbeat`    | free_bytes:u64, shards:u64, uptime_secs:u64, [flags:u8] | flags: see below |
//! | 0x0a | `Audit`        | cid, start:u64, len:u32                   | 1 ≤ len ≤ `core::proof::MAX_SEGMENT` |
//!
//! # Responses
//! | tag  | message     | fields |
//! |------|-------------|--------|
//! | 0x81 | `Ok`        | |
//! | 0x82 | `Data`      | data:bytes32 |
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
//! # Why hand-rolled and not serde + CBOR
//! Ten small messages with at most one large field, which is always last.
//! A hand-written decoder is short enough to audit line by line, checks each
//! length against its bound *and* against the bytes left before slicing (no
//! library pre-allocating from a declared length), never panics, and lets the
//! writer send the large field straight from the caller's buffer without
//! re-encoding it. The byte layout above is the whole spec.
//!
//! # Limits and what they imply
//! - [`MAX_FRAME`] ≈ 16 MiB + 65 KiB: every shard and stored chunk fits (at
//!   default settings a shard is ≤ 4 MiB: a 16 MiB chunk over k = 4). A
//!   manifest larger than ~16 MiB cannot be sent with `PutManifest`; the node
//!   must keep such files' manifests under that size (bigger chunks).
//! - `request_response` reads a whole frame before the node sees it. The
//!   memory this takes is capped for the whole node by
//!   `Tuning::max_inbound_bytes` (256 MiB by default): after the length
//!   prefix, a frame waits until its size fits the budget, and holds it until
//!   the handler is done with the request. Inbound work is bounded by
//!   `NetConfig::max_inbound_requests` (beyond it the answer is
//!   `Refused("busy")`), streams per connection by
//!   `Tuning::max_streams_per_connection`, connections by the connection
//!   limits, and each exchange (waiting for budget included) by
//!   `NetConfig::request_timeout`.
//!
//! # Versioning
//! The protocol id carries the major version (`/datamesh/shard/1.0.0`); the
//! version byte in every frame must be [`WIRE_VERSION`]. A later version gets
//! a new protocol id and both can be offered side by side.

use std::io;
use std::sync::Arc;

use datamesh_core::Cid;
use datamesh_core::limits::MAX_STORED_CHUNK_SIZE;
use futures::prelude::*;
use libp2p::StreamProtocol;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The protocol id negotiated on every shard stream.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/datamesh/shard/1.0.0");
/// The version byte every frame of `/datamesh/shard/1.0.0` carries.
pub const WIRE_VERSION: u8 = 1;
/// Largest frame body: the largest stored chunk plus 64 KiB of headroom.
pub const MAX_FRAME: usize = MAX_STORED_CHUNK_SIZE + 64 * 1024;
/// Most CIDs in one `ShardExists`.
pub const MAX_EXISTS_CIDS: usize = 1024;
/// Largest `DeleteShard` authorization (opaque to the network layer).
pub const MAX_AUTHORIZATION: usize = 4 * 1024;
/// Largest record key.
pub const MAX_RECORD_KEY: usize = 1024;
/// Largest record value.
pub const MAX_RECORD_VALUE: usize = 1024 * 1024;
/// Largest `Refused` reason (longer reasons are cut when sent).
pub const MAX_REASON: usize = 1024;
/// Largest binary CID accepted on the wire.
const MAX_CID_BYTES: usize = 64;
/// First allocation for a frame; the buffer grows as bytes arrive.
const INITIAL_BUFFER: usize = 64 * 1024;

/// A request of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Store a shard. The network layer checks `cid.verifies(&data)` before the
    /// handler sees it; a mismatch is answered `Refused` and strikes the sender.
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
}

/// A response of the shard protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// Done (for puts: durable on the peer).
    Ok,
    /// The bytes asked for.
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
        }
    }

    /// Checks the bounds a peer would check on receipt, so that a local caller
    /// learns of an oversized request before it is sent.
    pub fn check_bounds(&self) -> Result<(), String> {
        let data_len = match self {
            Request::PutShard { data, .. } | Request::PutManifest { data, .. } => data.len(),
            Request::ShardExists { cids } if cids.len() > MAX_EXISTS_CIDS => {
                return Err(format!("{} CIDs in one SHARD_EXISTS; the limit is {MAX_EXISTS_CIDS}", cids.len()));
            }
            Request::DeleteShard { authorization, .. } if authorization.len() > MAX_AUTHORIZATION => {
                return Err(format!(
                    "authorization of {} bytes; the limit is {MAX_AUTHORIZATION}",
                    authorization.len()
                ));
            }
            Request::PutRecord { key, value } => {
                if key.len() > MAX_RECORD_KEY || value.len() > MAX_RECORD_VALUE {
                    return Err(format!(
                        "record key {} / value {} bytes; the limits are {MAX_RECORD_KEY} / {MAX_RECORD_VALUE}",
                        key.len(),
                        value.len()
                    ));
                }
                0
            }
            Request::Audit { len, .. } if *len == 0 || *len > datamesh_core::proof::MAX_SEGMENT => {
                return Err(format!(
                    "audit segment of {len} bytes; the limit is {}",
                    datamesh_core::proof::MAX_SEGMENT
                ));
            }
            Request::GetRecord { key } if key.len() > MAX_RECORD_KEY => {
                return Err(format!("record key of {} bytes; the limit is {MAX_RECORD_KEY}", key.len()));
            }
            _ => 0,
        };
        if data_len > MAX_FRAME - 1024 {
            return Err(format!("{data_len} bytes do not fit one frame (limit {MAX_FRAME})"));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Encoding

/// A frame split in two: a small head (length prefix, version, tag, small
/// fields) and the large trailing field, sent as is.
pub(crate) struct Encoded<'a> {
    pub head: Vec<u8>,
    pub tail: &'a [u8],
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

fn finish<'a>(mut head: Vec<u8>, tail: &'a [u8]) -> io::Result<Encoded<'a>> {
    let body_len = head.len() - 4 + tail.len();
    if body_len > MAX_FRAME {
        return Err(invalid(format!("frame of {body_len} bytes exceeds the limit of {MAX_FRAME}")));
    }
    head[..4].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(Encoded { head, tail })
}

fn start(tag: u8) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(&[0, 0, 0, 0, WIRE_VERSION, tag]);
    head
}

/// Encodes a request into a frame.
pub(crate) fn encode_request(req: &Request) -> io::Result<Encoded<'_>> {
    req.check_bounds().map_err(invalid)?;
    let (tag, tail): (u8, &[u8]) = match req {
        Request::PutShard { data, .. } => (0x01, data),
        Request::GetShard { .. } => (0x02, &[]),
        Request::ShardExists { .. } => (0x03, &[]),
        Request::DeleteShard { .. } => (0x04, &[]),
        Request::PutManifest { data, .. } => (0x05, data),
        Request::GetManifest { .. } => (0x06, &[]),
        Request::PutRecord { value, .. } => (0x07, value),
        Request::GetRecord { .. } => (0x08, &[]),
        Request::Heartbeat(_) => (0x09, &[]),
        Request::Audit { .. } => (0x0a, &[]),
    };
    let mut h = start(tag);
    match req {
        Request::PutShard { cid, data } | Request::PutManifest { cid, data } => {
            put_cid(&mut h, cid);
            h.extend_from_slice(&(data.len() as u32).to_be_bytes());
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
            h.extend_from_slice(&(value.len() as u32).to_be_bytes());
        }
        Request::GetRecord { key } => put_bytes16(&mut h, key),
        Request::Heartbeat(hb) => put_heartbeat(&mut h, hb),
        Request::Audit { cid, start, len } => {
            put_cid(&mut h, cid);
            h.extend_from_slice(&start.to_be_bytes());
            h.extend_from_slice(&len.to_be_bytes());
        }
    }
    finish(h, tail)
}

/// A whole request frame (length prefix included), as it goes on the wire.
pub fn encode_request_frame(req: &Request) -> io::Result<Vec<u8>> {
    let e = encode_request(req)?;
    let mut v = e.head;
    v.extend_from_slice(e.tail);
    Ok(v)
}

/// A whole response frame (length prefix included), as it goes on the wire.
pub fn encode_response_frame(resp: &Response) -> io::Result<Vec<u8>> {
    let e = encode_response(resp)?;
    let mut v = e.head;
    v.extend_from_slice(e.tail);
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

/// Encodes a response into a frame. Over-long `Refused` reasons are cut.
pub(crate) fn encode_response(resp: &Response) -> io::Result<Encoded<'_>> {
    let mut h;
    let mut tail: &[u8] = &[];
    match resp {
        Response::Ok => h = start(0x81),
        Response::Data(d) => {
            h = start(0x82);
            h.extend_from_slice(&(d.len() as u32).to_be_bytes());
            tail = d;
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
                    h.extend_from_slice(&(v.len() as u32).to_be_bytes());
                    tail = v;
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
    finish(h, tail)
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

/// Takes the trailing field of `body` (a u32 length at `pos`, then exactly
/// that many bytes to the end of the frame) without a second allocation.
fn take_tail(mut body: Vec<u8>, pos: usize, max: usize, what: &str) -> io::Result<Vec<u8>> {
    let mut r = Reader { buf: &body, pos };
    let n = r.u32(what)?;
    if n > max {
        return Err(invalid(format!("{what} of {n} bytes exceeds {max}")));
    }
    let start = r.pos;
    if body.len() - start != n {
        return Err(invalid(format!("{what}: {n} bytes announced, {} present", body.len() - start)));
    }
    body.drain(..start);
    Ok(body)
}

fn check_header(body: &[u8]) -> io::Result<u8> {
    if body.len() < 2 {
        return Err(invalid("frame shorter than its header"));
    }
    if body[0] != WIRE_VERSION {
        return Err(invalid(format!("wire version {} (this node speaks {WIRE_VERSION})", body[0])));
    }
    Ok(body[1])
}

/// Decodes a request frame body (after the length prefix).
pub fn decode_request(body: Vec<u8>) -> io::Result<Request> {
    let tag = check_header(&body)?;
    // `r` borrows `body` only for the small fields; the big tail is moved out.
    let mut r = Reader { buf: &body, pos: 2 };
    let req = match tag {
        0x01 | 0x05 => {
            let cid = r.cid()?;
            let pos = r.pos;
            let data = take_tail(body, pos, MAX_FRAME, "data")?;
            return Ok(if tag == 0x01 { Request::PutShard { cid, data } } else { Request::PutManifest { cid, data } });
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
            let value = take_tail(body, pos, MAX_RECORD_VALUE, "record value")?;
            return Ok(Request::PutRecord { key, value });
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
        t => return Err(invalid(format!("unknown request tag {t:#04x}"))),
    };
    r.end()?;
    Ok(req)
}

/// Decodes a response frame body (after the length prefix).
pub fn decode_response(body: Vec<u8>) -> io::Result<Response> {
    let tag = check_header(&body)?;
    let mut r = Reader { buf: &body, pos: 2 };
    let resp = match tag {
        0x81 => Response::Ok,
        0x82 => return Ok(Response::Data(take_tail(body, 2, MAX_FRAME, "data")?)),
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
                return Ok(Response::Record(Some(take_tail(body, pos, MAX_RECORD_VALUE, "record value")?)));
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
    Ok(resp)
}

/// Reads one frame body with every bound checked.
///
/// Errors of kind `InvalidData` are protocol violations (the peer's fault);
/// other kinds are transport failures (EOF, reset) and are not held against it.
pub(crate) async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    Ok(read_frame_within(io, None).await?.0)
}

/// [`read_frame`], first taking the frame's size out of `budget` (in KiB)
/// when there is one. The permit comes back with the body and returns the
/// bytes to the budget when dropped; a frame waits while the budget is spent.
pub(crate) async fn read_frame_within<T: AsyncRead + Unpin + Send>(
    io: &mut T,
    budget: Option<&InboundBudget>,
) -> io::Result<(Vec<u8>, Option<OwnedSemaphorePermit>)> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(invalid(format!("frame of {len} bytes announced; the limit is {MAX_FRAME}")));
    }
    let permit = match budget {
        Some(b) => Some(b.acquire(len).await?),
        None => None,
    };
    // Grow as bytes arrive: a peer that announces 16 MiB and sends nothing
    // costs 64 KiB, not 16 MiB.
    let mut buf = Vec::with_capacity(len.min(INITIAL_BUFFER));
    io.take(len as u64).read_to_end(&mut buf).await?;
    if buf.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame cut short: {} of {len} bytes", buf.len()),
        ));
    }
    Ok((buf, permit))
}

/// Memory all inbound request frames being read or served may hold at once,
/// shared by every connection. Counted in KiB.
#[derive(Debug, Clone)]
pub(crate) struct InboundBudget(Arc<Semaphore>);

impl InboundBudget {
    pub(crate) fn new(bytes: usize) -> Self {
        // At least one largest frame, so that any valid frame can be read.
        let kib = bytes.max(MAX_FRAME).div_ceil(1024);
        Self(Arc::new(Semaphore::new(kib.min(Semaphore::MAX_PERMITS))))
    }

    async fn acquire(&self, len: usize) -> io::Result<OwnedSemaphorePermit> {
        let kib = u32::try_from(len.div_ceil(1024)).unwrap_or(u32::MAX);
        self.0.clone().acquire_many_owned(kib).await.map_err(|_| io::Error::other("inbound budget closed"))
    }

    #[cfg(test)]
    fn available_kib(&self) -> usize {
        self.0.available_permits()
    }
}

pub(crate) async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, e: Encoded<'_>) -> io::Result<()> {
    io.write_all(&e.head).await?;
    if !e.tail.is_empty() {
        io.write_all(e.tail).await?;
    }
    io.flush().await
}

// ---------------------------------------------------------------------------
// The request_response codec

/// What a node reads off an inbound stream: a request, or the reason the
/// frame broke the protocol. `request_response` does not report
/// `read_request` errors to the behaviour, so violations travel as values to
/// reach the actor, which strikes the sender and drops the stream.
///
/// An inbound request holds its share of the [`InboundBudget`] until it is
/// dropped, i.e. until the handler is done with it.
#[derive(Debug)]
pub(crate) enum Inbound {
    Request(Request, Option<OwnedSemaphorePermit>),
    Violation(String),
}

/// The `request_response` codec of `/datamesh/shard/1.0.0`.
#[derive(Debug, Clone)]
pub(crate) struct ShardCodec {
    pub(crate) budget: InboundBudget,
}

impl libp2p::request_response::Codec for ShardCodec {
    type Protocol = StreamProtocol;
    type Request = Inbound;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Inbound>
    where
        T: AsyncRead + Unpin + Send,
    {
        let decoded = match read_frame_within(io, Some(&self.budget)).await {
            Ok((body, permit)) => decode_request(body).map(|r| (r, permit)),
            Err(e) => Err(e),
        };
        match decoded {
            Ok((req, permit)) => Ok(Inbound::Request(req, permit)),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(Inbound::Violation(e.to_string())),
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        decode_response(read_frame(io).await?)
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Inbound) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match &req {
            Inbound::Request(r, _) => write_frame(io, encode_request(r)?).await,
            Inbound::Violation(_) => Err(invalid("a violation is never sent")),
        }
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, resp: Response) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, encode_response(&resp)?).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame_body(e: Encoded<'_>) -> Vec<u8> {
        let mut v = e.head[4..].to_vec();
        v.extend_from_slice(e.tail);
        v
    }

    fn all_requests() -> Vec<Request> {
        let c = Cid::raw_blake3(b"x");
        vec![
            Request::PutShard { cid: c, data: b"x".to_vec() },
            Request::PutShard { cid: c, data: vec![] },
            Request::GetShard { cid: c },
            Request::ShardExists { cids: vec![c; 3] },
            Request::ShardExists { cids: vec![] },
            Request::DeleteShard { cid: c, authorization: vec![7; 100] },
            Request::PutManifest { cid: Cid::dag_cbor_blake3(b"m"), data: b"m".to_vec() },
            Request::GetManifest { cid: c },
            Request::PutRecord { key: b"k".to_vec(), value: vec![1; 1000] },
            Request::GetRecord { key: b"k".to_vec() },
            Request::Heartbeat(Heartbeat { free_bytes: 1, shards: u64::MAX, uptime_secs: 3, draining: false }),
            Request::Heartbeat(Heartbeat { free_bytes: 0, shards: 5, uptime_secs: 3, draining: true }),
            Request::Audit { cid: c, start: u64::MAX, len: 1 },
            Request::Audit { cid: c, start: 0, len: datamesh_core::proof::MAX_SEGMENT },
        ]
    }

    fn all_responses() -> Vec<Response> {
        vec![
            Response::Ok,
            Response::Data(vec![1, 2, 3]),
            Response::Data(vec![]),
            Response::Exists(vec![true, false, true]),
            Response::Record(None),
            Response::Record(Some(b"v".to_vec())),
            Response::NotFound,
            Response::Refused("busy".into()),
            Response::Heartbeat(Heartbeat { free_bytes: 9, shards: 8, uptime_secs: 7, draining: false }),
            Response::Heartbeat(Heartbeat { free_bytes: 0, shards: 8, uptime_secs: 7, draining: true }),
        ]
    }

    #[test]
    fn round_trips() {
        for r in all_requests() {
            let e = encode_request(&r).unwrap();
            let len = u32::from_be_bytes(e.head[..4].try_into().unwrap()) as usize;
            let body = frame_body(e);
            assert_eq!(len, body.len());
            assert_eq!(decode_request(body).unwrap(), r);
        }
        for r in all_responses() {
            let body = frame_body(encode_response(&r).unwrap());
            assert_eq!(decode_response(body).unwrap(), r);
        }
    }

    #[test]
    fn every_truncation_and_extension_is_invalid_data() {
        for r in all_requests() {
            let body = frame_body(encode_request(&r).unwrap());
            for cut in 0..body.len() {
                if matches!(r, Request::Heartbeat(Heartbeat { draining: true, .. })) && cut == body.len() - 1 {
                    // Without its optional flags byte: the original form.
                    assert!(decode_request(body[..cut].to_vec()).is_ok());
                    continue;
                }
                let e = decode_request(body[..cut].to_vec()).unwrap_err();
                assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{r:?} cut at {cut}");
            }
            let mut longer = body.clone();
            longer.push(0);
            assert!(decode_request(longer).is_err(), "{r:?} with a trailing byte");
        }
    }

    /// The 24-byte heartbeat body every node sent before the flags byte
    /// existed still decodes (as not draining), and a draining heartbeat is
    /// that body plus one byte.
    #[test]
    fn the_original_heartbeat_form_still_decodes() {
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
    fn bounds_are_enforced_on_decode() {
        let c = Cid::raw_blake3(b"x");
        let too_many = Request::ShardExists { cids: vec![c; MAX_EXISTS_CIDS + 1] };
        assert!(encode_request(&too_many).is_err());
        // Hand-build the oversized message the encoder refuses to write.
        let mut body = vec![WIRE_VERSION, 0x03];
        body.extend_from_slice(&((MAX_EXISTS_CIDS + 1) as u16).to_be_bytes());
        assert!(decode_request(body).is_err());
        let mut body = vec![WIRE_VERSION, 0x04];
        let cb = c.to_bytes();
        body.push(cb.len() as u8);
        body.extend_from_slice(&cb);
        body.extend_from_slice(&((MAX_AUTHORIZATION + 1) as u16).to_be_bytes());
        body.extend(std::iter::repeat_n(0, MAX_AUTHORIZATION + 1));
        assert!(decode_request(body).is_err());
        assert!(decode_request(vec![2, 0x02]).is_err(), "wrong version");
        assert!(decode_request(vec![WIRE_VERSION, 0x42]).is_err(), "unknown tag");
    }

    #[test]
    fn oversized_length_prefix_is_refused_before_reading() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0; 16]);
        let mut io = futures::io::Cursor::new(bytes);
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
            futures::io::Cursor::new(v)
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
        let e = futures::executor::block_on(read_frame(&mut futures::io::Cursor::new(bytes))).unwrap_err();
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
            let _ = decode_request(v.clone());
            let _ = decode_response(v);
        }
    }
}
