package bench

import (
	"syscall"
	"time"
)

// sleepMost sleeps most of d with nanosleep(2), which sleeps d+~90µs (the
// kernel's timer slack; measured on a 2-vCPU Linux VM: 200µs gives 287µs at
// p50): it asks for d-100µs, and pause spins the rest.
func sleepMost(d time.Duration) {
	if d > 100*time.Microsecond {
		ts := syscall.NsecToTimespec(int64(d - 100*time.Microsecond))
		_ = syscall.Nanosleep(&ts, nil)
	}
}

// selfCPU is the CPU time this process has used (user and system).
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
