-- refresh.lua: give every lock key a new TTL if the token still holds all of them.
--
-- KEYS[1..n]  the lock keys
-- ARGV[1]     the token
-- ARGV[2]     the new TTL in milliseconds
--
-- Reply: 1 when every key now has the new TTL; false (a nil reply) when any
-- key is gone or held by another token, and then no TTL is changed.
local token = ARGV[1]
for i = 1, #KEYS do
	if not owned(value(KEYS[i]), token) then
		return false
	end
end
for i = 1, #KEYS do
	redis.call("pexpire", KEYS[i], ARGV[2])
end
return 1
