package redislock_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// After SCRIPT FLUSH every operation still succeeds: no NOSCRIPT reaches a
// caller.
func TestScriptFlush(t *testing.T) {
	b := realBackend(t)
	opt := &redislock.Options{FenceKey: "fence", Metadata: "m"}
	for range 3 {
		b.mustDo(t, "SCRIPT", "FLUSH")
		lock, err := redislock.ObtainMulti(t.Context(), b.client, []string{"a", "b"}, time.Hour, opt)
		require.NoError(t, err)
		b.mustDo(t, "SCRIPT", "FLUSH")
		require.NoError(t, lock.Refresh(t.Context(), time.Minute, nil))
		b.mustDo(t, "SCRIPT", "FLUSH")
		ttl, err := lock.TTL(t.Context())
		require.NoError(t, err)
		assert.Positive(t, ttl)
		b.mustDo(t, "SCRIPT", "FLUSH")
		require.NoError(t, lock.Release(t.Context()))
	}
}

// After a server restart (which forgets every script) the same client goes
// on working.
func TestServerRestart(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	lock, err := redislock.Obtain(t.Context(), client, "lock", time.Hour, &redislock.Options{Token: "tok"})
	require.NoError(t, err)

	srv.Stop(t)
	srv.Restart(t)

	// The restart lost the data (no persistence): the lock is gone, and
	// Refresh says so once the client has reconnected.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	reconnect := &redislock.Options{RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond)}
	require.ErrorIs(t, lock.Refresh(ctx, time.Minute, reconnect), redislock.ErrNotObtained)

	lock, err = redislock.Obtain(ctx, client, "lock", time.Hour, &redislock.Options{
		Token:         "tok",
		RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond),
	})
	require.NoError(t, err, "the lock was lost with the data; obtaining it again works")
	require.NoError(t, lock.Refresh(ctx, time.Minute, nil))
	ttl, err := lock.TTL(ctx)
	require.NoError(t, err)
	assert.Positive(t, ttl)
	require.NoError(t, lock.Release(ctx))
}

// A reply lost after the server applied the obtain: with a retry, the next
// attempt (through obtain.lua, with the same token) reports success; without
// one, the error is not ErrNotObtained and the library releases the orphan.
func TestObtain_lostReply(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		t.Run("retry succeeds with the same token", func(t *testing.T) {
			fl := &flaky{Client: b.client, names: []string{"SET"}, afterSend: true}
			fl.fails.Store(1)
			lock, err := redislock.Obtain(t.Context(), fl, "lock", time.Hour, &redislock.Options{
				RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 3),
			})
			require.NoError(t, err)
			assert.Equal(t, int32(1), fl.seen.Load(), "the retry went through the script")
			assertTTL(t, lock, time.Hour)
			require.NoError(t, lock.Release(t.Context()))
		})
		t.Run("no retry: unknown outcome and cleanup", func(t *testing.T) {
			fl := &flaky{Client: b.client, names: []string{"SET"}, afterSend: true}
			fl.fails.Store(1)
			_, err := redislock.Obtain(t.Context(), fl, "lock", time.Hour, nil)
			require.ErrorIs(t, err, errInjected)
			require.NotErrorIs(t, err, redislock.ErrNotObtained, "an unknown outcome is not 'not obtained'")
			require.Eventually(t, func() bool { return b.dbsize(t) == 0 }, 2*time.Second, 5*time.Millisecond,
				"the orphan lock was not released")
		})
		t.Run("lost request: a retry obtains", func(t *testing.T) {
			fl := &flaky{Client: b.client, names: []string{"SET", "EVALSHA", "EVAL"}}
			fl.fails.Store(2)
			lock, err := redislock.Obtain(t.Context(), fl, "lock", time.Hour, &redislock.Options{
				RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 3),
			})
			require.NoError(t, err)
			require.NoError(t, lock.Release(t.Context()))
		})
	})
}

// A Redis error reply is terminal and known: no retry, no cleanup, and the
// cause is wrapped.
func TestObtain_redisErrorIsTerminal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		b.mustDo(t, "HSET", "lock", "f", "v")
		obs := &counter{}
		client := redislock.New(b.client, redislock.WithObserver(obs))
		_, err := client.Obtain(t.Context(), "lock", time.Hour, &redislock.Options{
			Token:         "tok",
			RetryStrategy: redislock.LinearBackoff(time.Millisecond),
		})
		require.Error(t, err)
		require.NotErrorIs(t, err, redislock.ErrNotObtained)
		var re *rueidis.RedisError
		require.ErrorAs(t, err, &re)
		assert.Contains(t, err.Error(), "WRONGTYPE")
		assert.Equal(t, 1, obs.last.Load().Attempts)
		assert.Equal(t, redislock.OutcomeError, obs.last.Load().Outcome)
		assert.Equal(t, "hash", b.mustDo(t, "TYPE", "lock"))
	})
}

// The whole API on a real 3-master Redis Cluster.
func TestCluster(t *testing.T) {
	redistest.Require(t)
	cl := redistest.StartCluster(t, 3, 0)
	client := redislock.New(cl.Client(t))
	require.NotPanics(t, func() {
		// Keys spread over the masters.
		var locks []*redislock.Lock
		for _, key := range []string{"alpha", "beta", "gamma", "delta", "epsilon"} {
			lock, err := client.Obtain(t.Context(), key, time.Hour, &redislock.Options{Metadata: "m"})
			require.NoError(t, err)
			assertTTL(t, lock, time.Hour)
			locks = append(locks, lock)
			_, err = client.Obtain(t.Context(), key, time.Hour, nil)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
		}
		for _, lock := range locks {
			require.NoError(t, lock.Refresh(t.Context(), time.Minute, nil))
			require.NoError(t, lock.Release(t.Context()))
		}

		// One hash tag: multi-key and fenced locks work.
		opt := &redislock.Options{FenceKey: "{order:42}:fence"}
		lock, err := client.ObtainMulti(t.Context(), []string{"{order:42}:a", "{order:42}:b"}, time.Hour, opt)
		require.NoError(t, err)
		assert.Equal(t, int64(1), lock.FenceToken())
		require.NoError(t, lock.Release(t.Context()))

		// Different slots: a clear error before any I/O, never a panic.
		_, err = client.ObtainMulti(t.Context(), []string{"alpha", "beta"}, time.Hour, nil)
		require.ErrorIs(t, err, redislock.ErrCrossSlot)
		require.NotErrorIs(t, err, redislock.ErrNotObtained)
		assert.Contains(t, err.Error(), "hash tag")
		_, err = client.Obtain(t.Context(), "{order:42}:a", time.Hour, &redislock.Options{FenceKey: "fence"})
		require.ErrorIs(t, err, redislock.ErrCrossSlot)
	})
}

// Contention on a cluster: exactly one winner per key.
func TestCluster_concurrent(t *testing.T) {
	redistest.Require(t)
	cl := redistest.StartCluster(t, 3, 0)
	client := redislock.New(cl.Client(t))
	keys := []string{"k1", "k2", "k3", "k4"}
	wins := make([]int, len(keys))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			k := i % len(keys)
			_, err := client.Obtain(t.Context(), keys[k], time.Minute, nil)
			if errors.Is(err, redislock.ErrNotObtained) {
				return
			}
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			wins[k]++
			mu.Unlock()
		})
	}
	wg.Wait()
	assert.Equal(t, []int{1, 1, 1, 1}, wins)
}

// A key of a type that no lock of this package writes (a list, a hash of
// its own) is an error for every kind, and is left as it is.
func TestObtainShared_foreignKeyIsTerminal(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		b.mustDo(t, "HSET", "h", "f", "v")
		b.mustDo(t, "RPUSH", "l", "x")
		c := redislock.New(b.client)
		opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Millisecond)}
		for _, key := range []string{"h", "l"} {
			_, err := c.ObtainShared(t.Context(), key, time.Hour, opt)
			require.Error(t, err)
			require.NotErrorIs(t, err, redislock.ErrNotObtained)
			assert.Contains(t, err.Error(), "WRONGTYPE")
			_, err = c.ObtainSemaphore(t.Context(), key, 2, time.Hour, opt)
			assert.Contains(t, err.Error(), "WRONGTYPE")
			_, err = c.Obtain(t.Context(), key, time.Hour, &redislock.Options{Token: "tok", RetryStrategy: opt.RetryStrategy})
			assert.Contains(t, err.Error(), "WRONGTYPE")
		}
		assert.Equal(t, "v", b.mustDo(t, "HGET", "h", "f"))
		assert.Equal(t, "1", b.mustDo(t, "LLEN", "l"))
	})
}
