package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"
)

const (
	// expiryMargin is how long after the holder's TTL ends the first waiter
	// tries again: never before, so that it does not find the lock held.
	expiryMargin = time.Millisecond

	// attemptMargin is the least time before a ctx deadline in which an
	// attempt is still sent: an attempt needs at least this long, and twice
	// the round trip of the call's last attempt, to be answered in time.
	attemptMargin = time.Millisecond
)

// waitStats counts what happened in one Obtain, for its Event.
type waitStats struct {
	attempts, contended            int
	byRelease, byExpiry, byBackoff int
	nodes                          tally // a quorum's last attempt
}

// obtainCall is one Obtain or ObtainMulti: the state its steps share. Its
// steps are the methods below, in the order run calls them.
type obtainCall struct {
	c     *Client
	op    Op // OpObtain, OpObtainMulti, ...: a quorum's error names it
	l     *Lock
	o     *Options
	ttl   string // in milliseconds
	mark  string // the kind of a shared or semaphore obtain: "r", or the limit; "" exclusive
	limit int    // a semaphore's
	r     retrier
	w     *waiter // nil until it waits
	stats waitStats
	// watching: a quorum waiter subscribed to its keys' release channel
	// (quorum_wake.go), until it leaves.
	watching bool

	// What is known of the outcome.
	unknown   bool          // an attempt may have been applied unseen
	abandoned bool          // the ctx ended while a queueing attempt was in flight: it is given back once Redis ran it
	lastErr   error         // the last attempt's error; nil when it found the lock held
	left      time.Duration // the holder's remaining TTL, when the last attempt told it
	rtt       time.Duration // the last attempt's round trip
	skipped   bool          // the last attempt was not sent: a Release of the Client offers the waiter a permit
}

// obtain validates, then runs an obtain of l (of any kind: l.kind), under
// the observer. limit is a semaphore's (OpObtainSemaphore).
func (c *Client) obtain(ctx context.Context, op Op, l *Lock, ttl time.Duration, o *Options, limit int) (*Lock, error) {
	ctx, ev := c.begin(ctx, op, l.keys, ttl)
	a := obtainCall{c: c, op: op, l: l, o: o, r: retrier{template: o.retryStrategy(), ttl: ttl}}
	err := a.validate(ctx, op, ttl, limit)
	if err == nil {
		err = a.run(ctx)
	}
	a.r.stop()
	if ev != nil {
		st := &a.stats
		ev.Attempts, ev.Contended = st.attempts, st.contended
		ev.WokenByRelease, ev.WokenByExpiry, ev.WokenByBackoff = st.byRelease, st.byExpiry, st.byBackoff
		st.nodes.report(ev)
		if err == nil {
			l.obtained = ev.Start.Sub(clockBase)
		}
	}
	c.end(ctx, ev, err)
	if err != nil {
		if l.kind != nil && l.kind.semaphore {
			c.queues.forgetPermit(l)
		}
		return nil, err
	}
	return l, nil
}

// validate checks the input and sets the token and metadata.
func (a *obtainCall) validate(ctx context.Context, op Op, ttl time.Duration, limit int) error {
	l, o := a.l, a.o
	if err := a.c.validate(l.keys, ttl, o); err != nil {
		return err
	}
	switch op {
	case OpObtainShared:
		a.mark = "r"
	case OpObtainSemaphore:
		if limit < 1 {
			return fmt.Errorf("%w: %d is under 1", ErrInvalidLimit, limit)
		}
		a.mark, a.limit = strconv.Itoa(limit), limit
	}
	if a.mark != "" && a.c.q != nil {
		// Holders over a majority of nodes would need a majority of
		// leases: a quorum Client takes exclusive locks only.
		return fmt.Errorf("redislock: %v %q: a quorum Client takes exclusive locks only: %w", op, l.keys[0], errors.ErrUnsupported)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redislock: obtain %q: not attempted: %w", l.keys[0], err)
	}
	if o != nil && o.Token != "" {
		l.token = o.Token
		// A waiter of this Client with the same token that gave up may
		// still be giving back what it held: what this call takes would
		// be given back too.
		a.c.queues.awaitSettled(ctx, l.token, a.c.releaseTimeout)
	} else {
		l.setRandomToken()
	}
	if o != nil {
		l.metadata = o.Metadata
	}
	a.ttl = formatMs(ttl.Milliseconds())
	return nil
}

// run is an obtain, step by step:
//
//  1. join: a newcomer that finds goroutines of its Client waiting for its
//     keys queues behind them, and starts with a wait (step 4).
//  2. attempt: take the keys, or learn that another token holds them; the
//     first waiter of its Client is queued in Redis by the same script.
//  3. backoff: ask the strategy for the next wait; none: give up.
//     The first wait of a Client's first waiter starts with an attempt that
//     queues it in Redis (queue).
//  4. wait: until the lock passes to it or it is told to try again, the
//     holder's TTL ends, the backoff passes, or the ctx ends (give up).
//  5. grant: the lock passed to it, and it is obtained; else the first
//     waiter attempts again (2) and the others wait on (3).
//
// Whether a failed attempt may be retried is decided by classify alone.
func (a *obtainCall) run(ctx context.Context) error {
	waiting := a.joinBehind()
	if !waiting && a.queueAtOnce(ctx) {
		a.join(false)
	}
	for {
		if !waiting {
			if done, err := a.attempt(ctx, false); done {
				return err
			}
		}
		if a.w != nil {
			// A grant may have come while the attempt was in flight:
			// it is taken, whatever the strategy says next.
			if granted, fence := a.c.queues.granted(a.w); granted {
				return a.take(ctx, fence)
			}
		}
		var backoff time.Duration
		if a.skipped {
			// Its attempt waits for the answer of a Release that offers
			// it a permit (settleOffer wakes it); that wait is no retry
			// of its strategy, which would otherwise give up (LimitRetry)
			// while the offer passes it the permit. The release timeout
			// bounds it: each try of that Release settles its offer.
			a.skipped = false
			a.r.start(ctx)
			backoff = a.c.releaseTimeout
		} else if backoff = a.r.next(ctx); backoff == 0 {
			return a.giveUp(nil)
		}
		if a.w == nil {
			a.join(false)
			if a.lastErr == nil {
				if done, err := a.attempt(ctx, true); done {
					return err
				}
			}
		}
		switch a.wait(ctx, backoff) {
		case wokeByCtx:
			return a.giveUp(ctx.Err())
		case wokeByDeadline:
			if a.r.deadline {
				return a.giveUp(context.DeadlineExceeded)
			}
			return a.giveUp(nil)
		}
		if granted, fence := a.c.queues.granted(a.w); granted {
			return a.take(ctx, fence)
		}
		waiting = !a.c.queues.first(a.w)
	}
}

// joinBehind is step 1: it queues a newcomer behind the goroutines of its
// Client that wait for the same keys, if there are any. A semaphore obtain
// that may not wait (NoRetry) makes its one attempt instead: the first of
// them may be on its first attempt, with permits free.
func (a *obtainCall) joinBehind() bool {
	if a.c.queues.n.Load() == 0 || (a.l.kind.semaphore && !a.r.mayWait()) {
		return false
	}
	return a.join(true)
}

// queueAtOnce tells whether the first attempt of a shared or semaphore
// obtain is to queue the waiter in Redis if it finds the key held: when it
// may wait at all (its retry strategy is not NoRetry) and its Client's
// channel is up already (it is kept a while after the last waiter, so a
// contended key has it). Its script reads the holders either way: the
// queueing costs no second attempt. An exclusive obtain's first attempt is
// a plain SET NX instead, which queues nothing.
func (a *obtainCall) queueAtOnce(ctx context.Context) bool {
	if a.l.kind.exclusive || a.c.q != nil || !a.r.mayWait() || !a.c.sub.up() {
		return false
	}
	a.r.start(ctx)
	return true
}

// join puts the obtain in its local queue (behind: only behind others).
func (a *obtainCall) join(behind bool) bool {
	w := newWaiter(a.l, a.ttl, a.o, a.mark, a.c.sub.channel)
	w.limit = a.limit
	if !a.c.queues.join(w, behind) {
		return false
	}
	a.w = w
	return true
}

// wait is step 4: it sleeps until there is news for the waiter, the
// holder's expiry (for the first waiter), the backoff, or the ctx; and
// never past the call's limit less the margin an attempt needs.
func (a *obtainCall) wait(ctx context.Context, backoff time.Duration) wakeReason {
	left := a.left
	a.left = 0
	if !a.c.queues.first(a.w) {
		left = 0 // the first waiter watches the holder's TTL
	}
	d, reason := backoff, wokeByBackoff
	if left > 0 && left+expiryMargin < d {
		d, reason = left+expiryMargin, wokeByExpiry
	}
	if until := time.Until(a.r.limit) - a.margin(); until < d {
		d, reason = until, wokeByDeadline
	}
	if d <= 0 {
		return reason
	}
	if a.c.q != nil && !a.watching {
		a.c.q.watch(a.c, a.l.keys)
		a.watching = true
	}
	switch woke := a.r.sleep(ctx, d, a.w.signal); woke {
	case wokeByRelease, wokeByCtx:
		reason = woke
	}
	if reason == wokeByRelease && a.c.q != nil && a.w.heard.Swap(false) {
		reason = a.c.q.spread(ctx, a)
	}
	switch reason {
	case wokeByRelease:
		a.stats.byRelease++
	case wokeByExpiry:
		a.stats.byExpiry++
	case wokeByBackoff:
		a.stats.byBackoff++
	}
	return reason
}

// take is step 5: the lock passed to the waiter. With WithReplicas, the
// grant is confirmed. A semaphore waiter granted a permit through the
// channel while a Release of its Client offers it one waits for that
// Release's answer first (within the release timeout): its script, run
// after the caller gave the permit back, would grant the token again. An
// answer that comes later is a late grant, which settleOffer gives back.
func (a *obtainCall) take(ctx context.Context, fence int64) error {
	a.l.fence = fence
	if a.l.kind.semaphore && a.c.queues.offered(a.w) {
		t := time.NewTimer(a.c.releaseTimeout)
		for a.c.queues.offered(a.w) {
			select {
			case <-a.w.signal:
				continue
			case <-t.C:
			}
			break
		}
		t.Stop()
	}
	a.leave(true)
	if a.c.replicas > 0 {
		return a.c.confirm(ctx, a.l, a.ttl)
	}
	return nil
}

// leave takes the waiter out of its queue, and out of the channel's once
// nothing can reach it any more.
func (a *obtainCall) leave(obtained bool) {
	c, w := a.c, a.w
	if a.watching {
		c.q.unwatch(c, a.l.keys)
		a.watching = false
	}
	switch giveBack, done := c.queues.leave(w, obtained); {
	case giveBack:
		c.startGiveBack(w)
	case done:
		c.sub.unregister(w)
	}
}

// giveUp ends an obtain that failed: it leaves its queue (what the waiter
// may hold is given back in the background) and, for a random token whose
// outcome is unknown, starts the cleanup; then it builds the error. ctxErr
// is the ctx error when the ctx ended while waiting.
func (a *obtainCall) giveUp(ctxErr error) error {
	if a.w != nil {
		a.leave(false)
	}
	random := a.o == nil || a.o.Token == ""
	if random && a.unknown {
		go a.c.cleanup(a.l)
	}
	// An abandoned attempt is given back once Redis ran it: its caller's
	// answer is "not obtained", whatever the token.
	return notObtained(a.l, random || a.abandoned, a.lastErr, ctxErr)
}
