-- fence.lua: make a fence token a quorum register on one node: raise the
-- fence counter to at least the token's fence, and carry that fence in the
-- lock keys the token holds.
--
-- KEYS[1..n]  the lock keys; KEYS[n+1] the fence counter
-- ARGV[1]     the token
-- ARGV[2]     the fence token f (a decimal integer > 0)
-- ARGV[3]     the metadata ("" for none)
--
-- Reply: 1 once every lock key holds the token with fence f (its TTL kept)
-- and the counter is at least f; false (a nil reply) when a key is gone or
-- held by another token, and then nothing is written.
local token = ARGV[1]
local n = #KEYS - 1
for i = 1, n do
	if not owned(redis.call("get", KEYS[i]), token) then
		return false
	end
end
local f = tonumber(ARGV[2])
local c = tonumber(redis.call("get", KEYS[#KEYS]) or "0") or 0
if c < f then
	redis.call("set", KEYS[#KEYS], ARGV[2])
end
local value = token .. "\0" .. ARGV[2] .. "\0" .. ARGV[3]
for i = 1, n do
	redis.call("set", KEYS[i], value, "keepttl")
end
return 1
