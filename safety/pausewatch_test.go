package safety_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/seed-223c80a0/redislock/safety"
)

// pauseWatch records the spans in which the test process did not run its
// goroutines on time: a goroutine sleeps 5ms at a time, and a wake-up more
// than 50ms late is a span in which no call of the process could have
// returned either (the machine's load, the race detector, a GC).
type pauseWatch struct {
	mu    sync.Mutex
	spans [][2]time.Duration // from, to, in the Recorder's time
}

func watchPauses(ctx context.Context, rec *safety.Recorder) *pauseWatch {
	const tick, late = 5 * time.Millisecond, 50 * time.Millisecond
	w := &pauseWatch{}
	go func() {
		for prev := rec.Now(); ctx.Err() == nil; {
			time.Sleep(tick)
			now := rec.Now()
			if now-prev > tick+late {
				w.mu.Lock()
				w.spans = append(w.spans, [2]time.Duration{prev + tick, now})
				w.mu.Unlock()
			}
			prev = now
		}
	}()
	return w
}

// paused returns how long the process was paused within [from, to].
func (w *pauseWatch) paused(from, to time.Duration) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d time.Duration
	for _, s := range w.spans {
		if lo, hi := max(s[0], from), min(s[1], to); hi > lo {
			d += hi - lo
		}
	}
	return d
}

func TestPauseWatch_paused(t *testing.T) {
	ms := time.Millisecond
	w := &pauseWatch{spans: [][2]time.Duration{{10 * ms, 20 * ms}, {30 * ms, 100 * ms}}}
	for _, tc := range []struct{ from, to, want time.Duration }{
		{0, 5 * ms, 0},
		{0, 15 * ms, 5 * ms},
		{12 * ms, 40 * ms, 18 * ms},
		{0, time.Second, 80 * ms},
		{100 * ms, time.Second, 0},
	} {
		if got := w.paused(tc.from, tc.to); got != tc.want {
			t.Errorf("paused(%v, %v) = %v, want %v", tc.from, tc.to, got, tc.want)
		}
	}
}
