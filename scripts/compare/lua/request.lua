-- Generic wrk request script, shared by the tenantkit and PocketBase benchmarks.
--
-- Everything about the request comes from the environment, so one script
-- serves every scenario of both servers:
--
--   WRK_METHOD        HTTP method (default GET)
--   WRK_AUTH          full value of the Authorization header, e.g.
--                     "Bearer eyJ..." (tenantkit) or "eyJ..." (PocketBase);
--                     empty or unset: no Authorization header
--   WRK_BODY          request body; empty or unset: no body
--   WRK_CONTENT_TYPE  Content-Type when a body is sent (default application/json)
--   WRK_SEQ_BODY=1    replace every "{{seq}}" in WRK_BODY with a per-request
--                     unique token (thread id + counter); this defines
--                     request(), which costs wrk a little per request
--   WRK_CHECK_STATUS=1  count every response outside 200..299 exactly (wrk's
--                     own summary.errors.status only counts status >= 400);
--                     this defines response(), which makes wrk parse each body
--
-- At the end, done() prints one machine-readable line:
--   RESULT rps=<req/s> p99_ms=<ms> p50_ms=<ms> errors=<n> requests=<n> \
--          status_errors=<n> socket_errors=<n> timeouts=<n>
-- errors = status errors + connect/read/write/timeout socket errors.

local function env(name, default)
  local v = os.getenv(name)
  if v == nil or v == "" then return default end
  return v
end

local method = env("WRK_METHOD", "GET")
local auth = env("WRK_AUTH", nil)
local body = env("WRK_BODY", nil)
local ctype = env("WRK_CONTENT_TYPE", "application/json")
local seq_body = env("WRK_SEQ_BODY", "0") == "1"
local check_status = env("WRK_CHECK_STATUS", "0") == "1"

wrk.method = method
wrk.headers["Accept"] = "application/json"
if auth then
  wrk.headers["Authorization"] = auth
end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = ctype
end

-- Per-thread state (each wrk thread has its own Lua state).
-- (thread_id and bad_status are globals so that setup()/done(), which run in
-- wrk's main Lua state, can reach them with thread:set / thread:get.)
local threads = {}
local counter = 0
thread_id = 0
bad_status = 0

function setup(thread)
  thread:set("thread_id", #threads + 1)
  table.insert(threads, thread)
end

if seq_body and body then
  function request()
    counter = counter + 1
    local b = body:gsub("{{seq}}", string.format("t%d-%d", thread_id, counter))
    return wrk.format(nil, nil, nil, b)
  end
end

if check_status then
  function response(status, headers, resp_body)
    if status < 200 or status > 299 then
      bad_status = bad_status + 1
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local status_errors = e.status
  if check_status then
    status_errors = 0
    for _, t in ipairs(threads) do
      status_errors = status_errors + (tonumber(t:get("bad_status")) or 0)
    end
  end
  local socket_errors = e.connect + e.read + e.write
  local errors = status_errors + socket_errors + e.timeout
  local secs = summary.duration / 1e6
  local rps = 0
  if secs > 0 then rps = summary.requests / secs end
  io.write(string.format(
    "RESULT rps=%.1f p99_ms=%.3f p50_ms=%.3f errors=%d requests=%d status_errors=%d socket_errors=%d timeouts=%d\n",
    rps, latency:percentile(99) / 1000, latency:percentile(50) / 1000,
    errors, summary.requests, status_errors, socket_errors, e.timeout))
end
