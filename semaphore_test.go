package redislock_test

import (
	"context"
	"strconv"
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

// obtains keeps the last successful obtain's Event.
type obtains struct {
	last atomic.Pointer[redislock.Event]
}

func (o *obtains) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (o *obtains) End(_ context.Context, ev *redislock.Event) {
	if ev.Op.IsObtain() && ev.Err == nil {
		cp := *ev
		o.last.Store(&cp)
	}
}

// The Release of a permit passes it, in its own script, to the first
// waiter of its Client that no other Release is passing one to: waiters
// of one Client behind the first send no attempt at all, and have their
// permits in arrival order, with increasing fence tokens.
func TestObtainSemaphore_localHandoff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit = 2
		obs := &obtains{}
		c := redislock.New(b.client, redislock.WithObserver(obs))
		opt := &redislock.Options{RetryStrategy: forever, FenceKey: "fence"}
		var holders []*redislock.Lock
		for range limit {
			l, err := c.ObtainSemaphore(t.Context(), "jobs", limit, time.Minute, opt)
			require.NoError(t, err)
			holders = append(holders, l)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		var results []<-chan result
		for i := range 4 {
			results = append(results, obtainKindAsync(ctx, c, "jobs", limit, opt))
			awaitBlocked(t, i+1) // arrival order
		}
		// The Client holds every permit: only its own Releases free one,
		// and its waiters stay out of Redis' queue.
		assert.Equal(t, 0, queueLen(t, b, "jobs"), "waiters queued in Redis")
		fence := holders[limit-1].FenceToken()
		for i, ch := range results {
			require.NoError(t, holders[0].Release(t.Context()))
			r := <-ch
			require.NoError(t, r.err, "waiter %d", i)
			ev := obs.last.Load()
			if i > 0 {
				// Parked behind the first since they came: the release
				// woke them.
				assert.Equal(t, 0, ev.Attempts, "waiter %d sent attempts", i)
				assert.Equal(t, 1, ev.WokenByRelease, "waiter %d", i)
			}
			assert.Zero(t, ev.WokenByBackoff, "waiter %d", i)
			assert.Greater(t, r.lock.FenceToken(), fence, "fence tokens increase")
			fence = r.lock.FenceToken()
			for _, later := range results[i+1:] {
				assert.Empty(t, later, "a later waiter overtook waiter %d", i)
			}
			assert.Equal(t, limit, holderCount(t, b, "jobs"))
			holders = append(holders[1:], r.lock)
		}
		for _, l := range holders {
			require.NoError(t, l.Release(t.Context()))
		}
		assert.Equal(t, 0, queueLen(t, b, "jobs"))
		assert.Equal(t, "1", b.mustDo(t, "DBSIZE"), "the fence counter alone is left")
	})
}

// A waiter of a Client whose channel is up is queued in Redis by its first
// attempt: it is granted its permit by a release after one attempt in all.
// On a Client whose channel is not up, the first attempt queues nothing,
// and the second does.
func TestObtainSemaphore_queuedAtOnce(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		full, err := redislock.New(b.client).ObtainSemaphore(t.Context(), "jobs", 1, time.Minute, nil)
		require.NoError(t, err)
		other, err := redislock.New(b.client).Obtain(t.Context(), "other", time.Minute, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		opt := &redislock.Options{RetryStrategy: forever}

		for _, up := range []bool{false, true} {
			obs := &obtains{}
			c := redislock.New(b.client, redislock.WithObserver(obs))
			var keep <-chan result
			if up {
				// A waiter for another key keeps the Client's channel up.
				keep = obtainAsync(ctx, c, []string{"other"}, opt)
				eventually(t, func() bool { return queueLen(t, b, "other") == 1 }, "the channel is up")
			}
			waiter := obtainKindAsync(ctx, c, "jobs", 1, opt)
			eventually(t, func() bool { return queueLen(t, b, "jobs") == 1 }, "the waiter queues")
			require.NoError(t, full.Release(t.Context()))
			r := <-waiter
			require.NoError(t, r.err)
			ev := obs.last.Load()
			want := 2
			if up {
				want = 1
			}
			assert.Equal(t, want, ev.Attempts, "channel up: %v", up)
			assert.Zero(t, ev.WokenByBackoff)
			full = r.lock
			if up {
				require.NoError(t, other.Release(t.Context()))
				r := <-keep
				require.NoError(t, r.err)
				other = r.lock
			}
		}
		require.NoError(t, full.Release(t.Context()))
		require.NoError(t, other.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// A key of shared holders or a semaphore whose leases have all ended is
// free for every kind's script, though the key itself is kept longer
// (until its keep: lua/holders.lua); its dead fields are left out of every count, and
// taken out in one HDEL once several have gathered.
func TestObtainSemaphore_endedLeases(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c := redislock.New(b.client)
		ended := func() {
			b.mustDo(t, "DEL", "jobs")
			b.mustDo(t, "HSET", "jobs", "", "s:99999999999999", "gone", "1:0:", "left", "0")
			b.mustDo(t, "PEXPIRE", "jobs", "60000")
		}
		ended()
		// An exclusive Obtain's first attempt, a plain SET NX, finds the
		// key held until its keep (set by hand here, far beyond the ended
		// lease); its next attempt, a script, finds it free.
		_, err := c.Obtain(t.Context(), "jobs", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		l, err := c.Obtain(t.Context(), "jobs", time.Minute,
			&redislock.Options{RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 1)})
		require.NoError(t, err, "exclusive")
		require.NoError(t, l.Release(t.Context()))
		ended()
		l, err = c.ObtainShared(t.Context(), "jobs", time.Minute, nil)
		require.NoError(t, err, "shared")
		require.NoError(t, l.Release(t.Context()))
		ended()
		l, err = c.ObtainSemaphore(t.Context(), "jobs", 1, time.Minute, nil)
		require.NoError(t, err, "semaphore")
		assert.Equal(t, 1, holderCount(t, b, "jobs"))
		left, err := l.TTL(t.Context())
		require.NoError(t, err)
		assert.Greater(t, left, 50*time.Second, "its own lease, read against the key's keep")
		assert.LessOrEqual(t, left, time.Minute)

		// Holders come and go beside a long one: the key never keeps
		// more than a few dead fields.
		for range 20 {
			m, err := c.ObtainSemaphore(t.Context(), "jobs", 2, time.Minute, nil)
			require.NoError(t, err)
			require.NoError(t, m.Release(t.Context()))
		}
		n, err := strconv.Atoi(b.mustDo(t, "HLEN", "jobs"))
		require.NoError(t, err)
		assert.LessOrEqual(t, n, 1+1+8, "the kind, the holder, at most 8 dead fields")
		require.NoError(t, l.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// The key lives until its last lease ends, and a little more (a second at
// most), not until the keep of a longer lease that was given back: once a
// 1h holder has left and a 100ms one has vanished, a plain Obtain (its one
// attempt, SET NX) takes the key.
func TestObtainSemaphore_keyEndsWithLastLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c := redislock.New(b.client)
		long, err := c.ObtainSemaphore(t.Context(), "jobs", 2, time.Hour, nil)
		require.NoError(t, err)
		_, err = c.ObtainSemaphore(t.Context(), "jobs", 2, 100*time.Millisecond, nil) // its holder vanishes
		require.NoError(t, err)
		require.NoError(t, long.Release(t.Context()))
		pttl, err := strconv.Atoi(b.mustDo(t, "PTTL", "jobs"))
		require.NoError(t, err)
		assert.LessOrEqual(t, pttl, 100+100/8, "the key's TTL: the last lease and its slack")
		b.expire(200 * time.Millisecond)
		l, err := c.Obtain(t.Context(), "jobs", time.Minute, nil)
		require.NoError(t, err, "nobody holds the key")
		require.NoError(t, l.Release(t.Context()))
	})
}

// A release that puts back the only entry of the wait queue (its waiter may
// not hold the key yet) keeps a TTL on the queue: the entry of a Client
// that crashed expires.
func TestObtainSemaphore_queueKeepsTTL(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		c := redislock.New(b.client)
		s1, err := c.ObtainSemaphore(t.Context(), "jobs", 2, time.Minute, nil)
		require.NoError(t, err)
		s2, err := c.ObtainSemaphore(t.Context(), "jobs", 2, time.Minute, nil)
		require.NoError(t, err)
		// The entry of an exclusive waiter of a Client that crashed, queued
		// as obtain.lua's enqueue does (RPUSH, PEXPIRE keep).
		b.mustDo(t, "RPUSH", "jobs:redislock-waiters", "2:ch4:dead5:600000:0:0:4:jobs")
		b.mustDo(t, "PEXPIRE", "jobs:redislock-waiters", "2000")
		require.NoError(t, s1.Release(t.Context()))
		assert.Equal(t, 1, queueLen(t, b, "jobs"), "the exclusive waiter waits for s2")
		pttl, err := strconv.Atoi(b.mustDo(t, "PTTL", "jobs:redislock-waiters"))
		require.NoError(t, err)
		assert.Positive(t, pttl, "the queue has a TTL")
		assert.LessOrEqual(t, pttl, 61000, "at most the holders' leases and a second")
		require.NoError(t, s2.Release(t.Context()))
	})
}

// A permit that a Release of another Client frees reaches a waiter of this
// Client that became first after the one before it was granted a permit:
// the Client holds fewer permits than the limit, so its first waiter is
// queued in Redis, and is told.
func TestObtainSemaphore_permitFreedByOtherClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		const limit = 2
		other := redislock.New(b.client)
		b1, err := other.ObtainSemaphore(t.Context(), "jobs", limit, time.Minute, nil)
		require.NoError(t, err)
		b2, err := other.ObtainSemaphore(t.Context(), "jobs", limit, time.Minute, nil)
		require.NoError(t, err)

		a := redislock.New(b.client)
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		opt := &redislock.Options{RetryStrategy: forever}
		wa1 := obtainKindAsync(ctx, a, "jobs", limit, opt)
		eventually(t, func() bool { return queueLen(t, b, "jobs") == 1 }, "wa1 queues in Redis")
		wa2 := obtainKindAsync(ctx, a, "jobs", limit, opt)
		awaitBlocked(t, 2)

		require.NoError(t, b1.Release(t.Context()))
		r1 := <-wa1
		require.NoError(t, r1.err, "wa1 is granted b1's permit")
		eventually(t, func() bool { return queueLen(t, b, "jobs") == 1 }, "wa2, now first, queues in Redis")

		require.NoError(t, b2.Release(t.Context()))
		r2 := <-wa2
		require.NoError(t, r2.err, "wa2 is granted b2's permit")
		assert.Equal(t, limit, holderCount(t, b, "jobs"))
		require.NoError(t, r1.lock.Release(t.Context()))
		require.NoError(t, r2.lock.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// An ObtainSemaphore that may not wait (NoRetry) makes its attempt when
// another obtain of its Client, which joined its local queue, has its
// first attempt in flight: permits are free.
func TestObtainSemaphore_noRetryBesideAnAttempt(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		g := newGate(func([]string) bool { return true }) // the first EVALSHA
		c := redislock.New(&gates{Client: b.client, gs: []*gate2{g}})
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		// A waiter on another key brings the Client's channel up: an
		// ObtainSemaphore that may wait then joins its local queue
		// before its first attempt.
		held, err := redislock.New(b.client).Obtain(ctx, "other", time.Minute, nil)
		require.NoError(t, err)
		keep := obtainAsync(ctx, c, []string{"other"}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "other") == 1 }, "the channel is up")

		g.armed.Store(true)
		first := obtainKindAsync(ctx, c, "jobs", 100, &redislock.Options{RetryStrategy: forever})
		<-g.held // its first attempt
		l, err := c.ObtainSemaphore(ctx, "jobs", 100, time.Minute, nil)
		require.NoError(t, err, "NoRetry, with 100 permits free")
		close(g.open)
		r := <-first
		require.NoError(t, r.err)
		assert.Equal(t, 2, holderCount(t, b, "jobs"))
		require.NoError(t, l.Release(ctx))
		require.NoError(t, r.lock.Release(ctx))
		require.NoError(t, held.Release(ctx))
		r = <-keep
		require.NoError(t, r.err)
		require.NoError(t, r.lock.Release(ctx))
	})
}
