package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// watchTTL is the TTL of the watched locks: each refresh attempt may take
// a third of it, which a loaded machine keeps (with a TTL of 300ms, a
// refresh now and then found no reply within its 100ms, and the lock's
// validity ended).
const watchTTL = 1500 * time.Millisecond

// requireStopped calls stop, which returns once the watchdog's goroutine
// has ended, and fails t if that takes more than 5s.
func requireStopped(t *testing.T, stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		stop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
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

// refreshLog is an Observer that keeps the start and the outcome of each
// Refresh of its Client, the watchdog's included.
type refreshLog struct {
	mu        sync.Mutex
	refreshes []refreshed
}

type refreshed struct {
	start   time.Time
	outcome redislock.Outcome
}

func (r *refreshLog) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (r *refreshLog) End(_ context.Context, ev *redislock.Event) {
	if ev.Op == redislock.OpRefresh {
		r.mu.Lock()
		r.refreshes = append(r.refreshes, refreshed{ev.Start, ev.Outcome})
		r.mu.Unlock()
	}
}

// since returns the refreshes that started after t.
func (r *refreshLog) since(t time.Time) []refreshed {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []refreshed
	for _, e := range r.refreshes {
		if e.start.After(t) {
			out = append(out, e)
		}
	}
	return out
}

// lastOK returns the start of the last successful refresh.
func (r *refreshLog) lastOK() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	var last time.Time
	for _, e := range r.refreshes {
		if e.outcome == redislock.OutcomeOK && e.start.After(last) {
			last = e.start
		}
	}
	return last
}

// watchedObtain obtains key for ttl through a Client of its own whose
// refreshes the returned log keeps.
func watchedObtain(t *testing.T, client rueidis.Client, key string, ttl time.Duration) (*redislock.Lock, *refreshLog) {
	t.Helper()
	log := &refreshLog{}
	lock, err := redislock.New(client, redislock.WithObserver(log)).Obtain(t.Context(), key, ttl, nil)
	require.NoError(t, err)
	return lock, log
}

// requireCancelledByLoss checks that work was cancelled by the first
// refresh that ran after the loss (lost: when the loss was complete): a
// refresh in flight at the loss, or the next one. None started after the
// loss found the lock held, and no other followed.
func requireCancelledByLoss(t *testing.T, work context.Context, log *refreshLog, lost time.Time) {
	t.Helper()
	require.ErrorIs(t, context.Cause(work), redislock.ErrLockNotHeld)
	after := log.since(lost)
	require.LessOrEqual(t, len(after), 1, "refreshes after the loss: %v", after)
	for _, r := range after {
		require.Equal(t, redislock.OutcomeLost, r.outcome, "a refresh after the loss")
	}
}

// A watched lock stays held well past its TTL, refreshed before each TTL
// ends; stop ends the refreshes and the goroutine, cancels the ctx, and
// leaves the lock to Release.
//
// A refresh that gets no reply within a third of the TTL cancels the
// watch, and it should: so does a pause of the test process itself that
// long (a machine loaded far beyond its cores paused it 1.5s once). Such
// a try is logged and made again, on a new key, up to three times.
func TestLock_Watch(t *testing.T) {
	b := realBackend(t)
	pauses := redistest.WatchPauses(t)
	for try := 1; !watchOnce(t, b, pauses, "watched:"+strconv.Itoa(try)); try++ {
		require.Less(t, try, 3, "the process was paused for a third of the TTL in each try")
	}
}

// cancelledByPause reports whether work, a watch of a lock with ttl that
// began at from, was cancelled while the test process was paused for a
// third of the TTL or more since (the time a refresh may take): a watch
// must then cancel. It fails t when work was cancelled without such a
// pause.
func cancelledByPause(t *testing.T, pauses *redistest.PauseWatch, from time.Time, work context.Context, ttl time.Duration) bool {
	t.Helper()
	if work.Err() == nil {
		return false
	}
	paused := pauses.Paused(from, time.Now())
	require.GreaterOrEqual(t, paused, ttl/3, "cancelled while the lock is held: %v (the process paused %v)", context.Cause(work), paused)
	t.Logf("cancelled while the process was paused %v: %v", paused, context.Cause(work))
	return true
}

// watchOnce is TestLock_Watch on key; it reports false, having asserted
// only that, when the watch was cancelled while the process was paused
// for a third of the TTL or more.
func watchOnce(t *testing.T, b backend, pauses *redistest.PauseWatch, key string) bool {
	const ttl = watchTTL
	lock, log := watchedObtain(t, b.client, key, ttl)
	obtained := time.Now()
	work, stop := lock.Watch(t.Context(), ttl)

	time.Sleep(time.Until(obtained.Add(2 * ttl)))
	if cancelledByPause(t, pauses, obtained, work, ttl) {
		stop()
		_ = lock.Release(t.Context())
		return false
	}
	left, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Positive(t, left, "held two TTLs after it was obtained")
	// Held at 2 TTLs: refreshed after the first TTL began and before each
	// TTL ended, at least twice.
	require.GreaterOrEqual(t, len(log.since(obtained)), 2, "refreshes")

	requireStopped(t, stop)
	require.ErrorIs(t, work.Err(), context.Canceled)
	require.ErrorIs(t, context.Cause(work), context.Canceled)
	stop() // idempotent

	// Stopped: no more refreshes (for longer than their period), and the
	// lock is still held until Release.
	stopped := time.Now()
	time.Sleep(ttl / 2)
	assert.Empty(t, log.since(stopped), "refreshed after stop")
	left2, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Less(t, left2, left)
	require.NoError(t, lock.Release(t.Context()))
	return true
}

// Loss by expiry (a rogue PEXPIRE, as a clock jump would do) and by theft
// (a rogue DEL; another token taking the key): the ctx is cancelled with
// ErrLockNotHeld at the next refresh (ttl/3 and a round trip later at most).
func TestLock_Watch_lost(t *testing.T) {
	const ttl = watchTTL
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
				lock, log := watchedObtain(t, b.client, "k", ttl)
				work, stop := lock.Watch(t.Context(), ttl)
				defer stop()
				tc.lose(t, b, "k")
				lost := time.Now()
				cancelled := waitCancelled(t, work, 5*ttl)
				t.Logf("%s on %s: cancelled %v after the loss (TTL %v, refresh every %v): %v",
					tc.name, b.name, cancelled.Sub(lost).Round(time.Millisecond), ttl, ttl/3, context.Cause(work))
				requireCancelledByLoss(t, work, log, lost)
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
// refresh plus the TTL), with the last refresh error as the cause, while
// the server is still stalled: the watchdog does not wait for the reply of
// a refresh in flight.
func TestLock_Watch_stalledServer(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	const ttl = watchTTL
	lock, log := watchedObtain(t, client, "k", ttl)
	work, stop := lock.Watch(t.Context(), ttl)
	defer stop()
	time.Sleep(ttl / 2)

	srv.Pause(t)
	paused := time.Now()
	cancelled := waitCancelled(t, work, 5*ttl)
	srv.Resume(t)
	validUntil := log.lastOK().Add(ttl)
	cause := context.Cause(work)
	t.Logf("stalled server: cancelled %v after the stall began, %v after the known validity ended (TTL %v, refresh every %v): %v",
		cancelled.Sub(paused).Round(time.Millisecond), cancelled.Sub(validUntil).Round(time.Millisecond), ttl, ttl/3, cause)
	require.ErrorIs(t, cause, context.DeadlineExceeded)
	require.NotErrorIs(t, cause, redislock.ErrLockNotHeld, "the watchdog cannot know the lock is lost, only that it may be")
	// The watchdog times its validity from just before the refresh began
	// (the Observer's start a few microseconds later).
	require.False(t, cancelled.Before(validUntil.Add(-10*time.Millisecond)),
		"cancelled %v before the known validity ended", validUntil.Sub(cancelled))
	requireStopped(t, stop)
}

// Measures the time from loss to cancellation over several losses all
// along the refresh cycle; reported, and each cancelled by the first
// refresh after the loss.
func TestLock_Watch_timeToCancel(t *testing.T) {
	b := realBackend(t)
	const ttl = watchTTL
	var worst, sum time.Duration
	const n = 5
	for i := range n {
		lock, log := watchedObtain(t, b.client, "k", ttl)
		work, stop := lock.Watch(t.Context(), ttl)
		time.Sleep(time.Duration(i) * ttl / (3 * n)) // all along the refresh cycle
		b.mustDo(t, "DEL", "k")
		lost := time.Now()
		took := waitCancelled(t, work, 5*ttl).Sub(lost)
		requireCancelledByLoss(t, work, log, lost)
		stop()
		worst, sum = max(worst, took), sum+took
	}
	t.Logf("loss to cancellation over %d thefts: mean %v, worst %v (TTL %v, refresh every %v)",
		n, (sum / n).Round(time.Millisecond), worst.Round(time.Millisecond), ttl, ttl/3)
}

// The parent ctx ends the watch: cancelled with its cause, goroutine gone,
// lock still held.
func TestLock_Watch_parentDone(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		lock, err := redislock.Obtain(t.Context(), b.client, "k", watchTTL, nil)
		require.NoError(t, err)
		parent, cancel := context.WithCancelCause(t.Context())
		work, stop := lock.Watch(parent, watchTTL)
		defer stop()
		errDone := errors.New("request done")
		cancel(errDone)
		waitCancelled(t, work, 5*time.Second)
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
		work, stop := lock.Watch(t.Context(), watchTTL)
		require.ErrorIs(t, context.Cause(work), redislock.ErrLockNotHeld)
		stop()

		b.mustDo(t, "SET", "str", "x")
		lock, err = redislock.Obtain(t.Context(), b.client, "h", time.Second, nil)
		require.NoError(t, err)
		b.mustDo(t, "DEL", "h")
		b.mustDo(t, "HSET", "h", "f", "v") // the refresh script's GET gets WRONGTYPE
		work, stop = lock.Watch(t.Context(), watchTTL)
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
