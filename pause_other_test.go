//go:build !linux

package redislock_test

import "time"

// pause waits about d by spinning (see pause_linux_test.go).
func pause(d time.Duration) { spinUntil(time.Now(), d) }
