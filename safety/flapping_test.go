package safety_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario 5: a flapping connection. For 10s (3s with -short), every 200ms
// the proxy between 8 clients and redis-server moves to its next state:
// healthy, resetting every connection as soon as a reply comes
// (reset_peer), healthy, stopped (refusing connections and closing the open
// ones). Both checkers stay clean, no call outlives its ctx deadline, and
// no unknown outcome is reported as ErrNotObtained (but where the ctx ended
// in flight, which the library settles itself).
func TestFlappingConnection(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	p := startProxy(t, srv.Addr)
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	cs := clients(t, 8, p.Addr(), rec)
	flapFor := 10 * time.Second
	if testing.Short() {
		flapFor = 3 * time.Second
	}
	w := &safety.Workload{
		Clients:      cs,
		Keys:         []string{"a", "b", "c", "d"},
		Acquisitions: 1 << 30, // until MaxDuration
		TTL:          time.Second,
		Hold:         func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(1000)) * time.Microsecond },
		RefreshOneIn: 4,
		CallTimeout:  300 * time.Millisecond,
		MaxDuration:  flapFor,
		Resource:     res,
	}

	flaps := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		end := time.Now().Add(flapFor)
		reset := ""
		for state := 0; time.Now().Before(end); state = (state + 1) % 4 {
			<-tick.C
			switch state {
			case 0:
				reset = p.toxic("reset_peer", "downstream", `{"timeout":0}`)
			case 1:
				p.remove(reset)
			case 2:
				p.Stop()
			case 3:
				require.NoError(t, p.Start())
			}
			flaps++
		}
		if state := flaps % 4; state == 1 {
			p.remove(reset)
		} else if state == 3 {
			require.NoError(t, p.Start())
		}
	}()
	start := time.Now()
	n := w.Run(t.Context())
	<-done
	t.Logf("%d acquisitions in %v through %d flaps", n, time.Since(start).Round(time.Millisecond), flaps)

	// As in the wake-up and failover tests, an obtain that gave up at the
	// end of its ctx promises nothing of the lock (withoutGaveUp). On a
	// loaded machine most calls end so (1,406 unknown outcomes of 5,883
	// operations in one -race run under two busy loops), and each one left
	// pending for the checker multiplies its states: porcupine ran out of
	// its minute. The fenced resource still sees every write.
	ops := rec.Ops()
	checked, gave := withoutGaveUp(rec)
	t.Logf("obtains that gave up at the end of their ctx, left out of the checks: %d", gave)
	requireSafe(t, checked, res, true)
	late := lateCalls(t, rec, ops)
	var worst time.Duration
	for _, op := range ops {
		if op.Deadline > 0 {
			worst = max(worst, op.Ended-op.Deadline)
		}
	}
	t.Logf("latest return after a deadline: %v (margin %v)", worst.Round(time.Microsecond), deadlineMargin)
	for _, m := range []time.Duration{0, time.Millisecond, 5 * time.Millisecond, 10 * time.Millisecond, 25 * time.Millisecond} {
		t.Logf("returned more than %v after the deadline: %d of %d", m, len(safety.LateCalls(ops, m)), len(ops))
	}
	if len(late) > 0 {
		t.Errorf("%d calls returned late (logged above)", len(late))
	}
	for _, op := range ops {
		if op.Kind == safety.Obtain && op.Outcome == safety.Refused && !errors.Is(op.Err, redislock.ErrNotObtained) {
			t.Errorf("refused without ErrNotObtained: %v", op.Err)
		}
		// ErrNotObtained with an unknown outcome only where the ctx ended:
		// a random token's attempt in flight then is the library's to
		// settle.
		ctxEnded := errors.Is(op.Err, context.DeadlineExceeded) || errors.Is(op.Err, context.Canceled)
		if op.Kind == safety.Obtain && op.Outcome == safety.Unknown && errors.Is(op.Err, redislock.ErrNotObtained) && !ctxEnded {
			t.Errorf("an unknown outcome reported as ErrNotObtained: %v", op.Err)
		}
	}
}
