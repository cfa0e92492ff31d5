//! The shard protocol's frames and bodies from a hostile peer: request and
//! response header frames (every tag), length prefixes, and bodies read
//! whole with their length checks. Never panic; never allocate past a
//! bound; what decodes re-encodes to bytes that decode to the same message.
#![no_main]
use datamesh_core::limits::{MAX_MANIFEST_SIZE, MAX_STORED_CHUNK_SIZE};
use datamesh_net::protocol::{
    MAX_FRAME, RequestHead, ResponseHead, decode_request_head, decode_response_head, encode_request_frame,
    encode_response_frame, read_request, read_response,
};
use datamesh_net::{Request, Response};
use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;

fn read_req(wire: &[u8]) -> std::io::Result<Request> {
    block_on(read_request(&mut Cursor::new(wire)))
}

fn read_resp(wire: &[u8], limit: usize) -> std::io::Result<Response> {
    block_on(read_response(&mut Cursor::new(wire), limit))
}

/// `frame` with its length prefix, then `body`.
fn wire(frame: &[u8], body: &[u8]) -> Vec<u8> {
    let mut v = (frame.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(frame);
    v.extend_from_slice(body);
    v
}

fn check_request(req: &Request) {
    let bytes = encode_request_frame(req).expect("a decoded request re-encodes");
    assert_eq!(&read_req(&bytes).expect("a re-encoded request decodes"), req);
}

fn check_response(resp: &Response, limit: usize) {
    let bytes = encode_response_frame(resp).expect("a decoded response re-encodes");
    assert_eq!(&read_resp(&bytes, limit).expect("a re-encoded response decodes"), resp);
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    // The limit a requester sets for the answer's body: what it asked for.
    let limit = [MAX_FRAME, MAX_STORED_CHUNK_SIZE, MAX_MANIFEST_SIZE][((sel >> 1) & 3) as usize % 3];
    // Bits 3..: where the frame ends and a body starts, for the framed
    // forms (31: the whole rest is the frame).
    let split = match sel >> 3 {
        31 => rest.len(),
        s => s as usize * rest.len() / 32,
    };
    let (frame, body) = rest.split_at(split);
    if sel & 1 == 0 {
        // Requests: the header frame alone (after its length prefix)...
        match decode_request_head(frame.to_vec()) {
            Ok(RequestHead::Message(req)) => {
                assert!(req.check_bounds().is_ok(), "a decoded request is within its bounds: {req:?}");
                check_request(&req);
            }
            Ok(RequestHead::Body { kind, len, .. }) => assert!(len <= kind.limit()),
            Err(_) => {}
        }
        // ...a well-framed header and a body after it...
        if let Ok(req) = read_req(&wire(frame, body)) {
            check_request(&req);
        }
        // ...and raw bytes, length prefix included.
        if let Ok(req) = read_req(rest) {
            check_request(&req);
        }
    } else {
        match decode_response_head(frame.to_vec()) {
            Ok(ResponseHead::Message(resp)) => check_response(&resp, limit),
            Ok(ResponseHead::Data { .. }) | Err(_) => {}
        }
        if let Ok(resp) = read_resp(&wire(frame, body), limit) {
            if let Response::Data(d) = &resp {
                assert!(d.len() <= limit);
            }
            check_response(&resp, limit);
        }
        if let Ok(resp) = read_resp(rest, limit) {
            check_response(&resp, limit);
        }
    }
});
