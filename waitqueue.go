package redislock

// The local queues of a Client: its goroutines that wait for the same keys
// queue behind one another, in arrival order, and only the first one talks
// to Redis (it alone may be queued there, so that a Client costs Redis one
// waiter). A Release by the Client offers the lock to its first local waiter
// in the release's own round trip, unless a waiter of another Client is
// queued in Redis: that one is first.
//
// Nothing here does I/O: the transitions tell their caller what to send
// (giveBack), so that they are tested without Redis (waitqueue_test.go).

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// keyQueue is the waiters of one Client for one set of keys, in arrival
// order.
type keyQueue struct {
	name    string
	waiters []*waiter
	// local is set while the lock is held by a goroutine of this Client
	// that obtained it from this queue: the next waits for its Release,
	// which offers it the lock, and stays out of Redis' queue. Never set
	// for a semaphore's queue: its Client holds all the permits a waiter
	// may have when held says so (localHold).
	local bool
}

func (q *keyQueue) first() *waiter {
	if len(q.waiters) == 0 {
		return nil
	}
	return q.waiters[0]
}

// localQueues is the waiting state of a Client, one queue per set of keys.
type localQueues struct {
	n    atomic.Int64 // waiters in all: a Release looks no further when 0
	mu   sync.Mutex
	keys map[string]*keyQueue
	// held counts, by key, the semaphore permits held by Locks of this
	// Client (obtained, not yet released; a Lock whose lease ended unseen
	// counts until its Release).
	held    map[string]int
	permits map[permit]struct{} // the (key, token) pairs counted in held

	// The tokens of waiters that returned without the lock and whose
	// give-back is not done: an Obtain of the same (custom) token waits
	// for it, or the give-back could release what that Obtain takes.
	nSettling atomic.Int64
	settling  map[string]*settlingToken
}

// permit is a semaphore's permit as Redis holds it: one a key and token.
type permit struct{ key, token string }

type settlingToken struct {
	n    int
	done chan struct{} // closed when n drops to 0
}

// queueName is the name of the local queue of keys: the key itself, or the
// keys joined by NUL.
func queueName(keys []string) string {
	if len(keys) == 1 {
		return keys[0]
	}
	return strings.Join(keys, "\x00")
}

// lockQueueName is the name of the local queue of l's waiters: queueName of
// its keys, and for a semaphore NUL and its key (never an exclusive
// queue's name, whose first key is not empty).
func lockQueueName(l *Lock) string {
	if l.kind.semaphore {
		return "\x00" + l.keys[0]
	}
	return queueName(l.keys)
}

// join puts w at the end of its queue. With behind set, it does so only
// when other waiters are queued already (a newcomer does not overtake them),
// and reports whether it did; the check and the join are one step. A
// shared waiter has a queue of its own, kept out of the map: it queues in
// Redis itself, where a release may grant it together with others. The
// semaphore waiters of a key queue as an exclusive lock's do: only the
// first talks to Redis, and a Release of a permit by the Client offers it
// to the first.
func (qs *localQueues) join(w *waiter, behind bool) bool {
	if !w.l.kind.exclusive && !w.l.kind.semaphore {
		if behind {
			return false
		}
		qs.mu.Lock()
		defer qs.mu.Unlock()
		w.q = &keyQueue{waiters: []*waiter{w}}
		qs.n.Add(1)
		return true
	}
	name := lockQueueName(w.l)
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := qs.keys[name]
	if behind && (q == nil || len(q.waiters) == 0) {
		return false
	}
	if q == nil {
		if qs.keys == nil {
			qs.keys = make(map[string]*keyQueue)
		}
		q = &keyQueue{name: name}
		qs.keys[name] = q
	}
	w.q = q
	q.waiters = append(q.waiters, w)
	qs.n.Add(1)
	return true
}

// first tells whether w is the first of its queue.
func (qs *localQueues) first(w *waiter) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.q.first() == w
}

// mayQueue tells whether w is to be queued in Redis by its next attempt:
// it is the first of its queue and the lock is not held by a goroutine of
// its Client (whose Release will offer it the lock): for a semaphore, not
// every permit under w's limit.
func (qs *localQueues) mayQueue(w *waiter) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.q.first() == w && !qs.localHold(w)
}

// localHold tells whether only a Release of w's Client can end w's wait:
// the lock is held by a goroutine of the Client (keyQueue.local), or, for a
// semaphore, its Client holds as many permits as w's limit (so nobody else
// holds one: a Release of another Client frees none). Called with qs.mu
// held.
func (qs *localQueues) localHold(w *waiter) bool {
	if w.l.kind.semaphore {
		return qs.held[w.l.keys[0]] >= w.limit
	}
	return w.q.local
}

// sentEntry tells whether an attempt carried w's entry: it may be in
// Redis' queue.
func (qs *localQueues) sentEntry(w *waiter) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.sent
}

// expose records that an attempt carrying w's entry is about to be sent,
// when w may still be queued in Redis (mayQueue); again reports that an
// earlier attempt carried its entry (it may be queued). Every expose that
// returns ok is followed by one settle.
func (qs *localQueues) expose(w *waiter) (again, ok bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if w.q.first() != w || qs.localHold(w) {
		return false, false
	}
	again, w.sent = w.sent, true
	w.step(evExpose)
	return again, true
}

// settle records that a command that exposed w has its reply.
func (qs *localQueues) settle(w *waiter) (giveBack bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.step(evSettle)
}

// granted tells whether the lock passed to w, and its fence token.
func (qs *localQueues) granted(w *waiter) (bool, int64) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.state == wsGranted, w.fence
}

// grant records that the lock passed to w, with fence token fence.
func (qs *localQueues) grant(w *waiter, fence int64) (giveBack bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if w.state == wsLocal || w.state == wsExposed {
		w.fence = fence
	}
	giveBack = w.step(evGrant)
	if giveBack {
		qs.markSettling(w.l.token) // granted after it gave back
	}
	w.wake()
	return giveBack
}

// leave takes w out of its queue once its Obtain returns, with the lock or
// without; the next waiter, when it becomes the first and the lock is not
// held by this Client (localHold), is woken to go on in its place. done reports that
// nothing can reach w any more (it obtained, or held nothing).
func (qs *localQueues) leave(w *waiter, obtained bool) (giveBack, done bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := w.q
	wasFirst := q.first() == w
	// A semaphore waiter that took a free permit by its own attempt (not
	// passed to it): more may be free, and the next one tries too.
	freePermit := obtained && w.l.kind.semaphore && w.state != wsGranted
	for i, x := range q.waiters {
		if x == w {
			q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
			break
		}
	}
	if obtained {
		if w.l.kind.semaphore {
			qs.countPermit(w.l)
		} else {
			q.local = true
		}
		w.step(evObtain)
	} else {
		giveBack = w.step(evGiveUp)
		if giveBack || w.state == wsLeaving {
			qs.markSettling(w.l.token) // the give-back now, or once settled
		}
	}
	qs.n.Add(-1)
	switch next := q.first(); {
	case next == nil:
		if qs.keys[q.name] == q {
			delete(qs.keys, q.name)
		}
	case wasFirst && !qs.localHold(next), freePermit:
		next.wake()
	}
	return giveBack, w.state == wsObtained || (w.state == wsLeft && !giveBack)
}

// markSettling records that a give-back of token is pending. Called with
// qs.mu held.
func (qs *localQueues) markSettling(token string) {
	if qs.settling == nil {
		qs.settling = make(map[string]*settlingToken)
	}
	st := qs.settling[token]
	if st == nil {
		st = &settlingToken{done: make(chan struct{})}
		qs.settling[token] = st
	}
	st.n++
	qs.nSettling.Add(1)
}

// gaveBack records that a give-back of w (each was marked once: when w
// left, or when a grant reached it after it had given back) is done.
func (qs *localQueues) gaveBack(w *waiter) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	st := qs.settling[w.l.token]
	if st == nil {
		return
	}
	qs.nSettling.Add(-1)
	if st.n--; st.n == 0 {
		close(st.done)
		delete(qs.settling, w.l.token)
	}
}

// awaitSettled waits until no give-back of token is pending, the ctx ends,
// or timeout passes.
func (qs *localQueues) awaitSettled(ctx context.Context, token string, timeout time.Duration) {
	if qs.nSettling.Load() == 0 {
		return
	}
	qs.mu.Lock()
	st := qs.settling[token]
	qs.mu.Unlock()
	if st == nil {
		return
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-st.done:
	case <-ctx.Done():
	case <-t.C:
	}
}

// wakeFirst wakes the first waiter of the queue named name (queueName), if
// there is one: the lock was released by another Client (quorum_wake.go),
// so it is not held by this one.
func (qs *localQueues) wakeFirst(name string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if q := qs.keys[name]; q != nil {
		q.local = false
		if w := q.first(); w != nil {
			w.heard.Store(true)
			w.wake()
		}
	}
}
