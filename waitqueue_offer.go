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
		// first waiter that no other Release in flight offers one to and
		// whose own attempt is not in flight (that attempt may take a
		// permit itself), so that permits go in arrival order but for
		// those attempts. Passing a permit over the attempting waiter
		// rather than freeing it keeps it within the Client: a freed
		// permit is taken by an attempt, and the attempts it sets off
		// would each free the next Release's permit again.
		w = nil
		for _, x := range q.waiters {
			if x.offers == 0 && !x.attempting && (x.state == wsLocal || x.state == wsExposed) {
				w = x
				break
			}
		}
	}
	if w == nil || (w.state != wsLocal && w.state != wsExposed) {
		return nil
	}
	w.offers++
	w.step(evExpose)
	return w
}

// offered tells whether a Release in flight offers w the lock.
func (qs *localQueues) offered(w *waiter) bool {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	return w.offers > 0
}

// holdPermit records that l, a semaphore's Lock, holds a permit: its
// obtain took it by its own attempt.
func (qs *localQueues) holdPermit(l *Lock) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	qs.countPermit(l)
}

// countPermit and uncountPermit keep held, which counts tokens, not
// Locks: an obtain by a token that holds a permit already (Options.Token)
// refreshes that one permit in Redis, and a Release by any Lock of that
// token gives it back, so every Lock of the token stops counting then.
// Called with qs.mu held.
func (qs *localQueues) countPermit(l *Lock) {
	if l.counted {
		return
	}
	l.counted = true
	p := permit{l.keys[0], l.token}
	if _, ok := qs.permits[p]; ok {
		return
	}
	if qs.held == nil {
		qs.held = make(map[string]int)
		qs.permits = make(map[permit]struct{})
	}
	qs.permits[p] = struct{}{}
	qs.held[l.keys[0]]++
}

func (qs *localQueues) uncountPermit(l *Lock) {
	if !l.counted {
		return
	}
	l.counted = false
	p := permit{l.keys[0], l.token}
	if _, ok := qs.permits[p]; !ok {
		return // another Lock of the token gave it back
	}
	delete(qs.permits, p)
	if qs.held[l.keys[0]]--; qs.held[l.keys[0]] <= 0 {
		delete(qs.held, l.keys[0])
	}
}

// releasedPermit follows a semaphore's release by l that offered its
// permit to no waiter of this Client: l holds no permit any more (or may
// not: a Lock counted too few makes a waiter queue in Redis, which is safe;
// one counted too many would keep it out) and, when the release went
// through (err nil), the first waiter that no Release offers one to and
// that was granted nothing, if there is one, is woken: the permit may be
// free.
func (qs *localQueues) releasedPermit(l *Lock, err error) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	counted := l.counted
	qs.uncountPermit(l)
	if err == nil || counted {
		qs.wakeUnoffered(l)
	}
}

// forgetPermit follows an obtain of l that returned an error after l took
// a permit (a grant that WithReplicas did not confirm): as releasedPermit,
// when l was counted.
func (qs *localQueues) forgetPermit(l *Lock) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	if l.counted {
		qs.uncountPermit(l)
		qs.wakeUnoffered(l)
	}
}

// wakeUnoffered wakes the first waiter of l's queue that no Release
// offers a permit to and that was granted nothing. Called with qs.mu held.
func (qs *localQueues) wakeUnoffered(l *Lock) {
	if q := qs.keys[lockQueueName(l)]; q != nil {
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

// settleOffer tells w what became of the lock that rel's Release offered
// it: passed to it (code >= 3, fence token code-3), to a waiter queued in
// Redis (2), or freed (1); after a transport error the Release may have
// passed it the lock (w's next attempt finds it its own); after a nil reply
// (the releasing token held nothing) nothing changed. Unless w has it, the
// first waiter of the queue goes on: w while it waits, else the one now
// first (unless the lock is still this Client's). A semaphore's permit
// passed to w moves from rel to w in held; else rel holds none any more.
func (qs *localQueues) settleOffer(w *waiter, rel *Lock, code int64, err error, holder bool) (giveBack, granted bool) {
	qs.mu.Lock()
	defer qs.mu.Unlock()
	w.offers--
	granted = err == nil && code >= 3
	if granted && w.state == wsObtained && w.l.kind.semaphore {
		// A late grant. w's Obtain returned a permit granted by another
		// Release's script (take waits for this answer only within the
		// release timeout), and this script ran after it: it grants only
		// a token that holds no permit at the time (holders_release.lua:
		// fill passes over, and the offer skips, a token among the
		// holders), and no grant can reach w after it (a later script
		// finds its token holding; w makes no attempt while offered,
		// beginAttempt), so the Lock w returned had been released or its
		// lease had ended. rel's permit passed to w's token.
		qs.uncountPermit(rel)
		w.step(evSettle)
		if _, ok := qs.permits[permit{w.l.keys[0], w.l.token}]; ok {
			// A Lock of the token counts as holding a permit (w's, whose
			// lease ended unseen, or a later obtain by the same
			// Options.Token): it holds this one now, and its Release
			// gives it back.
			return false, false
		}
		if !w.l.randomToken() {
			// A custom token's (Options.Token): an obtain by the same
			// token may be in flight, its script run after this one (it
			// found the permit its own) and its reply not in yet; a
			// give-back would take the permit of the Lock it returns.
			// The permit stays the token's: its next obtain takes it
			// again (idempotent) and its Release gives it back, or its
			// lease ends.
			return false, false
		}
		// Nobody's (a random token names one Obtain alone, and it has
		// returned): it is given back at once (the give-back's release
		// passes it on, or wakes the first waiter).
		qs.countPermit(w.l)
		qs.markSettling(w.l.token)
		return true, false
	}
	dropped := false // the Client counts a permit fewer
	if w.l.kind.semaphore {
		dropped = rel.counted && !granted
		qs.uncountPermit(rel)
		if granted {
			qs.countPermit(w.l)
		}
	}
	if rueidis.IsRedisNil(err) && !holder {
		// A give-back or a cleanup had nothing to give (its token held no
		// lock): nothing changed for the queue; w, which skipped its
		// attempt for this offer (beginAttempt), goes on, and the first
		// waiter too when the Client counts a permit fewer.
		giveBack = w.step(evSettle)
		if w.offers == 0 && (w.state == wsLocal || w.state == wsExposed || w.state == wsGranted) {
			w.wake()
		}
		if q := qs.keys[w.q.name]; dropped && q != nil {
			if first := q.first(); first != nil && first != w && !qs.localHold(first) {
				first.wake()
			}
		}
		return giveBack, false
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
	// The first waiter goes on, unless the lock is still this Client's
	// (w's leave may have found it so before rel let go); and w while it
	// waits: a semaphore's offer may pass over a first waiter whose
	// attempt was in flight, which did not queue it in Redis while its
	// Client held every permit.
	if w.state == wsLocal || w.state == wsExposed || w.state == wsGranted {
		w.wake()
	}
	if q != nil {
		if first := q.first(); first != nil && first != w && !qs.localHold(first) {
			first.wake()
		}
	}
	return giveBack, granted
}
