"""Tenancy over S3 with boto3, run by crates/cli/tests/s3_tenancy.rs.

Phases (argv[1]): `setup` (alice's buckets, object and an open multipart
upload), `sweep` (bob's key against every operation on alice's resources;
scoped keys; quotas), `revoked` (a revoked key is refused), `mp_setup`
(alice opens an upload in a bucket bob will be granted write on; prints
UPLOAD=<id>) and `mp` (bob, with write, cannot act on alice's upload; it
completes intact). Keys come as
DM_<WHO>_KEY / DM_<WHO>_SECRET, the endpoint as DM_S3.
"""

import os
import sys

import dm_s3
from botocore.exceptions import ClientError
from dm_s3 import check

EP = os.environ["DM_S3"]
PHASE = sys.argv[1]
SECRET_BYTES = b"alice's secret object\n" * 100
MIB = 1024 * 1024


def client(who):
    return dm_s3.client(EP, os.environ[f"DM_{who.upper()}_KEY"], os.environ[f"DM_{who.upper()}_SECRET"])


def code_of(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"]
    return None


def refused(what, fn, codes=("AccessDenied",)):
    # A HEAD answer has no body: its code is the status.
    c = code_of(fn)
    check(c in codes, f"{what}: expected one of {codes}, got {c}")


def alice_state(s3):
    body = s3.get_object(Bucket="alice-data", Key="secret.txt")["Body"].read()
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="alice-data").get("Contents", [])]
    uploads = [u["UploadId"] for u in s3.list_multipart_uploads(Bucket="alice-data").get("Uploads", [])]
    return body, keys, uploads


if PHASE == "setup":
    a = client("alice")
    a.create_bucket(Bucket="alice-data")
    a.create_bucket(Bucket="alice-other")
    a.put_object(Bucket="alice-data", Key="secret.txt", Body=SECRET_BYTES)
    a.put_object(Bucket="alice-other", Key="other.txt", Body=b"other")
    a.create_multipart_upload(Bucket="alice-data", Key="big.bin")
    check(code_of(lambda: client("alice2").list_buckets()) is None, "alice's second key works before revocation")
    print("setup passed")

elif PHASE == "sweep":
    a, b = client("alice"), client("bob")
    before = alice_state(a)
    check(before[0] == SECRET_BYTES and before[1] == ["secret.txt"] and len(before[2]) == 1, f"setup: {before}")
    upload = before[2][0]
    part = a.upload_part(Bucket="alice-data", Key="big.bin", UploadId=upload, PartNumber=1, Body=b"p" * 1000)

    b.create_bucket(Bucket="bob-data")
    b.put_object(Bucket="bob-data", Key="mine.txt", Body=b"bob's")
    names = [x["Name"] for x in b.list_buckets()["Buckets"]]
    check(names == ["bob-data"], f"bob sees only his buckets: {names}")
    names = [x["Name"] for x in a.list_buckets()["Buckets"]]
    check("bob-data" not in names and "alice-data" in names, f"alice sees only hers: {names}")
    refused("CreateBucket on alice's name", lambda: b.create_bucket(Bucket="alice-data"), ("BucketAlreadyExists",))
    refused("CreateBucket again by alice", lambda: a.create_bucket(Bucket="alice-data"), ("BucketAlreadyOwnedByYou",))

    head = ("AccessDenied", "403")
    for key in ["secret.txt", "does-not-exist.txt"]:
        refused(f"HeadObject {key}", lambda: b.head_object(Bucket="alice-data", Key=key), head)
        refused(f"GetObject {key}", lambda: b.get_object(Bucket="alice-data", Key=key))
        refused(f"PutObject {key}", lambda: b.put_object(Bucket="alice-data", Key=key, Body=b"bob was here"))
        refused(f"DeleteObject {key}", lambda: b.delete_object(Bucket="alice-data", Key=key))
        refused(
            f"CopyObject out of {key}",
            lambda: b.copy_object(Bucket="bob-data", Key="stolen", CopySource={"Bucket": "alice-data", "Key": key}),
        )
        refused(
            f"CreateMultipartUpload {key}", lambda: b.create_multipart_upload(Bucket="alice-data", Key=key)
        )
    for bucket in ["alice-data", "no-such-bucket-here"]:
        refused(f"HeadBucket {bucket}", lambda: b.head_bucket(Bucket=bucket), head)
        refused(f"GetBucketLocation {bucket}", lambda: b.get_bucket_location(Bucket=bucket))
        refused(f"ListObjects {bucket}", lambda: b.list_objects(Bucket=bucket))
        refused(f"ListObjectsV2 {bucket}", lambda: b.list_objects_v2(Bucket=bucket))
        refused(f"ListObjectVersions {bucket}", lambda: b.list_object_versions(Bucket=bucket))
        refused(f"ListMultipartUploads {bucket}", lambda: b.list_multipart_uploads(Bucket=bucket))
        refused(f"DeleteBucket {bucket}", lambda: b.delete_bucket(Bucket=bucket))
    refused(
        "CopyObject into alice's bucket",
        lambda: b.copy_object(Bucket="alice-data", Key="planted", CopySource={"Bucket": "bob-data", "Key": "mine.txt"}),
    )
    r = b.delete_objects(Bucket="alice-data", Delete={"Objects": [{"Key": "secret.txt"}, {"Key": "nope"}]})
    errs = sorted((e["Key"], e["Code"]) for e in r.get("Errors", []))
    check(errs == [("nope", "AccessDenied"), ("secret.txt", "AccessDenied")], f"DeleteObjects: {r}")
    check(not r.get("Deleted"), f"DeleteObjects deleted nothing: {r}")
    refused(
        "UploadPart",
        lambda: b.upload_part(Bucket="alice-data", Key="big.bin", UploadId=upload, PartNumber=2, Body=b"x"),
    )
    refused(
        "UploadPartCopy",
        lambda: b.upload_part_copy(
            Bucket="alice-data",
            Key="big.bin",
            UploadId=upload,
            PartNumber=2,
            CopySource={"Bucket": "bob-data", "Key": "mine.txt"},
        ),
    )
    refused("ListParts", lambda: b.list_parts(Bucket="alice-data", Key="big.bin", UploadId=upload))
    refused(
        "CompleteMultipartUpload",
        lambda: b.complete_multipart_upload(
            Bucket="alice-data",
            Key="big.bin",
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
        ),
    )
    refused("AbortMultipartUpload", lambda: b.abort_multipart_upload(Bucket="alice-data", Key="big.bin", UploadId=upload))
    # bob's own multipart upload cannot take a part copied from alice's object.
    mine = b.create_multipart_upload(Bucket="bob-data", Key="copy.bin")["UploadId"]
    refused(
        "UploadPartCopy out of alice's object",
        lambda: b.upload_part_copy(
            Bucket="bob-data",
            Key="copy.bin",
            UploadId=mine,
            PartNumber=1,
            CopySource={"Bucket": "alice-data", "Key": "secret.txt"},
        ),
    )
    b.abort_multipart_upload(Bucket="bob-data", Key="copy.bin", UploadId=mine)

    after = alice_state(a)
    check(after == before, f"nothing of alice's changed: {before} -> {after}")
    parts = a.list_parts(Bucket="alice-data", Key="big.bin", UploadId=upload).get("Parts", [])
    check([p["PartNumber"] for p in parts] == [1], f"alice's upload keeps its one part: {parts}")
    check(b.get_object(Bucket="bob-data", Key="mine.txt")["Body"].read() == b"bob's", "bob reads his own")

    # A key scoped to read and list alice-data.
    s = client("scoped")
    check(s.get_object(Bucket="alice-data", Key="secret.txt")["Body"].read() == SECRET_BYTES, "scoped key reads")
    check(len(s.list_objects_v2(Bucket="alice-data").get("Contents", [])) == 1, "scoped key lists")
    refused("scoped PutObject", lambda: s.put_object(Bucket="alice-data", Key="new.txt", Body=b"x"))
    refused("scoped DeleteObject", lambda: s.delete_object(Bucket="alice-data", Key="secret.txt"))
    refused("scoped GetObject on another bucket", lambda: s.get_object(Bucket="alice-other", Key="other.txt"))
    refused("scoped PutObject on another bucket", lambda: s.put_object(Bucket="alice-other", Key="n", Body=b"x"))
    refused("scoped CreateBucket", lambda: s.create_bucket(Bucket="scoped-new"))
    check(alice_state(a) == before, "the scoped key changed nothing")

    # carol (free tier, 1 MiB per file): a bigger PUT is refused, nothing stored.
    c = client("carol")
    c.create_bucket(Bucket="carol-data")
    c.put_object(Bucket="carol-data", Key="small.bin", Body=b"s" * 1000)
    refused("PUT over the per-file limit", lambda: c.put_object(Bucket="carol-data", Key="big.bin", Body=b"b" * (2 * MIB)), ("QuotaExceeded",))
    refused("the refused object", lambda: c.head_object(Bucket="carol-data", Key="big.bin"), ("404", "NoSuchKey"))
    keys = [o["Key"] for o in c.list_objects_v2(Bucket="carol-data").get("Contents", [])]
    check(keys == ["small.bin"], f"nothing stored by the refused PUT: {keys}")

    # dave (12 MiB stored): parts of 5 MiB; the third would exceed it.
    d = client("dave")
    d.create_bucket(Bucket="dave-data")
    up = d.create_multipart_upload(Bucket="dave-data", Key="huge.bin")["UploadId"]
    for n in (1, 2):
        d.upload_part(Bucket="dave-data", Key="huge.bin", UploadId=up, PartNumber=n, Body=bytes([n]) * (5 * MIB))
    refused(
        "the part that exceeds the quota",
        lambda: d.upload_part(Bucket="dave-data", Key="huge.bin", UploadId=up, PartNumber=3, Body=b"3" * (5 * MIB)),
        ("QuotaExceeded",),
    )
    parts = d.list_parts(Bucket="dave-data", Key="huge.bin", UploadId=up).get("Parts", [])
    check([p["PartNumber"] for p in parts] == [1, 2], f"the refused part was not stored: {parts}")
    d.abort_multipart_upload(Bucket="dave-data", Key="huge.bin", UploadId=up)
    # The aborted upload's reservation was returned: 10 MiB fits again.
    d.put_object(Bucket="dave-data", Key="fits.bin", Body=b"f" * (10 * MIB))
    print("sweep passed")

elif PHASE == "mp_setup":
    a = client("alice")
    a.create_bucket(Bucket="alice-shared")
    up = a.create_multipart_upload(Bucket="alice-shared", Key="big.bin")["UploadId"]
    a.upload_part(Bucket="alice-shared", Key="big.bin", UploadId=up, PartNumber=1, Body=b"A" * (5 * MIB))
    print(f"UPLOAD={up}")

elif PHASE == "mp":
    a, b = client("alice"), client("bob")
    up = os.environ["DM_UPLOAD"]
    # The grant works: bob writes his own object in alice's bucket.
    b.put_object(Bucket="alice-shared", Key="bobs.txt", Body=b"bob was here")
    # His own upload there is his to finish.
    mine = b.create_multipart_upload(Bucket="alice-shared", Key="bob.bin")["UploadId"]
    b.upload_part(Bucket="alice-shared", Key="bob.bin", UploadId=mine, PartNumber=1, Body=b"b")
    check(len(b.list_parts(Bucket="alice-shared", Key="bob.bin", UploadId=mine)["Parts"]) == 1, "bob lists his parts")
    kw = dict(Bucket="alice-shared", Key="big.bin", UploadId=up)
    refused("bob's part in alice's upload", lambda: b.upload_part(PartNumber=1, Body=b"B" * 10, **kw))
    refused("bob's part 2 in alice's upload", lambda: b.upload_part(PartNumber=2, Body=b"B" * 10, **kw))
    refused(
        "bob's copied part in alice's upload",
        lambda: b.upload_part_copy(PartNumber=3, CopySource={"Bucket": "alice-shared", "Key": "bobs.txt"}, **kw),
    )
    refused("bob listing alice's parts", lambda: b.list_parts(**kw))
    refused(
        "bob completing alice's upload",
        lambda: b.complete_multipart_upload(MultipartUpload={"Parts": [{"PartNumber": 1}]}, **kw),
    )
    refused("bob aborting alice's upload", lambda: b.abort_multipart_upload(**kw))
    # The bucket's owner sees and may abort bob's upload there.
    listed = [u["UploadId"] for u in a.list_multipart_uploads(Bucket="alice-shared").get("Uploads", [])]
    check(up in listed and mine in listed, f"the bucket owner lists every upload: {listed}")
    a.abort_multipart_upload(Bucket="alice-shared", Key="bob.bin", UploadId=mine)
    # Alice's upload is untouched and completes intact.
    parts = a.list_parts(**kw)["Parts"]
    check([(p["PartNumber"], p["Size"]) for p in parts] == [(1, 5 * MIB)], f"alice's parts: {parts}")
    a.upload_part(PartNumber=2, Body=b"Z" * 100, **kw)
    etags = [p["ETag"] for p in a.list_parts(**kw)["Parts"]]
    a.complete_multipart_upload(
        MultipartUpload={"Parts": [{"PartNumber": n + 1, "ETag": e} for n, e in enumerate(etags)]}, **kw
    )
    body = a.get_object(Bucket="alice-shared", Key="big.bin")["Body"].read()
    check(body == b"A" * (5 * MIB) + b"Z" * 100, f"alice's object is intact ({len(body)} bytes)")
    print("mp passed")

elif PHASE == "revoked":
    refused("a revoked key", lambda: client("alice2").list_buckets(), ("InvalidAccessKeyId",))
    refused("a revoked key's read", lambda: client("alice2").get_object(Bucket="alice-data", Key="secret.txt"), ("InvalidAccessKeyId",))
    check(client("alice").get_object(Bucket="alice-data", Key="secret.txt")["Body"].read() == SECRET_BYTES, "alice's other key works")
    print("revoked passed")
