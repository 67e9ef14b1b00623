-- ARGV: now, new expires_at, TTL in milliseconds. Returns like apply.
local now = tonumber(ARGV[1])
local created, user, indexed, listed = live(now)
if created == nil then
  return {0, '', '', ''}
end
local expires = tonumber(ARGV[2])
redis.call('HSET', key, 'expires', ARGV[2])
redis.call('PEXPIRE', key, ARGV[3])
if user == nil or (indexed and indexed >= expires) then
  return {1, '', '', ''}
end
indexed = 2 * expires - now
redis.call('HSET', key, 'indexed', fmt(indexed))
if in_reach then
  index(index_of(user), listed, indexed, now)
  return {1, '', '', ''}
end
return {1, user, fmt(indexed), listed}
