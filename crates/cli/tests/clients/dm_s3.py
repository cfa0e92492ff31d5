"""What the boto3 test clients share: a client for a DataMesh S3 endpoint
(path-style addressing, SigV4, no retries, so a refusal is seen as it was
answered) and the check that ends a script with a message the Rust test
prints. Imported by the scripts beside it (Python puts a script's own
directory on the import path)."""

import sys

import boto3
from botocore.client import Config


def client(endpoint, key, secret):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4", retries={"max_attempts": 1}),
    )


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
