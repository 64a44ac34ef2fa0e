-- One "create post" call, as bench/run.py prepared it (same body and headers as its
-- own check before the run). Values come from the environment:
--   BENCH_BODY    the JSON body
--   BENCH_ORIGIN  the Origin header (optional)
--   BENCH_COOKIE  the Cookie header: session and CSRF cookies (optional)
--   BENCH_TOKEN   the X-CSRF-Token header (optional)
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json"

local function header(name, variable)
  local value = os.getenv(variable)
  if value ~= nil and value ~= "" then
    wrk.headers[name] = value
  end
end

header("Origin", "BENCH_ORIGIN")
header("Cookie", "BENCH_COOKIE")
header("X-CSRF-Token", "BENCH_TOKEN")

-- One line that bench/run.py reads: counts, latency percentiles (µs), and errors
-- (errors.status counts replies with a status above 399).
function done(summary, latency, requests)
  io.write(string.format(
    "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p90_us\":%d," ..
    "\"p99_us\":%d,\"max_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d}\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout))
end
