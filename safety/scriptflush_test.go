package safety_test

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario 7: SCRIPT FLUSH every 100ms during 10,000 operations (obtain
// with a fence key, refresh, release; 8 clients): no NOSCRIPT reaches a
// caller, no call fails, and the checkers find nothing.
func TestScriptFlush(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	w := &safety.Workload{
		Clients:      clients(t, 8, srv.Addr, rec),
		Keys:         []string{"a", "b", "c", "d"},
		Acquisitions: 3400, // obtain, refresh, release: 3 operations each
		TTL:          time.Second,
		Hold:         func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) * time.Microsecond },
		RefreshOneIn: 1,
		Resource:     res,
	}
	flusher := srv.Client(t)
	ctx, stop := context.WithCancel(t.Context())
	flushes := 0
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				require.NoError(t, flusher.Do(ctx, flusher.B().ScriptFlush().Build()).Error())
				flushes++
			}
		}
	})
	start := time.Now()
	n := w.Run(t.Context())
	stop()
	wg.Wait()
	ops := rec.Ops()
	t.Logf("%d acquisitions, %d operations in %v, %d SCRIPT FLUSH", n, len(ops), time.Since(start).Round(time.Millisecond), flushes)
	require.GreaterOrEqual(t, len(ops), 10000)
	require.Positive(t, flushes)
	for _, op := range ops {
		if op.Err != nil && strings.Contains(op.Err.Error(), "NOSCRIPT") {
			t.Fatalf("NOSCRIPT reached a caller: %v: %v", op, op.Err)
		}
		require.Contains(t, []safety.Outcome{safety.OK, safety.Refused}, op.Outcome, "%v: %v", op, op.Err)
	}
	requireSafe(t, rec, res, true)
}
