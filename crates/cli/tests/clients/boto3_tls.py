"""S3 over TLS with boto3 against a DataMesh node serving a self-signed
certificate.

Run by crates/cli/tests/edge.rs with DM_S3 (an https:// endpoint), DM_KEY,
DM_SECRET and DM_CA (the node's certificate, PEM). The client trusts the
node only through DM_CA: without it the handshake must fail. Exits non-zero
on the first failed check.
"""

import os
import sys

import boto3
from botocore.client import Config
from botocore.exceptions import SSLError

EP, KEY, SECRET, CA = (os.environ[k] for k in ("DM_S3", "DM_KEY", "DM_SECRET", "DM_CA"))


def client(verify):
    return boto3.client(
        "s3",
        endpoint_url=EP,
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        region_name="us-east-1",
        verify=verify,
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


check(EP.startswith("https://"), "the endpoint is https")
s3 = client(CA)
s3.create_bucket(Bucket="tls")
body = os.urandom(200_000)
s3.put_object(Bucket="tls", Key="a.bin", Body=body)
check(s3.get_object(Bucket="tls", Key="a.bin")["Body"].read() == body, "PUT then GET over TLS returns the bytes")
check([o["Key"] for o in s3.list_objects_v2(Bucket="tls")["Contents"]] == ["a.bin"], "listing over TLS")

try:
    client(True).list_buckets()
    check(False, "a client that does not trust the certificate is refused")
except SSLError:
    check(True, "a client that does not trust the certificate is refused")

print("boto3 tls passed")
