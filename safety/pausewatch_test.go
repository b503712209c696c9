package safety_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/safety"
)

// pauseWatch records the spans in which the test process did not run its
// goroutines on time: a goroutine sleeps 5ms at a time, and a wake-up more
// than 50ms late ends a span in which no call of the process could have
// returned either (the machine's load, the race detector, a GC). A call's
// lateness past its deadline is judged without those spans: the library
// cannot return while its process does not run.
type pauseWatch struct {
	mu    sync.Mutex
	spans [][2]time.Time
	stop  chan struct{}
	done  chan struct{}
}

// procPauses watches the whole test binary, from TestMain.
var procPauses = &pauseWatch{}

func (w *pauseWatch) start() {
	const tick, late = 5 * time.Millisecond, 50 * time.Millisecond
	w.stop, w.done = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(w.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for prev := time.Now(); ; {
			select {
			case <-w.stop:
				return
			case <-t.C:
			}
			now := time.Now()
			if now.Sub(prev) > tick+late {
				w.mu.Lock()
				w.spans = append(w.spans, [2]time.Time{prev.Add(tick), now})
				w.mu.Unlock()
			}
			prev = now
		}
	}()
}

func (w *pauseWatch) close() {
	close(w.stop)
	<-w.done
}

// paused returns how long the process was paused within [from, to].
func (w *pauseWatch) paused(from, to time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d time.Duration
	for _, s := range w.spans {
		lo, hi := s[0], s[1]
		if lo.Before(from) {
			lo = from
		}
		if hi.After(to) {
			hi = to
		}
		if hi.After(lo) {
			d += hi.Sub(lo)
		}
	}
	return d
}

// requireReturnedBy fails t when a call that started at start and took took
// returned more than deadlineMargin after limit, not counting the process'
// procPauses from limit-deadlineMargin on.
func requireReturnedBy(t require.TestingT, start time.Time, took, limit time.Duration, msgAndArgs ...any) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	paused := procPauses.paused(start.Add(limit-deadlineMargin), start.Add(took))
	require.Less(t, took-paused, limit+deadlineMargin, msgAndArgs...)
}

// lateCalls returns the calls of ops (recorded by rec) that returned more
// than deadlineMargin after their deadline, not counting the process'
// procPauses, and logs every call that returned late only by such a pause.
func lateCalls(t *testing.T, rec *safety.Recorder, ops []safety.Op) []safety.Op {
	t.Helper()
	origin := time.Now().Add(-rec.Now())
	var late []safety.Op
	for _, op := range safety.LateCalls(ops, deadlineMargin) {
		by, paused := op.Ended-op.Deadline, procPauses.paused(origin.Add(op.Deadline-deadlineMargin), origin.Add(op.Ended))
		if by-paused > deadlineMargin {
			late = append(late, op)
			t.Logf("late: returned %v after its deadline, the process paused %v of it: %v: %v", by, paused, op, op.Err)
		} else {
			t.Logf("returned %v after its deadline while the process was paused %v: %v", by, paused, op)
		}
	}
	return late
}

func TestPauseWatch_paused(t *testing.T) {
	ms := time.Millisecond
	t0 := time.Now()
	w := &pauseWatch{spans: [][2]time.Time{{t0.Add(10 * ms), t0.Add(20 * ms)}, {t0.Add(30 * ms), t0.Add(100 * ms)}}}
	for _, tc := range []struct{ from, to, want time.Duration }{
		{0, 5 * ms, 0},
		{0, 15 * ms, 5 * ms},
		{12 * ms, 40 * ms, 18 * ms},
		{0, time.Second, 80 * ms},
		{100 * ms, time.Second, 0},
	} {
		if got := w.paused(t0.Add(tc.from), t0.Add(tc.to)); got != tc.want {
			t.Errorf("paused(%v, %v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}
