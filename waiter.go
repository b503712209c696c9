package redislock

import (
	"strconv"
	"sync/atomic"
)

// waiterState is where a waiting Obtain stands. step holds every transition.
type waiterState uint8

const (
	// wsLocal: in its local queue; Redis knows nothing of it.
	wsLocal waiterState = iota
	// wsExposed: an attempt carried its entry, or a Release of its Client
	// offered it the lock: Redis may have queued it, or granted it the lock.
	wsExposed
	// wsGranted: the lock passed to it; its Obtain has not returned yet.
	wsGranted
	// wsObtained: its Obtain returned the lock. Final.
	wsObtained
	// wsLeaving: its Obtain returned without the lock while a command that
	// may queue or grant it was in flight; what it may hold is given back
	// once the last such command settles.
	wsLeaving
	// wsLeft: its Obtain returned without the lock, and what it may hold is
	// given back (or it held nothing). Final.
	wsLeft
)

// waiterEvent is what happens to a waiter.
type waiterEvent uint8

const (
	evExpose waiterEvent = iota // a command that may queue or grant it is about to be sent
	evSettle                    // such a command's reply came (or it was abandoned to the background)
	evGrant                     // the lock passed to it
	evObtain                    // its Obtain returns the lock
	evGiveUp                    // its Obtain returns without the lock
)

// waiter is one Obtain that waits. Its fields below signal are guarded by
// the mutex of its Client's localQueues.
type waiter struct {
	l      *Lock
	entry  string // its entry in Redis' wait queues (lua/queue.lua)
	q      *keyQueue
	signal chan struct{} // cap 1: news (a grant, a wake-up)
	heard  atomic.Bool   // a quorum waiter woken by a release's message, which every waiting Client heard

	state    waiterState
	inflight int   // commands that may queue or grant it, not yet settled
	fence    int64 // with wsGranted
	sent     bool  // an attempt carried its entry: it may be in Redis' queue
	offers   int   // Releases of its Client in flight that offered it the lock
	limit    int   // a semaphore waiter's limit
	// attempting: a semaphore waiter's attempt is in flight, or obtained
	// and the waiter has not left yet; no Release offers it a permit
	// meanwhile (one that it might take after the waiter's own permit was
	// given back, for nobody).
	attempting bool
}

// step applies e to w, and reports whether what w may hold in Redis (a
// place in the wait queue, the lock) must be given back now: once its
// Obtain returned without the lock and nothing that may change that is in
// flight. A grant that comes after the give-back is given back again (a
// release.lua of a token that holds nothing is a no-op).
func (w *waiter) step(e waiterEvent) (giveBack bool) {
	switch e {
	case evExpose:
		w.inflight++
		if w.state == wsLocal {
			w.state = wsExposed
		}
	case evSettle:
		w.inflight--
		if w.state == wsLeaving && w.inflight == 0 {
			w.state = wsLeft
			return true
		}
	case evGrant:
		switch w.state {
		case wsLocal, wsExposed:
			w.state = wsGranted
		case wsLeft:
			return true
		}
	case evObtain:
		w.state = wsObtained
	case evGiveUp:
		switch {
		case w.state == wsLocal:
			w.state = wsLeft
		case w.inflight > 0:
			w.state = wsLeaving
		default:
			w.state = wsLeft
			return true
		}
	}
	return false
}

// wake tells w that there is news.
func (w *waiter) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// newWaiter returns a waiter for l; mark is its kind ("" exclusive, "r"
// shared, or a semaphore's limit) and channel names its Client's pub/sub
// channel, which its entry carries.
func newWaiter(l *Lock, ttl string, o *Options, mark, channel string) *waiter {
	return &waiter{l: l, entry: buildEntry(channel, l, ttl, o, mark), signal: make(chan struct{}, 1)}
}

// buildEntry returns a waiter's entry in Redis' wait queues (lua/queue.lua):
// its Client's channel, token, TTL, fence key, metadata, kind and keys.
func buildEntry(channel string, l *Lock, ttl string, o *Options, mark string) string {
	var meta string
	if o != nil {
		meta = o.Metadata
	}
	fields := make([]string, 0, 6+len(l.keys))
	fields = append(fields, channel, l.token, ttl, o.fenceKey(), meta, mark)
	fields = append(fields, l.keys...)
	n := 0
	for _, f := range fields {
		n += len(f) + 4
	}
	b := make([]byte, 0, n)
	for _, f := range fields {
		b = strconv.AppendInt(b, int64(len(f)), 10)
		b = append(b, ':')
		b = append(b, f...)
	}
	return string(b)
}
