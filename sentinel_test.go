package redislock_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// The whole API through a rueidis Sentinel client (one master, two
// replicas, three sentinels), and after a SENTINEL FAILOVER the library
// follows the new master with no action by the user.
func TestSentinel(t *testing.T) {
	redistest.Require(t)
	d := redistest.StartSentinel(t, 2, 3)
	rc := d.Client(t)
	client := redislock.New(rc)
	exercise := func(t *testing.T, key string) {
		t.Helper()
		opt := &redislock.Options{FenceKey: "{" + key + "}:fence", Metadata: "m"}
		lock, err := client.Obtain(t.Context(), key, time.Minute, opt)
		require.NoError(t, err)
		assertTTL(t, lock, time.Minute)
		require.NoError(t, lock.Refresh(t.Context(), time.Hour, nil))
		assertTTL(t, lock, time.Hour)
		_, err = client.Obtain(t.Context(), key, time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)

		// A waiter on another Client is woken by the release.
		obs := &counter{}
		got := obtainAsync(t.Context(), redislock.New(rc, redislock.WithObserver(obs)), []string{key}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool {
			n, err := rc.Do(t.Context(), rc.B().Llen().Key(key+":redislock-waiters").Build()).AsInt64()
			return err == nil && n == 1
		}, "the waiter queues")
		require.NoError(t, lock.Release(t.Context()))
		r := <-got
		require.NoError(t, r.err)
		assert.Equal(t, 1, obs.last.Load().WokenByRelease)
		require.NoError(t, r.lock.Release(t.Context()))

		multi, err := client.ObtainMulti(t.Context(), []string{key + ":a", key + ":b"}, time.Minute, nil)
		require.NoError(t, err)
		require.NoError(t, multi.Release(t.Context()))
		require.ErrorIs(t, multi.Release(t.Context()), redislock.ErrLockNotHeld)
	}
	t.Run("before", func(t *testing.T) { exercise(t, "before") })

	old := d.Master(t)
	_, err := d.Sentinels[0].Do(t, "SENTINEL", "FAILOVER", redistest.MasterName)
	require.NoError(t, err)
	require.Eventually(t, func() bool { return d.Master(t) != old }, 15*time.Second, 50*time.Millisecond, "the sentinels promote a replica")

	// Calls end by their deadline while rueidis finds the new master; then
	// the API works again.
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		lock, err := client.Obtain(ctx, "probe", time.Second, nil)
		if err != nil {
			return false
		}
		return lock.Release(ctx) == nil
	}, 15*time.Second, 100*time.Millisecond, "the library follows the new master")
	t.Run("after", func(t *testing.T) { exercise(t, "after") })
	info, err := d.Master(t).Do(t, "EXISTS", "{before}:fence")
	require.NoError(t, err)
	assert.Equal(t, "1", info, "the new master has what the old one replicated")
}
