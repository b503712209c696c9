package redislock

import (
	"context"
	"errors"
	"sync"
	"time"
)

// Observer watches the operations of a Client: the seam that the otel
// package (its own module) plugs into with WithObserver. With no observer
// set, the library does no work for it and allocates nothing for it.
//
// Begin and End are called from the goroutine that runs the operation, once
// each; an Observer must be safe for concurrent use.
type Observer interface {
	// Begin is called when an operation starts, before any validation. The
	// ctx it returns is the one the operation's Redis commands run with (so
	// that a span started here is their parent) and the one End receives.
	Begin(ctx context.Context, ev *Event) context.Context
	// End is called when the operation returns, with ev filled in. ev and
	// ev.Keys must not be kept after End returns: ev is reused.
	End(ctx context.Context, ev *Event)
}

// WithObserver reports every operation of the Client to o. A nil o is
// ignored.
func WithObserver(o Observer) ClientOption {
	return func(c *Client) {
		if o != nil {
			c.observer = o
		}
	}
}

// clockBase is the origin of Lock.obtained: a Duration on the monotonic
// clock takes 8 bytes of the Lock where a time.Time takes 24.
var clockBase = time.Now()

// Op names an operation of a Lock or Client.
type Op uint8

// The operations an Observer sees.
const (
	OpObtain Op = iota + 1
	OpObtainMulti
	OpRefresh
	OpRelease
	OpTTL
	OpObtainShared
	OpObtainSemaphore
)

var opNames = [...]string{"unknown", "obtain", "obtain_multi", "refresh", "release", "ttl", "obtain_shared", "obtain_semaphore"}

// IsObtain reports whether o obtains a lock: OpObtain, OpObtainMulti,
// OpObtainShared or OpObtainSemaphore.
func (o Op) IsObtain() bool {
	return o == OpObtain || o == OpObtainMulti || o == OpObtainShared || o == OpObtainSemaphore
}

// String returns the operation's name: "obtain", "obtain_multi", "refresh",
// "release", "ttl", "obtain_shared" or "obtain_semaphore".
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return opNames[0]
}

// Outcome is how an operation ended.
type Outcome uint8

// The outcomes of an operation.
const (
	// OutcomeOK: the lock was obtained, refreshed, released or read.
	OutcomeOK Outcome = iota
	// OutcomeNotObtained: an obtain (of any kind) found the lock held by
	// another token until it gave up (ErrNotObtained).
	OutcomeNotObtained
	// OutcomeLost: Refresh or Release found the lock no longer held by its
	// token (ErrNotObtained, ErrLockNotHeld).
	OutcomeLost
	// OutcomeError: anything else: bad input, a transport error, a ctx that
	// ended.
	OutcomeError
)

var outcomeNames = [...]string{"ok", "not_obtained", "lost", "error"}

// String returns the outcome's name: "ok", "not_obtained", "lost" or
// "error".
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return outcomeNames[OutcomeError]
}

// Event describes one operation, for an Observer.
type Event struct {
	Op   Op
	Keys []string // the lock's keys; read-only, not to be kept

	// TTL is the TTL asked for by an obtain (of any kind) and Refresh.
	TTL time.Duration
	// Start is when the operation began.
	Start time.Time
	// Held is, for Release, the time since the lock was obtained.
	Held time.Duration

	// Attempts counts the Redis round trips the operation made (0 when it
	// failed before any I/O); Contended the obtain attempts that found the
	// lock held by another token.
	Attempts, Contended int

	// How the waits of an Obtain or ObtainMulti ended: woken by a release
	// (the lock passed to it, or it was told to try again), by the holder's
	// expiry, or by the backoff of its RetryStrategy.
	WokenByRelease, WokenByExpiry, WokenByBackoff int

	// For a quorum Client (NewQuorum), how many nodes granted (held,
	// deleted, answered), refused (held by another token, or not held)
	// and failed, in the operation's last round; 0 each for one server.
	// A Release that returned once its outcome was known leaves out the
	// nodes that had not answered yet.
	NodesGranted, NodesRefused, NodesFailed int

	// Outcome and Err are set before End: Err is the error the operation
	// returns (nil on OutcomeOK).
	Outcome Outcome
	Err     error
}

// events recycles Events: an Event handed to an Observer escapes to the
// heap, and Observer.End may not keep it, so one per operation would be an
// allocation for nothing.
var events = sync.Pool{New: func() any { return new(Event) }}

// newEvent returns a cleared Event for op, started now.
func newEvent(op Op, keys []string, ttl time.Duration) *Event {
	ev := events.Get().(*Event)
	*ev = Event{Op: op, Keys: keys, TTL: ttl, Start: time.Now()}
	return ev
}

// putEvent hands ev back once End has returned.
func putEvent(ev *Event) {
	*ev = Event{}
	events.Put(ev)
}

// finish records err and the outcome it means for the operation.
func (ev *Event) finish(err error) {
	ev.Err = err
	switch {
	case err == nil:
		ev.Outcome = OutcomeOK
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		ev.Outcome = OutcomeError
	case ev.Op.IsObtain() && errors.Is(err, ErrNotObtained):
		ev.Outcome = OutcomeNotObtained
	case errors.Is(err, ErrNotObtained) || errors.Is(err, ErrLockNotHeld):
		ev.Outcome = OutcomeLost
	default:
		ev.Outcome = OutcomeError
	}
}

// begin is the first half of the one observer bracket of every operation:
// it reports op's start and returns the ctx to run it with, and its Event;
// nil when the Client has no observer (nothing is done for it, nothing
// allocated).
func (c *Client) begin(ctx context.Context, op Op, keys []string, ttl time.Duration) (context.Context, *Event) {
	if c.observer == nil {
		return ctx, nil
	}
	ev := newEvent(op, keys, ttl)
	return c.observer.Begin(ctx, ev), ev
}

// end is the second half: it reports ev's operation as ended with err, and
// recycles ev. A nil ev is a no-op.
func (c *Client) end(ctx context.Context, ev *Event, err error) {
	if ev == nil {
		return
	}
	ev.finish(err)
	c.observer.End(ctx, ev)
	putEvent(ev)
}
