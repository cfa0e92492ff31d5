//! Encoding: requests and responses to frames (and the body that follows).

#[allow(clippy::wildcard_imports)]
use super::*;

/// A message split in two: the frame (length prefix, version, tag, fields)
/// and the body that follows it, sent as is (empty for most messages).
pub(crate) struct Encoded<'a> {
    pub head: Vec<u8>,
    pub body: &'a [u8],
}

pub(super) fn put_cid(out: &mut Vec<u8>, cid: &Cid) {
    let b = cid.to_bytes();
    // Our CIDs are ≤ 38 bytes (version, codec, hash code, length, 32 digest bytes).
    out.push(b.len() as u8);
    out.extend_from_slice(&b);
}

pub(super) fn put_bytes16(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

pub(super) fn put_bytes32(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

pub(super) fn finish(mut head: Vec<u8>, body: &[u8]) -> io::Result<Encoded<'_>> {
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

pub(super) fn start(tag: u8) -> Vec<u8> {
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

pub(super) fn put_heartbeat(h: &mut Vec<u8>, hb: &Heartbeat) {
    h.extend_from_slice(&hb.free_bytes.to_be_bytes());
    h.extend_from_slice(&hb.shards.to_be_bytes());
    h.extend_from_slice(&hb.uptime_secs.to_be_bytes());
    // Only when set: the 24-byte form stays what it always was.
    if hb.draining {
        h.push(FLAG_DRAINING);
    }
}

/// The frame of a `Data` answer whose body is `len` bytes.
pub(super) fn data_head(len: usize) -> io::Result<Vec<u8>> {
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
