package redistest

import (
	"sync"
	"testing"
	"time"
)

// PauseWatch records the spans in which the test process did not run its
// goroutines on time: a goroutine ticks every 5ms, and a tick more than
// 50ms late ends a span in which no goroutine of the process could have
// answered either (the machine's load, the race detector, a GC). A test of
// a deadline judges a call's lateness without those spans: the library
// cannot return while its process does not run.
type PauseWatch struct {
	mu    sync.Mutex
	spans [][2]time.Time
	stop  chan struct{}
	done  chan struct{}
}

// StartPauseWatch starts a PauseWatch; Close stops it.
func StartPauseWatch() *PauseWatch {
	const tick, late = 5 * time.Millisecond, 50 * time.Millisecond
	w := &PauseWatch{stop: make(chan struct{}), done: make(chan struct{})}
	// The clock starts here, not in the goroutine: a goroutine that starts
	// late (a loaded machine) must not miss a pause that began before it
	// ran.
	start := time.Now()
	go func() {
		defer close(w.done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for prev := start; ; {
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
	return w
}

// WatchPauses starts a PauseWatch that stops when tb's test ends.
func WatchPauses(tb testing.TB) *PauseWatch {
	w := StartPauseWatch()
	tb.Cleanup(w.Close)
	return w
}

// Close stops w's goroutine.
func (w *PauseWatch) Close() {
	close(w.stop)
	<-w.done
}

// Paused returns how long the process was paused within [from, to].
func (w *PauseWatch) Paused(from, to time.Time) time.Duration {
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
