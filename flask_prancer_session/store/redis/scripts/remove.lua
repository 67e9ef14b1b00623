-- ARGV: now, then for remove_user the digest of the user the session must be
-- bound to and the member of that user's set that names it. Returns {1 if a
-- live session was deleted, 0 if none was, or -1 if the session is not bound
-- to that user and was left alone; then digest/member pairs to drop}.
local created, user, _, listed = live(tonumber(ARGV[1]))
if ARGV[2] ~= nil and user ~= ARGV[2] then
  if in_reach then
    -- Here a session is listed in the same step as it is bound: the entry
    -- is stale, and a later binding lists it again.
    redis.call('ZREM', index_of(ARGV[2]), ARGV[3])
  end
  return {-1}
end
redis.call('DEL', key)
if user ~= nil then
  unlist(user, listed)
end
if ARGV[3] ~= nil and ARGV[3] ~= listed then
  unlist(ARGV[2], ARGV[3])
end
return {created and 1 or 0, unpack(unlisted)}
