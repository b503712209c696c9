package redislock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
)

func TestClient(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		client := redislock.New(b.client)
		lock, err := client.Obtain(t.Context(), "lock", time.Hour, nil)
		require.NoError(t, err)
		assert.Len(t, lock.Token(), 22)
		assert.Equal(t, "lock", lock.Key())
		assert.Equal(t, []string{"lock"}, lock.Keys())
		assert.Equal(t, int64(0), lock.FenceToken())
		assertTTL(t, lock, time.Hour)
		assert.Equal(t, lock.Token(), b.mustDo(t, "GET", "lock"), "a plain lock stores its token alone")

		_, err = client.Obtain(t.Context(), "lock", time.Hour, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)

		require.NoError(t, lock.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))

		lock, err = client.Obtain(t.Context(), "lock", time.Hour, nil)
		require.NoError(t, err)
		require.NoError(t, lock.Release(t.Context()))
	})
}

func TestObtain_metadata(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{Metadata: "my-data"})
		require.NoError(t, err)
		assert.Equal(t, "my-data", lock.Metadata())
		assertTTL(t, lock, time.Hour)
		require.NoError(t, lock.Refresh(t.Context(), time.Minute, nil))
		assertTTL(t, lock, time.Minute)
		require.NoError(t, lock.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

func TestObtain_customToken(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock1, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{Token: "foo", Metadata: "bar"})
		require.NoError(t, err)
		assert.Equal(t, "foo", lock1.Token())
		assert.Equal(t, "bar", lock1.Metadata())

		_, err = redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)

		// The same token obtains again (idempotent) and replaces the metadata.
		lock2, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, &redislock.Options{Token: "foo", Metadata: "baz"})
		require.NoError(t, err)
		assert.Equal(t, "foo", lock2.Token())
		assert.Equal(t, "baz", lock2.Metadata())
		assertTTL(t, lock2, time.Minute)

		// Both values hold the same token: either releases the lock.
		require.NoError(t, lock1.Release(t.Context()))
		require.ErrorIs(t, lock2.Release(t.Context()), redislock.ErrLockNotHeld)
	})
}

// The seed compares a prefix of the stored value: a token that is a prefix
// of the holder's token (or of token+metadata) took the lock over.
func TestObtain_customToken_prefixCannotTakeOver(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		cases := []struct{ holder, meta, thief string }{
			{"foobar", "", "foo"},
			{"foo", "bar", "foobar"},
			{"foo", "bar", "foo0"},
			{"abc", "", "ab"},
			{"abc", "x", "abc0"},
		}
		for _, tc := range cases {
			holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{Token: tc.holder, Metadata: tc.meta})
			require.NoError(t, err)

			_, err = redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{Token: tc.thief})
			require.ErrorIs(t, err, redislock.ErrNotObtained, "token %q took over %q", tc.thief, tc.holder)

			thief := stolen(t, b, "lock", tc.thief)
			require.ErrorIs(t, thief.Release(t.Context()), redislock.ErrLockNotHeld)
			require.ErrorIs(t, thief.Refresh(t.Context(), time.Minute, nil), redislock.ErrNotObtained)
			ttl, err := thief.TTL(t.Context())
			require.NoError(t, err)
			assert.Zero(t, ttl)

			assertTTL(t, holder, time.Hour)
			require.NoError(t, holder.Release(t.Context()))
		}
	})
}

// stolen returns a *Lock on key with token while another holder keeps key:
// the holder's value is set aside, key obtained with token, and the holder's
// value and TTL put back.
func stolen(t *testing.T, b backend, key, token string) *redislock.Lock {
	t.Helper()
	saved := b.mustDo(t, "GET", key)
	pttl := b.mustDo(t, "PTTL", key)
	b.mustDo(t, "DEL", key)
	lock, err := redislock.Obtain(t.Context(), b.client, key, time.Hour, &redislock.Options{Token: token})
	require.NoError(t, err)
	b.mustDo(t, "SET", key, saved, "PX", pttl)
	return lock
}

func TestObtain_retrySuccess(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock1, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)
		released := make(chan struct{})
		go func() {
			defer close(released)
			// Once the second Obtain waits (queued in Redis), within its
			// retries.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if n, err := b.do("LLEN", "lock:redislock-waiters"); err == nil && n == "1" {
					break
				}
			}
			assert.NoError(t, lock1.Release(context.Background()))
		}()

		lock2, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(20*time.Millisecond), 250),
		})
		<-released
		require.NoError(t, err)
		require.NoError(t, lock2.Release(t.Context()))
	})
}

// queueRoundTrip is the attempt that starts the first wait of a Client's
// first waiter: it queues the waiter in Redis. It is not a retry:
// LimitRetry(s, n) still allows n waits, each followed by one attempt.
const queueRoundTrip = 1

func TestObtain_retryFailure(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock1, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)

		obs := &counter{}
		client := redislock.New(b.client, redislock.WithObserver(obs))
		_, err = client.Obtain(t.Context(), "lock", time.Hour, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(5*time.Millisecond), 2),
		})
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		ev := obs.last.Load()
		assert.Equal(t, 3+queueRoundTrip, ev.Attempts)
		assert.Equal(t, 3+queueRoundTrip, ev.Contended)
		assert.Equal(t, 2, ev.WokenByBackoff, "the two waits end by their backoff")
		assert.Equal(t, redislock.OutcomeNotObtained, ev.Outcome)
		require.NoError(t, lock1.Release(t.Context()))
	})
}

func TestObtain_retryContextDeadline(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		_, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)

		// The deadline falls while waiting, not during an attempt (which
		// would make the outcome unknown, a case of its own).
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
		defer cancel()
		_, err = redislock.Obtain(ctx, b.client, "lock", time.Hour, &redislock.Options{
			RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond),
		})
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		require.ErrorIs(t, err, context.DeadlineExceeded)
	})
}

// Without a ctx deadline, Obtain retries for one TTL at most.
func TestObtain_retryNoDeadlineStopsAfterTTL(t *testing.T) {
	b := realBackend(t)
	_, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
	require.NoError(t, err)

	start := time.Now()
	_, err = redislock.Obtain(context.Background(), b.client, "lock", 50*time.Millisecond, &redislock.Options{
		RetryStrategy: redislock.LinearBackoff(5 * time.Millisecond),
	})
	require.ErrorIs(t, err, redislock.ErrNotObtained)
	assert.Less(t, time.Since(start), time.Second, "retried far past one TTL")
}

func TestObtain_canceledContextSendsNothing(t *testing.T) {
	b := realBackend(t)
	obs := &counter{}
	client := redislock.New(b.client, redislock.WithObserver(obs))
	before := b.mustDo(t, "INFO", "commandstats")

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := client.Obtain(ctx, "lock", time.Hour, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.NotErrorIs(t, err, redislock.ErrNotObtained, "nothing was tried")
	_, err = client.ObtainMulti(ctx, []string{"a", "b"}, time.Hour, &redislock.Options{FenceKey: "f"})
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, 0, obs.last.Load().Attempts)

	after := b.mustDo(t, "INFO", "commandstats")
	assert.Equal(t, withoutInfo(before), withoutInfo(after), "commands were sent")
	assert.Equal(t, 0, b.dbsize(t))
}

// withoutInfo drops the INFO line from an INFO commandstats reply.
func withoutInfo(s string) string {
	var keep []string
	for line := range strings.SplitSeq(s, "\n") {
		if !strings.HasPrefix(line, "cmdstat_info:") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

func TestObtain_concurrent(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		client := redislock.New(b.client)
		var wins atomic.Int32
		var wg sync.WaitGroup
		for range 100 {
			wg.Go(func() {
				time.Sleep(rand.N(10 * time.Millisecond))
				_, err := client.Obtain(t.Context(), "lock", time.Minute, nil)
				switch {
				case errors.Is(err, redislock.ErrNotObtained):
				case err != nil:
					t.Error(err)
				default:
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		assert.Equal(t, int32(1), wins.Load())
	})
}

// One Options value with a LimitRetry is shared by calls, sequential and
// concurrent: each call gets the full budget (the seed's LimitRetry was used
// up by the first call).
func TestObtain_retryStrategyIsATemplate(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		_, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)

		opt := &redislock.Options{RetryStrategy: redislock.LimitRetry(redislock.ExponentialBackoff(time.Millisecond, 2*time.Millisecond), 3)}
		obs := &counter{}
		client := redislock.New(b.client, redislock.WithObserver(obs))
		for range 3 {
			_, err := client.Obtain(t.Context(), "lock", time.Hour, opt)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
			require.Equal(t, 4+queueRoundTrip, obs.last.Load().Attempts)
		}
		var wg sync.WaitGroup
		var attempts atomic.Int64
		for range 8 {
			wg.Go(func() {
				ev := &counter{}
				_, err := redislock.New(b.client, redislock.WithObserver(ev)).Obtain(t.Context(), "lock", time.Hour, opt)
				assert.ErrorIs(t, err, redislock.ErrNotObtained)
				attempts.Add(int64(ev.last.Load().Attempts))
			})
		}
		wg.Wait()
		assert.Equal(t, int64(8*(4+queueRoundTrip)), attempts.Load())
	})
}

func TestObtainMulti(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock12, err := redislock.ObtainMulti(t.Context(), b.client, []string{"k1", "k2"}, time.Hour, nil)
		require.NoError(t, err)
		assert.Equal(t, []string{"k1", "k2"}, lock12.Keys())
		assert.Equal(t, "k1", lock12.Key())

		keys := []string{"k3", "k4"}
		lock34, err := redislock.ObtainMulti(t.Context(), b.client, keys, time.Hour, nil)
		require.NoError(t, err)
		keys[0] = "changed"
		assert.Equal(t, []string{"k3", "k4"}, lock34.Keys(), "the lock keeps its own keys")

		// All or nothing: k5 is free but k2 is held, so k5 stays free.
		_, err = redislock.ObtainMulti(t.Context(), b.client, []string{"k5", "k2"}, time.Hour, nil)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		assert.Equal(t, "(nil)", b.mustDo(t, "GET", "k5"))

		require.NoError(t, lock12.Release(t.Context()))
		lock25, err := redislock.ObtainMulti(t.Context(), b.client, []string{"k2", "k5"}, time.Hour, nil)
		require.NoError(t, err)
		assertTTL(t, lock25, time.Hour)

		// Lose one key of lock34: the whole lock is lost.
		b.mustDo(t, "DEL", "k4")
		require.ErrorIs(t, lock34.Refresh(t.Context(), time.Minute, nil), redislock.ErrNotObtained)
		require.ErrorIs(t, lock34.Release(t.Context()), redislock.ErrLockNotHeld)
		assert.NotEqual(t, "(nil)", b.mustDo(t, "GET", "k3"), "a failed release deletes nothing")
		ttl, err := lock34.TTL(t.Context())
		require.NoError(t, err)
		assert.Zero(t, ttl)

		require.NoError(t, lock25.Release(t.Context()))
	})
}

func TestLock_Refresh(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)
		assertTTL(t, lock, time.Hour)
		require.NoError(t, lock.Refresh(t.Context(), time.Minute, nil))
		assertTTL(t, lock, time.Minute)
		require.NoError(t, lock.Refresh(t.Context(), 2*time.Minute, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(20*time.Millisecond), 3),
		}))
		assertTTL(t, lock, 2*time.Minute)
	})
}

func TestLock_Refresh_expired(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		obs := &counter{}
		lock, err := redislock.New(b.client, redislock.WithObserver(obs)).Obtain(t.Context(), "lock", 20*time.Millisecond, nil)
		require.NoError(t, err)
		b.expire(30 * time.Millisecond)

		// A lost lock is terminal: no retry after the 100ms backoffs.
		err = lock.Refresh(t.Context(), time.Hour, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(100*time.Millisecond), 2),
		})
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		ev := obs.last.Load()
		assert.Equal(t, redislock.OpRefresh, ev.Op)
		assert.Equal(t, 1, ev.Attempts, "a lost lock is retried")
		assert.Equal(t, redislock.OutcomeLost, ev.Outcome)
		assert.Equal(t, 0, b.dbsize(t))
	})
}

func TestLock_Refresh_retryTransientError(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		fl := &flaky{Client: b.client, names: []string{"EVALSHA", "EVAL"}}
		lock, err := redislock.Obtain(t.Context(), fl, "lock", time.Hour, nil)
		require.NoError(t, err)

		fl.fails.Store(2)
		require.NoError(t, lock.Refresh(t.Context(), time.Minute, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(5*time.Millisecond), 5),
		}))
		assert.Zero(t, fl.fails.Load())
		assertTTL(t, lock, time.Minute)

		// Past the retry limit the transport error is returned, not ErrNotObtained.
		fl.fails.Store(10)
		err = lock.Refresh(t.Context(), time.Minute, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(5*time.Millisecond), 2),
		})
		require.ErrorIs(t, err, errInjected)
		require.NotErrorIs(t, err, redislock.ErrNotObtained)
		assert.Contains(t, err.Error(), `refresh "lock"`)
	})
}

func TestLock_Release_expired(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", 20*time.Millisecond, nil)
		require.NoError(t, err)
		b.expire(30 * time.Millisecond)
		require.ErrorIs(t, lock.Release(t.Context()), redislock.ErrLockNotHeld)
		ttl, err := lock.TTL(t.Context())
		require.NoError(t, err)
		assert.Zero(t, ttl)
	})
}

func TestLock_Release_notOwn(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)
		b.mustDo(t, "SET", "lock", "ABCD")
		require.ErrorIs(t, lock.Release(t.Context()), redislock.ErrLockNotHeld)
		assert.Equal(t, "ABCD", b.mustDo(t, "GET", "lock"), "another holder's key is left alone")
	})
}

func TestLock_Release_canceledContext(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		require.NoError(t, lock.Release(ctx), "a cancelled request still releases its lock")
		assert.Equal(t, 0, b.dbsize(t))
	})
}

func TestLock_nil(t *testing.T) {
	var lock *redislock.Lock
	assert.Empty(t, lock.Key())
	assert.Nil(t, lock.Keys())
	assert.Empty(t, lock.Token())
	assert.Empty(t, lock.Metadata())
	assert.Zero(t, lock.FenceToken())
	_, err := lock.TTL(t.Context())
	require.ErrorIs(t, err, redislock.ErrLockNotHeld)
	require.ErrorIs(t, lock.Refresh(t.Context(), time.Minute, nil), redislock.ErrNotObtained)
	require.ErrorIs(t, lock.Release(t.Context()), redislock.ErrLockNotHeld)
}

func TestFencing(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opt := &redislock.Options{FenceKey: "fence"}
		var last int64
		for range 5 {
			lock, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, opt)
			require.NoError(t, err)
			require.Greater(t, lock.FenceToken(), last)
			last = lock.FenceToken()
			require.NoError(t, lock.Release(t.Context()))
		}
		assert.Equal(t, "5", b.mustDo(t, "GET", "fence"))

		// A re-obtain with the same token keeps its fence token and TTL
		// moves; the counter does not move.
		held, err := redislock.Obtain(t.Context(), b.client, "lock", time.Hour, &redislock.Options{FenceKey: "fence", Token: "me", Metadata: "m1"})
		require.NoError(t, err)
		again, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, &redislock.Options{FenceKey: "fence", Token: "me", Metadata: "m2"})
		require.NoError(t, err)
		assert.Equal(t, held.FenceToken(), again.FenceToken())
		assert.Equal(t, "6", b.mustDo(t, "GET", "fence"))
		assertTTL(t, again, time.Minute)

		// Not obtained: the counter does not move.
		_, err = redislock.Obtain(t.Context(), b.client, "lock", time.Hour, opt)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		assert.Equal(t, "6", b.mustDo(t, "GET", "fence"))
		require.NoError(t, again.Release(t.Context()))

		// ObtainMulti with a fence key; without one, FenceToken is 0.
		multi, err := redislock.ObtainMulti(t.Context(), b.client, []string{"a", "b"}, time.Hour, opt)
		require.NoError(t, err)
		assert.Equal(t, int64(7), multi.FenceToken())
		require.NoError(t, multi.Release(t.Context()))
		plain, err := redislock.ObtainMulti(t.Context(), b.client, []string{"a", "b"}, time.Hour, &redislock.Options{Metadata: "x"})
		require.NoError(t, err)
		assert.Zero(t, plain.FenceToken())
		require.NoError(t, plain.Release(t.Context()))
		assert.Equal(t, 1, b.dbsize(t), "only the fence counter stays")
	})
}

// An ObtainMulti with a custom token that already holds some of the keys,
// the others free, takes them all (what makes a retry with the same token
// idempotent); a key held by another token still refuses it, and then
// nothing is written.
func TestObtainMulti_customTokenHoldsSome(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		opt := &redislock.Options{Token: "mine"}
		_, err := redislock.Obtain(t.Context(), b.client, "k1", time.Minute, opt)
		require.NoError(t, err)
		lock, err := redislock.ObtainMulti(t.Context(), b.client, []string{"k1", "k2", "k3"}, time.Hour, opt)
		require.NoError(t, err)
		assertTTL(t, lock, time.Hour)
		require.NoError(t, lock.Release(t.Context()))

		_, err = redislock.Obtain(t.Context(), b.client, "k1", time.Minute, opt)
		require.NoError(t, err)
		_, err = redislock.Obtain(t.Context(), b.client, "k3", time.Minute, nil)
		require.NoError(t, err)
		_, err = redislock.ObtainMulti(t.Context(), b.client, []string{"k1", "k2", "k3"}, time.Hour, opt)
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		assert.Equal(t, "(nil)", b.mustDo(t, "GET", "k2"), "nothing is written")
	})
}
