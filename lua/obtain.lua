-- obtain.lua: take every lock key for one token, all or nothing.
--
-- KEYS[1..n]  the lock keys; KEYS[n+1] the fence counter when ARGV[4] == "1"
-- ARGV[1]     the token (no NUL byte)
-- ARGV[2]     the TTL in milliseconds
-- ARGV[3]     the metadata ("" for none)
-- ARGV[4]     "1" when the last key is the fence counter, else "0"
--
-- Reply: the fence token (0 without a fence counter) once every lock key holds
-- the token with the new TTL; false (a nil reply) when another token holds any
-- of them, and then nothing is written.
--
-- A key already held by the same token is taken again (idempotent): its fence
-- token is kept and its metadata replaced. The counter is INCRed only when no
-- key carried a fence token yet.
local token, ttl, meta = ARGV[1], ARGV[2], ARGV[3]
local n = #KEYS
if ARGV[4] == "1" then
	n = n - 1
end

local fence = 0
for i = 1, n do
	local v = redis.call("get", KEYS[i])
	if v then
		if not owned(v, token) then
			return false
		end
		if fence == 0 and v ~= token then
			local rest = string.sub(v, #token + 2)
			local stop = string.find(rest, "\0", 1, true)
			if stop then
				fence = tonumber(string.sub(rest, 1, stop - 1)) or 0
			end
		end
	end
end

if n < #KEYS and fence == 0 then
	fence = redis.call("incr", KEYS[#KEYS])
end

local value = token
if fence ~= 0 or meta ~= "" then
	value = token .. "\0" .. string.format("%d", fence) .. "\0" .. meta
end
for i = 1, n do
	redis.call("set", KEYS[i], value, "px", ttl)
end
return fence
