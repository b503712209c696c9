package redislock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The watchdog's cadence, as fractions of the TTL it keeps.
const (
	// watchRefreshEvery: a refresh starts a third of the TTL after the last
	// successful one started, so two more attempts fit before it expires.
	watchRefreshEvery = 3
	// watchRetryEvery: after a failed refresh, the next attempt starts a
	// tenth of the TTL later.
	watchRetryEvery = 10
)

// Watch keeps the lock held while work that depends on it runs, and says
// as soon as it may no longer be: it refreshes the lock with ttl every
// ttl/3 (after a failed refresh, again every ttl/10), and returns a ctx,
// derived from ctx, that is cancelled when the lock is lost or can no
// longer be known to be held. A watchdog is never started implicitly: call
// Watch after Obtain, do the work with the returned ctx, then call stop.
//
// The lock is known valid until the start of its last successful refresh
// plus ttl (Redis applies the refresh no earlier than it was sent). Watch
// refreshes once before it returns, to start that clock (waiting up to
// ttl/3; when that refresh fails, the returned ctx is already cancelled
// with its error); each later attempt may take up to ttl/3, and never past
// that instant. The returned ctx is cancelled, and context.Cause tells why:
//
//   - an error wrapping ErrLockNotHeld as soon as a refresh finds the lock
//     expired or taken by another token (at most ttl/3 and a round trip
//     after that happened);
//   - an error wrapping the last refresh error (a transport error, or
//     context.DeadlineExceeded for a refresh still unanswered) at the
//     instant the lock's known validity ends without a successful refresh,
//     which is no later than the lock can expire on the server: a stalled
//     server, a partition;
//   - at once, the error of a refresh that cannot succeed by waiting (a
//     Redis error reply such as NOPERM), of a TTL under 1ms or over MaxTTL
//     (ErrInvalidTTL), or ErrLockNotHeld for a nil *Lock;
//   - the cause of ctx when ctx ends, and context.Canceled on stop.
//
// stop stops the refreshes, cancels the returned ctx, and returns once the
// watchdog's goroutine has ended (an attempt in flight is abandoned); it
// does not release the lock: that is left to the caller, with Release. stop
// is idempotent and safe to call from any goroutine; call it in every case,
// as with context.WithCancel. The lock's other methods may be used while it
// is watched.
func (l *Lock) Watch(ctx context.Context, ttl time.Duration) (context.Context, func()) {
	work, cancel := context.WithCancelCause(ctx)
	stopNow := func() { cancel(context.Canceled) }
	if l == nil {
		cancel(ErrLockNotHeld)
		return work, stopNow
	}
	if err := validateTTL(ttl); err != nil {
		cancel(err)
		return work, stopNow
	}
	w := &watchdog{lock: l, ttl: ttl, work: work, cancel: cancel, done: make(chan struct{})}
	start := time.Now()
	if err := w.refresh(start.Add(ttl / watchRefreshEvery)); err != nil {
		w.fail(err)
		close(w.done)
		return work, stopNow
	}
	validUntil := start.Add(ttl)
	w.expiry = time.AfterFunc(time.Until(validUntil), w.expire)
	go w.run(start, validUntil)
	var once sync.Once
	return work, func() {
		once.Do(func() {
			cancel(context.Canceled)
			<-w.done
		})
	}
}

// watchdog is the state of one Watch.
type watchdog struct {
	lock   *Lock
	ttl    time.Duration
	work   context.Context
	cancel context.CancelCauseFunc
	expiry *time.Timer   // fires when the known validity ends
	done   chan struct{} // closed when run has returned

	mu      sync.Mutex
	lastErr error // of the last failed refresh since the last success
}

// run refreshes the lock until it is lost, its validity ends, or the work
// ctx ends (stop, the parent ctx, a cancellation by the watchdog itself).
func (w *watchdog) run(lastStart, validUntil time.Time) {
	defer close(w.done)
	defer w.expiry.Stop()
	next := lastStart.Add(w.ttl / watchRefreshEvery)
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	for {
		select {
		case <-w.work.Done():
			return
		case <-timer.C:
		}
		start := time.Now()
		if !start.Before(validUntil) {
			return // the expiry timer has cancelled the work
		}
		deadline := start.Add(w.ttl / watchRefreshEvery)
		if validUntil.Before(deadline) {
			deadline = validUntil
		}
		err := w.refresh(deadline)
		switch {
		case w.work.Err() != nil:
			return
		case err == nil:
			validUntil = start.Add(w.ttl)
			w.mu.Lock()
			w.lastErr = nil
			w.mu.Unlock()
			w.expiry.Reset(time.Until(validUntil))
			next = start.Add(w.ttl / watchRefreshEvery)
		case errors.Is(err, ErrNotObtained) || terminal(w.work, err):
			w.fail(err)
			return
		default:
			w.mu.Lock()
			w.lastErr = err
			w.mu.Unlock()
			next = time.Now().Add(w.ttl / watchRetryEvery)
		}
		timer.Reset(time.Until(next))
	}
}

// refresh makes one refresh attempt that gives up at deadline. Its ctx has
// no deadline of its own but is cancelled by a timer: rueidis then waits for
// the reply in its pipeline, so that stop (or the deadline) abandons the
// attempt at once, without closing the connection.
func (w *watchdog) refresh(deadline time.Time) error {
	ctx, cancel := context.WithCancel(w.work)
	defer cancel()
	timedOut := false
	var mu sync.Mutex
	timer := time.AfterFunc(time.Until(deadline), func() {
		mu.Lock()
		timedOut = true
		mu.Unlock()
		cancel()
	})
	defer timer.Stop()
	err := w.lock.Refresh(ctx, w.ttl, nil)
	mu.Lock()
	defer mu.Unlock()
	if err != nil && timedOut {
		return fmt.Errorf("redislock: refresh %q: no reply in time: %w", w.lock.keys[0], context.DeadlineExceeded)
	}
	return err
}

// fail cancels the work for a refresh that cannot succeed.
func (w *watchdog) fail(err error) {
	if errors.Is(err, ErrNotObtained) {
		err = fmt.Errorf("redislock: watch %q: %w", w.lock.keys[0], ErrLockNotHeld)
	}
	w.cancel(err)
}

// expire cancels the work when the lock's known validity ends.
func (w *watchdog) expire() {
	w.mu.Lock()
	last := w.lastErr
	w.mu.Unlock()
	if last == nil {
		last = fmt.Errorf("refresh still unanswered: %w", context.DeadlineExceeded)
	}
	w.cancel(fmt.Errorf("redislock: watch %q: not refreshed within its %v TTL: %w", w.lock.keys[0], w.ttl, last))
}

// terminal reports whether a refresh error cannot clear by waiting, by the
// library's one error policy (classify): a Redis error reply other than
// those a failover or a resharding clears. ErrNotReplicated is not: the
// lock is held on the master, and a later refresh may be acknowledged.
func terminal(ctx context.Context, err error) bool {
	if errors.Is(err, ErrNotReplicated) {
		return false
	}
	retryable, _ := classify(ctx, err)
	return !retryable
}
