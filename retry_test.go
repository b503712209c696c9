package redislock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/seed-223c80a0/redislock"
)

func TestNoRetry(t *testing.T) {
	assert.Zero(t, redislock.NoRetry().NextBackoff())
}

func TestLinearBackoff(t *testing.T) {
	s := redislock.LinearBackoff(time.Second)
	for range 3 {
		assert.Equal(t, time.Second, s.NextBackoff())
	}
}

func TestExponentialBackoff(t *testing.T) {
	s := redislock.ExponentialBackoff(10*time.Millisecond, 300*time.Millisecond)
	var got []time.Duration
	for range 8 {
		got = append(got, s.NextBackoff())
	}
	ms := time.Millisecond
	assert.Equal(t, []time.Duration{10 * ms, 10 * ms, 16 * ms, 32 * ms, 64 * ms, 128 * ms, 256 * ms, 300 * ms}, got)

	unbounded := redislock.ExponentialBackoff(0, 0)
	for range 40 {
		unbounded.NextBackoff()
	}
	assert.Equal(t, time.Duration(2<<25)*ms, unbounded.NextBackoff(), "the growth stops at 2^26 ms")

	assert.Equal(t, 5*ms, redislock.ExponentialBackoff(10*ms, 5*ms).NextBackoff(), "max under min wins")
}

func TestLimitRetry(t *testing.T) {
	s := redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 2)
	assert.Equal(t, time.Millisecond, s.NextBackoff())
	assert.Equal(t, time.Millisecond, s.NextBackoff())
	assert.Zero(t, s.NextBackoff())
	assert.Zero(t, s.NextBackoff())

	assert.Zero(t, redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 0).NextBackoff())
	assert.Zero(t, redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), -1).NextBackoff())
}

// A strategy used directly by many goroutines counts every call once.
func TestLimitRetry_concurrent(t *testing.T) {
	s := redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 100)
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for range 10 {
		wg.Go(func() {
			for range 20 {
				if s.NextBackoff() > 0 {
					mu.Lock()
					granted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 100, granted)
}
