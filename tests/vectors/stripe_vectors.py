"""Stripe-Signature vectors from Stripe's own library (PyPI `stripe`).

stdin: {"secret", "other_secret", "now", "body", "limit"}; stdout: a JSON list of cases
{name, header (or null), body, stripe_valid} where `stripe_valid` is what
`stripe.WebhookSignature.verify_header` says at `now` with `secret` (and, for the rotation
case, with `other_secret`), tolerance 300 s.
"""
import json
import sys
import time

import stripe

spec = json.load(sys.stdin)
secret, other, now, body = spec["secret"], spec["other_secret"], spec["now"], spec["body"]
gen = stripe.WebhookSignature.generate_signature_header


def sig(header):
    return header.split(",v1=", 1)[1]


good = gen(body, secret, timestamp=now)
reserialized = json.dumps(json.loads(body), indent=1)
big = body[:-1] + ', "padding": "' + "x" * (spec["limit"] + 10) + '"}'
cases = [
    ("valid", good, body, secret),
    ("several_v1_one_valid", f"t={now},v1={'0' * 64},v1={sig(good)},v1={'f' * 64}", body, secret),
    ("rotated_secret", gen(body, other, timestamp=now), body, other),
    ("missing_header", None, body, secret),
    ("v0_only", f"t={now},v0={sig(good)}", body, secret),
    ("bad_hex", f"t={now},v1=zz{sig(good)[2:]}", body, secret),
    ("wrong_secret", gen(body, "whsec_wrong", timestamp=now), body, secret),
    ("body_reserialized", good, reserialized, secret),
    ("too_old", gen(body, secret, timestamp=now - 301), body, secret),
    ("in_future", gen(body, secret, timestamp=now + 301), body, secret),
    ("empty_body", good, "", secret),
    ("oversize_body", gen(big, secret, timestamp=now), big, secret),
]

real_time = time.time
time.time = lambda: now
out = []
for name, header, payload, key in cases:
    try:
        stripe.WebhookSignature.verify_header(payload, header, key, 300)
        valid = True
    except stripe.SignatureVerificationError:
        valid = False
    out.append({"name": name, "header": header, "body": payload, "stripe_valid": valid})
time.time = real_time
json.dump(out, sys.stdout)
