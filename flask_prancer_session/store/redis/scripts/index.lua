-- KEYS[1]: an index set. ARGV: the member, its horizon, now.
index(key, ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]))
