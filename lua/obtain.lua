-- obtain.lua: take every lock key for one token, all or nothing; a waiter
-- that finds them held joins the wait queue (queue.lua).
--
-- KEYS[1..n]  the lock keys; KEYS[n+1] the fence counter when ARGV[4] == "1";
--             on a cluster, then the wait queue of each lock key (lockKeys)
-- ARGV[1]     the token (no NUL byte)
-- ARGV[2]     the TTL in milliseconds
-- ARGV[3]     the metadata ("" for none)
-- ARGV[4]     "1" when KEYS[n+1] is the fence counter, else "0"
-- ARGV[5]     optional: the waiter's queue entry ("" or absent: no queue)
-- ARGV[6]     with ARGV[5]: how long the queue is kept, in milliseconds
-- ARGV[7]     with ARGV[5]: "0" to queue the entry; "1" to queue it unless
--             it is queued already; "2" never to queue it (a waiter that
--             cannot hear of a grant), only to take it out on success
--
-- Reply: the fence token (0 without a fence counter), >= 0, once every lock
-- key holds the token with the new TTL; -1 - t when another token holds a
-- key (or a shared lock or a semaphore holds it: holders.lua), where t is
-- that key's remaining TTL in milliseconds (0 when it has
-- none, or when the waiter was queued behind others, who watch it), and then
-- no lock key is written. With ARGV[5], a waiter that finds a key held is
-- queued beside it (once), and one that takes the keys leaves every queue.
--
-- A key already held by the same token is taken again (idempotent): its fence
-- token is kept and its metadata replaced. The counter is INCRed only when no
-- key carried a fence token yet.
local token, ttl, meta = ARGV[1], ARGV[2], ARGV[3]
local entry = ARGV[5] or ""
local fenced = ARGV[4] == "1"
local n = lockKeys(fenced)

local fence = 0
for i = 1, n do
	local v, left = redis.pcall("get", KEYS[i]), nil
	if type(v) == "table" then
		-- Shared holders or a semaphore's (holders.lua) hold the key
		-- until their last lease ends; once every lease ended it is free.
		local now = clock()
		local h = load(KEYS[i], now)
		v = h.n > 0
		left = remaining(h, now)
	end
	if v then
		if not owned(v, token) then
			-- Queued behind others, the waiter is served by releases
			-- alone: the holder's TTL is the first waiter's to watch.
			if entry ~= "" and enqueue(queue(KEYS[i]), entry) then
				return -1
			end
			left = left or redis.call("pttl", KEYS[i])
			if left < 0 then
				left = 0
			end
			return -1 - left
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

if fenced and fence == 0 then
	fence = redis.call("incr", KEYS[n + 1])
end

local value = token
if fence ~= 0 or meta ~= "" then
	value = token .. "\0" .. string.format("%d", fence) .. "\0" .. meta
end
for i = 1, n do
	redis.call("set", KEYS[i], value, "px", ttl)
end
if entry ~= "" and ARGV[7] ~= "0" then
	dequeue(entry, n)
end
return fence
