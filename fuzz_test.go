package redislock

import (
	"context"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
)

// FuzzToken: a random token is 22 characters of base64url that decode to 16
// bytes, never holds a NUL byte, and never repeats.
func FuzzToken(f *testing.F) {
	f.Add(uint8(1))
	f.Add(uint8(64))
	f.Fuzz(func(t *testing.T, n uint8) {
		seen := make(map[string]bool, int(n)+1)
		for range int(n) + 1 {
			tok := newToken()
			if len(tok) != 22 {
				t.Fatalf("token length %d, want 22", len(tok))
			}
			raw, err := base64.RawURLEncoding.DecodeString(tok)
			if err != nil || len(raw) != tokenBytes {
				t.Fatalf("token is not 16 bytes of base64url: %v", err)
			}
			if strings.IndexByte(tok, 0) >= 0 {
				t.Fatal("token holds a NUL byte")
			}
			if seen[tok] {
				t.Fatal("token repeated")
			}
			seen[tok] = true
		}
	})
}

// FuzzLockValue: the value stored for a token belongs to that token and to
// no other, whatever the fence token and metadata; a token with NUL is
// refused by validate.
func FuzzLockValue(f *testing.F) {
	f.Add("foo", int64(0), "", "foobar")
	f.Add("foobar", int64(0), "", "foo")
	f.Add("foo", int64(7), "bar", "foo\x007")
	f.Add("foo", int64(0), "bar", "foo0")
	f.Add("a", int64(-1), "\x00\x00", "a\x00")
	f.Fuzz(func(t *testing.T, token string, fence int64, meta, other string) {
		c := &Client{}
		opt := &Options{Token: token, Metadata: meta}
		if err := c.validate([]string{"k"}, time.Second, opt); err != nil {
			if token != "" && len(token) <= MaxTokenLen && len(meta) <= MaxMetadataLen && !strings.Contains(token, "\x00") {
				t.Fatalf("valid input refused: %v", err)
			}
			if strings.Contains(err.Error(), token) && len(token) > 3 {
				t.Fatal("the error shows the token")
			}
			return
		}
		if token == "" {
			return
		}
		v := lockValue(token, fence, meta)
		if !owns(v, token) {
			t.Fatalf("value %q does not belong to its token %q", v, token)
		}
		if other != token && !strings.Contains(other, "\x00") && owns(v, other) {
			t.Fatalf("value %q of token %q belongs to %q", v, token, other)
		}
		if (fence == 0 && meta == "") != (v == token) {
			t.Fatalf("value %q: the token alone is stored exactly when there is neither fence nor metadata", v)
		}
	})
}

// FuzzOwnershipScript holds the Lua scripts to the same rule on a real
// script engine (miniredis): a holder's lock is never taken, refreshed or
// released by another token, and always by its own.
func FuzzOwnershipScript(f *testing.F) {
	f.Add("foobar", "", "foo")
	f.Add("foo", "bar", "foobar")
	f.Add("foo", "bar", "foo0")
	f.Add("tok", "", "tok")
	m := miniredis.NewMiniRedis()
	if err := m.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(m.Close)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{m.Addr()}, DisableCache: true, ForceSingleClient: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(rc.Close)
	c := New(rc)
	f.Fuzz(func(t *testing.T, holder, meta, other string) {
		ctx := context.Background()
		if c.validate([]string{"k"}, time.Second, &Options{Token: holder, Metadata: meta}) != nil ||
			c.validate([]string{"k"}, time.Second, &Options{Token: other}) != nil || holder == "" || other == "" {
			return
		}
		m.FlushAll()
		lock, err := c.Obtain(ctx, "k", time.Hour, &Options{Token: holder, Metadata: meta, FenceKey: "f"})
		if err != nil {
			t.Fatalf("obtain: %v", err)
		}
		thief := &Lock{client: c, kind: c.kind, keys: []string{"k"}, token: other}
		again, err := c.Obtain(ctx, "k", time.Hour, &Options{Token: other, Metadata: "new"})
		if err == nil {
			// Taken again by its own token: same fence token, new metadata.
			if again.FenceToken() != lock.FenceToken() {
				t.Fatalf("fence token %d became %d", lock.FenceToken(), again.FenceToken())
			}
			if v, _ := m.Get("k"); v != lockValue(holder, lock.FenceToken(), "new") {
				t.Fatalf("stored %q after taking again", v)
			}
		}
		refreshErr := thief.Refresh(ctx, time.Minute, nil)
		releaseErr := thief.Release(ctx)
		if other == holder {
			if err != nil || refreshErr != nil || releaseErr != nil {
				t.Fatalf("the holder's own token was refused: %v, %v, %v", err, refreshErr, releaseErr)
			}
			return
		}
		if err == nil || refreshErr == nil || releaseErr == nil {
			t.Fatalf("token %q acted on the lock of %q: %v, %v, %v", other, holder, err, refreshErr, releaseErr)
		}
		if got := m.TTL("k"); got != time.Hour {
			t.Fatalf("the holder's TTL changed to %v", got)
		}
		if err := lock.Release(ctx); err != nil {
			t.Fatalf("the holder could not release: %v", err)
		}
	})
}

// FuzzTTL: validation accepts exactly [1ms, MaxTTL], and an accepted TTL
// goes to Redis as whole milliseconds, at least 1, never more than asked.
func FuzzTTL(f *testing.F) {
	for _, d := range []time.Duration{0, -1, time.Millisecond - 1, time.Millisecond, 1999 * time.Microsecond, MaxTTL, MaxTTL + 1, 1<<63 - 1, -1 << 63} {
		f.Add(int64(d))
	}
	f.Fuzz(func(t *testing.T, n int64) {
		d := time.Duration(n)
		err := validateTTL(d)
		inRange := d >= time.Millisecond && d <= MaxTTL
		if (err == nil) != inRange {
			t.Fatalf("validateTTL(%v) = %v", d, err)
		}
		if err != nil {
			return
		}
		ms := d.Milliseconds()
		if ms < 1 || time.Duration(ms)*time.Millisecond > d || d-time.Duration(ms)*time.Millisecond >= time.Millisecond {
			t.Fatalf("%v became %dms", d, ms)
		}
	})
}
