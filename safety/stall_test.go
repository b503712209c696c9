package safety_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario 6: the server stalls for 1s (SIGSTOP; DEBUG SLEEP 1) or pauses
// its writes (CLIENT PAUSE 1000 WRITE). Every call made meanwhile with a
// 200ms deadline returns by it (plus deadlineMargin); during a write pause
// TTL still answers (EVALSHA_RO); once the stall is over, no orphan lock of
// a timed-out obtain is left.
func TestServerStall(t *testing.T) {
	const (
		stall    = time.Second
		deadline = 200 * time.Millisecond
	)
	for _, tc := range []struct {
		name  string
		begin func(t *testing.T, srv *safety.Server) (end func())
		reads bool // TTL answers during the stall
	}{
		{"SIGSTOP", func(t *testing.T, srv *safety.Server) func() {
			srv.Pause(t)
			return func() {
				time.Sleep(stall)
				srv.Resume(t)
			}
		}, false},
		{"DEBUG SLEEP", func(t *testing.T, srv *safety.Server) func() {
			var wg sync.WaitGroup
			wg.Go(func() { _, _ = srv.Do("DEBUG", "SLEEP", fmt.Sprint(stall.Seconds())) })
			time.Sleep(50 * time.Millisecond) // let it start
			return wg.Wait
		}, false},
		{"CLIENT PAUSE WRITE", func(t *testing.T, srv *safety.Server) func() {
			srv.MustDo(t, "CLIENT", "PAUSE", fmt.Sprint(stall.Milliseconds()), "WRITE")
			return func() { time.Sleep(stall) }
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := safety.StartServer(t, safety.ServerOptions{Args: []string{"--enable-debug-command", "local"}})
			client := srv.Client(t)
			locker := redislock.New(client)
			opt := &redislock.Options{FenceKey: "fence"}
			held, err := locker.Obtain(t.Context(), "held", time.Minute, opt)
			require.NoError(t, err)
			// A client whose connections have no write waiting: Redis blocks
			// a whole connection at its first paused write, so a read behind
			// one waits too.
			readOnly, err := redislock.New(srv.Client(t)).Obtain(t.Context(), "read", time.Minute, nil)
			require.NoError(t, err)
			released, err := locker.Obtain(t.Context(), "released", time.Minute, opt)
			require.NoError(t, err)

			began := time.Now()
			end := tc.begin(t, srv)
			calls := map[string]func(ctx context.Context) error{
				"Obtain": func(ctx context.Context) error {
					_, err := locker.Obtain(ctx, "new", time.Minute, opt)
					return err
				},
				"Obtain (held, retrying)": func(ctx context.Context) error {
					_, err := locker.Obtain(ctx, "held", time.Minute, &redislock.Options{RetryStrategy: redislock.LinearBackoff(10 * time.Millisecond)})
					return err
				},
				"Refresh": func(ctx context.Context) error { return held.Refresh(ctx, time.Minute, nil) },
				"TTL": func(ctx context.Context) error {
					ttl, err := held.TTL(ctx)
					if err == nil && ttl <= 0 {
						return fmt.Errorf("TTL %v", ttl)
					}
					return err
				},
				"Release": func(ctx context.Context) error { return released.Release(ctx) },
				"TTL, no write waiting": func(ctx context.Context) error {
					ttl, err := readOnly.TTL(ctx)
					if err == nil && ttl <= 0 {
						return fmt.Errorf("TTL %v", ttl)
					}
					return err
				},
			}
			var mu sync.Mutex
			var wg sync.WaitGroup
			for name, call := range calls {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(t.Context(), deadline)
					defer cancel()
					start := time.Now()
					err := call(ctx)
					took := time.Since(start)
					mu.Lock()
					defer mu.Unlock()
					t.Logf("%s during %s: returned after %v: %v", name, tc.name, took.Round(time.Millisecond), err)
					assert := require.New(t)
					requireReturnedBy(t, start, took, deadline, "%s outlived its deadline", name)
					switch {
					case name == "TTL, no write waiting" && tc.reads:
						assert.NoError(err, "TTL must answer during a write pause")
					case name == "TTL" && tc.reads:
						// Behind a paused write on its connection: either.
					case name == "Obtain (held, retrying)":
						assert.ErrorIs(err, context.DeadlineExceeded)
					case name == "Obtain":
						// A random token's attempt in flight at the deadline
						// is the library's to settle (its orphan is checked
						// below): the caller is told "not obtained".
						assert.ErrorIs(err, redislock.ErrNotObtained)
						assert.ErrorIs(err, context.DeadlineExceeded)
					default:
						assert.Error(err)
						assert.NotErrorIs(err, redislock.ErrNotObtained, "a stall is no proof that the lock is held")
						assert.NotErrorIs(err, redislock.ErrLockNotHeld)
					}
				})
			}
			wg.Wait()
			end()
			t.Logf("%s lasted %v", tc.name, time.Since(began).Round(time.Millisecond))

			// Once the stall is over the timed-out obtain's lock is gone,
			// and the held lock still works.
			gone := waitGone(t, srv, "new", 3*time.Second)
			t.Logf("the timed-out obtain's orphan lock was gone %v after the stall", gone.Round(time.Millisecond))
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			retry := &redislock.Options{RetryStrategy: redislock.LinearBackoff(10 * time.Millisecond)}
			require.NoError(t, held.Refresh(ctx, time.Minute, retry))
			require.NoError(t, held.Release(ctx))
		})
	}
}
