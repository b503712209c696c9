package redislock

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
)

// tokenBytes is the entropy of a random token: 16 bytes from crypto/rand,
// written as 22 characters of unpadded base64url.
const tokenBytes = 16

// tokenLen is the length of a random token as a string.
var tokenLen = base64.RawURLEncoding.EncodedLen(tokenBytes)

// entropy holds the buffers random bytes are read into. A pool rather than one
// buffer behind a mutex: concurrent Obtain calls never wait on each other.
var entropy = sync.Pool{New: func() any { return new([tokenBytes]byte) }}

// newToken returns a fresh random token. Its only allocation is the string.
func newToken() string {
	raw := entropy.Get().(*[tokenBytes]byte)
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never returns an error
	var out [32]byte
	n := tokenLen
	base64.RawURLEncoding.Encode(out[:n], raw[:])
	entropy.Put(raw)
	return string(out[:n])
}

// lockValue is what a lock key holds: the token alone when there is neither
// fence token nor metadata, else token NUL fence NUL metadata. The scripts in
// lua/ read the same layout (owned.lua, obtain.lua). Since a token has no NUL
// byte, a value belongs to exactly one token.
func lockValue(token string, fence int64, metadata string) string {
	if fence == 0 && metadata == "" {
		return token
	}
	var b strings.Builder
	b.Grow(len(token) + 2 + 20 + len(metadata))
	b.WriteString(token)
	b.WriteByte(0)
	var num [20]byte
	b.Write(strconv.AppendInt(num[:0], fence, 10))
	b.WriteByte(0)
	b.WriteString(metadata)
	return b.String()
}

// owns reports whether the stored value belongs to token: the whole token,
// not a prefix of it. It is the Go twin of owned.lua, used by the fuzz tests
// to hold both to the same layout.
func owns(value, token string) bool {
	if value == token {
		return true
	}
	return len(value) > len(token) && value[len(token)] == 0 && value[:len(token)] == token
}
