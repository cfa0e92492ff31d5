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
    let wire = encode_request_frame(&Request::PutShard { cid: Cid::raw_blake3(b"x"), data: vec![1; 1000] }).unwrap();
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
        tokio::spawn(async move { read_frame_within(&mut frame(big), Some(&b2)).await.map(|(body, _)| body.len()) });
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

async fn inbound(h: &Arc<Recorder>, wire: Vec<u8>) -> io::Result<StreamRequest> {
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
    assert!(matches!(r, StreamRequest::Answered(Response::Ok, None)), "{r:?}");
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
    assert!(matches!(inbound(&h, longer).await.unwrap(), StreamRequest::Violation(_)));
    assert_eq!(*h.dropped.lock().unwrap(), 2);
    // Bytes that do not match: refused and struck.
    let forged = encode_request_frame(&Request::PutShard { cid, data: vec![0; data.len()] }).unwrap();
    assert!(matches!(inbound(&h, forged).await.unwrap(), StreamRequest::Answered(Response::Refused(_), Some(_))));
    // An oversized announcement: a violation before any sink exists.
    let pieces_before = h.pieces.lock().unwrap().len();
    assert!(matches!(
        inbound(&h, put_head(0x01, MAX_STORED_CHUNK_SIZE as u32 + 1)).await.unwrap(),
        StreamRequest::Violation(_)
    ));
    assert_eq!(h.pieces.lock().unwrap().len(), pieces_before);
    assert_eq!(h.kept.lock().unwrap().len(), 1);

    // A sink refused at once: the body is read and discarded, and the
    // sender gets the answer.
    let h = Arc::new(Recorder { refuse: true, ..Recorder::default() });
    assert!(matches!(inbound(&h, wire).await.unwrap(), StreamRequest::Answered(Response::Refused(_), None)));
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
