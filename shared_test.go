package redislock_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// obtainSharedAsync runs ObtainShared (limit 0) or ObtainSemaphore (limit >
// 0) of key in a goroutine, with a one-minute lease.
func obtainKindAsync(ctx context.Context, c *redislock.Client, key string, limit int, opt *redislock.Options) <-chan result {
	ch := make(chan result, 1)
	go func() {
		var l *redislock.Lock
		var err error
		if limit == 0 {
			l, err = c.ObtainShared(ctx, key, time.Minute, opt)
		} else {
			l, err = c.ObtainSemaphore(ctx, key, limit, time.Minute, opt)
		}
		ch <- result{l, err}
	}()
	return ch
}

// holderCount is the number of holders of a shared or semaphore key, read
// from the server.
func holderCount(t *testing.T, b backend, key string) int {
	t.Helper()
	fields, err := b.client.Do(t.Context(), b.client.B().Hgetall().Key(key).Build()).AsStrMap()
	require.NoError(t, err)
	n := 0
	for f, v := range fields {
		// The field "" names the kind; a holder that left is "0" until
		// several have left (lua/holders.lua).
		if f != "" && v != "0" {
			n++
		}
	}
	return n
}

// Any number of shared holders at once, each with its own token; an
// exclusive Obtain finds the key held, and ObtainShared finds a key held by
// Obtain held; nothing is left once all have left.
func TestObtainShared_holders(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		c := redislock.New(b.client)
		var ls []*redislock.Lock
		for range 3 {
			l, err := c.ObtainShared(ctx, "doc", time.Minute, &redislock.Options{Metadata: "reader"})
			require.NoError(t, err)
			assert.Equal(t, "reader", l.Metadata())
			ls = append(ls, l)
		}
		assert.NotEqual(t, ls[0].Token(), ls[1].Token())
		assert.Equal(t, 3, holderCount(t, b, "doc"))
		assert.Equal(t, "hash", b.mustDo(t, "TYPE", "doc"))

		_, err := c.Obtain(ctx, "doc", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		_, err = c.Obtain(ctx, "doc", time.Minute, &redislock.Options{Token: "custom", FenceKey: "fence"})
		require.ErrorIs(t, err, redislock.ErrNotObtained, "obtain.lua finds a shared key held too")

		for _, l := range ls {
			require.NoError(t, l.Release(ctx))
		}
		assert.Equal(t, "(nil)", b.mustDo(t, "GET", "doc"))
		w, err := c.Obtain(ctx, "doc", time.Minute, nil)
		require.NoError(t, err)
		_, err = c.ObtainShared(ctx, "doc", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		require.NoError(t, w.Release(ctx))
		b.mustDo(t, "DEL", "fence")
		assert.Equal(t, 0, b.dbsize(t), "nothing is left behind")
	})
}

// Each holder has its own lease: Refresh, TTL, Release of one leave the
// others as they are; a second Release of one is ErrLockNotHeld.
func TestObtainShared_ownLease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		for _, limit := range []int{0, 5} {
			c := redislock.New(b.client)
			obtain := func(ttl time.Duration) *redislock.Lock {
				var l *redislock.Lock
				var err error
				if limit == 0 {
					l, err = c.ObtainShared(ctx, "res", ttl, nil)
				} else {
					l, err = c.ObtainSemaphore(ctx, "res", limit, ttl, nil)
				}
				require.NoError(t, err)
				return l
			}
			a, z := obtain(time.Minute), obtain(time.Hour)
			assertTTL(t, a, time.Minute)
			assertTTL(t, z, time.Hour)
			require.NoError(t, a.Refresh(ctx, 2*time.Hour, nil))
			assertTTL(t, a, 2*time.Hour)
			assertTTL(t, z, time.Hour)
			pttl, err := strconv.Atoi(b.mustDo(t, "PTTL", "res"))
			require.NoError(t, err)
			assert.Greater(t, pttl, int(time.Hour/time.Millisecond), "the key lives as long as its last lease")

			require.NoError(t, a.Release(ctx))
			require.ErrorIs(t, a.Release(ctx), redislock.ErrLockNotHeld)
			require.ErrorIs(t, a.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
			left, err := a.TTL(ctx)
			require.NoError(t, err)
			assert.Zero(t, left)
			assertTTL(t, z, time.Hour)
			require.NoError(t, z.Release(ctx))
			assert.Equal(t, 0, b.dbsize(t))
		}
	})
}

// A holder that vanishes frees its place when its lease ends, by the
// server's clock, while the other holders keep the key: a writer then has
// it once the last lease ends, with no call from anyone.
func TestObtainShared_vanishedHolder(t *testing.T) {
	redistest.Require(t)
	b := realBackend(t)
	ctx := t.Context()
	c := redislock.New(b.client)
	short, err := c.ObtainSemaphore(ctx, "jobs", 2, time.Second, nil)
	require.NoError(t, err)
	long, err := c.ObtainSemaphore(ctx, "jobs", 2, time.Minute, nil)
	require.NoError(t, err)
	// Full while both leases live. A loaded machine may take longer than
	// the short lease between these calls (a 50ms lease did, under load):
	// then the third is granted, and the short lease must be over.
	if third, err := c.ObtainSemaphore(ctx, "jobs", 2, time.Minute, nil); err == nil {
		left, err := short.TTL(ctx)
		require.NoError(t, err)
		require.Zero(t, left, "a third permit while both leases lived")
		require.NoError(t, third.Release(ctx))
	} else {
		require.ErrorIs(t, err, redislock.ErrNotObtained)
	}

	// The short lease ends: its permit is free, the key still held.
	eventually(t, func() bool {
		l, err := c.ObtainSemaphore(ctx, "jobs", 2, time.Minute, nil)
		if err != nil {
			return false
		}
		require.NoError(t, l.Release(ctx))
		return true
	}, "the vanished holder's permit frees")
	require.ErrorIs(t, short.Release(ctx), redislock.ErrLockNotHeld)
	assert.Equal(t, 1, holderCount(t, b, "jobs"))
	require.NoError(t, long.Release(ctx))

	// A shared holder that vanishes: a writer waits for its lease alone.
	r, err := c.ObtainShared(ctx, "jobs", 100*time.Millisecond, nil)
	require.NoError(t, err)
	obs := &counter{}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := redislock.New(b.client, redislock.WithObserver(obs)).Obtain(wctx, "jobs", time.Minute, &redislock.Options{RetryStrategy: forever})
	require.NoError(t, err)
	assert.Equal(t, 1, obs.last.Load().WokenByExpiry, "woken when the reader's lease ended")
	require.ErrorIs(t, r.Release(ctx), redislock.ErrLockNotHeld)
	require.NoError(t, w.Release(ctx))
	assert.Equal(t, 0, b.dbsize(t))
}

// No writer starvation: while a writer waits for a key held shared, a new
// ObtainShared queues behind it (NoRetry: ErrNotObtained), and the writer
// has the key, woken by the release, once the readers leave.
func TestObtainShared_writerPreference(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		c := redislock.New(b.client)
		r1, err := c.ObtainShared(ctx, "doc", time.Minute, nil)
		require.NoError(t, err)
		r2, err := c.ObtainShared(ctx, "doc", time.Minute, nil)
		require.NoError(t, err)

		obs := &counter{}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		writer := obtainAsync(wctx, redislock.New(b.client, redislock.WithObserver(obs)), []string{"doc"}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "doc") == 1 }, "the writer queues")

		_, err = c.ObtainShared(ctx, "doc", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained, "a new reader does not overtake the writer")
		late := obtainKindAsync(wctx, redislock.New(b.client), "doc", 0, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "doc") == 2 }, "a reader queues behind the writer")

		require.NoError(t, r1.Release(ctx))
		assert.Empty(t, writer, "a reader still holds the key")
		require.NoError(t, r2.Release(ctx))
		w := <-writer
		require.NoError(t, w.err)
		ev := obs.last.Load()
		assert.Equal(t, 1, ev.WokenByRelease)
		assert.Equal(t, 0, ev.WokenByBackoff)
		assert.Empty(t, late, "the late reader waits for the writer")

		require.NoError(t, w.lock.Release(ctx))
		r := <-late
		require.NoError(t, r.err)
		require.NoError(t, r.lock.Release(ctx))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// A release hands the key on in arrival order: to every reader queued
// before the next writer at once, each woken by the release.
func TestObtainShared_readersTogether(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		holder, err := redislock.New(b.client).Obtain(ctx, "doc", time.Minute, nil)
		require.NoError(t, err)
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		opt := &redislock.Options{RetryStrategy: forever, FenceKey: "fence"}
		shared := redislock.New(b.client) // two readers of one Client, one of another
		var obs []*counter
		var readers []<-chan result
		for i := range 3 {
			c := shared
			if i == 2 {
				o := &counter{}
				obs = append(obs, o)
				c = redislock.New(b.client, redislock.WithObserver(o))
			}
			readers = append(readers, obtainKindAsync(wctx, c, "doc", 0, opt))
			eventually(t, func() bool { return queueLen(t, b, "doc") == i+1 }, "a reader queues")
		}
		writer := obtainAsync(wctx, redislock.New(b.client), []string{"doc"}, opt)
		eventually(t, func() bool { return queueLen(t, b, "doc") == 4 }, "the writer queues")

		require.NoError(t, holder.Release(ctx))
		fences := map[int64]bool{}
		var got []*redislock.Lock
		for _, ch := range readers {
			r := <-ch
			require.NoError(t, r.err)
			fences[r.lock.FenceToken()] = true
			got = append(got, r.lock)
		}
		assert.Len(t, fences, 3, "a fresh fence token for each holder")
		assert.Equal(t, 1, obs[0].last.Load().WokenByRelease)
		assert.Equal(t, 0, obs[0].last.Load().WokenByBackoff)
		assert.Equal(t, 3, holderCount(t, b, "doc"))
		assert.Equal(t, 1, queueLen(t, b, "doc"))
		assert.Empty(t, writer)

		for _, l := range got {
			assert.Empty(t, writer, "the writer waits for every reader")
			require.NoError(t, l.Release(ctx))
		}
		w := <-writer
		require.NoError(t, w.err)
		assert.Greater(t, w.lock.FenceToken(), int64(3))
		require.NoError(t, w.lock.Release(ctx))
		b.mustDo(t, "DEL", "fence")
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// Keys of one kind given to another: held, never corrupted; a lock whose
// key changed kind under it is not held, without a WRONGTYPE error.
func TestObtainShared_crossKind(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		c := redislock.New(b.client)
		sem, err := c.ObtainSemaphore(ctx, "k", 3, time.Minute, nil)
		require.NoError(t, err)
		_, err = c.ObtainShared(ctx, "k", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained, "a semaphore key is held for a shared obtain")
		_, err = c.Obtain(ctx, "k", time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		_, err = c.ObtainMulti(ctx, []string{"k", "k2"}, time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		assert.Equal(t, 1, holderCount(t, b, "k"))
		assert.Equal(t, "(nil)", b.mustDo(t, "GET", "k2"))
		require.NoError(t, sem.Release(ctx))

		r, err := c.ObtainShared(ctx, "k", time.Minute, nil)
		require.NoError(t, err)
		_, err = c.ObtainSemaphore(ctx, "k", 3, time.Minute, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained, "a shared key is held for a semaphore")
		require.NoError(t, r.Release(ctx))

		// An exclusive lock whose key became a shared one meanwhile.
		x, err := c.Obtain(ctx, "k", time.Minute, nil)
		require.NoError(t, err)
		b.mustDo(t, "DEL", "k")
		r, err = c.ObtainShared(ctx, "k", time.Minute, nil)
		require.NoError(t, err)
		left, err := x.TTL(ctx)
		require.NoError(t, err)
		assert.Zero(t, left)
		require.ErrorIs(t, x.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
		require.ErrorIs(t, x.Release(ctx), redislock.ErrLockNotHeld)
		assert.Equal(t, 1, holderCount(t, b, "k"))

		// And a shared lock whose key became an exclusive one.
		b.mustDo(t, "DEL", "k")
		x, err = c.Obtain(ctx, "k", time.Minute, nil)
		require.NoError(t, err)
		left, err = r.TTL(ctx)
		require.NoError(t, err)
		assert.Zero(t, left)
		require.ErrorIs(t, r.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
		require.ErrorIs(t, r.Release(ctx), redislock.ErrLockNotHeld)
		require.NoError(t, x.Release(ctx))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// The same token obtains again (idempotent): its fence token is kept, its
// lease and metadata replaced; it holds one place, not two.
func TestObtainShared_sameToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		ctx := t.Context()
		c := redislock.New(b.client)
		opt := &redislock.Options{Token: "me", FenceKey: "fence", Metadata: "one"}
		l, err := c.ObtainSemaphore(ctx, "k", 1, time.Minute, opt)
		require.NoError(t, err)
		assert.Equal(t, int64(1), l.FenceToken())
		again, err := c.ObtainSemaphore(ctx, "k", 1, time.Hour, &redislock.Options{Token: "me", FenceKey: "fence", Metadata: "two"})
		require.NoError(t, err)
		assert.Equal(t, int64(1), again.FenceToken())
		assertTTL(t, again, time.Hour)
		assert.Equal(t, 1, holderCount(t, b, "k"))
		require.NoError(t, again.Release(ctx))
		require.ErrorIs(t, l.Release(ctx), redislock.ErrLockNotHeld)
		b.mustDo(t, "DEL", "fence")
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// Redis Cluster: shared locks and semaphores on keys with and without a
// hash tag, a fence key in the key's slot, a writer woken by the readers'
// release across Clients.
func TestObtainShared_cluster(t *testing.T) {
	redistest.Require(t)
	cl := redistest.StartCluster(t, 3, 0)
	rc := cl.Client(t)
	ctx := t.Context()
	for _, key := range []string{"alpha", "{order:7}:lock"} {
		t.Run(key, func(t *testing.T) {
			c := redislock.New(rc)
			opt := &redislock.Options{}
			if key != "alpha" {
				opt.FenceKey = "{order:7}:fence"
			}
			r, err := c.ObtainShared(ctx, key, time.Minute, opt)
			require.NoError(t, err)
			s, err := c.ObtainShared(ctx, key, time.Minute, opt)
			require.NoError(t, err)
			obs := &counter{}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			writer := obtainAsync(wctx, redislock.New(rc, redislock.WithObserver(obs)), []string{key}, &redislock.Options{RetryStrategy: forever})
			queue := key + ":redislock-waiters"
			if key == "alpha" {
				queue = "{alpha}:redislock-waiters"
			}
			eventually(t, func() bool {
				n, err := rc.Do(ctx, rc.B().Llen().Key(queue).Build()).AsInt64()
				return err == nil && n == 1
			}, "the writer queues")
			_, err = c.ObtainShared(ctx, key, time.Minute, opt)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
			require.NoError(t, r.Release(ctx))
			require.NoError(t, s.Release(ctx))
			w := <-writer
			require.NoError(t, w.err)
			assert.Equal(t, 1, obs.last.Load().WokenByRelease)

			// Readers queued behind the writer have the key once it
			// leaves (with a fence key, each is told to try again and
			// takes it by its own attempt, which declares its counter).
			waitOpt := &redislock.Options{RetryStrategy: forever, FenceKey: opt.FenceKey}
			var readers []<-chan result
			for i := range 2 {
				readers = append(readers, obtainKindAsync(wctx, redislock.New(rc), key, 0, waitOpt))
				eventually(t, func() bool {
					n, err := rc.Do(ctx, rc.B().Llen().Key(queue).Build()).AsInt64()
					return err == nil && n == int64(i+1)
				}, "a reader queues")
			}
			require.NoError(t, w.lock.Release(ctx))
			for _, ch := range readers {
				r := <-ch
				require.NoError(t, r.err)
				require.NoError(t, r.lock.Release(ctx))
			}

			sem, err := c.ObtainSemaphore(ctx, key, 1, time.Minute, opt)
			require.NoError(t, err)
			_, err = c.ObtainSemaphore(ctx, key, 1, time.Minute, opt)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
			require.NoError(t, sem.Release(ctx))
		})
	}
	_, err := redislock.New(rc).ObtainShared(ctx, "beta", time.Minute, &redislock.Options{FenceKey: "fence"})
	require.ErrorIs(t, err, redislock.ErrCrossSlot)
}

// refreshes counts the Refresh operations that succeeded.
type refreshes struct{ n atomic.Int64 }

func (r *refreshes) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (r *refreshes) End(_ context.Context, ev *redislock.Event) {
	if ev.Op == redislock.OpRefresh && ev.Err == nil {
		r.n.Add(1)
	}
}

// Watch keeps a holder's own lease past its first end, and the other
// holders' leases are left as they were.
func TestObtainShared_watch(t *testing.T) {
	redistest.Require(t)
	b := realBackend(t)
	pauses := redistest.WatchPauses(t)
	for _, limit := range []int{0, 2} {
		for try := 1; !watchHolderOnce(t, b, pauses, limit, "w:"+strconv.Itoa(try)); try++ {
			require.Less(t, try, 3, "the process was paused for a third of the TTL in each try")
		}
	}
	assert.Equal(t, 0, b.dbsize(t))
}

// watchHolderOnce is TestObtainShared_watch for a shared lock (limit 0) or
// a semaphore, on key; it reports false when the watch was cancelled while
// the process was paused for a third of the TTL (cancelledByPause).
func watchHolderOnce(t *testing.T, b backend, pauses *redistest.PauseWatch, limit int, key string) bool {
	ctx := t.Context()
	obs := &refreshes{}
	c := redislock.New(b.client, redislock.WithObserver(obs))
	const ttl = watchTTL // refreshed every third of it
	obtain := func(c *redislock.Client, ttl time.Duration) *redislock.Lock {
		var l *redislock.Lock
		var err error
		if limit == 0 {
			l, err = c.ObtainShared(ctx, key, ttl, nil)
		} else {
			l, err = c.ObtainSemaphore(ctx, key, limit, ttl, nil)
		}
		require.NoError(t, err)
		return l
	}
	l, other := obtain(c, ttl), obtain(redislock.New(b.client), time.Hour)
	defer func() { require.NoError(t, other.Release(ctx)) }()
	start := time.Now()
	work, stop := l.Watch(ctx, ttl)
	defer stop()
	eventually(t, func() bool { return obs.n.Load() >= 4 || work.Err() != nil }, "four refreshes, over a lease's worth")
	if cancelledByPause(t, pauses, start, work, ttl) {
		_ = l.Release(ctx)
		return false
	}
	left, err := l.TTL(ctx)
	require.NoError(t, err)
	assert.Positive(t, left)
	stop()
	require.NoError(t, l.Release(ctx))
	assertTTL(t, other, time.Hour)
	return true
}

// A release that grants thousands of queued readers at once writes them
// all as holders (its writes go in HSETs of a bounded size: Lua's unpack
// takes a few thousand values at most); a writer then finds the key held.
func TestObtainShared_releaseGrantsThousands(t *testing.T) {
	b := realBackend(t)
	c := redislock.New(b.client)
	l, err := c.Obtain(t.Context(), "doc", time.Minute, nil)
	require.NoError(t, err)
	const n = 4100
	args := []string{"RPUSH", "doc:redislock-waiters"}
	for i := range n {
		tok := "r" + strconv.Itoa(i)
		args = append(args, "2:ch"+strconv.Itoa(len(tok))+":"+tok+"5:600000:0:1:r3:doc")
	}
	b.mustDo(t, args...)
	require.NoError(t, l.Release(t.Context()))
	assert.Equal(t, 0, queueLen(t, b, "doc"))
	assert.Equal(t, n, holderCount(t, b, "doc"), "every reader told of its grant holds the key")
	_, err = c.Obtain(t.Context(), "doc", time.Minute, nil)
	assert.ErrorIs(t, err, redislock.ErrNotObtained, "a writer finds the readers")
}
