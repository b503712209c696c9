package redislock_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
)

// badInputs are obtains that must fail before any I/O, each with the
// sentinel its error wraps.
var badInputs = []struct {
	name string
	keys []string
	ttl  time.Duration
	opt  *redislock.Options
	want error
}{
	{"zero ttl", []string{"k"}, 0, nil, redislock.ErrInvalidTTL},
	{"negative ttl", []string{"k"}, -time.Second, nil, redislock.ErrInvalidTTL},
	{"ttl under 1ms", []string{"k"}, 999 * time.Microsecond, nil, redislock.ErrInvalidTTL},
	{"ttl over MaxTTL", []string{"k"}, redislock.MaxTTL + time.Millisecond, nil, redislock.ErrInvalidTTL},
	{"huge ttl", []string{"k"}, 1<<63 - 1, nil, redislock.ErrInvalidTTL},
	{"empty key", []string{""}, time.Second, nil, redislock.ErrInvalidKey},
	{"no keys", nil, time.Second, nil, redislock.ErrInvalidKey},
	{"empty key among others", []string{"a", ""}, time.Second, nil, redislock.ErrInvalidKey},
	{"duplicate keys", []string{"a", "b", "a"}, time.Second, nil, redislock.ErrInvalidKey},
	{"fence key is a lock key", []string{"a", "b"}, time.Second, &redislock.Options{FenceKey: "b"}, redislock.ErrInvalidKey},
	{"token over MaxTokenLen", []string{"k"}, time.Second, &redislock.Options{Token: strings.Repeat("t", redislock.MaxTokenLen+1)}, redislock.ErrInvalidToken},
	{"token with NUL", []string{"k"}, time.Second, &redislock.Options{Token: "secret\x00token"}, redislock.ErrInvalidToken},
	{"metadata over MaxMetadataLen", []string{"k"}, time.Second, &redislock.Options{Metadata: strings.Repeat("m", redislock.MaxMetadataLen+1)}, redislock.ErrInvalidMetadata},
}

func TestObtain_badInput(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		client := redislock.New(b.client)
		for _, tc := range badInputs {
			t.Run(tc.name, func(t *testing.T) {
				lock, err := client.ObtainMulti(t.Context(), tc.keys, tc.ttl, tc.opt)
				require.ErrorIs(t, err, tc.want)
				require.NotErrorIs(t, err, redislock.ErrNotObtained)
				assert.Nil(t, lock)
				if tc.opt != nil && tc.opt.Token != "" {
					assert.NotContains(t, err.Error(), tc.opt.Token[:6], "the error shows the token")
				}
				if len(tc.keys) == 1 {
					_, err := client.Obtain(t.Context(), tc.keys[0], tc.ttl, tc.opt)
					require.ErrorIs(t, err, tc.want)
				}
				assert.Equal(t, 0, b.dbsize(t), "something was written")
			})
		}
	})
}

// A bad input writes nothing and sends nothing, counted by the server.
func TestObtain_badInputSendsNothing(t *testing.T) {
	b := realBackend(t)
	client := redislock.New(b.client)
	before := withoutInfo(b.mustDo(t, "INFO", "commandstats"))
	for _, tc := range badInputs {
		_, err := client.ObtainMulti(t.Context(), tc.keys, tc.ttl, tc.opt)
		require.Error(t, err)
	}
	assert.Equal(t, before, withoutInfo(b.mustDo(t, "INFO", "commandstats")))
}

// The seed turned a bad Refresh TTL into PEXPIRE 0 and deleted the lock.
func TestLock_Refresh_badTTLKeepsLock(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)
		for _, ttl := range []time.Duration{0, -time.Second, 500 * time.Microsecond, redislock.MaxTTL + 1} {
			err := lock.Refresh(t.Context(), ttl, nil)
			require.ErrorIs(t, err, redislock.ErrInvalidTTL, "ttl %v", ttl)
			require.NotErrorIs(t, err, redislock.ErrNotObtained)
		}
		assertTTL(t, lock, time.Hour)
	})
}

func TestObtain_ttlTruncatedToMilliseconds(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", 1999*time.Microsecond+time.Hour, nil)
		require.NoError(t, err)
		ms, err := strconv.Atoi(b.mustDo(t, "PTTL", "lock"))
		require.NoError(t, err)
		assert.LessOrEqual(t, ms, 3_600_001, "1.999ms is 1ms")
		assert.Greater(t, ms, 3_599_000)
		require.NoError(t, lock.Release(context.Background()))
	})
}
