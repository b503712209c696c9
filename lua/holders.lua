-- holders.lua: the keys of shared locks and semaphores, which several tokens
-- hold at once, each with its own lease; prepended after queue.lua to their
-- scripts and to release.lua (which passes an exclusive lock on to them), so
-- it declares only local functions.
--
-- Such a key is a hash. Its field "" names its kind, "r" for a shared lock or
-- "s" for a semaphore, and keep, when the key expires: "<kind>:<keep>", in
-- milliseconds of the server's clock (TIME), never the client's. Every other
-- field is a holder's token, and its value "<expiry>:<fence>:<metadata>"; a
-- holder that left (or whose lease ended) is "0" until deadMax such fields
-- gather, and all of them go in one HDEL (or with the key). Every script that
-- reads the key first takes the holders whose lease has ended out of its
-- count (load), the exclusive obtain's script too (obtain.lua), so a key
-- whose leases all ended is free for every kind. The key's TTL ends at
-- keep, at least the last lease and at most a little after it (slack): a
-- lease that ends later moves keep to slack after its end, so that most
-- grants pay no PEXPIRE, and once the last lease ends sooner (its holder
-- left, or a refresh shortened it) keep moves back to slack after the new
-- last (save). A key whose holders all vanished goes away by itself by
-- then; until it does (at most a second after the last lease), an
-- exclusive obtain's plain SET NX (its first attempt, which runs no
-- script) finds it held.
--
-- Writes to the holders are gathered in the table h.set and sent by save,
-- which every script that changes the holders calls last, in HSETs of at
-- most fieldsMax fields (Lua's unpack takes a few thousand values at most).
--
-- A waiter's kind is its entry's kind field (queue.lua): "" exclusive, "r"
-- shared, or a semaphore's limit. A key held by one kind is held for the
-- others: a waiter of another kind waits until every holder has left.

-- clock returns the server's time in milliseconds.
local function clock()
	local t = redis.call("time")
	return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- expiry returns the expiry of a holder's value (0 for one that left).
local function expiry(v)
	local e = string.match(v, "^%d+")
	return e and tonumber(e) or 0
end

-- deadMax is how many fields of holders that left a key keeps before one
-- HDEL takes them all out.
local deadMax = 8

-- fieldsMax is the most fields one HSET or HDEL of a script carries: Lua's
-- unpack fails past about 8000 values (LUAI_MAXCSTACK), and a release may
-- grant thousands of queued readers at once.
local fieldsMax = 1000

-- load reads the holders of key, leaving out those whose lease ended by now:
-- a table {kind, n, tokens (token -> value), set (fields to write), keep},
-- where kind is nil and n 0 for a free key; nil when an exclusive lock (a
-- string) holds the key. A lease that ended since the last script is marked
-- "0" (h.dirty: a place may have freed). A key that is neither (another
-- type, or a hash without the field "") is an error (WRONGTYPE), and is
-- left as it is.
local function load(key, now)
	local t = redis.pcall("hgetall", key)
	if t.err then
		if redis.call("type", key).ok == "string" then
			return nil
		end
		return redis.call("hgetall", key)
	end
	local h = { n = 0, tokens = {}, set = {}, keep = 0 }
	for i = 1, #t, 2 do
		if t[i] == "" then
			h.kind = string.sub(t[i + 1], 1, 1)
			h.keep = tonumber(string.match(t[i + 1], ":(%d+)$") or "0")
		end
	end
	if #t > 0 and not h.kind then
		redis.call("get", key) -- WRONGTYPE
	end
	local dead = {}
	for i = 1, #t, 2 do
		local f, v = t[i], t[i + 1]
		if f ~= "" then
			local e = expiry(v)
			if e > now then
				h.n = h.n + 1
				h.tokens[f] = v
			else
				dead[#dead + 1] = f
				if e > 0 then
					h.set[f] = "0"
					h.dirty = true
				end
			end
		end
	end
	if h.n == 0 then
		if h.kind then
			redis.call("del", key)
		end
		h.kind, h.keep, h.set = nil, 0, {}
	elseif #dead >= deadMax then
		for i = 1, #dead, fieldsMax do
			redis.call("hdel", key, unpack(dead, i, math.min(i + fieldsMax - 1, #dead)))
		end
		for _, f in ipairs(dead) do
			h.set[f] = nil
		end
	end
	return h
end

-- remaining returns how long until the last lease of h ends, in milliseconds.
local function remaining(h, now)
	local last = now
	for _, v in pairs(h.tokens) do
		last = math.max(last, expiry(v))
	end
	return last - now
end

-- slack is how long after the last lease (last) the key is kept: an
-- eighth of what is left of that lease, at most a second.
local function slack(last, now)
	return math.min(math.floor((last - now) / 8), 1000)
end

-- save writes what changed in h (h.set), fieldsMax fields an HSET, and
-- moves the key's keep (and TTL) to slack after its last lease when that
-- lease ends after keep, or keep lies more than twice slack (and 10ms)
-- after it; nothing when nobody holds the key, or an exclusive lock took
-- it (h.taken).
local function save(key, h, now)
	if not h or h.taken or h.n == 0 then
		return
	end
	local last = now + remaining(h, now)
	local s = slack(last, now)
	local move = last > h.keep or h.keep - last > math.max(2 * s, 10)
	if move then
		h.keep = last + s
		h.set[""] = h.kind .. ":" .. string.format("%d", h.keep)
	end
	local args = {}
	for f, v in pairs(h.set) do
		args[#args + 1] = f
		args[#args + 1] = v
		if #args == 2 * fieldsMax then
			redis.call("hset", key, unpack(args))
			args = {}
		end
	end
	if #args > 0 then
		redis.call("hset", key, unpack(args))
	end
	if move then
		redis.call("pexpire", key, string.format("%d", h.keep - now))
	end
	h.set = {}
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
	if h.n == 0 then
		h.kind = "s"
		if mark == "r" then
			h.kind = "r"
		end
		h.keep = 0
	end
	if not h.tokens[token] then
		h.n = h.n + 1
	end
	local v = string.format("%d:%d:", now + tonumber(ttl), fence) .. meta
	h.tokens[token] = v
	h.set[token] = v
end

-- leave takes token out of the holders of key.
local function leave(key, h, token)
	h.tokens[token] = nil
	h.n = h.n - 1
	if h.n == 0 then
		redis.call("del", key)
		h.kind, h.keep, h.set = nil, 0, {}
	else
		h.set[token] = "0"
	end
end

-- fill passes key, in the queue's order, to the waiters that may hold it
-- now: the shared waiters before the next exclusive one, semaphore waiters
-- while permits are left (each by its own limit), or, once nobody holds the
-- key, the next exclusive waiter (h.taken is then set). Each is told by its
-- channel, as release.lua tells it, except the waiter whose token is
-- offered (a waiter of the releasing Client, told by the reply: its fence
-- token is returned third); a fenced waiter on a cluster is told to try
-- again instead (grantable). It stops at a waiter that may not hold it
-- yet, and at an entry of the token self unless drop is set (then that
-- entry is dropped). It returns how many waiters it granted, and the entry
-- it stopped at: nil when the queue is empty, "?" when it did not look
-- (a semaphore waiter took the last place under its own limit: the next,
-- with the same limit, would not fit; one with a higher limit has its
-- place at the next release, or its next attempt).
--
-- The head is read with LINDEX and taken out with LPOP only once it is
-- granted or dropped: an LPOP that took the last entry would delete the
-- queue with its TTL (the longest wait of those queued, queue.lua), and
-- putting it back could only guess a shorter one, after which a refreshed
-- holder outlives the queue and its release tells nobody.
local function fill(key, h, now, self, drop, offered)
	local q = h and queue(key)
	local n, entry, mine = 0, nil, nil
	while q do
		entry = try("lindex", q, 0)
		if not entry then
			break
		end
		local f = fields(entry)
		local mark = f[6]
		local stop = false
		if f[2] == self and not drop then
			stop = true
		elseif f[2] == self or (mark ~= "" and h.tokens[f[2]]) then
			try("lpop", q)
		elseif mark == "" then
			if h.n > 0 then
				stop = true
			else
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
			end
		elseif not fits(h, mark) then
			stop = true
		elseif not grantable(f) then
			-- Its fence counter is not declared (a cluster): it is told
			-- to try again, and stays first; its attempt takes the key,
			-- and goes on with those after it.
			try("publish", f[1], "w:" .. f[2])
			stop = true
		else
			try("lpop", q)
			local fence = granted(f)
			hold(key, h, mark, f[2], f[3], fence, f[5], now)
			if f[2] == offered then
				mine = fence
			else
				try("publish", f[1], string.format("%d", fence) .. ":" .. f[2])
			end
			n = n + 1
			if mark ~= "r" and h.n >= (tonumber(mark) or 0) then
				entry = "?"
				break
			end
		end
		if stop then
			break
		end
	end
	return n, entry, mine
end
