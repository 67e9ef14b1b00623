-- unpack() is bounded by Lua's C stack (some 8000 values), so many fields are
-- sent in chunks. A key of another type makes HMGET/HGET fail: redis.pcall
-- turns that into "no session" without a TYPE call first. KEYS[1] is
-- <prefix>{<store key>}, which names the user sets too (they share the
-- prefix). IN_REACH becomes true on a single server, where the scripts change
-- the user sets themselves, and false on a cluster, where the sets live in
-- other slots: there the scripts return the entries to drop, and the client
-- drops them next.
local key = KEYS[1]
local store_key = string.sub(key, -65, -2)
local prefix = string.sub(key, 1, -67)
local in_reach = IN_REACH
local function chunked(command, args, first, last)
  for i = first, last, 1000 do
    redis.call(command, key, unpack(args, i, math.min(i + 999, last)))
  end
end
local function fmt(x)
  return string.format('%.17g', x)
end
-- tonumber() takes 'nan' and 'inf', which fetch() rejects as corrupt.
local function finite(x)
  return x ~= nil and x == x and x > -math.huge and x < math.huge
end
-- The creation time if the session is live (else nil), then, live or not,
-- its user's digest, its index horizon and its entry in that user's set.
local function live(now)
  local meta = redis.pcall('HMGET', key, 'created', 'expires', 'user', 'indexed', 'listed')
  if meta.err then
    return nil, nil, nil, store_key
  end
  local created, expires = tonumber(meta[1]), tonumber(meta[2])
  if not (finite(created) and finite(expires) and expires > now) then
    created = nil
  end
  return created, meta[3] or nil, tonumber(meta[4]), meta[5] or store_key
end
local function index_of(digest)
  return prefix .. 'user:{' .. digest .. '}'
end
-- Lists member in the user index set until horizon at least, drops the
-- members whose horizon has passed, and keeps the set as long as its
-- latest horizon.
local function index(set, member, horizon, now)
  local score = tonumber(redis.call('ZSCORE', set, member))
  if score == nil or score < horizon then
    redis.call('ZADD', set, fmt(horizon), member)
  end
  redis.call('ZREMRANGEBYSCORE', set, '-inf', fmt(now))
  local top = tonumber(redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')[2])
  redis.call('PEXPIRE', set, string.format('%d', math.max(1000, math.ceil((top - now) * 1000))))
end
-- The entries to drop that are out of reach, as digest/member pairs.
local unlisted = {}
local function unlist(digest, member)
  if in_reach then
    redis.call('ZREM', index_of(digest), member)
  else
    unlisted[#unlisted + 1] = digest
    unlisted[#unlisted + 1] = member
  end
end
