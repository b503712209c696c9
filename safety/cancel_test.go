package safety_test

import (
	"context"
	"errors"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// commandCalls returns INFO commandstats without the INFO command itself
// (which the reading adds) as name -> calls.
func commandCalls(t *testing.T, srv *safety.Server) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, m := range regexp.MustCompile(`cmdstat_([^:]+):calls=(\d+)`).FindAllStringSubmatch(srv.MustDo(t, "INFO", "commandstats"), -1) {
		if m[1] != "info" {
			out[m[1]] = m[2]
		}
	}
	return out
}

// Scenario 8: Obtain (and ObtainMulti, Refresh) with an already cancelled
// ctx send nothing: the server's command statistics do not move.
func TestCancelledContext_sendsNothing(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	client := srv.Client(t)
	locker := redislock.New(client)
	lock, err := locker.Obtain(t.Context(), "held", time.Minute, nil)
	require.NoError(t, err)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	before := commandCalls(t, srv)
	for _, opt := range []*redislock.Options{nil, {FenceKey: "fence"}, {Token: "custom", RetryStrategy: redislock.LinearBackoff(time.Millisecond)}} {
		_, err := locker.Obtain(ctx, "k", time.Minute, opt)
		require.ErrorIs(t, err, context.Canceled)
		require.NotErrorIs(t, err, redislock.ErrNotObtained)
	}
	_, err = locker.ObtainMulti(ctx, []string{"k1", "k2"}, time.Minute, nil)
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, lock.Refresh(ctx, time.Minute, nil), context.Canceled)
	time.Sleep(50 * time.Millisecond) // anything sent would have arrived
	require.Equal(t, before, commandCalls(t, srv), "a call with a cancelled ctx sent a command")
	require.Equal(t, "0", srv.MustDo(t, "EXISTS", "k"))
}

// Scenario 8: Release with a cancelled ctx still releases the lock,
// detached from the cancellation, and is bounded by the client's release
// timeout (WithReleaseTimeout; 2s by default) when the server does not
// answer.
func TestCancelledContext_releaseStillReleases(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	ctx, cancel := context.WithCancel(t.Context())
	cancel()

	t.Run("released", func(t *testing.T) {
		locker := redislock.New(srv.Client(t))
		lock, err := locker.Obtain(t.Context(), "k", time.Minute, &redislock.Options{FenceKey: "fence"})
		require.NoError(t, err)
		require.NoError(t, lock.Release(ctx))
		require.Equal(t, "0", srv.MustDo(t, "EXISTS", "k"))
		require.ErrorIs(t, lock.Release(ctx), redislock.ErrLockNotHeld)
	})

	for _, tc := range []struct {
		name  string
		opts  []redislock.ClientOption
		bound time.Duration
	}{
		{"WithReleaseTimeout(300ms)", []redislock.ClientOption{redislock.WithReleaseTimeout(300 * time.Millisecond)}, 300 * time.Millisecond},
		{"default", nil, redislock.DefaultReleaseTimeout},
	} {
		t.Run("bounded, "+tc.name, func(t *testing.T) {
			locker := redislock.New(srv.Client(t), tc.opts...)
			lock, err := locker.Obtain(t.Context(), tc.name, time.Minute, nil)
			require.NoError(t, err)
			srv.Pause(t)
			start := time.Now()
			err = lock.Release(ctx)
			took := time.Since(start)
			srv.Resume(t)
			t.Logf("Release with a cancelled ctx on a stopped server returned after %v (release timeout %v): %v", took.Round(time.Millisecond), tc.bound, err)
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.GreaterOrEqual(t, took, tc.bound-5*time.Millisecond, "the release gave up before its timeout")
			requireReturnedBy(t, start, took, tc.bound, "the release outlived its timeout")
			// The outcome is unknown (the command may wait behind a
			// connection's handshake): releasing again says which.
			err = lock.Release(t.Context())
			require.True(t, err == nil || errors.Is(err, redislock.ErrLockNotHeld), "%v", err)
			require.Equal(t, "0", srv.MustDo(t, "EXISTS", tc.name))
		})
	}
}
