#!/usr/bin/env python3
"""Seed a running PocketBase (0.40.x) for the tenantkit side-by-side benchmark.

Standard library only. Idempotent: the schema, the two tenants and the two
users are created only when missing, and tasks are *topped up*: tenant A ends
with --tasks rows, tenant B with --tasks + --extra rows (rows already there
count), so the caller can seed 1,000 + 1,000, benchmark, then call again with
--extra 29000 to grow tenant B to 30,000 rows.

Writes a shell-sourceable env file (--out) with what wrk needs.
"""

import argparse
import http.client
import json
import shlex
import sys
import threading
import time
import urllib.parse

TENANT_RULE = '@request.auth.id != "" && tenant = @request.auth.tenant'
CREATE_RULE = '@request.auth.id != "" && @request.body.tenant = @request.auth.tenant'


class PBError(RuntimeError):
    pass


class Client:
    """One keep-alive HTTP connection to PocketBase (not thread-safe)."""

    def __init__(self, host, port, token=None, timeout=120):
        self.host, self.port, self.timeout = host, port, timeout
        self.token = token
        self.conn = None

    def _connect(self):
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)

    def call(self, method, path, body=None, ok=(200, 204), query=None):
        if query:
            path = path + "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = self.token
        for attempt in (1, 2):
            if self.conn is None:
                self._connect()
            try:
                self.conn.request(method, path, body=data, headers=headers)
                resp = self.conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        payload = json.loads(raw) if raw else None
        if ok is not None and resp.status not in ok:
            raise PBError(f"{method} {path} -> {resp.status}: {raw[:800]!r}")
        return resp.status, payload


def log(msg):
    print(f"[pb_seed] {msg}", file=sys.stderr, flush=True)


def ensure_settings(c, logs_days):
    settings = {
        # Bulk seeding goes through /api/batch (off by default).
        "batch": {"enabled": True, "maxRequests": 1000, "timeout": 120, "maxBodySize": 0},
        # Measure the server, not its limiter (0.40 ships with it off, but
        # make it explicit in case the default changes).
        "rateLimits": {"enabled": False},
    }
    if logs_days is not None:
        # logs.maxDays = 0 disables PocketBase's per-request log rows
        # (written to auxiliary.db); the stock value is 5.
        settings["logs"] = {"maxDays": logs_days}
    c.call("PATCH", "/api/settings", settings)


def get_collection(c, name):
    status, body = c.call("GET", f"/api/collections/{name}", ok=(200, 404))
    return body if status == 200 else None


def ensure_tenants(c):
    col = get_collection(c, "tenants")
    if col is None:
        _, col = c.call("POST", "/api/collections", {
            "name": "tenants",
            "type": "base",
            # Only superusers (rules null) may touch tenants.
            "fields": [{"name": "name", "type": "text", "required": True}],
            "indexes": ["CREATE UNIQUE INDEX idx_tenants_name ON tenants (name)"],
        })
        log(f"created collection tenants ({col['id']})")
    return col


def ensure_users(c, tenants_id, token_secs):
    col = get_collection(c, "users")
    if col is None:
        raise PBError("built-in 'users' collection is missing")
    fields = col["fields"]
    patch = {
        "authToken": {"duration": token_secs},
        # No "login from a new location" mails (no mailer here).
        "authAlert": {"enabled": False},
    }
    if not any(f["name"] == "tenant" for f in fields):
        # NB: PATCH "fields" *replaces* the list (non-system fields left out are
        # dropped), so send every existing field plus the new one.
        patch["fields"] = fields + [{
            "name": "tenant",
            "type": "relation",
            "required": True,
            "collectionId": tenants_id,   # the id, a name is rejected
            "maxSelect": 1,
            "cascadeDelete": False,
        }]
        log("adding users.tenant relation field")
    c.call("PATCH", "/api/collections/users", patch)


def ensure_tasks(c, tenants_id, index):
    col = get_collection(c, "tasks")
    rules = {
        "listRule": TENANT_RULE,
        "viewRule": TENANT_RULE,
        "updateRule": TENANT_RULE,
        "deleteRule": TENANT_RULE,
        "createRule": CREATE_RULE,
    }
    if col is None:
        body = {
            "name": "tasks",
            "type": "base",
            "fields": [
                {"name": "title", "type": "text", "required": True, "max": 200},
                {"name": "status", "type": "select", "required": True, "maxSelect": 1,
                 "values": ["todo", "in_progress", "done"]},
                {"name": "tenant", "type": "relation", "required": True,
                 "collectionId": tenants_id, "maxSelect": 1, "cascadeDelete": False},
            ],
            # PocketBase does not index relation columns by itself.
            "indexes": ["CREATE INDEX idx_tasks_tenant ON tasks (tenant)"] if index else [],
            **rules,
        }
        _, col = c.call("POST", "/api/collections", body)
        log(f"created collection tasks ({col['id']}, tenant index: {'yes' if index else 'no'})")
    else:
        c.call("PATCH", "/api/collections/tasks", rules)
    return col


def find_one(c, collection, flt):
    _, body = c.call("GET", f"/api/collections/{collection}/records",
                     query={"filter": flt, "perPage": 1, "skipTotal": 1})
    items = body.get("items") or []
    return items[0] if items else None


def ensure_tenant(c, name):
    rec = find_one(c, "tenants", f'name = "{name}"')
    if rec is None:
        _, rec = c.call("POST", "/api/collections/tenants/records", {"name": name})
    return rec


def ensure_user(c, email, password, tenant_id):
    rec = find_one(c, "users", f'email = "{email}"')
    if rec is None:
        _, rec = c.call("POST", "/api/collections/users/records", {
            "email": email, "password": password, "passwordConfirm": password,
            "tenant": tenant_id, "verified": True, "name": email.split("@")[0],
        })
    else:
        # Keep the password in step with this run's one.
        c.call("PATCH", f"/api/collections/users/records/{rec['id']}",
               {"password": password, "passwordConfirm": password, "tenant": tenant_id})
    return rec


def count_tasks(c, tenant_id):
    _, body = c.call("GET", "/api/collections/tasks/records",
                     query={"filter": f'tenant = "{tenant_id}"', "perPage": 1, "fields": "id"})
    return int(body["totalItems"])


STATUSES = ("todo", "in_progress", "done")


def top_up(host, port, token, tenant_id, label, start, count, batch_size, workers):
    """Create `count` tasks for tenant_id through /api/batch, `workers` at once."""
    if count <= 0:
        return 0.0
    chunks = []
    i = start
    end = start + count
    while i < end:
        n = min(batch_size, end - i)
        chunks.append((i, n))
        i += n
    lock = threading.Lock()
    errors = []

    def worker():
        c = Client(host, port, token)
        while True:
            with lock:
                if not chunks or errors:
                    return
                first, n = chunks.pop()
            reqs = [{
                "method": "POST",
                "url": "/api/collections/tasks/records",
                "body": {"title": f"{label} task {k}", "status": STATUSES[k % 3],
                         "tenant": tenant_id},
            } for k in range(first, first + n)]
            try:
                _, res = c.call("POST", "/api/batch", {"requests": reqs})
                bad = [r for r in res if r.get("status") not in (200, 204)]
                if bad:
                    raise PBError(f"batch item failed: {bad[0]}")
            except Exception as exc:  # noqa: BLE001
                with lock:
                    errors.append(exc)
                return

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(max(1, workers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    if errors:
        raise errors[0]
    log(f"tenant {label}: +{count} tasks in {elapsed:.2f}s ({count / elapsed:.0f} rows/s)")
    return elapsed


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--admin-email", required=True)
    ap.add_argument("--admin-password", required=True)
    ap.add_argument("--password", required=True, help="password of the two bench users")
    ap.add_argument("--tasks", type=int, required=True, help="tasks per tenant")
    ap.add_argument("--extra", type=int, default=0, help="extra tasks for tenant B")
    ap.add_argument("--out", required=True, help="shell env file to write")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--token-secs", type=int, default=7 * 24 * 3600)
    ap.add_argument("--logs-days", type=int, default=None,
                    help="logs.maxDays setting (0 = no request logs); default: leave as is")
    ap.add_argument("--no-index", action="store_true", help="no index on tasks.tenant")
    a = ap.parse_args()

    t_start = time.monotonic()
    anon = Client(a.host, a.port)
    _, auth = anon.call("POST", "/api/collections/_superusers/auth-with-password",
                        {"identity": a.admin_email, "password": a.admin_password})
    su = Client(a.host, a.port, auth["token"])

    ensure_settings(su, a.logs_days)
    tenants = ensure_tenants(su)
    ensure_users(su, tenants["id"], a.token_secs)
    ensure_tasks(su, tenants["id"], not a.no_index)

    ten_a = ensure_tenant(su, "A")
    ten_b = ensure_tenant(su, "B")
    user_a = ensure_user(su, "a@bench.test", a.password, ten_a["id"])
    user_b = ensure_user(su, "b@bench.test", a.password, ten_b["id"])

    have_a = count_tasks(su, ten_a["id"])
    have_b = count_tasks(su, ten_b["id"])
    want_a = a.tasks
    want_b = a.tasks + a.extra
    top_up(a.host, a.port, auth["token"], ten_a["id"], "A", have_a, want_a - have_a,
           a.batch_size, a.workers)
    seed_b_secs = top_up(a.host, a.port, auth["token"], ten_b["id"], "B", have_b,
                         want_b - have_b, a.batch_size, a.workers)

    task_a = find_one(su, "tasks", f'tenant = "{ten_a["id"]}"')
    task_b = find_one(su, "tasks", f'tenant = "{ten_b["id"]}"')
    if task_a is None or task_b is None:
        raise PBError("no task found for tenant A or B (tasks_per_tenant must be >= 1)")

    _, la = anon.call("POST", "/api/collections/users/auth-with-password",
                      {"identity": "a@bench.test", "password": a.password})
    _, lb = anon.call("POST", "/api/collections/users/auth-with-password",
                      {"identity": "b@bench.test", "password": a.password})

    env = {
        "PB_URL": f"http://{a.host}:{a.port}",
        "PB_TOKEN_A": la["token"],
        "PB_TOKEN_B": lb["token"],
        "PB_USER_A_ID": user_a["id"],
        "PB_USER_B_ID": user_b["id"],
        "PB_USER_A_EMAIL": "a@bench.test",
        "PB_USER_B_EMAIL": "b@bench.test",
        "PB_USER_PASSWORD": a.password,
        "PB_TENANT_A_ID": ten_a["id"],
        "PB_TENANT_B_ID": ten_b["id"],
        "PB_TASK_A_ID": task_a["id"],
        "PB_TASK_B_ID": task_b["id"],
        "PB_TASKS_A": str(count_tasks(su, ten_a["id"])),
        "PB_TASKS_B": str(count_tasks(su, ten_b["id"])),
        "PB_SEED_B_SECS": f"{seed_b_secs:.2f}",
    }
    with open(a.out, "w") as fh:
        fh.write("# written by scripts/compare/pb_seed.py\n")
        for k, v in env.items():
            fh.write(f"{k}={shlex.quote(v)}\n")
    log(f"tasks A={env['PB_TASKS_A']} B={env['PB_TASKS_B']}; "
        f"total {time.monotonic() - t_start:.2f}s; env -> {a.out}")


if __name__ == "__main__":
    try:
        main()
    except PBError as exc:
        log(f"error: {exc}")
        sys.exit(1)
