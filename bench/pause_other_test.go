//go:build !linux

package bench

import "time"

// sleepMost sleeps nothing: pause spins for the whole pause.
func sleepMost(time.Duration) {}
