#!/usr/bin/env python3
"""Seed a running tenantkit server for the side-by-side benchmark, through its public API.

Standard library only. Creates (when missing) two tenants A and B with an owner each, one
project per tenant, and tops tasks up so tenant A holds --tasks rows and tenant B --tasks +
--extra rows (call again with a larger --extra to grow B). Writes a shell-sourceable env file
(--out) with what wrk needs, and --sessions refresh tokens of tenant A's owner, one per line,
to --tokens (for the refresh scenario: each is presented once, its successor next).
"""

import argparse
import http.client
import json
import shlex
import sys
import threading
import time

PASSWORD = "bench passphrase 2026"


class Client:
    """One keep-alive HTTP connection (not thread-safe)."""

    def __init__(self, host, port, token=None):
        self.host, self.port, self.token = host, port, token
        self.conn = None

    def call(self, method, path, body=None, ok=(200, 201, 204)):
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        for attempt in (1, 2, 3):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 3:
                    raise
                continue
            if resp.getheader("connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
            if resp.status not in ok:
                raise RuntimeError(f"{method} {path}: {resp.status} {raw[:300]!r}")
            return json.loads(raw) if raw else None


def login(host, port, email):
    reply = Client(host, port).call(
        "POST", "/v1/auth/login", {"email": email, "password": PASSWORD}
    )
    return reply


def owner(host, port, email, name, slug):
    """An access token of the tenant's owner: log in, and sign up only if that is refused.

    (Re-seeding does not attempt a signup that can only answer 409: each costs an argon2
    hash, and a write the server must get right under load.)"""
    try:
        return login(host, port, email)["access_token"]
    except RuntimeError as err:
        if ": 401 " not in str(err):
            raise
    reply = Client(host, port).call(
        "POST",
        "/v1/auth/signup",
        {"email": email, "password": PASSWORD, "tenant_name": name, "tenant_slug": slug},
    )
    return reply["access_token"]


def project_of(host, port, token, name):
    c = Client(host, port, token)
    page = c.call("GET", "/v1/projects?limit=100")
    for item in page["items"]:
        if item["name"] == name:
            return item["id"]
    return c.call("POST", "/v1/projects", {"name": name})["id"]


def count_tasks(host, port, token, project):
    c = Client(host, port, token)
    total, cursor = 0, None
    while True:
        path = f"/v1/projects/{project}/tasks?limit=100"
        if cursor:
            path += f"&cursor={cursor}"
        page = c.call("GET", path)
        total += len(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return total


def top_up(host, port, token, project, want, workers=8):
    have = count_tasks(host, port, token, project)
    missing = max(0, want - have)
    if not missing:
        return 0
    lock = threading.Lock()
    todo = [missing]
    errors = []

    def work():
        c = Client(host, port, token)
        while True:
            with lock:
                if todo[0] <= 0 or errors:
                    return
                todo[0] -= 1
                n = todo[0]
            try:
                c.call(
                    "POST",
                    f"/v1/projects/{project}/tasks",
                    {"title": f"seeded task {n}", "status": "todo"},
                )
            except Exception as err:  # noqa: BLE001 - reported below
                errors.append(err)
                return

    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return missing


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--tasks", type=int, default=1000, help="tasks of tenant A (top-up)")
    p.add_argument("--extra", type=int, default=0, help="tenant B holds --tasks + --extra")
    p.add_argument("--sessions", type=int, default=0, help="login-minted refresh tokens")
    p.add_argument("--out", required=True, help="shell env file to write (TK_TOKEN, ...)")
    p.add_argument("--tokens", help="file for the --sessions refresh tokens, one a line")
    a = p.parse_args()
    started = time.time()
    token_a = owner(a.host, a.port, "a@bench.test", "Bench A", "bench-a")
    token_b = owner(a.host, a.port, "b@bench.test", "Bench B", "bench-b")
    project_a = project_of(a.host, a.port, token_a, "Bench")
    project_b = project_of(a.host, a.port, token_b, "Bench")
    added = top_up(a.host, a.port, token_a, project_a, a.tasks)
    added += top_up(a.host, a.port, token_b, project_b, a.tasks + a.extra)
    first = Client(a.host, a.port, token_a).call(
        "GET", f"/v1/projects/{project_a}/tasks?limit=1"
    )["items"][0]["id"]
    if a.sessions and a.tokens:
        with open(a.tokens, "w") as out:
            for _ in range(a.sessions):
                out.write(login(a.host, a.port, "a@bench.test")["refresh_token"] + "\n")
    env = {
        "TK_TOKEN": token_a,
        "TK_TOKEN_B": token_b,
        "TK_PROJECT": project_a,
        "TK_PROJECT_B": project_b,
        "TK_TASK": first,
        "TK_EMAIL": "a@bench.test",
        "TK_PASSWORD": PASSWORD,
    }
    with open(a.out, "w") as out:
        for k, v in env.items():
            out.write(f"{k}={shlex.quote(v)}\n")
    print(
        f"seeded: {added} tasks added in {time.time() - started:.1f}s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
