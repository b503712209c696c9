package safety_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario 2: a holder paused past its TTL (a GC pause, a stopped VM: here
// its goroutine sleeps). Meanwhile another client takes the lock and
// writes. When the first wakes up, its Refresh returns ErrNotObtained, its
// Release ErrLockNotHeld, the new holder's key is untouched, and its late
// fenced write is rejected; the checkers find the history clean.
func TestPausedHolder(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	cs := clients(t, 2, srv.Addr, rec)
	const ttl = 500 * time.Millisecond
	opt := &redislock.Options{FenceKey: safety.FenceKey("job"), RetryStrategy: redislock.LinearBackoff(5 * time.Millisecond)}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()

	first, err := cs[0].Obtain(ctx, "job", ttl, opt)
	require.NoError(t, err)

	// The first holder pauses; the second waits for the lock and gets it
	// once the TTL has passed.
	start := time.Now()
	second, err := cs[1].Obtain(ctx, "job", ttl, opt)
	require.NoError(t, err)
	waited := time.Since(start)
	require.GreaterOrEqual(t, waited, ttl-10*time.Millisecond, "taken before the TTL passed")
	require.Greater(t, second.Lock.FenceToken(), first.Lock.FenceToken())
	require.True(t, second.Write(res), "the new holder's write")
	value := srv.MustDo(t, "GET", "job")

	// The first holder wakes up, past its TTL.
	require.False(t, first.Valid())
	require.ErrorIs(t, first.Refresh(ctx), redislock.ErrNotObtained)
	outcome, err := first.ReleaseOnce(ctx)
	require.ErrorIs(t, err, redislock.ErrLockNotHeld)
	require.Equal(t, safety.Refused, outcome)
	require.Equal(t, value, srv.MustDo(t, "GET", "job"), "the new holder's key was touched")
	left, err := second.Lock.TTL(ctx)
	require.NoError(t, err)
	require.Positive(t, left)
	require.False(t, first.Write(res), "the paused holder's late write must be rejected")

	require.NoError(t, second.Release(ctx))
	requireSafe(t, rec, res, true)
	rep := res.Check()
	require.Equal(t, 1, rep.Stale, "the late write is counted as stale, not as a violation")
	t.Logf("second holder waited %v for the lock (TTL %v); fence tokens %d then %d; %v",
		waited.Round(time.Millisecond), ttl, first.Lock.FenceToken(), second.Lock.FenceToken(), rep)
}
