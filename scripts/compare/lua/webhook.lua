-- Stripe webhook deliveries under load (POST /v1/billing/stripe/webhook), for
-- scripts/bench-webhooks.sh. Each request is one pre-signed delivery from WRK_WEBHOOK_FILE:
-- one per line, "<Stripe-Signature value>\t<raw JSON body>" (the signature is over exactly
-- that body, so the body is sent byte for byte).
--
-- Each wrk thread takes its own share of the lines (thread i: lines i, i+T, i+2T, ... with
-- T = WRK_THREADS) and sends them in order, one per request; when its share runs out it wraps
-- around and sends them again: those are duplicates, which still go through signature
-- verification and the inbox's insert-or-nothing, and still answer 200. The requests are
-- formatted once, in init(), so wrk spends nothing per request but a table lookup.
--
-- wrk calls request() once on the first thread before the run to check the script
-- (script_verify_request) and throws that request away: that thread skips one line.
--
--   WRK_WEBHOOK_FILE  the signed deliveries (required)
--   WRK_THREADS       wrk's -t (default 2), to split the lines between the threads
--
-- Every answer outside 200..299 is counted (wrk's own summary.errors.status only counts
-- status >= 400). At the end, done() prints the same RESULT line as request.lua, plus
-- lines=<deliveries in the file> resent=<requests that were a wrapped-around duplicate>:
--   RESULT rps=<req/s> p99_ms=<ms> p50_ms=<ms> errors=<n> requests=<n> \
--          status_errors=<n> socket_errors=<n> timeouts=<n> lines=<n> resent=<n>
-- errors = status errors + connect/read/write/timeout socket errors.

local file = os.getenv("WRK_WEBHOOK_FILE")
if file == nil or file == "" then
  -- io.lines(nil) would read standard input and hang.
  error("webhook.lua: set WRK_WEBHOOK_FILE to a file of signed deliveries")
end

-- Per-thread state (each wrk thread has its own Lua state); the globals are reached from
-- setup()/done(), which run in wrk's main Lua state, through thread:set / thread:get.
local threads = {}
local pool = {}
local next_index = 0
thread_id = 0
bad_status = 0
resent = 0
lines = 0

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  -- Threads are set up before init runs: take every WRK_THREADS-th line.
  local n = tonumber(os.getenv("WRK_THREADS") or "2") or 2
  local i = 0
  for line in io.lines(file) do
    if line ~= "" then
      i = i + 1
      if (i - 1) % n == (thread_id - 1) then
        local signature, body = line:match("^([^\t]+)\t(.*)$")
        if signature == nil then
          error("webhook.lua: line " .. i .. " of " .. file .. " is not <signature>\\t<body>")
        end
        local headers = {
          ["Host"] = wrk.headers["Host"] or wrk.host,
          ["Content-Type"] = "application/json",
          ["Accept"] = "application/json",
          ["Stripe-Signature"] = signature,
        }
        pool[#pool + 1] = wrk.format("POST", wrk.path, headers, body)
      end
    end
  end
  lines = i
  if #pool == 0 then
    error("webhook.lua: thread " .. thread_id .. " got no line of " .. file)
  end
end

function request()
  next_index = next_index + 1
  if next_index > #pool then
    resent = resent + 1
  end
  return pool[(next_index - 1) % #pool + 1]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    bad_status = bad_status + 1
  end
end

function done(summary, latency, requests)
  local bad, again, total_lines = 0, 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (tonumber(thread:get("bad_status")) or 0)
    again = again + (tonumber(thread:get("resent")) or 0)
    total_lines = math.max(total_lines, tonumber(thread:get("lines")) or 0)
  end
  local e = summary.errors
  local socket = e.connect + e.read + e.write
  local errors = bad + socket + e.timeout
  local seconds = summary.duration / 1e6
  local rps = 0
  if seconds > 0 then rps = summary.requests / seconds end
  io.write(string.format(
    "RESULT rps=%.1f p99_ms=%.3f p50_ms=%.3f errors=%d requests=%d status_errors=%d socket_errors=%d timeouts=%d lines=%d resent=%d\n",
    rps, latency:percentile(99) / 1000, latency:percentile(50) / 1000,
    errors, summary.requests, bad, socket, e.timeout, total_lines, again))
end
