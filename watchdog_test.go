package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// requireStopped calls stop, which returns once the watchdog's goroutine
// has ended, and fails t if that takes more than a second.
func requireStopped(t *testing.T, stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("the watchdog's goroutine did not end")
	}
}

// waitCancelled waits for work to be done, at most limit, and returns when.
func waitCancelled(t *testing.T, work context.Context, limit time.Duration) time.Time {
	t.Helper()
	select {
	case <-work.Done():
		return time.Now()
	case <-time.After(limit):
		t.Fatalf("the watch ctx was not cancelled within %v", limit)
		return time.Time{}
	}
}

// A watched lock stays held well past its TTL; stop ends the refreshes and
// the goroutine, cancels the ctx, and leaves the lock to Release.
func TestLock_Watch(t *testing.T) {
	b := realBackend(t)
	const ttl = 150 * time.Millisecond
	lock, err := redislock.Obtain(t.Context(), b.client, "watched", ttl, nil)
	require.NoError(t, err)
	work, stop := lock.Watch(t.Context(), ttl)

	time.Sleep(4 * ttl)
	require.NoError(t, work.Err(), "cancelled while the lock is held: %v", context.Cause(work))
	left, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Greater(t, left, ttl/3, "refreshed at a third of the TTL")

	requireStopped(t, stop)
	require.ErrorIs(t, work.Err(), context.Canceled)
	require.ErrorIs(t, context.Cause(work), context.Canceled)
	stop() // idempotent

	// Stopped: no more refreshes, and the lock is still held until Release.
	time.Sleep(ttl / 2)
	left2, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Less(t, left2, left)
	require.NoError(t, lock.Release(t.Context()))
}

// Loss by expiry (a rogue PEXPIRE, as a clock jump would do) and by theft
// (a rogue DEL; another token taking the key): the ctx is cancelled with
// ErrLockNotHeld at the next refresh, within ttl/3 and a round trip.
func TestLock_Watch_lost(t *testing.T) {
	const ttl = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, b backend, key string)
	}{
		{"expired", func(t *testing.T, b backend, key string) {
			b.mustDo(t, "PEXPIRE", key, "1")
			b.expire(2 * time.Millisecond)
		}},
		{"deleted", func(t *testing.T, b backend, key string) { b.mustDo(t, "DEL", key) }},
		{"taken by another token", func(t *testing.T, b backend, key string) {
			b.mustDo(t, "SET", key, "thief", "PX", "60000")
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forEachBackend(t, func(t *testing.T, b backend) {
				lock, err := redislock.Obtain(t.Context(), b.client, "k", ttl, nil)
				require.NoError(t, err)
				work, stop := lock.Watch(t.Context(), ttl)
				defer stop()
				time.Sleep(ttl / 2) // between two refreshes
				lost := time.Now()
				tc.lose(t, b, "k")
				cancelled := waitCancelled(t, work, ttl)
				took := cancelled.Sub(lost)
				cause := context.Cause(work)
				t.Logf("%s on %s: cancelled %v after the loss (TTL %v, refresh every %v): %v",
					tc.name, b.name, took.Round(time.Millisecond), ttl, ttl/3, cause)
				require.ErrorIs(t, cause, redislock.ErrLockNotHeld)
				require.Less(t, took, ttl/3+50*time.Millisecond)
				requireStopped(t, stop)
				if tc.name == "taken by another token" {
					require.Equal(t, "thief", b.mustDo(t, "GET", "k"), "the watchdog left the new holder alone")
				}
				require.ErrorIs(t, context.Cause(work), redislock.ErrLockNotHeld, "stop keeps the first cause")
			})
		})
	}
}

// A stalled server (SIGSTOP): no refresh answers, and the ctx is cancelled
// when the lock's known validity ends (the start of the last successful
// refresh plus the TTL), no later than the server can expire it, with the
// last refresh error as the cause.
func TestLock_Watch_stalledServer(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	const ttl = 300 * time.Millisecond
	lock, err := redislock.Obtain(t.Context(), client, "k", ttl, nil)
	require.NoError(t, err)
	work, stop := lock.Watch(t.Context(), ttl)
	defer stop()
	time.Sleep(ttl / 2)

	srv.Pause(t)
	paused := time.Now()
	cancelled := waitCancelled(t, work, 2*ttl)
	srv.Resume(t)
	took := cancelled.Sub(paused)
	cause := context.Cause(work)
	t.Logf("stalled server: cancelled %v after the stall began (TTL %v, refresh every %v; the last refresh started at most %v before the stall): %v",
		took.Round(time.Millisecond), ttl, ttl/3, ttl/3, cause)
	require.ErrorIs(t, cause, context.DeadlineExceeded)
	require.NotErrorIs(t, cause, redislock.ErrLockNotHeld, "the watchdog cannot know the lock is lost, only that it may be")
	// The last successful refresh started at most ttl/3 before the stall,
	// so its validity ended between 2/3 TTL and one TTL after it.
	require.GreaterOrEqual(t, took, 2*ttl/3-10*time.Millisecond)
	require.Less(t, took, ttl+50*time.Millisecond)
	requireStopped(t, stop)
}

// Measures the time from loss to cancellation over several losses, and the
// time from the end of the known validity to the cancellation on a stalled
// server; reported, and held below a generous bound.
func TestLock_Watch_timeToCancel(t *testing.T) {
	b := realBackend(t)
	const ttl = 300 * time.Millisecond
	var worst, sum time.Duration
	const n = 5
	for i := range n {
		lock, err := redislock.Obtain(t.Context(), b.client, "k", ttl, nil)
		require.NoError(t, err)
		work, stop := lock.Watch(t.Context(), ttl)
		time.Sleep(time.Duration(i+1) * ttl / (n + 1)) // all along the refresh cycle
		lost := time.Now()
		b.mustDo(t, "DEL", "k")
		took := waitCancelled(t, work, ttl).Sub(lost)
		stop()
		worst, sum = max(worst, took), sum+took
	}
	t.Logf("loss to cancellation over %d thefts: mean %v, worst %v (TTL %v, refresh every %v)",
		n, (sum / n).Round(time.Millisecond), worst.Round(time.Millisecond), ttl, ttl/3)
	require.Less(t, worst, ttl)
}

// The parent ctx ends the watch: cancelled with its cause, goroutine gone,
// lock still held.
func TestLock_Watch_parentDone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "k", time.Second, nil)
		require.NoError(t, err)
		parent, cancel := context.WithCancelCause(t.Context())
		work, stop := lock.Watch(parent, time.Second)
		defer stop()
		errDone := errors.New("request done")
		cancel(errDone)
		waitCancelled(t, work, time.Second)
		require.ErrorIs(t, context.Cause(work), errDone)
		requireStopped(t, stop)
		require.Equal(t, "1", b.mustDo(t, "EXISTS", "k"))
	})
}

// At once: a nil lock, a bad TTL, a lock already lost, a refresh the server
// refuses (no goroutine is started).
func TestLock_Watch_fails(t *testing.T) {
	var nilLock *redislock.Lock
	work, stop := nilLock.Watch(t.Context(), time.Second)
	require.ErrorIs(t, context.Cause(work), redislock.ErrLockNotHeld)
	stop()

	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "k", time.Second, nil)
		require.NoError(t, err)
		for _, ttl := range []time.Duration{0, time.Microsecond, redislock.MaxTTL + 1} {
			work, stop := lock.Watch(t.Context(), ttl)
			require.ErrorIs(t, context.Cause(work), redislock.ErrInvalidTTL)
			stop()
		}

		require.NoError(t, lock.Release(t.Context()))
		work, stop := lock.Watch(t.Context(), time.Second)
		require.ErrorIs(t, context.Cause(work), redislock.ErrLockNotHeld)
		stop()

		b.mustDo(t, "SET", "str", "x")
		lock, err = redislock.Obtain(t.Context(), b.client, "h", time.Second, nil)
		require.NoError(t, err)
		b.mustDo(t, "DEL", "h")
		b.mustDo(t, "HSET", "h", "f", "v") // the refresh script's GET gets WRONGTYPE
		work, stop = lock.Watch(t.Context(), time.Second)
		var re *rueidis.RedisError
		require.ErrorAs(t, context.Cause(work), &re)
		requireStopped(t, stop)
	})
}

// Watch while doing work that needs the lock: the work ctx ends as soon as
// the lock may be lost, with the reason in context.Cause.
func ExampleLock_Watch() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()

	const ttl = 10 * time.Second
	lock, err := redislock.Obtain(context.Background(), client, "my-key", ttl, nil)
	if err != nil {
		log.Fatalln(err)
	}
	defer lock.Release(context.Background())

	// Refreshed every ttl/3 until stop; cancelled as soon as the lock is
	// lost or can no longer be known to be held.
	work, stop := lock.Watch(context.Background(), ttl)
	defer stop()

	select {
	case <-work.Done():
		if errors.Is(context.Cause(work), redislock.ErrLockNotHeld) {
			fmt.Println("lock lost")
		} else {
			fmt.Println("lock may be lost:", context.Cause(work))
		}
	case <-time.After(time.Minute): // the work
		fmt.Println("work done")
	}
}
