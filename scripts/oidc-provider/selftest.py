#!/usr/bin/env python3
"""End-to-end check of the test OpenID Connect provider (scripts/oidc-provider/provider.mjs).

    python3 scripts/oidc-provider/selftest.py [ISSUER] [--no-rotate]

ISSUER defaults to $TENANTKIT_TEST_OIDC_ISSUER. Standard library only: a cookie jar, redirects
followed by hand, and RS256 / ES256 / EdDSA signatures checked in pure Python against the JWKS.
It registers its own clients and, unless --no-rotate, rotates the provider's keys (twice, the
second time dropping the old ones): run it against an instance no test is using.
"""

import base64
import hashlib
import hmac
import http.cookiejar
import json
import os
import secrets
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

# ---------------------------------------------------------------------------------------------
# Signature checks (pure Python; slow but fine for a handful of tokens).
# ---------------------------------------------------------------------------------------------


def b64d(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64e(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def rs256_verify(jwk, data, sig):
    n = int.from_bytes(b64d(jwk["n"]), "big")
    e = int.from_bytes(b64d(jwk["e"]), "big")
    k = (n.bit_length() + 7) // 8
    if len(sig) != k:
        return False
    em = pow(int.from_bytes(sig, "big"), e, n).to_bytes(k, "big")
    info = bytes.fromhex("3031300d060960864801650304020105000420") + hashlib.sha256(data).digest()
    return em == b"\x00\x01" + b"\xff" * (k - 3 - len(info)) + b"\x00" + info


P256_P = 2**256 - 2**224 + 2**192 + 2**96 - 1
P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
P256_G = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
)


def _ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    p = P256_P
    if a[0] == b[0] and (a[1] + b[1]) % p == 0:
        return None
    if a == b:
        lam = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, p) % p
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, p) % p
    x = (lam * lam - a[0] - b[0]) % p
    return (x, (lam * (a[0] - x) - a[1]) % p)


def _ec_mul(k, point):
    out = None
    while k:
        if k & 1:
            out = _ec_add(out, point)
        point = _ec_add(point, point)
        k >>= 1
    return out


def es256_verify(jwk, data, sig):
    if len(sig) != 64:
        return False
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    if not (0 < r < P256_N and 0 < s < P256_N):
        return False
    q = (int.from_bytes(b64d(jwk["x"]), "big"), int.from_bytes(b64d(jwk["y"]), "big"))
    z = int.from_bytes(hashlib.sha256(data).digest(), "big")
    w = pow(s, -1, P256_N)
    point = _ec_add(_ec_mul(z * w % P256_N, P256_G), _ec_mul(r * w % P256_N, q))
    return point is not None and point[0] % P256_N == r


ED_P = 2**255 - 19
ED_L = 2**252 + 27742317777372353535851937790883648493
ED_D = -121665 * pow(121666, -1, ED_P) % ED_P
ED_SQRT_M1 = pow(2, (ED_P - 1) // 4, ED_P)


def _ed_add(a, b):
    p = ED_P
    aa = (a[1] - a[0]) * (b[1] - b[0]) % p
    bb = (a[1] + a[0]) * (b[1] + b[0]) % p
    cc = 2 * a[3] * b[3] * ED_D % p
    dd = 2 * a[2] * b[2] % p
    e, f, g, h = bb - aa, dd - cc, dd + cc, bb + aa
    return (e * f % p, g * h % p, f * g % p, e * h % p)


def _ed_mul(s, point):
    out = (0, 1, 1, 0)
    while s:
        if s & 1:
            out = _ed_add(out, point)
        point = _ed_add(point, point)
        s >>= 1
    return out


def _ed_equal(a, b):
    p = ED_P
    return (a[0] * b[2] - b[0] * a[2]) % p == 0 and (a[1] * b[2] - b[1] * a[2]) % p == 0


def _ed_recover_x(y, sign):
    p = ED_P
    if y >= p:
        return None
    x2 = (y * y - 1) * pow(ED_D * y * y + 1, -1, p) % p
    if x2 == 0:
        return None if sign else 0
    x = pow(x2, (p + 3) // 8, p)
    if (x * x - x2) % p:
        x = x * ED_SQRT_M1 % p
    if (x * x - x2) % p:
        return None
    return p - x if (x & 1) != sign else x


def _ed_decompress(raw):
    if len(raw) != 32:
        return None
    y = int.from_bytes(raw, "little")
    sign = y >> 255
    y &= (1 << 255) - 1
    x = _ed_recover_x(y, sign)
    return None if x is None else (x, y, 1, x * y % ED_P)


_ED_GY = 4 * pow(5, -1, ED_P) % ED_P
_ED_GX = _ed_recover_x(_ED_GY, 0)
ED_G = (_ED_GX, _ED_GY, 1, _ED_GX * _ED_GY % ED_P)


def eddsa_verify(jwk, data, sig):
    public = b64d(jwk["x"])
    a = _ed_decompress(public)
    if a is None or len(sig) != 64:
        return False
    r = _ed_decompress(sig[:32])
    s = int.from_bytes(sig[32:], "little")
    if r is None or s >= ED_L:
        return False
    h = int.from_bytes(hashlib.sha512(sig[:32] + public + data).digest(), "little") % ED_L
    return _ed_equal(_ed_mul(s, ED_G), _ed_add(r, _ed_mul(h, a)))


def jws_valid(token, jwks):
    """True when token's signature verifies with the JWKS key named by its kid and alg."""
    head, payload, sig = token.split(".")
    header = json.loads(b64d(head))
    data = f"{head}.{payload}".encode()
    for jwk in jwks["keys"]:
        if jwk.get("kid") != header.get("kid") or jwk.get("alg") != header.get("alg"):
            continue
        verify = {"RS256": rs256_verify, "ES256": es256_verify, "EdDSA": eddsa_verify}.get(header["alg"])
        return bool(verify and verify(jwk, data, b64d(sig)))
    return False


def decode(token):
    head, payload, _ = token.split(".")
    return json.loads(b64d(head)), json.loads(b64d(payload))


# ---------------------------------------------------------------------------------------------
# HTTP with a cookie jar and no automatic redirects.
# ---------------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    def __init__(self):
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), _NoRedirect()
        )

    def request(self, method, url, body=None, headers=None, form=False):
        headers = dict(headers or {})
        data = None
        if body is not None:
            if form:
                data = urllib.parse.urlencode(body).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers, err.read()

    def json(self, method, url, body=None, headers=None, form=False):
        status, hdrs, raw = self.request(method, url, body, headers, form)
        return status, hdrs, (json.loads(raw) if raw else None)


# ---------------------------------------------------------------------------------------------
# The checks.
# ---------------------------------------------------------------------------------------------

PASSED = 0
FAILED = 0


def check(name, condition, detail=""):
    global PASSED, FAILED
    if condition:
        PASSED += 1
        print(f"ok   {name}")
    else:
        FAILED += 1
        print(f"FAIL {name} {detail}")
    return condition


class Provider:
    def __init__(self, issuer):
        self.issuer = issuer.rstrip("/")
        self.admin = Browser()
        status, _, self.discovery = self.admin.json(
            "GET", f"{self.issuer}/.well-known/openid-configuration"
        )
        assert status == 200, f"discovery answered {status}"

    def jwks(self):
        return self.admin.json("GET", self.discovery["jwks_uri"])[2]

    def register(self, **client):
        return self.admin.json("POST", f"{self.issuer}/test/clients", client)

    def tamper(self, mode, client_id=None):
        body = {"mode": mode}
        if client_id:
            body["client_id"] = client_id
        return self.admin.json("POST", f"{self.issuer}/test/tamper", body)

    def rotate(self, keep_old=True):
        return self.admin.json("POST", f"{self.issuer}/test/rotate", {"keep_old": keep_old})


def location(headers):
    return headers.get("Location") or headers.get("location")


def authorize(op, client, browser=None, email="alice@example.com", verified="true", sub=None,
              extra=None, pkce=True, form=True):
    """Runs /auth -> /interaction/:uid -> login -> resume; returns a dict of what happened."""
    browser = browser or Browser()
    verifier = b64e(secrets.token_bytes(32))
    out = {
        "browser": browser,
        "verifier": verifier,
        "state": b64e(secrets.token_bytes(12)),
        "nonce": b64e(secrets.token_bytes(12)),
    }
    params = {
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "response_type": "code",
        "scope": "openid email profile",
        "state": out["state"],
        "nonce": out["nonce"],
    }
    if pkce:
        params["code_challenge"] = b64e(hashlib.sha256(verifier.encode()).digest())
        params["code_challenge_method"] = "S256"
    params.update(extra or {})
    url = f"{op.discovery['authorization_endpoint']}?{urllib.parse.urlencode(params)}"
    for _ in range(10):
        status, headers, raw = browser.request("GET", url)
        if status not in (302, 303):
            out["error_status"], out["error_body"] = status, raw
            return out
        url = urllib.parse.urljoin(url, location(headers))
        if url.startswith(client["redirect_uris"][0]):
            query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
            out["callback"] = query
            return out
        path = urllib.parse.urlsplit(url).path
        if path.startswith("/interaction/"):
            status, _, details = browser.json("GET", url)
            out.setdefault("interactions", []).append(details)
            body = {"email": email, "email_verified": verified}
            if sub:
                body["sub"] = sub
            status, headers, _ = browser.request("POST", f"{url}/login", body, form=form)
            out["login_status"] = status
            if status not in (302, 303):
                return out
            url = urllib.parse.urljoin(url, location(headers))
    raise AssertionError("too many redirects")


def exchange(op, client, flow, method="client_secret_basic", verifier=None):
    body = {
        "grant_type": "authorization_code",
        "code": flow["callback"]["code"],
        "redirect_uri": client["redirect_uris"][0],
        "code_verifier": flow["verifier"] if verifier is None else verifier,
    }
    headers = {}
    if method == "client_secret_basic":
        quote = lambda v: urllib.parse.quote(v, safe="")  # noqa: E731 (RFC 6749 2.3.1)
        creds = f"{quote(client['client_id'])}:{quote(client['client_secret'])}"
        headers["Authorization"] = "Basic " + base64.b64encode(creds.encode()).decode()
    else:
        body["client_id"] = client["client_id"]
        body["client_secret"] = client["client_secret"]
    return Browser().json("POST", op.discovery["token_endpoint"], body, headers, form=True)


def sign_in(op, client, method="client_secret_basic", **kwargs):
    flow = authorize(op, client, **kwargs)
    assert "callback" in flow and "code" in flow["callback"], f"no code: {flow}"
    status, _, tokens = exchange(op, client, flow, method)
    assert status == 200, f"token endpoint answered {status}: {tokens}"
    return flow, tokens


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rotate = "--no-rotate" not in sys.argv
    issuer = args[0] if args else os.environ.get("TENANTKIT_TEST_OIDC_ISSUER")
    if not issuer:
        print(__doc__)
        return 2
    op = Provider(issuer)
    d = op.discovery
    check("discovery issuer", d["issuer"] == op.issuer, d["issuer"])
    check("discovery S256 only", d.get("code_challenge_methods_supported") == ["S256"])
    check("discovery auth methods", set(d["token_endpoint_auth_methods_supported"])
          == {"client_secret_basic", "client_secret_post"}, d["token_endpoint_auth_methods_supported"])
    check("discovery scopes", {"openid", "email", "profile"} <= set(d["scopes_supported"]))

    run = secrets.token_hex(4)
    redirect = "http://127.0.0.1:9/v1/sso/callback"
    rs = {"client_id": f"rs-{run}", "client_secret": secrets.token_urlsafe(32), "redirect_uris": [redirect]}
    es = {"client_id": f"es-{run}", "client_secret": secrets.token_urlsafe(32), "redirect_uris": [redirect],
          "id_token_signed_response_alg": "ES256"}
    ed = {"client_id": f"ed-{run}", "client_secret": secrets.token_urlsafe(32), "redirect_uris": [redirect],
          "id_token_signed_response_alg": "EdDSA"}
    for client in (rs, es, ed):
        status, _, body = op.register(**client)
        check(f"register {client['client_id']}", status == 201, f"{status} {body}")
    status, _, body = op.register(client_id=f"bad-{run}", client_secret="x", redirect_uris=["not a url"])
    check("register rejects a bad redirect_uri", status == 400 and body.get("error"), f"{status} {body}")

    # The whole flow, client_secret_basic, RS256.
    flow = authorize(op, rs)
    inter = (flow.get("interactions") or [{}])[0]
    check("interaction JSON", inter.get("prompt") == "login" and inter.get("uid"), inter)
    check("login redirects", flow.get("login_status") == 303, flow.get("login_status"))
    cb = flow.get("callback", {})
    check("callback has code and state", cb.get("code") and cb.get("state") == flow["state"], cb)
    check("callback has iss", cb.get("iss") == op.issuer, cb)
    status, _, tokens = exchange(op, rs, flow, "client_secret_basic")
    check("token endpoint, client_secret_basic", status == 200 and "id_token" in tokens, f"{status} {tokens}")
    jwks = op.jwks()
    header, claims = decode(tokens["id_token"])
    email_sub = "sub-" + hashlib.sha256(b"alice@example.com").hexdigest()[:24]
    check("id_token RS256 with a JWKS kid", header["alg"] == "RS256"
          and header["kid"] == jwks["keys"][0]["kid"], header)
    check("id_token signature", jws_valid(tokens["id_token"], jwks))
    check("id_token claims", claims["iss"] == op.issuer and claims["aud"] == rs["client_id"]
          and claims["nonce"] == flow["nonce"] and claims["email"] == "alice@example.com"
          and claims["email_verified"] is True and claims["sub"] == email_sub
          and claims["name"] == "alice" and claims["exp"] > time.time() > claims["iat"] - 30, claims)
    status, _, info = Browser().json("GET", d["userinfo_endpoint"],
                                     headers={"Authorization": f"Bearer {tokens['access_token']}"})
    check("userinfo", status == 200 and info.get("email") == "alice@example.com", f"{status} {info}")
    status, _, again = exchange(op, rs, flow, "client_secret_basic")
    check("code is single-use", status == 400 and again.get("error") == "invalid_grant", f"{status} {again}")

    # client_secret_post, ES256, JSON login body, explicit sub, unverified email.
    flow = authorize(op, es, email="bob@example.com", verified="false", sub="bob-1", form=False)
    status, _, tokens = exchange(op, es, flow, "client_secret_post")
    check("token endpoint, client_secret_post", status == 200, f"{status} {tokens}")
    header, claims = decode(tokens["id_token"])
    check("id_token ES256", header["alg"] == "ES256" and jws_valid(tokens["id_token"], op.jwks()), header)
    check("posted sub and email_verified=false", claims["sub"] == "bob-1"
          and claims["email_verified"] is False and claims["email"] == "bob@example.com", claims)

    flow, tokens = sign_in(op, ed, method="client_secret_basic")
    header, _ = decode(tokens["id_token"])
    check("id_token EdDSA", header["alg"] == "EdDSA" and jws_valid(tokens["id_token"], op.jwks()), header)

    # The signature checks above are not vacuous: a flipped bit fails each algorithm.
    jwks = op.jwks()
    for client in (rs, es, ed):
        _, tokens = sign_in(op, client)
        h, p, sig = tokens["id_token"].split(".")
        raw = bytearray(b64d(sig))
        raw[5] ^= 1
        alg = decode(tokens["id_token"])[0]["alg"]
        check(f"{alg} bad signature detected", jws_valid(tokens["id_token"], jwks)
              and not jws_valid(f"{h}.{p}.{b64e(bytes(raw))}", jwks))

    # Abort: the client gets error=access_denied with its state.
    browser = Browser()
    status, headers, _ = browser.request("GET", d["authorization_endpoint"] + "?" + urllib.parse.urlencode({
        "client_id": rs["client_id"], "redirect_uri": redirect, "response_type": "code", "scope": "openid",
        "state": "st", "code_challenge": b64e(hashlib.sha256(b"v" * 43).digest()), "code_challenge_method": "S256"}))
    url = urllib.parse.urljoin(op.issuer, location(headers))
    status, headers, _ = browser.request("POST", f"{url}/abort", {})
    status, headers, _ = browser.request("GET", urllib.parse.urljoin(url, location(headers)))
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location(headers) or "").query))
    check("abort gives access_denied", query.get("error") == "access_denied" and query.get("state") == "st", query)

    # Failures the provider itself enforces.
    flow = authorize(op, rs, pkce=False)
    check("PKCE required", flow.get("callback", {}).get("error") == "invalid_request", flow.get("callback"))
    flow = authorize(op, rs)
    status, _, body = exchange(op, rs, flow, verifier=b64e(secrets.token_bytes(32)))
    check("wrong code_verifier rejected", status == 400 and body.get("error") == "invalid_grant", body)
    flow = authorize(op, rs)
    bad = dict(rs, client_secret="wrong")
    status, _, body = exchange(op, bad, flow)
    check("wrong client secret rejected", status == 401 and body.get("error") == "invalid_client", body)
    status, _, body = Browser().json("GET", f"{op.issuer}/interaction/nope")
    check("interaction without cookie is 400 JSON", status == 400 and body.get("error"), f"{status} {body}")
    # Single sign-on: the same browser again goes straight back with a code.
    flow = authorize(op, rs)
    again = authorize(op, rs, browser=flow["browser"])
    check("SSO session reused", "code" in again.get("callback", {}) and not again.get("interactions"), again)
    forced = authorize(op, rs, browser=flow["browser"], extra={"prompt": "login"})
    check("prompt=login forces an interaction", bool(forced.get("interactions")), forced)
    other = authorize(op, es, browser=flow["browser"])
    prompt = (other.get("interactions") or [{}])[0].get("prompt")
    check("another client in the same session: consent, then a code",
          prompt == "consent" and "code" in other.get("callback", {}), other)
    switched = authorize(op, ed, browser=flow["browser"], email="carol@example.com")
    ok = "code" in switched.get("callback", {})
    if ok:
        status, _, tokens = exchange(op, ed, switched)
        ok = status == 200 and decode(tokens["id_token"])[1]["email"] == "carol@example.com"
    check("switching account in a session needs no logout page", ok, switched)

    # Tampering, one mode at a time, scoped to the client (and once unscoped).
    for mode in ["nonce", "aud", "expired", "iss", "alg_none", "hs256", "wrong_key", "azp"]:
        status, _, body = op.tamper(mode, rs["client_id"])
        if not check(f"tamper {mode} armed", status == 200 and body.get("mode") == mode, body):
            continue
        flow, tokens = sign_in(op, rs)
        token = tokens["id_token"]
        header, claims = decode(token)
        jwks = op.jwks()
        real_kid = jwks["keys"][0]["kid"]
        now = time.time()
        if mode == "nonce":
            ok = claims["nonce"] != flow["nonce"] and jws_valid(token, jwks)
        elif mode == "aud":
            ok = claims["aud"] != rs["client_id"] and rs["client_id"] not in claims["aud"] and jws_valid(token, jwks)
        elif mode == "expired":
            ok = claims["exp"] < now - 3000 and claims["iat"] < claims["exp"] and jws_valid(token, jwks)
        elif mode == "iss":
            ok = claims["iss"] != op.issuer and jws_valid(token, jwks)
        elif mode == "alg_none":
            ok = header == {"alg": "none"} and token.endswith(".") and claims["nonce"] == flow["nonce"]
        elif mode == "hs256":
            h, p, s = token.split(".")
            mac = hmac.new(rs["client_secret"].encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
            ok = header["alg"] == "HS256" and hmac.compare_digest(b64d(s), mac)
        elif mode == "wrong_key":
            ok = header["kid"] == real_kid and header["alg"] == "RS256" and not jws_valid(token, jwks)
        else:  # azp
            ok = (isinstance(claims["aud"], list) and rs["client_id"] in claims["aud"]
                  and claims["azp"] != rs["client_id"] and claims["azp"] in claims["aud"] and jws_valid(token, jwks))
        check(f"tamper {mode} applied", ok, f"{header} {claims}")
        _, tokens = sign_in(op, rs)
        check(f"tamper {mode} is one-shot", jws_valid(tokens["id_token"], op.jwks())
              and decode(tokens["id_token"])[1]["iss"] == op.issuer)
    op.tamper("nonce", es["client_id"])
    flow, tokens = sign_in(op, rs)
    check("tamper scoped to another client leaves this one alone",
          decode(tokens["id_token"])[1]["nonce"] == flow["nonce"] and jws_valid(tokens["id_token"], op.jwks()))
    flow, tokens = sign_in(op, es, method="client_secret_post")
    check("tamper scoped to its client applies there", decode(tokens["id_token"])[1]["nonce"] != flow["nonce"])
    op.tamper("iss")
    _, tokens = sign_in(op, ed)
    check("unscoped tamper applies to the next client", decode(tokens["id_token"])[1]["iss"] != op.issuer)
    status, _, body = op.tamper("bogus")
    check("unknown tamper mode is 400", status == 400, body)

    if rotate:
        before = op.jwks()
        old_kid = before["keys"][0]["kid"]
        flow = authorize(op, rs)  # a code obtained before the rotation
        status, _, rot = op.rotate()
        after = op.jwks()
        kids = [k["kid"] for k in after["keys"]]
        check("rotate answers the new kid", status == 200 and rot["kid"] != old_kid and rot["kid"] == kids[0], rot)
        check("JWKS: new key first, old kept", kids[0] == rot["kid"] and old_kid in kids, kids)
        status, _, tokens = exchange(op, rs, flow)
        check("code from before the rotation still redeems", status == 200, f"{status} {tokens}")
        _, tokens = sign_in(op, rs)
        header, _ = decode(tokens["id_token"])
        check("new kid signs after rotation", header["kid"] == rot["kid"] and jws_valid(tokens["id_token"], after), header)
        _, tokens = sign_in(op, ed)
        check("other algorithms rotated too", decode(tokens["id_token"])[0]["kid"] == rot["kids"]["EdDSA"])
        status, _, rot2 = op.rotate(keep_old=False)
        kids = [k["kid"] for k in op.jwks()["keys"]]
        check("rotate keep_old=false drops old keys", kids == rot2["jwks_kids"] and rot["kid"] not in kids
              and old_kid not in kids and len(kids) == 3, kids)
        _, tokens = sign_in(op, rs)
        check("clients survive rotation", decode(tokens["id_token"])[0]["kid"] == rot2["kid"])

    print(f"selftest: {PASSED} passed, {FAILED} failed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
