//go:build !linux

package bench

import "time"

// sleepMost sleeps nothing: pause spins for the whole pause.
func sleepMost(time.Duration) {}

// selfCPU is 0 where getrusage(2) is not used: proc-cpu-us/acq reads 0.
func selfCPU() time.Duration { return 0 }
