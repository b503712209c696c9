-- holders_refresh.lua: give a holder of a shared lock or a semaphore
-- (holders.lua) a new lease, if its lease has not ended.
--
-- KEYS[1]     the lock key
-- ARGV[1]     the token
-- ARGV[2]     the new lease in milliseconds
--
-- Reply: 1 when the token's lease is now the new one; false (a nil reply)
-- when the token holds no place, and then only ended leases are taken out
-- (the waiters watch the leases, and try again when one ends).
local key, token = KEYS[1], ARGV[1]
local now = clock()
local h = load(key, now)
local v = h and h.tokens[token]
if not v then
	save(key, h, now)
	return false
end
local fence = tonumber(string.match(v, "^%d+:(%d+)") or "0")
local meta = string.match(v, "^%d+:%d+:(.*)$") or ""
hold(key, h, h.kind, token, ARGV[2], fence, meta, now)
save(key, h, now)
return 1
