//! Decoding: a frame's fields, every length checked against its bound and
//! the bytes left.

#[allow(clippy::wildcard_imports)]
use super::*;

pub(super) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// A cursor over one frame body. Every read checks the bytes left.
pub(super) struct Reader<'a> {
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
pub(super) fn take_tail(mut frame: Vec<u8>, pos: usize, max: usize, what: &str) -> io::Result<Vec<u8>> {
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

pub(super) fn check_header(frame: &[u8]) -> io::Result<u8> {
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
