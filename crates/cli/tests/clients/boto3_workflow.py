"""A full S3 workflow against a DataMesh node with boto3 (the AWS SDK).

Run by crates/cli/tests/s3.rs with the endpoint and a key pair in the
environment: DM_S3, DM_KEY, DM_SECRET, DM_WORK (a scratch dir). Exits
non-zero on the first failed check.
"""

import hashlib
import os
import sys
import urllib.request

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.client import Config
from botocore.exceptions import ClientError

EP, KEY, SECRET, WORK = (os.environ[k] for k in ("DM_S3", "DM_KEY", "DM_SECRET", "DM_WORK"))
MiB = 1024 * 1024


def client(secret=SECRET, style="path", **kw):
    return boto3.client(
        "s3",
        endpoint_url=EP,
        aws_access_key_id=KEY,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": style}, signature_version="s3v4", retries={"max_attempts": 1}, **kw),
    )


s3 = client()


def error_code(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError(f"{fn.__name__} succeeded but should have failed")


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


# Buckets
s3.create_bucket(Bucket="boto")
check("boto" in [b["Name"] for b in s3.list_buckets()["Buckets"]], "ListBuckets shows the new bucket")
s3.head_bucket(Bucket="boto")
check(error_code(s3.head_bucket, Bucket="nothere") in ("404", "NoSuchBucket"), "HeadBucket of a missing bucket is 404")
check(error_code(s3.create_bucket, Bucket="boto") == "BucketAlreadyOwnedByYou", "CreateBucket twice is refused")

# Small objects, metadata, listing
body = os.urandom(300_000)
r = s3.put_object(Bucket="boto", Key="dir/small.bin", Body=body, ContentType="application/x-test", Metadata={"who": "boto3"})
check(r["ETag"].strip('"') == hashlib.md5(body).hexdigest(), "simple ETag is the MD5 of the plaintext")
g = s3.get_object(Bucket="boto", Key="dir/small.bin")
check(g["Body"].read() == body, "GET returns the bytes PUT")
check(g["ContentType"] == "application/x-test" and g["Metadata"] == {"who": "boto3"}, "content type and metadata kept")
s3.put_object(Bucket="boto", Key="empty", Body=b"")
check(s3.get_object(Bucket="boto", Key="empty")["Body"].read() == b"", "empty object round-trips")
for i in range(5):
    s3.put_object(Bucket="boto", Key=f"page/{i:02}", Body=str(i).encode())
keys, token = [], None
while True:
    kw = {"ContinuationToken": token} if token else {}
    page = s3.list_objects_v2(Bucket="boto", Prefix="page/", MaxKeys=2, **kw)
    keys += [o["Key"] for o in page.get("Contents", [])]
    if not page["IsTruncated"]:
        break
    token = page["NextContinuationToken"]
check(keys == [f"page/{i:02}" for i in range(5)], "ListObjectsV2 pages through every key in order")
top = s3.list_objects_v2(Bucket="boto", Delimiter="/")
check([p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["dir/", "page/"], "delimiter folds common prefixes")
v1 = s3.list_objects(Bucket="boto", Prefix="page/", MaxKeys=3)
check(len(v1["Contents"]) == 3 and v1["IsTruncated"], "ListObjects v1 honours MaxKeys")
versions = s3.list_object_versions(Bucket="boto", Prefix="page/")
check(len(versions["Versions"]) == 5, "ListObjectVersions answers (one version per object)")

# Multipart >= 100 MiB through the transfer manager, with the SDK's default checksums
big_path = os.path.join(WORK, "big.bin")
with open(big_path, "wb") as f:
    for _ in range(105):
        f.write(os.urandom(MiB))
cfg = TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4)
s3.upload_file(big_path, "boto", "big.bin", Config=cfg)
h = s3.head_object(Bucket="boto", Key="big.bin")
parts = []
with open(big_path, "rb") as f:
    while chunk := f.read(16 * MiB):
        parts.append(hashlib.md5(chunk).digest())
want = hashlib.md5(b"".join(parts)).hexdigest() + f"-{len(parts)}"
check(h["ETag"].strip('"') == want, f"multipart ETag is MD5 of part MD5s + -N ({want})")
check(h["ContentLength"] == 105 * MiB, "multipart object has the full size")
out = os.path.join(WORK, "big.out")
s3.download_file("boto", "big.bin", out, Config=cfg)
with open(big_path, "rb") as a, open(out, "rb") as b:
    check(hashlib.sha256(a.read()).digest() == hashlib.sha256(b.read()).digest(), "multipart object reads back byte for byte")

# Range GET, across a part boundary, without the whole-object checksum
with open(big_path, "rb") as f:
    f.seek(16 * MiB - 10)
    expect = f.read(100)
rg = s3.get_object(Bucket="boto", Key="big.bin", Range=f"bytes={16 * MiB - 10}-{16 * MiB + 89}")
check(rg["Body"].read() == expect, "Range GET across a part boundary")
check(rg["ResponseMetadata"]["HTTPStatusCode"] == 206, "Range GET is 206")
check(rg["ContentRange"] == f"bytes {16 * MiB - 10}-{16 * MiB + 89}/{105 * MiB}", "Content-Range is right")
hdrs = rg["ResponseMetadata"]["HTTPHeaders"]
check(not any(k.startswith("x-amz-checksum-") for k in hdrs), "Range response has no whole-object checksum header")
check(error_code(s3.get_object, Bucket="boto", Key="dir/small.bin", Range="bytes=999999-") == "InvalidRange", "unsatisfiable range is InvalidRange")

# Checksums: a PUT with a matching CRC32 is accepted, a wrong one refused and leaves nothing
s3.put_object(Bucket="boto", Key="crc", Body=b"hello", ChecksumAlgorithm="CRC32")
code = error_code(s3.put_object, Bucket="boto", Key="badsum", Body=b"hello", ChecksumCRC32="AAAAAA==")
check(code == "BadDigest", f"wrong x-amz-checksum-crc32 is BadDigest (got {code})")
check(error_code(s3.head_object, Bucket="boto", Key="badsum") in ("404", "NoSuchKey"), "a refused PUT leaves no object")
code = error_code(s3.put_object, Bucket="boto", Key="badmd5", Body=b"hello", ContentMD5="AAAAAAAAAAAAAAAAAAAAAA==")
check(code in ("BadDigest", "InvalidDigest"), f"wrong Content-MD5 is refused (got {code})")

# Presigned GET (path style) and a virtual-host presigned GET with the Host header set by hand
url = s3.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/small.bin"}, ExpiresIn=300)
with urllib.request.urlopen(url) as resp:
    check(resp.read() == body, "presigned GET returns the object")
port = EP.rsplit(":", 1)[1]
vh = boto3.client(
    "s3", endpoint_url=f"http://localhost:{port}", aws_access_key_id=KEY, aws_secret_access_key=SECRET,
    region_name="us-east-1", config=Config(s3={"addressing_style": "virtual"}, signature_version="s3v4"),
)
vurl = vh.generate_presigned_url("get_object", Params={"Bucket": "boto", "Key": "dir/small.bin"}, ExpiresIn=300)
check(vurl.startswith(f"http://boto.localhost:{port}/"), f"virtual-host URL names the bucket in the host ({vurl})")
req = urllib.request.Request(vurl.replace("boto.localhost", "127.0.0.1"), headers={"Host": f"boto.localhost:{port}"})
with urllib.request.urlopen(req) as resp:
    check(resp.read() == body, "virtual-host style GET returns the object")
bad = url[:-1] + ("0" if url[-1] != "0" else "1")  # flip the signature's last hex digit
try:
    urllib.request.urlopen(bad)
    check(False, "a tampered presigned URL is refused")
except urllib.error.HTTPError as e:
    check(e.code == 403, "a tampered presigned URL is refused with 403")

# Copy (shares data), UploadPartCopy (re-encrypts a range)
s3.copy_object(Bucket="boto", Key="copy.bin", CopySource={"Bucket": "boto", "Key": "dir/small.bin"})
check(s3.get_object(Bucket="boto", Key="copy.bin")["Body"].read() == body, "CopyObject copies the bytes")
up = s3.create_multipart_upload(Bucket="boto", Key="pc.bin")["UploadId"]
p1 = s3.upload_part_copy(Bucket="boto", Key="pc.bin", UploadId=up, PartNumber=1, CopySource={"Bucket": "boto", "Key": "big.bin"}, CopySourceRange=f"bytes=0-{6 * MiB - 1}")
p2 = s3.upload_part(Bucket="boto", Key="pc.bin", UploadId=up, PartNumber=2, Body=b"tail")
listed = s3.list_parts(Bucket="boto", Key="pc.bin", UploadId=up)["Parts"]
check([p["PartNumber"] for p in listed] == [1, 2], "ListParts lists both parts")
check(any(u["UploadId"] == up for u in s3.list_multipart_uploads(Bucket="boto").get("Uploads", [])), "ListMultipartUploads shows the upload")
s3.complete_multipart_upload(Bucket="boto", Key="pc.bin", UploadId=up, MultipartUpload={"Parts": [
    {"PartNumber": 1, "ETag": p1["CopyPartResult"]["ETag"]}, {"PartNumber": 2, "ETag": p2["ETag"]}]})
with open(big_path, "rb") as f:
    check(s3.get_object(Bucket="boto", Key="pc.bin")["Body"].read() == f.read(6 * MiB) + b"tail", "UploadPartCopy + UploadPart complete into the right bytes")
up = s3.create_multipart_upload(Bucket="boto", Key="aborted")["UploadId"]
s3.upload_part(Bucket="boto", Key="aborted", UploadId=up, PartNumber=1, Body=b"x" * 1000)
s3.abort_multipart_upload(Bucket="boto", Key="aborted", UploadId=up)
check(error_code(s3.list_parts, Bucket="boto", Key="aborted", UploadId=up) == "NoSuchUpload", "an aborted upload is gone")

# Errors and auth
check(error_code(s3.get_object, Bucket="boto", Key="nope") == "NoSuchKey", "missing key is NoSuchKey")
check(error_code(s3.get_object, Bucket="nobucket", Key="x") == "NoSuchBucket", "missing bucket is NoSuchBucket")
check(error_code(client(secret="wrong" * 8).list_buckets) == "SignatureDoesNotMatch", "a wrong secret is SignatureDoesNotMatch")
check(error_code(s3.delete_bucket, Bucket="boto") == "BucketNotEmpty", "a bucket with objects cannot be deleted")

# Delete everything, then the bucket
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="boto")["Contents"]]
r = s3.delete_objects(Bucket="boto", Delete={"Objects": [{"Key": k} for k in keys]})
check(len(r["Deleted"]) == len(keys), "DeleteObjects deletes every key")
check(s3.list_objects_v2(Bucket="boto")["KeyCount"] == 0, "the bucket is empty")
s3.delete_bucket(Bucket="boto")
check("boto" not in [b["Name"] for b in s3.list_buckets()["Buckets"]], "DeleteBucket removes it")
print("boto3 workflow passed")
