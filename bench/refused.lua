-- One hostile "create post" call, as bench/run.py prepared and checked it: the session's
-- cookie and the page's Origin, but a forged CSRF token. Every reply must be the refusal
-- (BENCH_EXPECT_STATUS with the error code BENCH_EXPECT_CODE in its JSON envelope);
-- each reply that is not is counted, and bench/run.py refuses the run if any was.
-- Values come from the environment:
--   BENCH_BODY          the body (JSON, or a urlencoded form carrying _csrf)
--   BENCH_CONTENT_TYPE  its Content-Type
--   BENCH_ORIGIN        the Origin header (optional)
--   BENCH_COOKIE        the Cookie header (optional)
--   BENCH_TOKEN         the X-CSRF-Token header (optional: a form carries its own)
--   BENCH_EXPECT_STATUS the status every reply must have (403)
--   BENCH_EXPECT_CODE   the error code every reply's body must name (csrf_failed)
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
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

local expect_status = tonumber(os.getenv("BENCH_EXPECT_STATUS"))
local expect_code = '"code":"' .. os.getenv("BENCH_EXPECT_CODE") .. '"'

unexpected = 0   -- replies of this thread that were not the refusal (read by done())
first = ""       -- the status of the first of them

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status ~= expect_status or not (body and body:find(expect_code, 1, true)) then
    if unexpected == 0 then
      first = tostring(status)
    end
    unexpected = unexpected + 1
  end
end

-- One line that bench/run.py reads, as post.lua's, with the replies that were not the
-- refusal ("unexpected", and the first one's status). errors.status counts every reply
-- above 399, here all of them: run.py reads "unexpected" instead.
function done(summary, latency, requests)
  local count, status = 0, ""
  for _, thread in ipairs(threads) do
    local n = thread:get("unexpected")
    if n > 0 and status == "" then
      status = thread:get("first")
    end
    count = count + n
  end
  io.write(string.format(
    "BENCH_RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p90_us\":%d," ..
    "\"p99_us\":%d,\"max_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d," ..
    "\"status\":%d,\"timeout\":%d,\"unexpected\":%d,\"first_unexpected\":\"%s\"}\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, count, status))
end
