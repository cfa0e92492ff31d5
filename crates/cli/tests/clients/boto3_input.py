"""S3 input checks with boto3 and raw signed HTTP, run by crates/cli/tests/s3_input.rs.

Keys with control characters are refused; keys with %, + and XML's
special characters list without a 5xx and, with EncodingType=url
(boto3's default), come back exactly; bucket names S3
forbids are refused; user metadata over 2 KB is MetadataTooLarge; a
presigned URL valid for more than 7 days is refused; an oversized
DeleteObjects body is refused before it is read. The key comes as
DM_KEY / DM_SECRET, the endpoint as DM_S3. Prints the presigned URL's
signature (`signature=...`) so the caller can look for it in the node's log.
"""

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request

from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from dm_s3 import check, client

EP = os.environ["DM_S3"]
KEY, SECRET = os.environ["DM_KEY"], os.environ["DM_SECRET"]

s3 = client(EP, KEY, SECRET)


def code_of(fn):
    try:
        fn()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None, 200


def signed(method, path, body=b"", headers=None):
    """A raw request signed with SigV4, for what boto3 would refuse to send."""
    req = AWSRequest(method=method, url=EP + path, data=body, headers=dict(headers or {}))
    req.headers["X-Amz-Content-SHA256"] = hashlib.sha256(body).hexdigest()
    S3SigV4Auth(Credentials(KEY, SECRET), "s3", "us-east-1").add_auth(req)
    return req


def send_expecting_early_answer(req, body_len):
    """Sends the headers with `Expect: 100-continue` and reads the answer
    before any of the body: a server that refuses on the headers answers
    at once, without reading (or parsing) the body."""
    u = urllib.parse.urlsplit(req.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    conn.putrequest(req.method, u.path + ("?" + u.query if u.query else ""), skip_accept_encoding=True)
    for k, v in req.headers.items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(body_len))
    conn.putheader("Expect", "100-continue")
    conn.endheaders()
    resp = conn.getresponse()
    return resp.status, resp.read().decode("utf-8", "replace")


# Bucket names S3 forbids, though boto3's own check lets them through.
for bad in ["foo-.bar", "foo.-bar", "sthree-foo", "xn--foo", "amzn-s3-demo-x", "foo--x-s3", "foo.mrap", "foo-s3alias",
            "192.168.5.4"]:
    c, status = code_of(lambda: s3.create_bucket(Bucket=bad))
    check(c == "InvalidBucketName" and status == 400, f"bucket {bad!r}: got {c} {status}")
s3.create_bucket(Bucket="input-ok")

# Keys with control characters (which XML 1.0 cannot carry) are refused
# at the door, for every way an object is made; keys with % and + list
# back exactly.
for bad in ["esc\x1bkey", "nul\x00key", "tab\tkey"]:
    for what, call in [
        ("PutObject", lambda: s3.put_object(Bucket="input-ok", Key=bad, Body=b"x")),
        ("CreateMultipartUpload", lambda: s3.create_multipart_upload(Bucket="input-ok", Key=bad)),
    ]:
        c, status = code_of(call)
        check(c == "InvalidArgument" and status == 400, f"{what} of {bad!r}: got {c} {status}")
keys = ["a%41b+c", "plain", "dir/sub key", "caf\u00e9", "amp&lt;<>\"'"]
for k in keys:
    s3.put_object(Bucket="input-ok", Key=k, Body=k.encode())
listed = [o["Key"] for o in s3.list_objects_v2(Bucket="input-ok")["Contents"]]
check(sorted(listed) == sorted(keys), f"ListObjectsV2 (url-encoded) gave {listed!r}")
listed = [o["Key"] for o in s3.list_objects(Bucket="input-ok")["Contents"]]
check(sorted(listed) == sorted(keys), f"ListObjects (url-encoded) gave {listed!r}")
listed = [o["Key"] for o in s3.list_object_versions(Bucket="input-ok")["Versions"]]
check(sorted(listed) == sorted(keys), f"ListObjectVersions (url-encoded) gave {listed!r}")
page = s3.list_objects_v2(Bucket="input-ok", Delimiter="/", Prefix="")
check([p["Prefix"] for p in page.get("CommonPrefixes", [])] == ["dir/"], f"common prefixes: {page!r}")
for k in keys:
    check(s3.get_object(Bucket="input-ok", Key=k)["Body"].read() == k.encode(), f"GET {k!r}")
# Without EncodingType the listing is still an answer, never a 5xx.
req = signed("GET", "/input-ok?list-type=2")
with urllib.request.urlopen(urllib.request.Request(req.url, headers=dict(req.headers))) as r:
    check(r.status == 200, f"raw listing: {r.status}")
req = signed("GET", "/input-ok?list-type=2&encoding-type=url")
with urllib.request.urlopen(urllib.request.Request(req.url, headers=dict(req.headers))) as r:
    text = r.read().decode()
    check("<Key>a%2541b%2Bc</Key>" in text and "<Key>caf%C3%A9</Key>" in text, f"raw url-encoded listing: {text}")

# User metadata: 2 KB of names and values at most.
s3.put_object(Bucket="input-ok", Key="meta-ok", Body=b"x", Metadata={"m": "v" * 2000})
for what, call in [
    ("PutObject", lambda: s3.put_object(Bucket="input-ok", Key="meta-big", Body=b"x", Metadata={"m": "v" * 3000})),
    ("PutObject 80 KB", lambda: s3.put_object(Bucket="input-ok", Key="meta-big", Body=b"x",
                                              Metadata={f"k{i}": "v" * 1000 for i in range(80)})),
    ("CreateMultipartUpload", lambda: s3.create_multipart_upload(Bucket="input-ok", Key="meta-big",
                                                                 Metadata={"m": "v" * 3000})),
    ("CopyObject", lambda: s3.copy_object(Bucket="input-ok", Key="meta-big", CopySource="input-ok/plain",
                                          MetadataDirective="REPLACE", Metadata={"m": "v" * 3000})),
]:
    c, status = code_of(call)
    check(c == "MetadataTooLarge" and status == 400, f"{what} with too much metadata: got {c} {status}")
c, _ = code_of(lambda: s3.head_object(Bucket="input-ok", Key="meta-big"))
check(c in ("404", "NoSuchKey"), f"a refused object exists: {c}")

# Presigned URLs: at most 7 days.
week = s3.generate_presigned_url("get_object", Params={"Bucket": "input-ok", "Key": "plain"}, ExpiresIn=604800)
with urllib.request.urlopen(week) as r:
    check(r.read() == b"plain", "7-day presigned GET")
print("signature=" + urllib.parse.parse_qs(urllib.parse.urlsplit(week).query)["X-Amz-Signature"][0])
years = s3.generate_presigned_url("get_object", Params={"Bucket": "input-ok", "Key": "plain"},
                                  ExpiresIn=3 * 365 * 86400)
try:
    urllib.request.urlopen(years)
    check(False, "a presigned URL valid for three years worked")
except urllib.error.HTTPError as e:
    body = e.read().decode()
    check(e.code == 400 and "AuthorizationQueryParametersError" in body, f"3-year presign: {e.code} {body}")

# DeleteObjects: more than 1,000 keys, and a body too large to parse.
c, status = code_of(lambda: s3.delete_objects(
    Bucket="input-ok", Delete={"Objects": [{"Key": f"k{i}"} for i in range(1001)]}))
check(c == "MalformedXML" and status == 400, f"1,001 keys: got {c} {status}")
for size in (3 << 20, 21 << 20):
    body = b"<Delete>" + b"<Object><Key>" + b"k" * size + b"</Key></Object></Delete>"
    req = signed("POST", "/input-ok?delete", body, {"Content-Type": "application/xml"})
    status, text = send_expecting_early_answer(req, len(body))
    check(status == 400 and "MaxMessageLengthExceeded" in text, f"DeleteObjects body of {len(body)} bytes: {status} {text}")
# Nothing was deleted by any of it.
check(len(s3.list_objects_v2(Bucket="input-ok")["Contents"]) == len(keys) + 1, "objects survived")
print("input passed")
