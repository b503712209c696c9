-- holders_release.lua: give back a holder's place in a shared lock or a
-- semaphore (holders.lua), and pass the key on to the waiters that may hold
-- it now, in the queue's order (queue.lua). It takes release.lua's KEYS and
-- ARGV:
--
-- KEYS[1]     the lock key; on a cluster, then its wait queue (lockKeys)
-- ARGV[1]     the token
-- ARGV[2]     optional: an entry of this token's to drop from the queue
--             first (a waiter that gives up), or ""
--
-- Reply: false (a nil reply) when the token holds no place (its lease
-- ended), and then only ended leases are taken out and passed on; else
--   1      the place was given back;
--   2      and passed on to one or more queued waiters, each told
--          "<fence>:<token>" on its channel.
local key, token = KEYS[1], ARGV[1]
if ARGV[2] and ARGV[2] ~= "" then
	dequeue(ARGV[2], 1)
end
local now = clock()
local h = load(key, now)
local held = h and h.tokens[token]
if held then
	leave(key, h, token)
end
local n = fill(key, h, now, token, true)
save(key, h, now)
if not held then
	return false
end
if n > 0 then
	return 2
end
return 1
