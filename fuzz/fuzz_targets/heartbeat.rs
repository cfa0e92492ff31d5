//! Heartbeats, the one message every peer sends every few seconds, as a
//! request (0x09) and as an answer (0x87): never panic; one encoding per
//! value (what decodes re-encodes to the same bytes); every value round-trips.
#![no_main]
use datamesh_net::protocol::{
    RequestHead, ResponseHead, WIRE_VERSION, decode_request_head, decode_response_head, encode_request_frame,
    encode_response_frame,
};
use datamesh_net::{Heartbeat, Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Arbitrary fields after a heartbeat's header, as request and answer.
    for tag in [0x09u8, 0x87] {
        let mut frame = vec![WIRE_VERSION, tag];
        frame.extend_from_slice(data);
        let hb = if tag == 0x09 {
            match decode_request_head(frame.clone()) {
                Ok(RequestHead::Message(Request::Heartbeat(hb))) => Some(hb),
                Ok(other) => panic!("a heartbeat frame decoded as {other:?}"),
                Err(_) => None,
            }
        } else {
            match decode_response_head(frame.clone()) {
                Ok(ResponseHead::Message(Response::Heartbeat(hb))) => Some(hb),
                Ok(other) => panic!("a heartbeat frame decoded as {other:?}"),
                Err(_) => None,
            }
        };
        if let Some(hb) = hb {
            let again = if tag == 0x09 {
                encode_request_frame(&Request::Heartbeat(hb))
            } else {
                encode_response_frame(&Response::Heartbeat(hb))
            }
            .expect("a heartbeat encodes");
            assert_eq!(&again[4..], &frame[..], "one encoding per heartbeat");
        }
    }
    // Any heartbeat value round-trips, both ways.
    if data.len() >= 25 {
        let u = |i: usize| u64::from_be_bytes(data[i..i + 8].try_into().expect("8 bytes"));
        let hb = Heartbeat { free_bytes: u(0), shards: u(8), uptime_secs: u(16), draining: data[24] & 1 == 1 };
        let req = encode_request_frame(&Request::Heartbeat(hb)).expect("a heartbeat encodes");
        assert_eq!(
            decode_request_head(req[4..].to_vec()).expect("decodes"),
            RequestHead::Message(Request::Heartbeat(hb))
        );
        let resp = encode_response_frame(&Response::Heartbeat(hb)).expect("a heartbeat encodes");
        assert_eq!(
            decode_response_head(resp[4..].to_vec()).expect("decodes"),
            ResponseHead::Message(Response::Heartbeat(hb))
        );
    }
});
