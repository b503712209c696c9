package redislock_test

import (
	"runtime"
	"time"
)

// spinUntil spins until d has passed since t0, yielding the processor.
func spinUntil(t0 time.Time, d time.Duration) {
	for time.Since(t0) < d {
		runtime.Gosched()
	}
}
