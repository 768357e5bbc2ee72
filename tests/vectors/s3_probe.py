#!/usr/bin/env python3
"""Probes what an S3-compatible server really enforces for direct-to-S3 uploads.

Reads the server from the environment that `seaweed_start` (scripts/seaweedfs.sh) exports:
TENANTKIT_TEST_S3_ENDPOINT, TENANTKIT_TEST_S3_BUCKET, TENANTKIT_TEST_S3_ACCESS_KEY,
TENANTKIT_TEST_S3_SECRET_KEY, TENANTKIT_TEST_S3_REGION (default us-east-1). Needs boto3.

    source scripts/seaweedfs.sh
    seaweed_install target/seaweed-venv && seaweed_start "$(mktemp -d)"
    "$SEAWEED_PYTHON" tests/vectors/s3_probe.py [--json FILE]
    seaweed_stop

Each check sends a real request (raw HTTP through http.client for presigned requests, so that
exactly the headers and body under test go on the wire) and prints one line:
    PASS/FAIL  <id>  <what>  -> <HTTP status> <S3 error code>
A "refused?" check passes when the server answers 4xx and the object was not written; an
"accepted" check passes on 2xx and the stored bytes/metadata matching. INFO lines record
behaviour without judging it (they count as neither). The exit status is 0
when every check passed, 1 otherwise (a FAIL is a finding about the server, not necessarily a
bug in this script). Objects are written under a fresh random prefix and deleted at the end.
"""

import base64
import hashlib
import http.client
import json
import os
import secrets
import sys
import time
import uuid
from urllib.parse import urlsplit, urlunsplit, parse_qsl, urlencode, quote

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = os.environ["TENANTKIT_TEST_S3_ENDPOINT"]
BUCKET = os.environ["TENANTKIT_TEST_S3_BUCKET"]
ACCESS_KEY = os.environ["TENANTKIT_TEST_S3_ACCESS_KEY"]
SECRET_KEY = os.environ["TENANTKIT_TEST_S3_SECRET_KEY"]
REGION = os.environ.get("TENANTKIT_TEST_S3_REGION", "us-east-1")

s3 = boto3.client(
    "s3",
    endpoint_url=ENDPOINT,
    aws_access_key_id=ACCESS_KEY,
    aws_secret_access_key=SECRET_KEY,
    region_name=REGION,
    config=Config(
        signature_version="s3v4",
        s3={"addressing_style": "path"},
        retries={"max_attempts": 1},
        # Only when an operation needs one: keeps boto3 from adding its own CRC checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    ),
)

PREFIX = f"probe-{uuid.uuid4().hex[:12]}/"
results = []


def b64sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def raw(method, url, headers=None, body=b""):
    """Sends exactly these headers and body; returns (status, headers dict, body bytes)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    conn.putrequest(method, path, skip_host=False, skip_accept_encoding=True)
    sent_length = False
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
        sent_length |= k.lower() == "content-length"
    if not sent_length:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    if body:
        conn.send(body)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data


def s3_error_code(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    start = text.find("<Code>")
    if start < 0:
        return text.strip()[:80]
    return text[start + 6 : text.find("</Code>", start)]


def stored(key):
    """The stored bytes, or None when there is no object."""
    try:
        return s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    except ClientError as e:
        if e.response["Error"]["Code"] in ("NoSuchKey", "404"):
            return None
        raise


def record(cid, what, ok, detail, expect):
    results.append({"id": cid, "what": what, "ok": bool(ok), "expect": expect, "detail": detail})
    print(f"{'PASS' if ok else 'FAIL'}  {cid:<6} {what}  -> {detail}", flush=True)


def info(cid, what, status, body, key=None):
    """Recorded, never counted as passed or failed."""
    detail = f"{status} {s3_error_code(body) if status >= 300 else ''}".strip()
    if key is not None and stored(key) is not None:
        detail += " (object written)"
    results.append({"id": cid, "what": what, "ok": None, "expect": "info", "detail": detail})
    print(f"INFO  {cid:<6} {what}  -> {detail}", flush=True)


def expect_refused(cid, what, status, body, key=None, must_not_equal=None):
    """Refused: 4xx and (when key is given) the object is absent or not the refused bytes."""
    detail = f"{status} {s3_error_code(body) if status >= 300 else ''}".strip()
    ok = 400 <= status < 500
    if key is not None:
        now = stored(key)
        if now is not None and (must_not_equal is None or now == must_not_equal):
            ok = False
            detail += f" (object written: {len(now)} bytes)"
    record(cid, what, ok, detail, "refused")


def expect_accepted(cid, what, status, body, key=None, want=None):
    detail = f"{status} {s3_error_code(body) if status >= 300 else ''}".strip()
    ok = 200 <= status < 300
    if ok and key is not None:
        now = stored(key)
        if now != want:
            ok = False
            detail += f" (stored {None if now is None else len(now)} bytes, wanted {len(want)})"
    record(cid, what, ok, detail, "accepted")


def presign_put(key, body, content_type, expires=300, extra=None):
    params = dict(
        Bucket=BUCKET,
        Key=key,
        ContentType=content_type,
        ContentLength=len(body),
        ChecksumSHA256=b64sha256(body),
    )
    params.update(extra or {})
    url = s3.generate_presigned_url("put_object", Params=params, ExpiresIn=expires)
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(body)),
        "x-amz-checksum-sha256": b64sha256(body),
    }
    return url, headers


def with_query(url, **changes):
    parts = urlsplit(url)
    q = dict(parse_qsl(parts.query, keep_blank_values=True))
    q.update(changes)
    return urlunsplit(parts._replace(query=urlencode(q, quote_via=quote, safe="")))


# --- a. presigned PUT (SigV4 query auth) -------------------------------------------------------
def check_presigned_put():
    body = b"tenantkit presigned put body\n" * 4
    ct = "text/plain"

    # Identities are configured, so an unsigned request must be refused (else nothing below
    # would mean anything).
    key = PREFIX + "put/anonymous.txt"
    st, _, rb = raw("PUT", f"{ENDPOINT}/{BUCKET}/{quote(key)}", {"Content-Type": ct}, body)
    expect_refused("a0", "anonymous (unsigned) PUT: refused", st, rb, key)

    key = PREFIX + "put/ok.txt"
    url, h = presign_put(key, body, ct)
    signed = dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"]
    print(f"       presigned PUT signs: {signed}")
    st, _, rb = raw("PUT", url, h, body)
    expect_accepted("a1", "presigned PUT, correct body/type/length/checksum: accepted", st, rb, key, body)

    # Same length, different bytes; the header still carries the signed checksum of `body`.
    key = PREFIX + "put/wrong-body.txt"
    url, h = presign_put(key, body, ct)
    other = bytes(reversed(body))
    assert len(other) == len(body) and other != body
    st, _, rb = raw("PUT", url, h, other)
    expect_refused("a2", "presigned PUT, body whose sha256 differs from the signed checksum: refused", st, rb, key)

    # The same, but the client also sends the checksum of the bytes it really sends: the signed
    # header value differs, so only signature checking can refuse it.
    st, _, rb = raw("PUT", url, {**h, "x-amz-checksum-sha256": b64sha256(other)}, other)
    expect_refused("a2b", "presigned PUT, other body + its own (unsigned) checksum value: refused", st, rb, key)

    # The signed checksum header left out entirely.
    st, _, rb = raw("PUT", url, {k: v for k, v in h.items() if k != "x-amz-checksum-sha256"}, other)
    expect_refused("a2c", "presigned PUT, other body, checksum header omitted: refused", st, rb, key)

    key = PREFIX + "put/wrong-type.txt"
    url, h = presign_put(key, body, ct)
    st, _, rb = raw("PUT", url, {**h, "Content-Type": "text/html"}, body)
    expect_refused("a3", "presigned PUT, Content-Type differs from the signed one: refused", st, rb, key)

    key = PREFIX + "put/wrong-length.txt"
    url, h = presign_put(key, body, ct)
    longer = body + b"X"
    st, _, rb = raw("PUT", url, {**h, "Content-Length": str(len(longer))}, longer)
    expect_refused("a4", "presigned PUT, body one byte longer (Content-Length differs from signed): refused", st, rb, key)
    shorter = body[:-1]
    st, _, rb = raw("PUT", url, {**h, "Content-Length": str(len(shorter))}, shorter)
    expect_refused("a4b", "presigned PUT, body one byte shorter: refused", st, rb, key)

    key = PREFIX + "put/expired.txt"
    url, h = presign_put(key, body, ct, expires=1)
    time.sleep(2)
    st, _, rb = raw("PUT", url, h, body)
    expect_refused("a5", "presigned PUT, X-Amz-Expires=1 used after 2 s: refused", st, rb, key)

    key = PREFIX + "put/tampered-sig.txt"
    url, h = presign_put(key, body, ct)
    sig = dict(parse_qsl(urlsplit(url).query))["X-Amz-Signature"]
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    st, _, rb = raw("PUT", with_query(url, **{"X-Amz-Signature": bad}), h, body)
    expect_refused("a6", "presigned PUT, one hex digit of X-Amz-Signature changed: refused", st, rb, key)

    key = PREFIX + "put/signed-key.txt"
    url, h = presign_put(key, body, ct)
    moved_key = PREFIX + "put/other-key.txt"
    parts = urlsplit(url)
    moved = urlunsplit(parts._replace(path=parts.path.replace("signed-key.txt", "other-key.txt")))
    st, _, rb = raw("PUT", moved, h, body)
    expect_refused("a7", "presigned PUT, object key in the path changed: refused", st, rb, moved_key)

    # Extra: a longer expiry than SigV4 allows (7 days).
    key = PREFIX + "put/too-long.txt"
    url, h = presign_put(key, body, ct)
    st, _, rb = raw("PUT", with_query(url, **{"X-Amz-Expires": "604801"}), h, body)
    expect_refused("a8", "presigned PUT, X-Amz-Expires edited to 604801 (> 7 days): refused", st, rb, key)

    # Extra: the URL shape aws-sdk-s3 (Rust) presigns: an extra signed query parameter
    # (`x-id=PutObject`) before the X-Amz-* ones. Signed here with botocore's own SigV4 query
    # signer, since boto3 does not add x-id.
    from botocore.auth import S3SigV4QueryAuth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    key = PREFIX + "put/x-id.txt"
    url = f"{ENDPOINT}/{BUCKET}/{quote(key)}?x-id=PutObject"
    h = {
        "Content-Type": ct,
        "Content-Length": str(len(body)),
        "x-amz-checksum-sha256": b64sha256(body),
    }
    req = AWSRequest(method="PUT", url=url, headers=dict(h))
    S3SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY), "s3", REGION, expires=300).add_auth(req)
    st, _, rb = raw("PUT", req.url, h, body)
    expect_accepted("a9", "presigned PUT with an extra signed query parameter x-id=PutObject: accepted", st, rb, key, body)

    # Informational: a URL whose X-Amz-Date lies in the future (aws-sdk-s3's
    # PresigningConfig::start_time can produce one). Real S3 is reported to refuse such a URL
    # until that time; not verified here, hence INFO.
    import botocore.auth as bauth
    import datetime as _dt

    real = bauth.get_current_datetime
    future = _dt.datetime.now(_dt.timezone.utc).replace(tzinfo=None) + _dt.timedelta(hours=1)
    bauth.get_current_datetime = lambda remove_tzinfo=True: future
    try:
        key = PREFIX + "put/future.txt"
        url, h = presign_put(key, body, ct, expires=300)
    finally:
        bauth.get_current_datetime = real
    st, _, rb = raw("PUT", url, h, body)
    info("a10", "presigned PUT whose X-Amz-Date is 1 h in the future (not valid yet)", st, rb, key)


# --- b. POST policy ----------------------------------------------------------------------------
def post_form(url, fields, file_bytes, filename="upload.bin", file_type="application/octet-stream"):
    boundary = "----tenantkit" + secrets.token_hex(8)
    out = []
    for k, v in fields.items():
        out.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode())
    out.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: {file_type}\r\n\r\n".encode()
        + file_bytes
        + b"\r\n"
    )
    out.append(f"--{boundary}--\r\n".encode())
    data = b"".join(out)
    return raw("POST", url, {"Content-Type": f"multipart/form-data; boundary={boundary}"}, data)


def presign_post(key, content_type, lo, hi, expires=300):
    return s3.generate_presigned_post(
        Bucket=BUCKET,
        Key=key,
        Fields={"Content-Type": content_type},
        Conditions=[["content-length-range", lo, hi], {"Content-Type": content_type}],
        ExpiresIn=expires,
    )


def check_post_policy():
    ct = "image/png"
    lo, hi = 10, 100
    body = b"P" * 50

    key = PREFIX + "post/ok.png"
    p = presign_post(key, ct, lo, hi)
    print(f"       POST url {p['url']} fields {sorted(p['fields'])}")
    st, _, rb = post_form(p["url"], p["fields"], body, file_type=ct)
    expect_accepted("b1", "POST policy, correct key/type/size: accepted", st, rb, key, body)
    if 200 <= st < 300:
        head = s3.head_object(Bucket=BUCKET, Key=key)
        print(f"       stored Content-Type {head.get('ContentType')!r}, length {head.get('ContentLength')}")
        record("b1t", "POST policy upload stored with the Content-Type field", head.get("ContentType") == ct,
               repr(head.get("ContentType")), "accepted")

    key = PREFIX + "post/too-big.png"
    p = presign_post(key, ct, lo, hi)
    st, _, rb = post_form(p["url"], p["fields"], b"P" * (hi + 1), file_type=ct)
    expect_refused("b2", f"POST policy, file of {hi + 1} bytes over content-length-range [{lo},{hi}]: refused", st, rb, key)

    key = PREFIX + "post/too-small.png"
    p = presign_post(key, ct, lo, hi)
    st, _, rb = post_form(p["url"], p["fields"], b"P" * (lo - 1), file_type=ct)
    expect_refused("b2b", f"POST policy, file of {lo - 1} bytes under content-length-range: refused", st, rb, key)

    key = PREFIX + "post/wrong-type.png"
    p = presign_post(key, ct, lo, hi)
    st, _, rb = post_form(p["url"], {**p["fields"], "Content-Type": "text/html"}, body, file_type="text/html")
    expect_refused("b3", "POST policy, Content-Type field differs from the policy's: refused", st, rb, key)

    key = PREFIX + "post/signed-key.png"
    p = presign_post(key, ct, lo, hi)
    other = PREFIX + "post/other-key.png"
    st, _, rb = post_form(p["url"], {**p["fields"], "key": other}, body, file_type=ct)
    expect_refused("b4", "POST policy, key field differs from the policy's: refused", st, rb, other)

    key = PREFIX + "post/expired.png"
    p = presign_post(key, ct, lo, hi, expires=1)
    time.sleep(2)
    st, _, rb = post_form(p["url"], p["fields"], body, file_type=ct)
    expect_refused("b5", "POST policy, expiration 1 s, used after 2 s: refused", st, rb, key)

    # Extra: the policy edited (wider range) with the old signature.
    key = PREFIX + "post/edited-policy.png"
    p = presign_post(key, ct, lo, hi)
    pol = json.loads(base64.b64decode(p["fields"]["policy"]))
    for c in pol["conditions"]:
        if isinstance(c, list) and c[0] == "content-length-range":
            c[2] = 10_000
    edited = base64.b64encode(json.dumps(pol).encode()).decode()
    st, _, rb = post_form(p["url"], {**p["fields"], "policy": edited}, b"P" * (hi + 1), file_type=ct)
    expect_refused("b6", "POST policy, policy edited (range widened), old signature: refused", st, rb, key)

    key = PREFIX + "post/tampered-sig.png"
    p = presign_post(key, ct, lo, hi)
    sig = p["fields"]["x-amz-signature"]
    bad = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    st, _, rb = post_form(p["url"], {**p["fields"], "x-amz-signature": bad}, body, file_type=ct)
    expect_refused("b7", "POST policy, x-amz-signature one digit changed: refused", st, rb, key)

    # Extra: a form field that no condition covers (AWS refuses "Extra input fields").
    key = PREFIX + "post/extra-field.png"
    p = presign_post(key, ct, lo, hi)
    st, _, rb = post_form(p["url"], {**p["fields"], "x-amz-meta-evil": "1"}, body, file_type=ct)
    expect_refused("b8", "POST policy, extra x-amz-meta-* field not in the policy: refused", st, rb, key)


# --- c. HEAD -----------------------------------------------------------------------------------
def check_head():
    body = b'{"hello": "head"}'
    ct = "application/json"
    key = PREFIX + "head/obj.json"
    url, h = presign_put(key, body, ct)
    st, rh, rb = raw("PUT", url, h, body)
    print(f"       presigned PUT answered {st}; x-amz-checksum-sha256 in response: {rh.get('x-amz-checksum-sha256')!r}")
    head = s3.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
    record("c1", "HEAD ContentLength", head.get("ContentLength") == len(body), repr(head.get("ContentLength")), "equal")
    record("c2", "HEAD ContentType", head.get("ContentType") == ct, repr(head.get("ContentType")), "equal")
    got = head.get("ChecksumSHA256")
    record("c3", "HEAD ChecksumSHA256 (ChecksumMode=ENABLED) after a presigned PUT with x-amz-checksum-sha256",
           got == b64sha256(body), f"{got!r} (want {b64sha256(body)!r}); ETag {head.get('ETag')}", "equal")
    # The same through boto3's own put_object with ChecksumSHA256.
    key2 = PREFIX + "head/obj2.json"
    s3.put_object(Bucket=BUCKET, Key=key2, Body=body, ContentType=ct, ChecksumSHA256=b64sha256(body))
    got2 = s3.head_object(Bucket=BUCKET, Key=key2, ChecksumMode="ENABLED").get("ChecksumSHA256")
    record("c4", "HEAD ChecksumSHA256 after boto3 put_object(ChecksumSHA256=...)", got2 == b64sha256(body),
           repr(got2), "equal")
    etag = head.get("ETag", "").strip('"')
    record("c5", "ETag is the hex MD5 of the body (single-part)", etag == hashlib.md5(body).hexdigest(),
           etag, "equal")


# --- d. conditional writes ---------------------------------------------------------------------
def check_conditional():
    key = PREFIX + "cond/obj.txt"
    first, second = b"first version", b"second version"
    s3.put_object(Bucket=BUCKET, Key=key, Body=first, ContentType="text/plain")

    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=second, ContentType="text/plain", IfNoneMatch="*")
        record("d1", "put_object If-None-Match:* over an existing key: refused (412)", False,
               f"accepted, stored now {stored(key)!r}", "refused")
    except ClientError as e:
        code = e.response["ResponseMetadata"]["HTTPStatusCode"]
        record("d1", "put_object If-None-Match:* over an existing key: refused (412)",
               code == 412 and stored(key) == first, f"{code} {e.response['Error']['Code']}", "refused")

    fresh = PREFIX + "cond/fresh.txt"
    try:
        s3.put_object(Bucket=BUCKET, Key=fresh, Body=first, ContentType="text/plain", IfNoneMatch="*")
        record("d2", "put_object If-None-Match:* on a new key: accepted", stored(fresh) == first, "2xx", "accepted")
    except ClientError as e:
        record("d2", "put_object If-None-Match:* on a new key: accepted", False,
               f"{e.response['ResponseMetadata']['HTTPStatusCode']} {e.response['Error']['Code']}", "accepted")

    # Presigned, with If-None-Match signed as a header.
    url, h = presign_put(key, second, "text/plain", extra={"IfNoneMatch": "*"})
    signed = dict(parse_qsl(urlsplit(url).query))["X-Amz-SignedHeaders"]
    print(f"       presigned PUT with IfNoneMatch signs: {signed}")
    st, _, rb = raw("PUT", url, {**h, "If-None-Match": "*"}, second)
    ok = st == 412 and stored(key) == first
    record("d3", "presigned PUT, If-None-Match:* signed and sent, existing key: refused (412)", ok,
           f"{st} {s3_error_code(rb) if st >= 300 else ''}".strip(), "refused")

    # The same URL with the signed If-None-Match header dropped by the client.
    st, _, rb = raw("PUT", url, h, second)
    expect_refused("d4", "presigned PUT, If-None-Match signed but not sent: refused", st, rb, key, must_not_equal=second)

    fresh2 = PREFIX + "cond/fresh2.txt"
    url, h = presign_put(fresh2, second, "text/plain", extra={"IfNoneMatch": "*"})
    st, _, rb = raw("PUT", url, {**h, "If-None-Match": "*"}, second)
    expect_accepted("d5", "presigned PUT, If-None-Match:* signed and sent, new key: accepted", st, rb, fresh2, second)

    # Without a condition an existing key is overwritten (the baseline).
    url, h = presign_put(key, second, "text/plain")
    st, _, rb = raw("PUT", url, h, second)
    expect_accepted("d6", "presigned PUT without If-None-Match over an existing key: overwrites", st, rb, key, second)

    # If-Match with the current ETag / a stale one.
    etag = s3.head_object(Bucket=BUCKET, Key=key)["ETag"]
    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=first, IfMatch='"00000000000000000000000000000000"')
        record("d7", "put_object If-Match with a stale ETag: refused (412)", False, "accepted", "refused")
    except ClientError as e:
        code = e.response["ResponseMetadata"]["HTTPStatusCode"]
        record("d7", "put_object If-Match with a stale ETag: refused (412)", code == 412,
               f"{code} {e.response['Error']['Code']}", "refused")
    try:
        s3.put_object(Bucket=BUCKET, Key=key, Body=first, IfMatch=etag)
        record("d8", "put_object If-Match with the current ETag: accepted", stored(key) == first, "2xx", "accepted")
    except ClientError as e:
        record("d8", "put_object If-Match with the current ETag: accepted", False,
               f"{e.response['ResponseMetadata']['HTTPStatusCode']} {e.response['Error']['Code']}", "accepted")


# --- e. list and delete ------------------------------------------------------------------------
def check_list_delete():
    base = PREFIX + "list/"
    keys = [base + "a/1.txt", base + "a/2.txt", base + "b/1.txt"]
    for k in keys:
        s3.put_object(Bucket=BUCKET, Key=k, Body=b"x", ContentType="text/plain")
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=base + "a/")
    names = sorted(o["Key"] for o in got.get("Contents", []))
    record("e1", "ListObjectsV2 Prefix=.../a/ lists exactly its two keys", names == keys[:2],
           f"{[n[len(base):] for n in names]} KeyCount={got.get('KeyCount')}", "equal")
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=base, Delimiter="/")
    cps = sorted(p["Prefix"][len(base):] for p in got.get("CommonPrefixes", []))
    record("e2", "ListObjectsV2 Delimiter=/ gives CommonPrefixes a/, b/", cps == ["a/", "b/"], repr(cps), "equal")
    got = s3.list_objects_v2(Bucket=BUCKET, Prefix=base, MaxKeys=2)
    tok = got.get("NextContinuationToken")
    rest = s3.list_objects_v2(Bucket=BUCKET, Prefix=base, MaxKeys=2, ContinuationToken=tok) if tok else {}
    paged = [o["Key"] for o in got.get("Contents", [])] + [o["Key"] for o in rest.get("Contents", [])]
    record("e3", "ListObjectsV2 MaxKeys=2 + ContinuationToken pages through all 3", sorted(paged) == sorted(keys),
           f"truncated={got.get('IsTruncated')} pages={len(got.get('Contents', []))}+{len(rest.get('Contents', []))}",
           "equal")
    r = s3.delete_object(Bucket=BUCKET, Key=keys[0])
    gone = stored(keys[0]) is None
    record("e4", "DeleteObject removes the object (GET then 404)", gone,
           f"{r['ResponseMetadata']['HTTPStatusCode']}", "equal")
    try:
        r = s3.delete_object(Bucket=BUCKET, Key=base + "never-existed")
        record("e5", "DeleteObject of a missing key: 204 (idempotent)", r["ResponseMetadata"]["HTTPStatusCode"] == 204,
               f"{r['ResponseMetadata']['HTTPStatusCode']}", "equal")
    except ClientError as e:
        record("e5", "DeleteObject of a missing key: 204 (idempotent)", False,
               f"{e.response['ResponseMetadata']['HTTPStatusCode']} {e.response['Error']['Code']}", "equal")
    try:
        s3.head_object(Bucket=BUCKET, Key=keys[0])
        record("e6", "HEAD of a deleted key: 404", False, "200", "equal")
    except ClientError as e:
        code = e.response["ResponseMetadata"]["HTTPStatusCode"]
        record("e6", "HEAD of a deleted key: 404", code == 404, str(code), "equal")


def cleanup():
    tok = None
    while True:
        kw = {"Bucket": BUCKET, "Prefix": PREFIX}
        if tok:
            kw["ContinuationToken"] = tok
        page = s3.list_objects_v2(**kw)
        for o in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=o["Key"])
        tok = page.get("NextContinuationToken")
        if not tok:
            break


def main():
    out = None
    if len(sys.argv) == 3 and sys.argv[1] == "--json":
        out = sys.argv[2]
    elif len(sys.argv) != 1:
        sys.exit("usage: s3_probe.py [--json FILE]")
    print(f"endpoint {ENDPOINT} bucket {BUCKET} prefix {PREFIX}")
    for section in (check_presigned_put, check_post_policy, check_head, check_conditional, check_list_delete):
        print(f"== {section.__name__}")
        try:
            section()
        except Exception as e:  # a section that crashes is reported, the others still run
            record(section.__name__, "section raised", False, f"{type(e).__name__}: {e}", "no exception")
    cleanup()
    passed = sum(1 for r in results if r["ok"] is True)
    failed = sum(1 for r in results if r["ok"] is False)
    if out:
        with open(out, "w") as f:
            json.dump({"endpoint": ENDPOINT, "results": results}, f, indent=2)
    print(f"{passed} passed, {failed} failed")
    sys.exit(0 if failed == 0 else 1)


if __name__ == "__main__":
    main()
