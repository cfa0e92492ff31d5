#!/usr/bin/env python3
"""Writes the fuzz targets' seed inputs into fuzz/seeds/<target>/: one valid
message of each kind, so that fuzzing starts past the framing and the CIDs.
Run from anywhere; the seeds are checked in, scripts/fuzz copies them into
the corpus."""
import hashlib
import os
import struct

SEEDS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")


def cid(codec=0x55, fill=b"x"):
    # CIDv1, codec (raw 0x55 / dag-cbor 0x71), BLAKE3 (0x1e), 32 bytes.
    return bytes([0x01, codec, 0x1E, 0x20]) + hashlib.sha256(fill).digest()


def peer(b):
    # Identity multihash of an Ed25519 protobuf public key.
    return bytes([0x00, 36, 0x08, 0x01, 0x12, 0x20]) + bytes([b]) * 32


def pcid(c):
    return bytes([len(c)]) + c


def b16(b):
    return struct.pack(">H", len(b)) + b


def b32(b):
    return struct.pack(">I", len(b)) + b


def wire(tag, fields=b"", body=b""):
    frame = bytes([2, tag]) + fields
    return struct.pack(">I", len(frame)) + frame + body, frame


def write(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


hb = struct.pack(">QQQ", 1 << 40, 1234, 3600)
c = cid()
requests = {
    "put_shard": wire(0x01, pcid(c) + struct.pack(">I", 5), b"hello"),
    "get_shard": wire(0x02, pcid(c)),
    "shard_exists": wire(0x03, struct.pack(">H", 2) + pcid(c) + pcid(cid(fill=b"y"))),
    "delete_shard": wire(0x04, pcid(c) + b16(b"auth")),
    "put_manifest": wire(0x05, pcid(cid(0x71)) + struct.pack(">I", 3), b"\xa0\x01\x02"),
    "get_manifest": wire(0x06, pcid(cid(0x71))),
    "put_record": wire(0x07, b16(b"key") + b32(b"value")),
    "get_record": wire(0x08, b16(b"key")),
    "heartbeat": wire(0x09, hb),
    "heartbeat_draining": wire(0x09, hb + b"\x01"),
    "audit": wire(0x0A, pcid(c) + struct.pack(">QI", 4096, 1024)),
    "rebuild_shard": wire(
        0x0B,
        pcid(cid(0x55, b"chunk"))
        + struct.pack(">HHHH", 2, 1, 2, 3)
        + pcid(cid(fill=b"0")) + b16(peer(1))
        + pcid(cid(fill=b"1")) + b16(b"")
        + pcid(cid(fill=b"2")) + b16(peer(2)),
    ),
}
responses = {
    "ok": wire(0x81),
    "data": wire(0x82, struct.pack(">I", 4), b"data"),
    "exists": wire(0x83, struct.pack(">H", 3) + b"\x01\x00\x01"),
    "record_none": wire(0x84, b"\x00"),
    "record": wire(0x84, b"\x01" + b32(b"value")),
    "not_found": wire(0x85),
    "refused": wire(0x86, b16("disk full \u00e9".encode())),
    "heartbeat": wire(0x87, hb + b"\x01"),
}
# First byte of a shard_protocol input: bit 0 request/response, bits 1-2 the
# answer limit, bits 3-7 where the frame ends (31: the whole rest).
WHOLE = 31 << 3
for name, (w, frame) in requests.items():
    write("shard_protocol", "req_" + name, bytes([WHOLE]) + w)
    write("shard_protocol", "req_head_" + name, bytes([WHOLE]) + frame)
for name, (w, frame) in responses.items():
    for limit in range(3):
        write("shard_protocol", f"resp{limit}_{name}", bytes([WHOLE | limit << 1 | 1]) + w)
    write("shard_protocol", "resp_head_" + name, bytes([WHOLE | 1]) + frame)

write("heartbeat", "plain", hb)
write("heartbeat", "draining", hb + b"\x01")

tomb = b"\x01" + pcid(cid(0x71)) + struct.pack(">Q", 1_700_000_000) + bytes(range(64))
write("tombstone", "v1", tomb)


# A little DAG-CBOR: maps with keys in canonical order (length, then bytes).
def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for extra, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([major << 5 | extra]) + struct.pack(fmt, n)


def cbor(v):
    if v is None:
        return b"\xf6"
    if isinstance(v, bool):
        return b"\xf5" if v else b"\xf4"
    if isinstance(v, int):
        return head(0, v)
    if isinstance(v, bytes):
        return head(2, len(v)) + v
    if isinstance(v, str):
        return head(3, len(v.encode())) + v.encode()
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(cbor(x) for x in v)
    if isinstance(v, dict):
        keys = sorted(v, key=lambda k: (len(k.encode()), k.encode()))
        return head(5, len(v)) + b"".join(cbor(k) + cbor(v[k]) for k in keys)
    if isinstance(v, tuple) and v[0] == "cid":
        return b"\xd8\x2a" + cbor(b"\x00" + v[1])
    raise TypeError(v)


location = {
    "version": 1,
    "manifest": ("cid", cid(0x71)),
    "seq": 7,
    "holders": [peer(1), peer(2), peer(3)],
    "chunks": [[0, 1, 2], [2, 0, 1]],
    "signer": bytes(32),
    "signature": bytes(64),
}
write("location", "v1", cbor(location))

store = {
    "version": 1,
    "records": [
        {"key": b"k", "value": b"v", "publisher": peer(1), "expires": None},
        {"key": b"forever", "value": b"", "publisher": None, "expires": 4_000_000_000},
    ],
    "providers": [
        {"key": b"p", "provider": peer(2), "expires": 4_000_000_000,
         # /ip4/127.0.0.1/tcp/4001
         "addrs": [bytes([0x04, 127, 0, 0, 1, 0x06, 0x0F, 0xA1])]},
    ],
}
write("kad_store", "v1", cbor(store))
