-- tenantkit's refresh under load: rotation with reuse detection means every refresh token is
-- presented exactly once, and the next request presents its successor. Each wrk thread gets
-- its own share of the session tokens in WRK_TOKENS_FILE (one per line, at least as many as
-- the thread has connections); request() takes one, response() keeps the successor, so one
-- login-minted session per connection is a chain that lasts the whole run.
--
-- Supply more tokens than connections: wrk calls request() once on the first thread before the
-- run to check the script's request (script_verify_request) and throws that request away, so
-- that thread loses one token; a failed refresh (non-200, or a connection dropped with the
-- request in flight) loses that chain's successor too. scripts/compare.sh mints 3 per
-- connection. A thread whose pool runs dry sends "starved" requests, counted as errors.
--
--   WRK_TOKENS_FILE  refresh tokens, one per line (required)
--   WRK_THREADS      wrk's -t (default 2), to split the tokens between the threads
--
-- At the end, done() prints the same RESULT line as request.lua (plus starved=<n>).

local tokens_file = os.getenv("WRK_TOKENS_FILE")
if tokens_file == nil or tokens_file == "" then
  -- io.lines(nil) would read standard input and hang.
  error("tk_refresh.lua: set WRK_TOKENS_FILE to a file of refresh tokens")
end
local threads = {}
thread_id = 0
bad_status = 0
starved = 0
local pool = {}

local function read_tokens()
  local all = {}
  for line in io.lines(tokens_file) do
    if line ~= "" then table.insert(all, line) end
  end
  return all
end

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  -- Threads are set up before init runs: take every WRK_THREADS-th token.
  local all = read_tokens()
  local n = tonumber(os.getenv("WRK_THREADS") or "2")
  for i, token in ipairs(all) do
    if (i - 1) % n == (thread_id - 1) then table.insert(pool, token) end
  end
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

function request()
  local token = table.remove(pool)
  if token == nil then
    starved = starved + 1
    token = "starved"
  end
  return wrk.format(nil, nil, nil, '{"refresh_token":"' .. token .. '"}')
end

function response(status, headers, body)
  if status ~= 200 then
    bad_status = bad_status + 1
    return
  end
  local next_token = string.match(body, '"refresh_token":"([^"]+)"')
  if next_token then table.insert(pool, next_token) else bad_status = bad_status + 1 end
end

function done(summary, latency, requests)
  local bad, hungry = 0, 0
  for _, thread in ipairs(threads) do
    bad = bad + (thread:get("bad_status") or 0)
    hungry = hungry + (thread:get("starved") or 0)
  end
  local e = summary.errors
  local socket = e.connect + e.read + e.write + e.timeout
  local seconds = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.1f p99_ms=%.3f p50_ms=%.3f errors=%d requests=%d status_errors=%d socket_errors=%d timeouts=%d starved=%d\n",
    summary.requests / seconds, latency:percentile(99) / 1000, latency:percentile(50) / 1000,
    bad + socket, summary.requests, bad, socket, e.timeout, hungry))
end
