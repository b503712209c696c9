package safety_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// lockKeys returns the keys of srv that are not fence counters.
func lockKeys(t *testing.T, srv *safety.Server) []string {
	t.Helper()
	var keys []string
	for _, k := range strings.Fields(srv.MustDo(t, "KEYS", "*")) {
		if !strings.HasSuffix(k, ":fence") {
			keys = append(keys, k)
		}
	}
	return keys
}

// Scenario 9: no leaks after thousands of cycles (3,000; 1,000 with -short)
// by 8 clients: obtain and release; obtains cancelled in flight (a lock the
// server granted must be cleaned up by the library, since its TTL is a
// minute); locks lost to their TTL before their release. Afterwards no
// lock key remains, and no goroutine (goleak; TestMain checks the whole
// package too).
//
// With rueidis' default of 2 connections a server on this machine, the
// cleanup of an obtain cancelled in flight can reach the server before the
// obtain it undoes (bug 3), and the lock lives out its TTL; with one
// connection a client, commands keep their order and nothing is left.
func TestNoLeaks(t *testing.T) {
	t.Run("one connection a client", func(t *testing.T) { noLeaks(t, oneConnection) })
	t.Run("rueidis default", func(t *testing.T) { noLeaks(t) })
}

func noLeaks(t *testing.T, clientOpts ...func(*rueidis.ClientOption)) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	ignore := goleak.IgnoreCurrent() // the server's process waiter stays

	total := 3000
	if testing.Short() {
		total = 1000
	}
	var counts [3]atomic.Int64 // released, cancelled, lost
	t.Run("cycles", func(t *testing.T) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for i := range 8 {
			locker := redislock.New(srv.Client(t, clientOpts...))
			wg.Go(func() {
				rng := rand.New(rand.NewPCG(uint64(i), 42))
				for next.Add(1) <= int64(total) {
					key := []string{"a", "b", "c", "d"}[rng.IntN(4)]
					opt := &redislock.Options{FenceKey: safety.FenceKey(key), RetryStrategy: redislock.LinearBackoff(time.Millisecond)}
					switch rng.IntN(3) {
					case 0: // obtain, release
						ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
						lock, err := locker.Obtain(ctx, key, time.Minute, opt)
						if err == nil {
							err = lock.Release(ctx)
						}
						cancel()
						require.NoError(t, err)
						counts[0].Add(1)
					case 1: // an obtain cancelled in flight
						ctx, cancel := context.WithCancel(t.Context())
						time.AfterFunc(time.Duration(rng.IntN(300))*time.Microsecond, cancel)
						lock, err := locker.Obtain(ctx, key, time.Minute, opt)
						cancel()
						if err == nil {
							require.NoError(t, lock.Release(t.Context()))
						} else {
							require.ErrorIs(t, err, context.Canceled)
						}
						counts[1].Add(1)
					case 2: // a lock lost to its TTL
						ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
						lock, err := locker.Obtain(ctx, key, 5*time.Millisecond, opt)
						cancel()
						if err != nil {
							continue
						}
						time.Sleep(8 * time.Millisecond)
						require.ErrorIs(t, lock.Release(t.Context()), redislock.ErrLockNotHeld)
						counts[2].Add(1)
					}
				}
			})
		}
		wg.Wait()
		done := time.Now()
		// The cleanups of cancelled obtains run in the background, each
		// within the release timeout.
		deadline := time.Now().Add(redislock.DefaultReleaseTimeout + time.Second)
		for len(lockKeys(t, srv)) > 0 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		left := lockKeys(t, srv)
		for _, k := range left {
			t.Errorf("lock key %q left, TTL %sms", k, srv.MustDo(t, "PTTL", k))
		}
		// Let every cleanup end before the clients close: a rueidis client
		// closed while a command of it is dialing a connection may leave
		// that connection's goroutines behind.
		time.Sleep(time.Until(done.Add(redislock.DefaultReleaseTimeout + 200*time.Millisecond)))
		t.Logf("%d cycles: %d released, %d obtains cancelled in flight, %d locks lost to their TTL; lock keys left: %d",
			total, counts[0].Load(), counts[1].Load(), counts[2].Load(), len(left))
	})
	// The clients of the subtest are closed: nothing of them may be left
	// once the last cleanup has seen that (a cleanup sleeps 500ms at most
	// between attempts, and lives for the release timeout at most).
	if err := findLeaks(ignore); err != nil {
		t.Error(err)
	}
}
