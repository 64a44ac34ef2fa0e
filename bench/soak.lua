-- The soak's traffic, as bench/soak.py prepared and checked it: SOAK_REQUESTS names a
-- directory holding one raw HTTP request per file and a manifest, one "<weight> <file>"
-- line per kind of request. Each wrk thread sends them in a shuffled order where each
-- kind appears <weight> times, over and over; the replies are counted by status.
local dir = os.getenv("SOAK_REQUESTS")

raw = {}       -- the raw requests, in manifest order
order = {}     -- indexes into raw, each repeated by its weight, shuffled
counts = {}    -- replies seen by this thread, by status (read by done() below)
local next_index = 0

local threads = {}

-- In the main Lua state, once per thread: numbered, and kept for done().
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  local manifest = assert(io.open(dir .. "/manifest", "r"))
  for line in manifest:lines() do
    local weight, name = line:match("^(%d+) (%S+)$")
    local file = assert(io.open(dir .. "/" .. name, "rb"))
    table.insert(raw, file:read("*a"))
    file:close()
    for _ = 1, tonumber(weight) do
      table.insert(order, #raw)
    end
  end
  manifest:close()
  -- A fixed shuffle per thread: every run sends the same sequence.
  math.randomseed(1000 + (id or 1))
  for i = #order, 2, -1 do
    local j = math.random(i)
    order[i], order[j] = order[j], order[i]
  end
end

function request()
  next_index = next_index % #order + 1
  return raw[order[next_index]]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

-- One line that bench/soak.py reads: wrk's totals and errors, latency percentiles (µs),
-- and the replies of every thread by status.
function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      statuses[status] = (statuses[status] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(statuses) do
    table.insert(parts, string.format("\"%d\":%d", status, n))
  end
  io.write(string.format(
    "SOAK_RESULT {\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p99_us\":%d," ..
    "\"max_us\":%d,\"connect\":%d,\"read\":%d,\"write\":%d,\"timeout\":%d," ..
    "\"statuses\":{%s}}\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, table.concat(parts, ",")))
end
