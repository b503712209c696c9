package redislock

import (
	"context"
	"runtime"
	"time"

	"github.com/redis/rueidis"
)

// releaser is who gives a lock back, which decides how release tries.
type releaser uint8

const (
	// byHolder: a Release, of a lock its token obtained; the caller waits.
	byHolder releaser = iota
	// byGiveBack: a waiter that returned without the lock gives back what
	// it may hold (its queue entry, a lock passed to it), or an obtain
	// that was not replicated takes back its write; in the background.
	byGiveBack
	// byCleanup: an obtain whose outcome is unknown; the lost command may
	// still be on its way (on another connection), so "not held" is tried
	// again too; in the background.
	byCleanup
)

// release gives l back with the kind's release script: it deletes the keys
// if l's token holds them all, and passes the lock to the first waiter (one
// queued in Redis, else the first local waiter of this Client for the same
// keys, offered the lock in the same script). drop, when not "", is an
// entry of l's token to take out of Redis' wait queues first (a waiter that
// gave up).
//
// After a transport error (classify) it tries again, waiting 25ms, then
// twice as long each time up to 500ms, until ctx ends or the release timeout
// has passed since the first failure. A Release tries again only a command
// that another call's cancellation failed (rueidis dials a lost connection
// with the ctx of the command that needs it): it never left, while the
// caller waits with a live ctx; any other error is returned at once, as a
// single try would. A try that finds the lock not held after
// one whose outcome is unknown returns that one's error: the lock is no
// longer held by the token, but whether this release freed it or it had
// expired is unknown; so does a release that gives up after such a try. A
// cleanup tries again after "not held" too. The error is the last try's: a
// nil reply (rueidis.IsRedisNil) when the lock is not held.
func (c *Client) release(ctx context.Context, l *Lock, by releaser, drop string) (tries int, err error) {
	var (
		deadline time.Time
		pause    = 25 * time.Millisecond
		unknown  error // the error of the last try that may have been applied
		timer    *time.Timer
	)
	for {
		tries++
		err = c.releaseOnce(ctx, l, by, drop)
		notHeld := rueidis.IsRedisNil(err)
		switch {
		case err == nil:
			return tries, nil
		case notHeld && by != byCleanup && unknown != nil:
			return tries, unknown
		case notHeld && by != byCleanup:
			return tries, err
		case !notHeld:
			retryable, ambiguous := classify(ctx, err)
			if ambiguous {
				unknown = err
			}
			// A Release tries again only a command that another call's
			// cancellation failed: it never left, and the caller's ctx
			// is live. Anything else is the caller's answer at once (a
			// failed dial: nothing was sent, Release again).
			holderRetry := isCtxErr(err) && !ownCtxEnded(ctx)
			if !retryable || (by == byHolder && !holderRetry) {
				if unknown != nil {
					return tries, unknown
				}
				return tries, err
			}
		}
		if unknown != nil {
			err = unknown // what the caller must know: the outcome is unknown
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(c.releaseTimeout)
		}
		if time.Now().Add(pause).After(deadline) {
			return tries, err
		}
		if timer == nil {
			timer = time.NewTimer(pause)
			defer timer.Stop()
		} else {
			timer.Reset(pause)
		}
		select {
		case <-ctx.Done():
			return tries, err
		case <-timer.C:
		}
		pause = min(2*pause, 500*time.Millisecond)
	}
}

// releaseOnce is one try of release.
func (c *Client) releaseOnce(ctx context.Context, l *Lock, by releaser, drop string) error {
	if c.q != nil {
		return c.q.release(ctx, c, l, by, nil) // nothing of a quorum waiter is queued in Redis: drop is ""
	}
	var w *waiter
	if c.queues.n.Load() > 0 && (l.kind.exclusive || l.kind.semaphore) {
		w = c.queues.offer(lockQueueName(l))
	}
	if w == nil && drop == "" {
		err := l.kind.release.lua.Exec(ctx, c.client, c.scriptKeys(l.keys, ""), []string{l.token}).Error()
		if l.kind.semaphore {
			c.queues.releasedPermit(l, err)
		}
		return err
	}
	var offered string
	if w != nil {
		offered = w.entry
	}
	code, err := l.kind.release.lua.Exec(ctx, c.client, c.scriptKeys(l.keys, ""), []string{l.token, drop, offered}).AsInt64()
	if w == nil {
		if l.kind.semaphore {
			c.queues.releasedPermit(l, err)
		}
		return err
	}
	switch giveBack, granted := c.queues.settleOffer(w, l, code, err, by == byHolder); {
	case giveBack:
		c.startGiveBack(w)
	case granted:
		// Hand the processor to the new holder, as sync.Mutex does in
		// starvation mode: the releaser may block next (a sleep, a
		// syscall), and the runtime would leave the woken waiter queued
		// on this P until it takes the P back.
		runtime.Gosched()
	}
	return err
}

// startGiveBack gives back, in the background and within the release
// timeout, what a waiter that returned without the lock may hold in Redis:
// its entry in the wait queues, and the lock when it was granted (passed on
// to the next waiter, as a Release does). Until it is done, an Obtain of
// this Client with the same token waits for it (localQueues.awaitSettled).
func (c *Client) startGiveBack(w *waiter) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.releaseTimeout)
		defer cancel()
		_, _ = c.release(ctx, w.l, byGiveBack, w.entry)
		c.sub.unregister(w)
		c.queues.gaveBack(w)
	}()
}

// cleanup releases, in the background and within the release timeout, what
// an obtain of a random token whose outcome is unknown may have taken (only
// that call knew the token, so nothing the caller does later can hold it).
// A lost command that lands after the release timeout is not undone: that
// lock lives out its TTL.
func (c *Client) cleanup(l *Lock) {
	ctx, cancel := context.WithTimeout(context.Background(), c.releaseTimeout)
	defer cancel()
	_, _ = c.release(ctx, l, byCleanup, "")
}
