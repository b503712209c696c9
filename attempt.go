package redislock

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

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
	a.skipped = false
	if a.w != nil {
		if !a.c.queues.beginAttempt(a.w) {
			a.skipped = true // a Release offers it a permit: its answer comes first
			return false, nil
		}
		defer func() {
			if !done {
				a.c.queues.endAttempt(a.w)
			}
		}()
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
	rep.err = asCtxErr(ctx, rep.err)
	switch {
	case rep.err == nil && !rep.held:
		a.l.fence = rep.fence
		if a.w != nil {
			a.leave(true)
		} else if a.l.kind.semaphore {
			a.c.queues.holdPermit(a.l)
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
