-- holders.lua: the keys of shared locks and semaphores, which several tokens
-- hold at once, each with its own lease; prepended after queue.lua to their
-- scripts and to release.lua (which passes an exclusive lock on to them), so
-- it declares only local functions.
--
-- Such a key is a hash. Its field "" names its kind: "r" for a shared lock,
-- "s" for a semaphore. Every other field is a holder's token, and its value
-- "<expiry>:<fence>:<metadata>", the expiry in milliseconds of the server's
-- clock (TIME), never the client's. Every script that reads the key first
-- takes out the holders whose lease has ended (load), and the key's own TTL
-- is its last lease (save), so that a key whose holders all vanished goes
-- away by itself.
--
-- A waiter's kind is its entry's kind field (queue.lua): "" exclusive, "r"
-- shared, or a semaphore's limit. A key held by one kind is held for the
-- others: a waiter of another kind waits until every holder has left.

-- clock returns the server's time in milliseconds.
local function clock()
	local t = redis.call("time")
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- expiry returns the expiry of a holder's value.
local function expiry(v)
	local e = string.match(v, "^%d+")
	return e and tonumber(e) or 0
end

-- load reads the holders of key, taking out those whose lease ended by now:
-- a table {kind, n, tokens (token -> value)}, where kind is nil and n 0 for
-- a free key; nil when an exclusive lock (a string) holds the key. A key
-- that is neither (another type, or a hash without the field "") is an
-- error (WRONGTYPE), and is left as it is.
local function load(key, now)
	local t = redis.pcall("hgetall", key)
	if t.err then
		if redis.call("type", key).ok == "string" then
			return nil
		end
		return redis.call("hgetall", key)
	end
	local h = { n = 0, tokens = {}, last = 0 }
	for i = 1, #t, 2 do
		if t[i] == "" then
			h.kind = t[i + 1]
		end
	end
	if #t > 0 and not h.kind then
		redis.call("get", key) -- WRONGTYPE
	end
	for i = 1, #t, 2 do
		local f, v = t[i], t[i + 1]
		if f ~= "" then
			local e = expiry(v)
			if e <= now then
				redis.call("hdel", key, f)
				h.dirty = true
			else
				h.n = h.n + 1
				h.tokens[f] = v
				h.last = math.max(h.last, e)
			end
		end
	end
	if h.n == 0 then
		if h.kind then
			redis.call("del", key)
		end
		h.kind = nil
	end
	return h
end

-- save gives key the TTL of its last lease once that changed (a key that
-- nobody holds is deleted as it empties); nothing when an exclusive lock
-- took it (h.taken).
local function save(key, h, now)
	if not h or h.taken or h.n == 0 or not h.dirty then
		return
	end
	local last = 0
	for _, v in pairs(h.tokens) do
		last = math.max(last, expiry(v))
	end
	if last ~= h.last then
		redis.call("pexpire", key, string.format("%d", math.max(last - now, 1)))
	end
end

-- fits tells whether a holder of kind mark ("r", or a semaphore's limit)
-- may join the holders h now.
local function fits(h, mark)
	if not h then
		return false
	end
	if h.n == 0 then
		return true
	end
	if mark == "r" then
		return h.kind == "r"
	end
	return h.kind == "s" and h.n < (tonumber(mark) or 0)
end

-- hold makes token a holder of key with a lease of ttl milliseconds from
-- now, fence token fence and metadata meta.
local function hold(key, h, mark, token, ttl, fence, meta, now)
	local v = string.format("%d:%d:", now + tonumber(ttl), fence) .. meta
	if h.n == 0 then
		h.kind = "s"
		if mark == "r" then
			h.kind = "r"
		end
		redis.call("hset", key, "", h.kind, token, v)
		h.last = -1 -- a new key: it has no TTL yet
	else
		redis.call("hset", key, token, v)
	end
	if not h.tokens[token] then
		h.n = h.n + 1
	end
	h.tokens[token] = v
	h.dirty = true
end

-- leave takes token out of the holders of key.
local function leave(key, h, token)
	h.tokens[token] = nil
	h.n = h.n - 1
	h.dirty = true
	if h.n == 0 then
		redis.call("del", key)
	else
		redis.call("hdel", key, token)
	end
end

-- fill passes key, in the queue's order, to the waiters that may hold it
-- now: the shared waiters before the next exclusive one, semaphore waiters
-- while permits are left (each by its own limit), or, once nobody holds the
-- key, the next exclusive waiter (h.taken is then set). Each is told by its
-- channel, as release.lua tells it; a fenced waiter on a cluster is told to
-- try again instead (grantable). It stops at a waiter that may not hold
-- it yet, and at an entry of the token self unless drop is set (then that
-- entry is dropped). It returns how many waiters it granted, and the entry
-- it stopped at (nil when the queue is empty).
local function fill(key, h, now, self, drop)
	local q = h and queue(key)
	local n = 0
	local entry
	while q do
		entry = try("lindex", q, 0)
		if not entry then
			break
		end
		local f = fields(entry)
		local mark = f[6]
		if f[2] == self and not drop then
			break
		end
		if f[2] == self or (mark ~= "" and h.tokens[f[2]]) then
			try("lpop", q)
		elseif mark == "" then
			if h.n > 0 then
				break
			end
			try("lpop", q)
			if #f == 7 and f[7] == key and grantable(f) then
				local fence, v = granted(f)
				redis.call("set", key, v, "px", f[3])
				try("publish", f[1], string.format("%d", fence) .. ":" .. f[2])
				n = n + 1
				h.taken = true
			else
				try("publish", f[1], "w:" .. f[2])
			end
			break
		elseif not fits(h, mark) then
			break
		elseif not grantable(f) then
			-- Its fence counter is not declared (a cluster): it is told
			-- to try again, and stays first; its attempt takes the key,
			-- and goes on with those after it.
			try("publish", f[1], "w:" .. f[2])
			break
		else
			try("lpop", q)
			local fence = granted(f)
			hold(key, h, mark, f[2], f[3], fence, f[5], now)
			try("publish", f[1], string.format("%d", fence) .. ":" .. f[2])
			n = n + 1
		end
	end
	return n, entry
end
