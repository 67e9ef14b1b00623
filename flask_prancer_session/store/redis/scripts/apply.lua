-- ARGV: now, idle timeout, absolute timeout or "", created_at or "", the
-- binding ("" unchanged, "-" none, or the user's digest), the member that
-- lists the session in the set of a new binding and its horizon, the numbers
-- of removed fields and of expected fields, then the removed fields, the
-- field/expected value pairs, and the field/value pairs to set. Returns {1 if
-- a session is stored afterwards, then (only on a cluster) the digest whose
-- set must keep the member (the fourth value) until the horizon (the third
-- value) or "", then digest/member pairs to drop}. The times are written with
-- %.17g so the floats read back exactly as sent.
local now = tonumber(ARGV[1])
local binding, member = ARGV[5], ARGV[6]
local first_expected = 10 + tonumber(ARGV[8])
local first_set = first_expected + 2 * tonumber(ARGV[9])
local created, user, indexed, listed = live(now)
-- Compare-and-set: a field whose stored value is no longer the expected one
-- keeps it (a field removed meanwhile stays removed).
local changed = {}
for i = first_expected, first_set - 1, 2 do
  if created == nil or redis.call('HGET', key, ARGV[i]) ~= ARGV[i + 1] then
    changed[ARGV[i]] = true
  end
end
if changed[USER_FIELD] then
  binding = ''
end
local fields = {}
for i = first_set, #ARGV, 2 do
  if not changed[ARGV[i]] then
    fields[#fields + 1] = ARGV[i]
    fields[#fields + 1] = ARGV[i + 1]
  end
end
local values = #fields
local adopted = false
local function reply(stored, due)
  -- A cluster listed a new binding's member before this script: unless the
  -- session took it, it must go.
  if not in_reach and not adopted and ARGV[5] ~= '' and ARGV[5] ~= '-' then
    unlist(ARGV[5], member)
  end
  if due == nil then
    return {stored, '', '', '', unpack(unlisted)}
  end
  return {stored, due, fmt(indexed), listed, unpack(unlisted)}
end
if created == nil then
  if ARGV[4] == '' or values == 0 then
    return reply(0)
  end
  -- An expired or corrupt hash, or a key of another type: start afresh.
  if user ~= nil then
    unlist(user, listed)
  end
  redis.call('DEL', key)
  created, user, indexed = tonumber(ARGV[4]), nil, nil
  fields[#fields + 1] = 'created'
  fields[#fields + 1] = fmt(created)
elseif first_expected > 10 then
  chunked('HDEL', ARGV, 10, first_expected - 1)
  if values == 0 then
    local empty = true
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'd:' then
        empty = false
        break
      end
    end
    if empty then
      if user ~= nil then
        unlist(user, listed)
      end
      redis.call('DEL', key)
      return reply(0)
    end
  end
end
if binding == '-' then
  if user ~= nil then
    unlist(user, listed)
  end
  redis.call('HDEL', key, 'user', 'indexed', 'listed')
  user = nil
elseif binding ~= '' and binding ~= user then
  if user ~= nil then
    unlist(user, listed)
  end
  user, indexed, listed, adopted = binding, tonumber(ARGV[7]), member, true
  if in_reach then
    index(index_of(user), listed, indexed, now)
  end
  fields[#fields + 1] = 'user'
  fields[#fields + 1] = user
  fields[#fields + 1] = 'indexed'
  fields[#fields + 1] = ARGV[7]
  fields[#fields + 1] = 'listed'
  fields[#fields + 1] = listed
end
local expires = now + tonumber(ARGV[2])
if ARGV[3] ~= '' then
  expires = math.min(expires, created + tonumber(ARGV[3]))
end
fields[#fields + 1] = 'expires'
fields[#fields + 1] = fmt(expires)
local due = nil
if user ~= nil and not (indexed and indexed >= expires) then
  indexed = 2 * expires - now
  fields[#fields + 1] = 'indexed'
  fields[#fields + 1] = fmt(indexed)
  if in_reach then
    index(index_of(user), listed, indexed, now)
  else
    due = user
  end
end
chunked('HSET', fields, 1, #fields)
redis.call('PEXPIRE', key, string.format('%d', math.max(1000, math.ceil((expires - now) * 1000))))
return reply(1, due)
