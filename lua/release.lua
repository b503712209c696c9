-- release.lua: delete every lock key if the token still holds all of them,
-- and pass the lock on to the first waiter (queue.lua).
--
-- KEYS[1..n]  the lock keys; on a cluster, then the wait queue of each
--             (lockKeys)
-- ARGV[1]     the token
-- ARGV[2]     optional: an entry of this token's to drop from the queue
--             first (a waiter that gives up), or ""
-- ARGV[3]     optional: the entry of a waiter of the releasing Client, which
--             takes the lock when nobody is queued, or ""
--
-- Reply: false (a nil reply) when any key is gone or held by another token,
-- and then nothing is written; else
--   1      the keys were deleted (a queued waiter that waits for other keys
--          was told to try again);
--   2      the lock passed to the first queued waiter, and its channel was
--          told "<fence>:<token>";
--   3 + f  the lock passed to the waiter of ARGV[3], with fence token f.
local token = ARGV[1]
local n = lockKeys(false)
if ARGV[2] and ARGV[2] ~= "" then
	dequeue(ARGV[2], n)
end
for i = 1, n do
	if not owned(redis.call("get", KEYS[i]), token) then
		return false
	end
end

for i = 1, n do
	local q = queue(KEYS[i])
	local entry = q and try("lpop", q)
	while entry do
		local f = fields(entry)
		if f[2] ~= token then
			if waitsFor(f, n) and grantable(f) then
				local fence = grant(f, n)
				if n > 1 then
					dequeue(entry, n)
				end
				try("publish", f[1], string.format("%d", fence) .. ":" .. f[2])
				return 2
			end
			for j = 1, n do
				redis.call("del", KEYS[j])
			end
			try("publish", f[1], "w:" .. f[2])
			return 1
		end
		entry = try("lpop", q)
	end
end

if ARGV[3] and ARGV[3] ~= "" then
	local f = fields(ARGV[3])
	if waitsFor(f, n) and grantable(f) then
		return 3 + grant(f, n)
	end
end
for i = 1, n do
	redis.call("del", KEYS[i])
end
return 1
