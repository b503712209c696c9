package redislock_test

import (
	"syscall"
	"time"
)

// pause waits about d without burning a CPU for it: time.Sleep(200µs) sleeps
// about 1.1ms here (Go's timers below 1ms fire on about 1ms boundaries),
// and a spin for the whole pause takes a CPU from redis-server on a small
// machine. nanosleep(2) sleeps d+~90µs (the kernel's timer slack, measured
// on a 2-vCPU Linux VM: 200µs gives 287µs at p50), so it sleeps d-100µs and
// spins the rest.
func pause(d time.Duration) {
	t0 := time.Now()
	if d > 100*time.Microsecond {
		ts := syscall.NsecToTimespec(int64(d - 100*time.Microsecond))
		_ = syscall.Nanosleep(&ts, nil)
	}
	spinUntil(t0, d)
}
