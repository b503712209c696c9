package redislock

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/rueidis"
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
	l     *Lock
	o     *Options
	ttl   string // in milliseconds
	mark  string // the kind of a shared or semaphore obtain: "r", or the limit; "" exclusive
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
}

// obtain validates, then runs an obtain of l (of any kind: l.kind), under
// the observer. limit is a semaphore's (OpObtainSemaphore).
func (c *Client) obtain(ctx context.Context, op Op, l *Lock, ttl time.Duration, o *Options, limit int) (*Lock, error) {
	ctx, ev := c.begin(ctx, op, l.keys, ttl)
	a := obtainCall{c: c, l: l, o: o, r: retrier{template: o.retryStrategy(), ttl: ttl}}
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
		a.mark = strconv.Itoa(limit)
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
		backoff := a.r.next(ctx)
		if backoff == 0 {
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
// Client that wait for the same keys, if there are any.
func (a *obtainCall) joinBehind() bool {
	if a.c.queues.n.Load() == 0 {
		return false
	}
	return a.join(true)
}

// join puts the obtain in its local queue (behind: only behind others).
func (a *obtainCall) join(behind bool) bool {
	w := newWaiter(a.l, a.ttl, a.o, a.mark, a.c.sub.channel)
	if !a.c.queues.join(w, behind) {
		return false
	}
	a.w = w
	return true
}

// margin is how long before the ctx deadline the last attempt may be sent.
func (a *obtainCall) margin() time.Duration {
	return max(attemptMargin, 2*a.rtt)
}

// attempt is step 2: one attempt, and what it means. done reports that the
// obtain ends, with err. With queueOnly (the first wait's attempt), it is
// sent only when it queues the waiter in Redis. A command that another
// call's cancellation failed before it was sent (classify) is sent again
// at once, once: it never reached Redis.
func (a *obtainCall) attempt(ctx context.Context, queueOnly bool) (done bool, err error) {
	if a.w != nil && a.r.deadline && time.Until(a.r.limit) < a.margin() {
		return true, a.giveUp(context.DeadlineExceeded)
	}
	mode := a.queue(ctx)
	if queueOnly && mode != queueFirst && mode != queueAgain {
		return false, nil
	}
	t0 := time.Now()
	a.stats.attempts++
	rep := a.send(ctx, mode)
	if notSent(ctx, rep.err) && !rep.abandoned && !ownCtxEnded(ctx) {
		rep = a.send(ctx, a.queue(ctx))
	}
	a.rtt = time.Since(t0)
	switch {
	case rep.err == nil && !rep.held:
		a.l.fence = rep.fence
		if a.w != nil {
			a.leave(true)
		}
		return true, nil
	case rep.err == nil:
		a.stats.contended++
		a.lastErr, a.left = nil, rep.left
		return false, nil
	}
	a.lastErr = rep.err
	if rep.abandoned {
		a.abandoned = true
		return true, a.giveUp(nil)
	}
	retryable, ambiguous := classify(ctx, rep.err)
	if notSent(ctx, rep.err) {
		a.lastErr = errNotSent(rep.err)
	}
	a.unknown = a.unknown || ambiguous
	if !retryable {
		return true, a.giveUp(nil)
	}
	return false, nil
}

// send sends one attempt, queueing the waiter in Redis as mode says.
func (a *obtainCall) send(ctx context.Context, mode queueMode) attemptReply {
	switch {
	case a.c.q != nil:
		return a.sendQuorum(ctx)
	case mode == queueFirst || mode == queueAgain:
		return a.sendQueued(ctx, mode)
	case a.plain():
		return a.c.tryPlain(ctx, a.l, a.ttl)
	default:
		return a.c.tryObtain(ctx, a.l, a.keys(), a.args(mode, ""))
	}
}

// plain tells whether an attempt may be a plain SET NX PX: the first
// attempt of an obtain with a random token (nobody else can hold it), one
// key and no fence key, whose outcome nothing has made unknown.
func (a *obtainCall) plain() bool {
	return a.w == nil && !a.unknown && a.c.replicas == 0 && len(a.l.keys) == 1 && a.l.kind.exclusive &&
		(a.o == nil || (a.o.Token == "" && a.o.FenceKey == ""))
}

// queueMode is how an attempt treats the waiter's place in Redis' queue
// (obtain.lua's ARGV[7]).
type queueMode uint8

const (
	queueNone  queueMode = iota // not in Redis' queue, and not to be
	queueFirst                  // to be queued, for the first time ("0")
	queueAgain                  // to be queued unless it is already ("1")
	queueLeave                  // it may be queued but cannot hear of a grant: never queued, taken out if it obtains ("2")
)

// queue decides how the coming attempt treats Redis' queue: it queues only
// its Client's first waiter, while the lock is not held by a goroutine of
// its Client, and once the Client's channel is up (else nothing would tell
// it of a grant, and it waits by the backoff); a waiter that may be queued
// already and is not to be queued now is taken out if it obtains.
func (a *obtainCall) queue(ctx context.Context) queueMode {
	if a.w == nil {
		return queueNone
	}
	// A quorum waiter is never queued in the nodes' wait queues
	// (quorum.go): it waits by the backoff, or a Release of its Client.
	if a.c.q == nil && a.c.queues.mayQueue(a.w) && a.c.sub.register(ctx, a.w, a.r.limit) {
		switch again, ok := a.c.queues.expose(a.w); {
		case ok && again:
			return queueAgain
		case ok:
			return queueFirst
		}
	}
	if a.c.queues.sentEntry(a.w) {
		return queueLeave
	}
	return queueNone
}

// keys returns obtain.lua's KEYS (Client.scriptKeys).
func (a *obtainCall) keys() []string {
	return a.c.scriptKeys(a.l.keys, a.o.fenceKey())
}

// args returns obtain.lua's ARGV; with a queue mode, the waiter's entry
// and what to do with it; for a shared or semaphore obtain, always those
// and its kind (holders_obtain.lua).
func (a *obtainCall) args(mode queueMode, entry string) []string {
	fenced := "0"
	if a.o.fenceKey() != "" {
		fenced = "1"
	}
	args := []string{a.l.token, a.ttl, a.l.metadata, fenced}
	if mode != queueNone {
		if entry == "" {
			entry = a.w.entry
		}
		// The queue is kept while this waiter may wait, and a second more.
		keep := time.Until(a.r.limit).Milliseconds() + 1000
		args = append(args, entry, strconv.FormatInt(max(keep, 1000), 10), strconv.Itoa(int(mode)-1))
	}
	if a.mark != "" {
		if mode == queueNone {
			args = append(args, "", "0", "2")
		}
		args = append(args, a.mark)
	}
	return args
}

// sendQueued sends an attempt that queues the waiter in Redis. It runs
// detached from the ctx's cancellation (bounded by the call's limit and the
// release timeout), so that a waiter that gives up while it is in flight
// gives back what it may hold only once Redis has run it: the attempt can
// then no longer queue it again behind the give-back's back.
func (a *obtainCall) sendQueued(ctx context.Context, mode queueMode) attemptReply {
	c, l, w := a.c, a.l, a.w
	keys, args := a.keys(), a.args(mode, w.entry)
	replies := make(chan attemptReply, 1)
	dctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), a.r.limit.Add(c.releaseTimeout))
	go func() {
		defer cancel()
		replies <- c.tryObtain(dctx, l, keys, args)
	}()
	select {
	case rep := <-replies:
		if c.queues.settle(w) {
			c.startGiveBack(w)
		}
		return rep
	case <-ctx.Done():
		go func() {
			<-replies
			if c.queues.settle(w) {
				c.startGiveBack(w)
			}
		}()
		return attemptReply{err: ctx.Err(), abandoned: true}
	}
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
// grant is confirmed.
func (a *obtainCall) take(ctx context.Context, fence int64) error {
	a.l.fence = fence
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

// attemptReply is what an attempt learned.
type attemptReply struct {
	held      bool          // another token holds a key
	left      time.Duration // with held: that key's remaining TTL, when told
	fence     int64
	err       error
	abandoned bool // the ctx ended while it was in flight; it is given back once settled
}

// tryPlain is the plain attempt: SET NX PX, since nobody else can hold a
// fresh random token.
func (c *Client) tryPlain(ctx context.Context, l *Lock, ttl string) attemptReply {
	// Arbitrary rather than Set()...PxMilliseconds, which formats the TTL
	// anew on every call.
	cmd := c.client.B().Arbitrary("SET").Keys(l.keys[0]).Args(lockValue(l.token, 0, l.metadata), "NX", "PX", ttl).Build()
	err := c.client.Do(ctx, cmd).Error()
	if rueidis.IsRedisNil(err) {
		return attemptReply{held: true}
	}
	return attemptReply{err: err}
}

// tryObtain runs the kind's obtain script for l with keys and args
// (obtain.lua's KEYS and ARGV), and reads its reply. A write that fewer
// replicas than WithReplicas asks acknowledged is released. An exclusive
// lock runs c's own build of the kind: a quorum's Lock, on each node, that
// node's (a cluster member declares its wait queues).
func (c *Client) tryObtain(ctx context.Context, l *Lock, keys, args []string) attemptReply {
	k := l.kind
	if k.exclusive {
		k = c.kind
	}
	n, acked, err := c.exec(ctx, &k.obtain, keys, args)
	switch {
	case err != nil:
		return attemptReply{err: err}
	case n < 0:
		return attemptReply{held: true, left: time.Duration(-1-n) * time.Millisecond}
	case acked < c.replicas:
		c.unwrite(ctx, l)
		return attemptReply{err: c.notReplicated("obtain", l, acked)}
	}
	return attemptReply{fence: n}
}
