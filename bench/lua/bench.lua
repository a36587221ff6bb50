-- wrk script of bench/run: the requests of every HTTP scenario.
--
--   wrk -t2 -c32 -d5s -s bench/lua/bench.lua http://127.0.0.1:PORT -- \
--       mode=create tokens=FILE users=20000 events=100 event_base=1001 start=0
--
-- Arguments (key=value):
--   mode        create   POST claims of fresh pairs: claim k of the run is
--                        user user_base + k % users, event event_base +
--                        (k % events + k / users) % events (the mapping of
--                        bench/claimdrv.c: claims in flight together are of
--                        different users and mostly different events),
--                        k = start + thread + n * threads
--               repeat   the pairs that a create run made again: thread t
--                        replays its own first made_t claims (made=a,b,...)
--               hot      one user (hot_user) claims: thread t's n-th request
--                        is for event event_base + (n / burst) % events, so
--                        each event gets a burst of about burst * threads
--                        concurrent claims, then the next event
--               get      GET participation of the pairs a create run made
--               events   GET /api/events
--   tokens      file with one JWT per line, for user_base, user_base + 1, ...
--   hot_token   the hot user's JWT (mode hot)
--   hot_tokens  file of many JWTs of the hot user (mode hot): a fresh token
--               for every request, as a frontend that mints one per call
--   spell       rotate (mode hot): the scheme spelled a different way each
--               request ("Bearer X", "bearer X", "BEARER  X", ...), which
--               the app accepts alike
--   delay_ms    pause of each connection between requests (0: closed loop)
--
-- done() prints one line "BENCH_JSON {...}": requests, duration, latency
-- percentiles (microseconds), wrk's socket errors, the status counts, 503s
-- without Retry-After, the highest pair index issued per thread and the
-- answers per thread (for a later repeat run).

local threads = {}
local nthreads = 0

function setup(thread)
   thread:set("tid", nthreads)
   nthreads = nthreads + 1
   table.insert(threads, thread)
end

local function parse(args)
   local o = {}
   for _, a in ipairs(args) do
      local k, v = a:match("^([%w_]+)=(.*)$")
      if k then o[k] = v end
   end
   return o
end

-- the lines of a file (no file: none)
local function read_lines(path)
   local lines = {}
   if path then
      for line in io.lines(path) do lines[#lines + 1] = line end
   end
   return lines
end

local cfg, toks, made, hot_toks
local spellings = {"Bearer ", "bearer ", "BEARER  ", "bEaReR   ", "BeArEr "}
local n = 0
local hdrs = {}

function init(args)
   cfg = parse(args)
   cfg.users = tonumber(cfg.users or "1")
   cfg.user_base = tonumber(cfg.user_base or "1")
   cfg.events = tonumber(cfg.events or "1")
   cfg.event_base = tonumber(cfg.event_base or "1")
   cfg.start = tonumber(cfg.start or "0")
   cfg.threads = tonumber(cfg.threads or "1")
   cfg.burst = tonumber(cfg.burst or "100")
   cfg.delay_ms = tonumber(cfg.delay_ms or "0")
   toks = read_lines(cfg.tokens)
   if cfg.made then
      local m = {}
      for x in cfg.made:gmatch("%d+") do m[#m + 1] = tonumber(x) end
      made = math.max(1, m[tid + 1] or 1)
   end
   counts = {}
   no_retry_after = 0
   answers = 0
   maxk = -1
   if cfg.mode == "hot" then
      hdrs = {Authorization = "Bearer " .. cfg.hot_token}
      hot_toks = read_lines(cfg.hot_tokens)
   end
   -- wrk asks thread 0's script after init() whether delay() exists, and
   -- then calls it before every request: define it only when asked
   if cfg.delay_ms > 0 then
      local d = cfg.delay_ms
      delay = function() return d end
   end
end

local function pair(k)
   local user = cfg.user_base + k % cfg.users
   local event = cfg.event_base + (k % cfg.events + math.floor(k / cfg.users))
                 % cfg.events
   return user, event
end

function request()
   local mode = cfg.mode
   if mode == "events" then
      n = n + 1
      return wrk.format("GET", "/api/events")
   end
   if mode == "hot" then
      local event = cfg.event_base + math.floor(n / cfg.burst) % cfg.events
      local h = hdrs
      if #hot_toks > 0 or cfg.spell == "rotate" then
         local scheme = "Bearer "
         local tok = cfg.hot_token
         if cfg.spell == "rotate" then
            scheme = spellings[(n + tid) % #spellings + 1]
         end
         if #hot_toks > 0 then
            tok = hot_toks[(n * cfg.threads + tid) % #hot_toks + 1]
         end
         h = {Authorization = scheme .. tok}
      end
      n = n + 1
      return wrk.format("POST", "/api/events/" .. event .. "/participation",
                        h)
   end
   local i = n
   if mode == "repeat" or mode == "get" then i = n % made end
   local k = cfg.start + tid + i * cfg.threads
   if k > maxk then maxk = k end
   n = n + 1
   local user, event = pair(k)
   local h = {Authorization = "Bearer " .. toks[user - cfg.user_base + 1]}
   return wrk.format(mode == "get" and "GET" or "POST",
                     "/api/events/" .. event .. "/participation", h)
end

function response(status, headers, body)
   counts[status] = (counts[status] or 0) + 1
   answers = answers + 1
   if status == 503 and not (headers["Retry-After"] or headers["retry-after"]) then
      no_retry_after = no_retry_after + 1
   end
end

function done(summary, latency, requests)
   local st = {}
   local per = {}
   local nra = 0
   local maxks = {}
   for _, t in ipairs(threads) do
      local c = t:get("counts") or {}
      for k, v in pairs(c) do st[k] = (st[k] or 0) + v end
      per[#per + 1] = tostring(t:get("answers") or 0)
      maxks[#maxks + 1] = tostring(t:get("maxk") or -1)
      nra = nra + (t:get("no_retry_after") or 0)
   end
   local parts = {}
   for k, v in pairs(st) do parts[#parts + 1] = string.format('"%d": %d', k, v) end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"lat_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"status": {%s}, "no_retry_after": %d, "answers": [%s], "maxk": [%s]}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean,
      e.connect, e.read, e.write, e.status, e.timeout,
      table.concat(parts, ", "), nra, table.concat(per, ","),
      table.concat(maxks, ",")))
end
