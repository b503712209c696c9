package redislock

import (
	"context"
	"sync/atomic"
	"time"
)

// RetryStrategy decides how long to wait before the next attempt to obtain or
// refresh a lock. A NextBackoff under 1ns stops retrying.
//
// An Obtain or ObtainMulti asks for one backoff before each wait; the wait
// ends earlier when the lock is released (it may then pass to the waiter
// without another attempt) or its holder's TTL ends, and at the latest when
// the backoff has passed. Each wait is followed by at most one attempt, so
// LimitRetry(s, n) allows n waits, and a wake-up that loses the race (an
// ObtainMulti whose other keys are still held) uses one up. The first wait
// of a Client's first waiter starts with one more round trip, which queues
// it in Redis (a shared or semaphore obtain on a Client whose channel is up
// is queued by its first attempt instead). A Refresh waits only after a transport error, for the whole
// backoff.
//
// The strategies built by this package are templates: each Obtain, ObtainMulti
// or Refresh call works on its own fresh copy, so one value (and one Options
// holding it) is safe to share across calls and goroutines. A strategy of
// your own is used as given, shared state included.
type RetryStrategy interface {
	// NextBackoff returns the wait before the next attempt.
	NextBackoff() time.Duration
}

// template is implemented by this package's strategies: fresh returns a copy
// with a full budget for one call.
type template interface {
	fresh() RetryStrategy
}

// freshStrategy returns the strategy one call works on: a fresh copy of the
// package's templates, the user's own strategy as given, NoRetry for nil.
func freshStrategy(s RetryStrategy) RetryStrategy {
	switch s := s.(type) {
	case nil:
		return NoRetry()
	case template:
		return s.fresh()
	default:
		return s
	}
}

type linearBackoff time.Duration

var _ RetryStrategy = linearBackoff(0)

// NoRetry makes a single attempt. It is the default when Options or its
// RetryStrategy is nil.
func NoRetry() RetryStrategy {
	return linearBackoff(0)
}

// LinearBackoff retries after the same wait every time, until the ctx ends
// (or one TTL has passed when the ctx has no deadline). A backoff under 1ns
// means no retry, like NoRetry.
func LinearBackoff(backoff time.Duration) RetryStrategy {
	return linearBackoff(backoff)
}

func (r linearBackoff) NextBackoff() time.Duration { return time.Duration(r) }

func (r linearBackoff) fresh() RetryStrategy { return r }

type limitedRetry struct {
	s   RetryStrategy
	cnt atomic.Int64
	max int64
}

var _ RetryStrategy = (*limitedRetry)(nil)

// LimitRetry allows at most max retries (max+1 attempts in all) of s for each
// call that uses it. A max of 0 or less means no retry. When s is one of this
// package's strategies, each call gets a fresh copy of it too.
func LimitRetry(s RetryStrategy, max int) RetryStrategy {
	return &limitedRetry{s: s, max: int64(max)}
}

func (r *limitedRetry) NextBackoff() time.Duration {
	if r.cnt.Add(1) > r.max {
		return 0
	}
	return r.s.NextBackoff()
}

func (r *limitedRetry) fresh() RetryStrategy {
	return &limitedRetry{s: freshStrategy(r.s), max: r.max}
}

type exponentialBackoff struct {
	cnt      atomic.Uint64
	min, max time.Duration
}

var _ RetryStrategy = (*exponentialBackoff)(nil)

// ExponentialBackoff doubles the wait after every attempt: 4ms, 8ms, 16ms,
// ... 2^(n+1) ms for the n-th retry, up to 2^26 ms (about 18.6 hours), then
// clamps it to [min, max]. A min of 0 sets no floor; a max of 0 sets no
// ceiling (combine it with LimitRetry or a ctx deadline). When max is below
// min, every wait is max.
func ExponentialBackoff(min, max time.Duration) RetryStrategy {
	return &exponentialBackoff{min: min, max: max}
}

func (r *exponentialBackoff) NextBackoff() time.Duration {
	n := r.cnt.Add(1)
	ms := int64(2 << 25)
	if n < 25 {
		ms = 2 << n
	}
	d := time.Duration(ms) * time.Millisecond
	if r.max != 0 && (d > r.max || r.max < r.min) {
		return r.max
	}
	if d < r.min {
		return r.min
	}
	return d
}

func (r *exponentialBackoff) fresh() RetryStrategy {
	return &exponentialBackoff{min: r.min, max: r.max}
}

// retrier drives the waits of one call, for Obtain, ObtainMulti and
// Refresh alike: it asks a fresh copy of the strategy for each wait, not
// before the first one (a call that succeeds at once never asks), and bounds
// the waits by the call's limit: the ctx deadline, or one TTL after the
// first wait when the ctx has none.
type retrier struct {
	template RetryStrategy
	ttl      time.Duration
	strategy RetryStrategy // nil until the first wait
	limit    time.Time
	deadline bool // limit is the ctx deadline
	timer    *time.Timer
}

// start fixes the limit, once.
func (r *retrier) start(ctx context.Context) {
	if r.strategy != nil {
		return
	}
	r.strategy = freshStrategy(r.template)
	if r.limit, r.deadline = ctx.Deadline(); !r.deadline {
		r.limit = time.Now().Add(r.ttl)
	}
}

// mayWait tells whether the strategy may allow a wait at all: false for
// NoRetry (and LinearBackoff under 1ns) and a LimitRetry of none; true for
// any other, a user's own included.
func (r *retrier) mayWait() bool {
	switch s := r.template.(type) {
	case nil:
		return false
	case linearBackoff:
		return s > 0
	case *limitedRetry:
		return s.max > 0
	}
	return true
}

// next returns the backoff of the next wait: 0 when the strategy allows no
// more, or the ctx has no deadline and one TTL has passed.
func (r *retrier) next(ctx context.Context) time.Duration {
	r.start(ctx)
	backoff := r.strategy.NextBackoff()
	if backoff < 1 || (!r.deadline && !time.Now().Before(r.limit)) {
		return 0
	}
	return backoff
}

// sleep waits d, or until wake has news (nil: none comes) or the ctx ends.
func (r *retrier) sleep(ctx context.Context, d time.Duration, wake <-chan struct{}) wakeReason {
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d)
	}
	select {
	case <-wake:
		r.timer.Stop()
		return wokeByRelease
	case <-r.timer.C:
		return wokeByBackoff
	case <-ctx.Done():
		r.timer.Stop()
		return wokeByCtx
	}
}

// stop frees the timer.
func (r *retrier) stop() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

// wakeReason is what ended a wait.
type wakeReason uint8

const (
	wokeByBackoff  wakeReason = iota
	wokeByExpiry              // the holder's TTL ended
	wokeByRelease             // the lock passed to the waiter, or it was told to try again
	wokeByDeadline            // the ctx deadline is too close for another attempt
	wokeByCtx                 // the ctx ended
)
