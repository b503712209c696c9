-- queue.lua: the wait queue shared by obtain.lua and release.lua; it is
-- prepended to each of them (after a line that sets the local `cluster`), so
-- it declares only local functions.
--
-- The waiters of a lock wait in lists beside its keys (queue(key)), one entry
-- a waiting Client, in arrival order: a waiter queues beside the key it found
-- held, and leaves every queue of its keys once it has the lock or gives up. An entry is a run of fields, each
-- written as its length in decimal, ":" and its bytes:
--
--   channel  the waiting Client's pub/sub channel
--   token    the waiter's token
--   ttl      the TTL it asks for, in milliseconds
--   fence    its fence key, or ""
--   meta     its metadata, or ""
--   keys...  the lock keys it waits for, in its order
--
-- A release takes the first entry: when it waits for the very keys released,
-- the lock passes to it in the same script (no window for anyone else), and
-- the channel is told; otherwise the keys are deleted and its Client is told
-- to try again. Every queue command runs through try(): a server that refuses
-- it (an ACL without the queue's key, a command it lacks) leaves the lock
-- working, without its queue.

-- queue returns the queue of key, in key's hash slot: the key and a suffix
-- when the key has a hash tag or the server is no cluster, else the key as a
-- hash tag and the suffix; nil for a cluster key that cannot be tagged.
local function queue(key)
	local suffix = ":redislock-waiters"
	if not cluster then
		return key .. suffix
	end
	local open = string.find(key, "{", 1, true)
	if open then
		local close = string.find(key, "}", open + 1, true)
		if close and close > open + 1 then
			return key .. suffix
		end
	end
	if string.find(key, "}", 1, true) then
		return nil
	end
	return "{" .. key .. "}" .. suffix
end

-- lockKeys returns how many of KEYS are lock keys. After them come the
-- fence counter, when fenced, and on a cluster the wait queue of each lock
-- key: a script declares every key it touches, so that while a slot
-- migrates the server redirects or retries it as a whole (ASK, TRYAGAIN)
-- instead of letting it write a key that the other node holds.
local function lockKeys(fenced)
	local n = #KEYS
	if fenced then
		n = n - 1
	end
	if cluster then
		n = n / 2
	end
	return n
end

-- grantable tells whether a release may pass the lock to the waiter of the
-- entry's fields f in its own script. On a cluster, a release declares no
-- fence counter: a fenced waiter is told to try again, and its own attempt
-- (which declares its counter) takes the lock.
local function grantable(f)
	return not cluster or f[4] == ""
end

-- try runs a command, turning an error reply into nil.
local function try(...)
	local r = redis.pcall(...)
	if type(r) == "table" and r.err then
		return nil
	end
	return r
end

-- fields splits an entry into its fields.
local function fields(entry)
	local out, i = {}, 1
	while i <= #entry do
		local colon = string.find(entry, ":", i, true)
		local n = tonumber(string.sub(entry, i, colon - 1))
		out[#out + 1] = string.sub(entry, colon + 1, colon + n)
		i = colon + n + 1
	end
	return out
end

-- waitsFor tells whether the entry's fields f name exactly KEYS[1..n].
local function waitsFor(f, n)
	if #f - 5 ~= n then
		return false
	end
	for i = 1, n do
		if f[5 + i] ~= KEYS[i] then
			return false
		end
	end
	return true
end

-- grant gives KEYS[1..n] to the waiter of the entry's fields f, as a fresh
-- obtain would (its fence counter INCRed), and returns the fence token.
local function grant(f, n)
	local fence = 0
	if f[4] ~= "" then
		fence = redis.call("incr", f[4])
	end
	local value = f[2]
	if fence ~= 0 or f[5] ~= "" then
		value = f[2] .. "\0" .. string.format("%d", fence) .. "\0" .. f[5]
	end
	for i = 1, n do
		redis.call("set", KEYS[i], value, "px", f[3])
	end
	return fence
end

-- dequeue takes entry out of the queues of KEYS[1..n].
local function dequeue(entry, n)
	for i = 1, n do
		local q = queue(KEYS[i])
		if q then
			try("lrem", q, 0, entry)
		end
	end
end
