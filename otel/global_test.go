package redislockotel_test

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel"

	"github.com/seed-223c80a0/redislock"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

// globalChildEnv marks the child process of TestGlobalProviders.
const globalChildEnv = "REDISLOCKOTEL_GLOBAL_CHILD"

// TestGlobalProviders checks the default, the global providers: unset, an
// Observer starts no span; once they are set, an Observer made before
// records through them, and an operation that began before they were set
// leaves the caller's span alone. The global providers belong to the
// process, so the check runs in a child process of its own, and the other
// tests of this package keep them unset.
func TestGlobalProviders(t *testing.T) {
	if os.Getenv(globalChildEnv) != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestGlobalProviders$", "-test.v", "-test.count=1")
		cmd.Env = append(os.Environ(), globalChildEnv+"=1")
		out, err := cmd.CombinedOutput()
		require.NoError(t, err, "child process:\n%s", out)
		require.Contains(t, string(out), "--- PASS: TestGlobalProviders", "child process:\n%s", out)
		return
	}

	client, _ := backends[0].start(t)
	tm := newTelemetry(t)
	ctx := context.Background()
	before := redislockotel.NewObserver()
	locker := redislock.New(client, redislock.WithObserver(before))

	// Unset: Begin returns the caller's ctx, and End leaves the caller's
	// span alone even when the providers are set in between.
	callerCtx, caller := tm.tp.Tracer("test").Start(ctx, "caller")
	ev := &redislock.Event{Op: redislock.OpObtain, Keys: []string{"k"}, TTL: time.Second, Start: time.Now()}
	require.Equal(t, callerCtx, before.Begin(callerCtx, ev))
	lock, err := locker.Obtain(ctx, "before", time.Second, nil)
	require.NoError(t, err)

	otel.SetTracerProvider(tm.tp)
	otel.SetMeterProvider(tm.mp)

	before.End(callerCtx, ev)
	assert.True(t, caller.IsRecording(), "End of an operation begun before the set leaves the caller's span open")
	caller.End()

	require.NoError(t, lock.Release(ctx))
	lock, err = locker.Obtain(ctx, "after", time.Second, nil)
	require.NoError(t, err)
	require.NoError(t, lock.Release(ctx))
	_, err = redislock.New(client, redislockotel.Instrument()).Obtain(ctx, "made after", time.Second, nil)
	require.NoError(t, err)

	assert.Equal(t, []string{"redislock.release", "redislock.obtain", "redislock.release", "redislock.obtain"},
		spanNames(tm.lockSpans()))
	obtains := sums(t, tm.collect(t)["redislock.obtains"])
	assert.Equal(t, map[string]int64{"db.operation.name=obtain,redislock.outcome=obtained": 3}, obtains,
		"counted once the providers are set: the hand-made End and the two obtains after; not the one before")
}
