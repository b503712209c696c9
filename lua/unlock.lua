-- unlock.lua: delete every lock key if the token still holds all of them;
-- the release of a quorum's node, where nobody is queued.
--
-- KEYS[1..n]  the lock keys
-- ARGV[1]     the token
-- ARGV[2]     the channel to publish on once the keys are deleted (the
--             quorum Clients that wait for them subscribe to it); "" for
--             none
-- ARGV[3]     with ARGV[2]: the message, which names the releasing Client
--
-- Reply: 1 when the keys were deleted, and ARGV[3] was published on ARGV[2];
-- false (a nil reply) when any key is gone or held by another token, and
-- then nothing is deleted or published.
local token = ARGV[1]
for i = 1, #KEYS do
	if not owned(redis.call("get", KEYS[i]), token) then
		return false
	end
end
for i = 1, #KEYS do
	redis.call("del", KEYS[i])
end
if ARGV[2] ~= "" then
	redis.call("publish", ARGV[2], ARGV[3])
end
return 1
