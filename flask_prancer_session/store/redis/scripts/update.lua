-- The common write, a fraction of apply's work: fields set on a live session,
-- none removed, none compared, its binding unchanged. ARGV: now, idle
-- timeout, absolute timeout or "", then the field/value pairs to set. Returns
-- 1 once written, or -1 having written nothing, for apply to decide: the
-- session is gone (or corrupt, or not a hash), or its entry in the user index
-- must move.
local now = tonumber(ARGV[1])
local created, user, indexed = live(now)
if created == nil then
  return -1
end
local expires = now + tonumber(ARGV[2])
if ARGV[3] ~= '' then
  expires = math.min(expires, created + tonumber(ARGV[3]))
end
if user ~= nil and not (indexed and indexed >= expires) then
  return -1
end
redis.call('HSET', key, 'expires', fmt(expires), unpack(ARGV, 4))
redis.call('PEXPIRE', key, string.format('%d', math.max(1000, math.ceil((expires - now) * 1000))))
return 1
