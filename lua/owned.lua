-- owned.lua: the ownership check shared by every script; it is prepended to
-- each of them, so it declares only local functions.
--
-- A lock value is the token alone, or token NUL fence NUL metadata. owned(v, t)
-- is true when the value v belongs to the token t: the whole token, never a
-- prefix of another holder's token.
local function owned(v, t)
	if type(v) ~= "string" then
		return false
	end
	if v == t then
		return true
	end
	return string.sub(v, 1, #t + 1) == t .. "\0"
end

-- value returns the lock value at key: false when there is none, true when
-- a shared lock or a semaphore holds it (a hash with the field "",
-- holders.lua), which no token owns. A key of any other type is an error
-- (WRONGTYPE), as GET's.
local function value(key)
	local v = redis.pcall("get", key)
	if type(v) == "table" then
		if redis.call("hexists", key, "") == 1 then
			return true
		end
		return redis.call("get", key)
	end
	return v
end
