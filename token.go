package redislock

import (
	"crypto/rand"
	"encoding/base64"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"
)

// tokenBytes is the entropy of a random token: 16 bytes from crypto/rand,
// written as 22 characters of unpadded base64url.
const tokenBytes = 16

// tokenLen is the length of a random token as a string: 22.
const tokenLen = (tokenBytes*8 + 5) / 6

// entropy holds the buffers random bytes are read into. A pool rather than one
// buffer behind a mutex: concurrent Obtain calls never wait on each other.
var entropy = sync.Pool{New: func() any { return new([tokenBytes]byte) }}

// setRandomToken gives l a fresh random token, written into l's own buffer:
// the token costs no allocation beyond the Lock. The buffer is written once,
// here, before the string over it is made, and never again, so the string is
// as immutable as any other.
func (l *Lock) setRandomToken() {
	raw := entropy.Get().(*[tokenBytes]byte)
	_, _ = rand.Read(raw[:]) // crypto/rand.Read never returns an error
	base64.RawURLEncoding.Encode(l.tokenBuf[:], raw[:])
	entropy.Put(raw)
	l.token = unsafe.String(&l.tokenBuf[0], len(l.tokenBuf))
}

// randomToken reports whether l's token is one that setRandomToken made:
// only l holds it, and no later obtain takes it again.
func (l *Lock) randomToken() bool {
	return len(l.token) == len(l.tokenBuf) && unsafe.StringData(l.token) == &l.tokenBuf[0]
}

// newToken returns a fresh random token as a string of its own.
func newToken() string {
	var l Lock
	l.setRandomToken()
	return strings.Clone(l.token)
}

// msString is a TTL in milliseconds and its decimal form.
type msString struct {
	ms int64
	s  string
}

// lastTTL caches the decimal form of the last TTL used: services use one TTL
// or a few, so formatting it (an allocation for 100ms and more) is skipped.
var lastTTL atomic.Pointer[msString]

// formatMs returns ms in decimal, from the cache when it is the last TTL.
func formatMs(ms int64) string {
	if p := lastTTL.Load(); p != nil && p.ms == ms {
		return p.s
	}
	p := &msString{ms: ms, s: strconv.FormatInt(ms, 10)}
	lastTTL.Store(p)
	return p.s
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
