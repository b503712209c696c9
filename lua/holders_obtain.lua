-- holders_obtain.lua: take a place among the holders of a shared lock or a
-- semaphore (holders.lua); a waiter that finds none free joins the wait
-- queue (queue.lua). It takes obtain.lua's KEYS and ARGV, and one more:
--
-- KEYS[1]     the lock key; KEYS[2] the fence counter when ARGV[4] == "1";
--             on a cluster, then the wait queue (lockKeys)
-- ARGV[1..7]  as obtain.lua's: token, TTL in milliseconds, metadata, "1"
--             when fenced, the waiter's queue entry ("" for none), how long
--             the queue is kept, and what to do with the entry
-- ARGV[8]     the kind: "r" for a shared lock, else the semaphore's limit
--
-- Reply, as obtain.lua's: the fence token (0 without a fence counter), >= 0,
-- once the token holds a place with the new lease; -1 - t when it may not,
-- where t is how long until a place may free in milliseconds (0 when the
-- waiter was queued behind others, who watch it).
--
-- A place is free when the key is free, or held by the same kind with room
-- (any number of shared holders; fewer semaphore holders than this call's
-- limit), and nobody waits before this waiter: a shared obtain queues behind
-- a waiting exclusive one (no writer starvation). Those queued that may hold
-- the key now (after a lease ended) are granted it first, in their order.
-- A token that holds a place already takes it again (idempotent): its fence
-- token is kept, its lease and metadata replaced.
local key, token, ttl, meta, mark = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[8]
local entry = ARGV[5] or ""
local now = clock()
local h = load(key, now)

local mine = h and h.tokens[token]
if mine then
	local fence = tonumber(string.match(mine, "^%d+:(%d+)") or "0")
	hold(key, h, mark, token, ttl, fence, meta, now)
	save(key, h, now)
	if entry ~= "" and ARGV[7] ~= "0" then
		dequeue(entry, 1)
	end
	return fence
end

-- Those queued may hold the key now only if a lease ended (load took it
-- out): a script that changed the holders has granted them already.
local head
if fits(h, mark) or (h and h.dirty) then
	head = select(2, fill(key, h, now, token, false))
end
if fits(h, mark) and not h.taken and (not head or head == entry) then
	local fence = 0
	if ARGV[4] == "1" then
		fence = redis.call("incr", KEYS[2])
	end
	if entry ~= "" and ARGV[7] ~= "0" then
		dequeue(entry, 1)
	end
	hold(key, h, mark, token, ttl, fence, meta, now)
	if head then
		fill(key, h, now, token, true)
	end
	save(key, h, now)
	return fence
end
save(key, h, now)

if entry ~= "" and enqueue(queue(key), entry) then
	return -1
end
local left
if h and not h.taken then
	-- The last lease to end frees the key; for a semaphore of its kind,
	-- the first one frees a place.
	local first = h.kind == "s" and mark ~= "r"
	left = first and math.huge or 0
	for _, v in pairs(h.tokens) do
		if first then
			left = math.min(left, expiry(v) - now)
		else
			left = math.max(left, expiry(v) - now)
		end
	end
else
	left = redis.call("pttl", key)
end
if left < 0 then
	left = 0
end
return -1 - left
