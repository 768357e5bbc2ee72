#!/usr/bin/env python3
"""Reference S3 POST policy (browser form upload) from boto3, at a frozen clock.

Reads one JSON object on stdin:
    {"access_key": "AKIA...", "secret_key": "...", "region": "us-east-1",
     "bucket": "tenantkit-test", "key": "t/1/u/2/avatar.png", "content_type": "image/png",
     "min": 1, "max": 1048576, "expires_in": 600, "now": "2026-01-02T03:04:05Z",
     "endpoint_url": "http://127.0.0.1:9000"}          <- optional; default: AWS's own endpoint
and prints (JSON, keys in this order)
    {"url": ..., "fields": {...boto3's fields, in boto3's order...},
     "policy_document": "<the exact JSON text that was base64-encoded into fields.policy>"}

A JSON array of such objects on stdin gives a JSON array of results, in order: that is how
s3_post_policy_expected.json is made from s3_post_policy_cases.json:
    python3 tests/vectors/s3_post_policy.py < tests/vectors/s3_post_policy_cases.json \
        > tests/vectors/s3_post_policy_expected.json

The call is exactly
    s3.generate_presigned_post(Bucket=bucket, Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[["content-length-range", min, max], {"Content-Type": content_type}],
        ExpiresIn=expires_in)
on a client with signature_version="s3v4" and path-style addressing. The clock is frozen by
replacing `get_current_datetime` in the two botocore modules that imported it from
botocore.compat: botocore.signers (S3PostPresigner: the policy's "expiration") and botocore.auth
(S3SigV4PostAuth: x-amz-date and the credential scope's date). Patching botocore.compat alone
would change neither, since both did `from botocore.compat import get_current_datetime`.

Needs only boto3 (no network: generate_presigned_post signs locally).
"""

import base64
import datetime
import json
import sys

import boto3
import botocore.auth
import botocore.signers
from botocore.config import Config


def frozen(now: datetime.datetime):
    def get_current_datetime(remove_tzinfo=True):
        return now if remove_tzinfo else now.replace(tzinfo=datetime.timezone.utc)

    return get_current_datetime


def parse_now(text: str) -> datetime.datetime:
    dt = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    # botocore works with naive UTC datetimes.
    return dt.astimezone(datetime.timezone.utc).replace(tzinfo=None)


def presign(req):
    now = parse_now(req["now"])
    for module in (botocore.signers, botocore.auth):
        if not hasattr(module, "get_current_datetime"):
            sys.exit(f"{module.__name__} has no get_current_datetime: botocore changed, see its source")
        module.get_current_datetime = frozen(now)

    client_kwargs = dict(
        aws_access_key_id=req["access_key"],
        aws_secret_access_key=req["secret_key"],
        region_name=req["region"],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    if req.get("endpoint_url"):
        client_kwargs["endpoint_url"] = req["endpoint_url"]
    s3 = boto3.client("s3", **client_kwargs)

    ct = req["content_type"]
    post = s3.generate_presigned_post(
        Bucket=req["bucket"],
        Key=req["key"],
        Fields={"Content-Type": ct},
        Conditions=[["content-length-range", int(req["min"]), int(req["max"])], {"Content-Type": ct}],
        ExpiresIn=int(req["expires_in"]),
    )
    return {
        "url": post["url"],
        "fields": post["fields"],
        "policy_document": base64.b64decode(post["fields"]["policy"]).decode("utf-8"),
    }


def main():
    req = json.load(sys.stdin)
    out = [presign(r) for r in req] if isinstance(req, list) else presign(req)
    json.dump(out, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
