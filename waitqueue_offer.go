package redislock

// A Release's offer of its lock to the first local waiter of its Client,
// and the attempts of semaphore waiters that such offers must not cross.

import "github.com/redis/rueidis"

// offer returns the first waiter of the queue named name (lockQueueName),
// exposed, for a Release of this
// Client to offer the lock to; nil when there is none, or it was granted
// the lock already. Every offer that returns a waiter is followed by one
// settleOffer.
func (qs *localQueues) offer(name string) *waiter {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	q := qs.keys[name]
	if q == nil {
		return nil
	}
	w := q.first()
	if len(q.waiters) > 0 && q.waiters[0].l.kind.semaphore {
		// Permits are given back concurrently: each is offered to the
		// first waiter that no other Release in flight offers one to,
		// unless its own attempt is in flight (it is woken to try again
		// instead: wakeForPermit), so that permits go in arrival order.
		w = nil
		for _, x := range q.waiters {
			if x.offers > 0 || (x.state != wsLocal && x.state != wsExposed) {
				continue // offered one, or granted one already
			}
			if !x.attempting {
				w = x
			}
			break
		}
	}
	if w == nil || (w.state != wsLocal && w.state != wsExposed) {
		return nil
	}
	w.offers++
	w.step(evExpose)
	return w
}

// wakeUnoffered wakes the first waiter of the queue named name that no
// Release in flight offers the lock to and that was granted nothing, if
// there is one.
func (qs *localQueues) wakeUnoffered(name string) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if q := qs.keys[name]; q != nil {
		for _, w := range q.waiters {
			if w.offers == 0 && (w.state == wsLocal || w.state == wsExposed) {
				w.wake()
				return
			}
		}
	}
}

// beginAttempt records that w's attempt is about to be sent; false when
// w is a semaphore waiter that a Release in flight offers a permit to: it
// waits for that Release's answer instead (settleOffer wakes it).
func (qs *localQueues) beginAttempt(w *waiter) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if !w.l.kind.semaphore {
		return true
	}
	if w.offers > 0 {
		return false
	}
	w.attempting = true
	return true
}

// endAttempt records that w's attempt did not obtain.
func (qs *localQueues) endAttempt(w *waiter) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	w.attempting = false
}

// settleOffer tells w what became of the lock its Release offered it:
// passed to it (code >= 3, fence token code-3), to a waiter queued in Redis
// (2), or freed (1); after a transport error the Release may have passed it
// the lock (w's next attempt finds it its own); after a nil reply (the
// releasing token held nothing) nothing changed. Unless w has it, the first waiter of
// the queue (w, or the one after it when w has returned) goes on.
func (qs *localQueues) settleOffer(w *waiter, code int64, err error, holder bool) (giveBack, granted bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	w.offers--
	granted = err == nil && code >= 3
	if rueidis.IsRedisNil(err) && !holder {
		// A give-back or a cleanup had nothing to give (its token held no
		// lock): nothing changed for w, nor for the queue.
		return w.step(evSettle), false
	}
	if rueidis.IsRedisNil(err) {
		// The holder's lock had expired: the lock is not held by this
		// Client any more, and the first waiter goes on.
		err = nil
	}
	if granted {
		if w.state == wsExposed {
			w.fence = code - 3
		}
		giveBack = w.step(evGrant)
	}
	giveBack = w.step(evSettle) || giveBack
	if granted {
		w.wake()
		return giveBack, granted
	}
	// The queue w was in, or the one that replaced it when it emptied.
	q := qs.keys[w.q.name]
	if q != nil && err == nil {
		q.local = false
	}
	// The first waiter goes on: w, or, when w has returned, the one now
	// first (unless the lock is still this Client's).
	if w.state != wsLeaving && w.state != wsLeft {
		w.wake()
	} else if q != nil && !q.local {
		if first := q.first(); first != nil {
			first.wake()
		}
	}
	return giveBack, granted
}
