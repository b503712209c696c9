-- pttl.lua: the remaining TTL of a lock, read-only (runs as EVALSHA_RO).
--
-- KEYS[1..n]  the lock keys
-- ARGV[1]     the token
--
-- Reply: the smallest remaining TTL among the keys in milliseconds (0 when
-- none has a positive TTL); false (a nil reply) when any key is gone or held
-- by another token.
local token = ARGV[1]
for i = 1, #KEYS do
	if not owned(value(KEYS[i]), token) then
		return false
	end
end
local least = 0
for i = 1, #KEYS do
	local ttl = redis.call("pttl", KEYS[i])
	if ttl > 0 and (least == 0 or ttl < least) then
		least = ttl
	end
end
return least
