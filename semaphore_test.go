package redislock_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
)

// A limit under 1 is bad input: an error wrapping ErrInvalidLimit, and
// nothing sent to Redis.
func TestObtainSemaphore_invalidLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		obs := &counter{}
		c := redislock.New(b.client, redislock.WithObserver(obs))
		for _, limit := range []int{0, -1} {
			l, err := c.ObtainSemaphore(t.Context(), "k", limit, time.Minute, &redislock.Options{FenceKey: "fence"})
			require.ErrorIs(t, err, redislock.ErrInvalidLimit)
			require.NotErrorIs(t, err, redislock.ErrNotObtained)
			assert.Nil(t, l)
			ev := obs.last.Load()
			assert.Equal(t, redislock.OpObtainSemaphore, ev.Op)
			assert.Equal(t, 0, ev.Attempts)
		}
		assert.Equal(t, 0, b.dbsize(t), "nothing is written")
	})
}

// At most limit holders; a release passes its permit to the first waiter
// in its own script, woken by the release; a newcomer finds no permit free.
func TestObtainSemaphore_limit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		c := redislock.New(b.client)
		var ls []*redislock.Lock
		for range 3 {
			l, err := c.ObtainSemaphore(ctx, "jobs", 3, time.Minute, nil)
			require.NoError(t, err)
			ls = append(ls, l)
		}
		_, err := c.ObtainSemaphore(ctx, "jobs", 3, time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)

		obs := &counter{}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		waiter := obtainKindAsync(wctx, redislock.New(b.client, redislock.WithObserver(obs)), "jobs", 3, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "jobs") == 1 }, "the waiter queues")

		require.NoError(t, ls[0].Release(ctx))
		_, err = c.ObtainSemaphore(ctx, "jobs", 3, time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained, "the permit passed on, never free")
		r := <-waiter
		require.NoError(t, r.err)
		ev := obs.last.Load()
		assert.Equal(t, redislock.OpObtainSemaphore, ev.Op)
		assert.Equal(t, 1, ev.WokenByRelease)
		assert.Equal(t, 0, ev.WokenByBackoff)
		assert.Equal(t, 3, holderCount(t, b, "jobs"))

		// A caller with a higher limit has its own.
		more, err := c.ObtainSemaphore(ctx, "jobs", 4, time.Minute, nil)
		require.NoError(t, err)
		assert.Equal(t, 4, holderCount(t, b, "jobs"))
		for _, l := range append(ls[1:], r.lock, more) {
			require.NoError(t, l.Release(ctx))
		}
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// Many goroutines of several Clients contend for 3 permits: never more than
// 3 hold at once, and every one has its turn.
func TestObtainSemaphore_contention(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit, n = 3, 40
		clients := []*redislock.Client{redislock.New(b.client), redislock.New(b.client), redislock.New(b.client)}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		var holding, most atomic.Int32
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				l, err := clients[i%len(clients)].ObtainSemaphore(ctx, "jobs", limit, time.Minute,
					&redislock.Options{RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond)})
				if err != nil {
					errs <- err
					return
				}
				h := holding.Add(1)
				for m := most.Load(); h > m && !most.CompareAndSwap(m, h); m = most.Load() {
				}
				time.Sleep(time.Millisecond)
				holding.Add(-1)
				errs <- l.Release(ctx)
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		assert.LessOrEqual(t, most.Load(), int32(limit))
		assert.Equal(t, 0, b.dbsize(t))
	})
}
