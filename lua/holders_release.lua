-- holders_release.lua: give back a holder's place in a shared lock or a
-- semaphore (holders.lua), and pass the key on to the waiters that may hold
-- it now, in the queue's order (queue.lua). It takes release.lua's KEYS and
-- ARGV:
--
-- KEYS[1]     the lock key; on a cluster, then its wait queue (lockKeys)
-- ARGV[1]     the token
-- ARGV[2]     optional: an entry of this token's to drop from the queue
--             first (a waiter that gives up), or ""
-- ARGV[3]     optional: the entry of a semaphore waiter of the releasing
--             Client, which takes the place when nobody queued may take it
--             first, or ""
--
-- Reply: false (a nil reply) when the token holds no place (its lease
-- ended), and then only ended leases are taken out and passed on; else
--   1      the place was given back;
--   2      and passed on to one or more queued waiters, each told
--          "<fence>:<token>" on its channel;
--   3 + f  and passed to the waiter of ARGV[3] (and maybe to queued
--          waiters before it), with fence token f: it is told by this
--          reply, even when its entry was in the queue.
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
local of = held and ARGV[3] and ARGV[3] ~= "" and fields(ARGV[3])
local n, head, mine = fill(key, h, now, token, true, of and of[2])
if of and not mine and not head and not h.taken and not h.tokens[of[2]]
	and #of == 7 and of[7] == key and of[6] ~= "" and fits(h, of[6]) and grantable(of) then
	mine = granted(of)
	hold(key, h, of[6], of[2], of[3], mine, of[5], now)
end
save(key, h, now)
if not held then
	return false
end
if mine then
	return 3 + mine
end
if n > 0 then
	return 2
end
return 1
