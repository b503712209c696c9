-- unlock.lua: delete every lock key if the token still holds all of them;
-- the release of a quorum's node, where nobody is queued.
--
-- KEYS[1..n]  the lock keys
-- ARGV[1]     the token
--
-- Reply: 1 when the keys were deleted; false (a nil reply) when any key is
-- gone or held by another token, and then nothing is deleted.
local token = ARGV[1]
for i = 1, #KEYS do
	if not owned(redis.call("get", KEYS[i]), token) then
		return false
	end
end
for i = 1, #KEYS do
	redis.call("del", KEYS[i])
end
return 1
