-- owned.lua: the ownership check shared by every script; it is prepended to
-- each of them, so it declares only a local function.
--
-- A lock value is the token alone, or token NUL fence NUL metadata. owned(v, t)
-- is true when the value v belongs to the token t: the whole token, never a
-- prefix of another holder's token.
local function owned(v, t)
	if not v then
		return false
	end
	if v == t then
		return true
	end
	return string.sub(v, 1, #t + 1) == t .. "\0"
end

