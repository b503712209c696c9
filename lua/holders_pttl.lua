-- holders_pttl.lua: the remaining lease of a holder of a shared lock or a
-- semaphore (holders.lua), read-only (runs as EVALSHA_RO).
--
-- KEYS[1]     the lock key
-- ARGV[1]     the token
--
-- Reply: the token's remaining lease in milliseconds; false (a nil reply)
-- when the key holds no place for the token, or its lease has ended.
--
-- It reads no clock (a read-only script may not, on some servers): the key
-- expires at its keep (holders.lua), so the token's lease ends the key's
-- PTTL less the time from its expiry to the keep.
local v = redis.pcall("hget", KEYS[1], ARGV[1])
if type(v) ~= "string" then
	return false
end
local keep = tonumber(string.match(redis.call("hget", KEYS[1], "") or "", ":(%d+)$") or "0")
local left = redis.call("pttl", KEYS[1]) - (keep - expiry(v))
if left <= 0 then
	return false
end
return left
