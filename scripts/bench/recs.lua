-- wrk script: GET /api/recommendations?limit=20 as a random one of the
-- sessions listed in SESSIONS (a file, one session id per line), so every
-- request ranks for a real browsing history.
local sessions = {}

function init(args)
  for line in io.lines(os.getenv("SESSIONS")) do
    sessions[#sessions + 1] = line
  end
  math.randomseed(os.time() + #args)
end

function request()
  local s = sessions[math.random(#sessions)]
  return wrk.format("GET", "/api/recommendations?limit=20", { ["X-Session-Id"] = s })
end

function done(summary, latency, requests)
  io.write(string.format("non-2xx or socket errors: %d\n",
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
