package redislock

// How a retrying Obtain waits.
//
// A waiter is woken by the release itself, not by polling:
//
//   - In Redis, the waiters of a lock queue in a list beside the key they
//     found held (lua/queue.lua), one entry a waiting Client. release.lua
//     passes the lock to the first entry in the same script, so nobody can
//     take it in between (no barging, no herd: one waiter is told, by a
//     PUBLISH on its Client's channel), and the waiter has it without
//     another round trip.
//   - In the process, the goroutines of one Client that wait for the same
//     keys queue behind one another, and only the first one talks to Redis.
//     A Release by that Client passes the lock to its first local waiter in
//     the release's own round trip, unless a waiter of another Client is
//     queued in Redis: that one is first.
//   - A failed attempt returns the holder's remaining TTL: the first waiter
//     tries again just after it, so a lock whose holder vanished is taken
//     within a few milliseconds of its expiry.
//   - The backoff of the RetryStrategy bounds how long a waiter sleeps
//     without news. Where pub/sub is not to be had (an ACL without channel
//     permissions, a server that refuses SUBSCRIBE, a killed connection),
//     waiters are not queued in Redis and fall back to the backoff, with the
//     holder's TTL still heeded.
//
// A Client subscribes to one channel of its own, on a dedicated connection,
// while it has waiters queued in Redis, and drops it subscriptionLinger after
// the last one returns.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

	// subscriptionLinger is how long a Client keeps its channel after its
	// last waiter returned: a key contended again at once does not pay a
	// new SUBSCRIBE.
	subscriptionLinger = 250 * time.Millisecond

	// resubscribeAfter is how long a Client waits by the backoff alone after
	// a SUBSCRIBE was refused before it tries again.
	resubscribeAfter = 10 * time.Second
)

// waitStats counts what happened in one Obtain, for its Event.
type waitStats struct {
	attempts, contended            int
	byRelease, byExpiry, byBackoff int
}

// waiter is one Obtain that waits. Its fields below mu are guarded by the
// Client's waits.mu.
type waiter struct {
	l      *Lock
	ms     string // the TTL in milliseconds
	o      *Options
	q      *keyQueue
	signal chan struct{} // cap 1: something below changed

	entry   string // the queue entry, built once
	queued  bool   // an attempt sent its entry: it may be queued in Redis
	granted bool   // the lock was passed to it
	fence   int64  // with granted
	pending bool   // a Release of this Client is passing the lock to it
	gone    bool   // it returned while pending
}

// keyQueue is the waiters of one Client for one set of keys, in arrival
// order; the first is the one that talks to Redis.
type keyQueue struct {
	name    string
	waiters []*waiter
	// local is set when the lock passed to one of these waiters: while it
	// holds it, the next waits for its release, which comes through this
	// Client, and stays out of Redis' queue.
	local bool
}

// waits is the waiting state of a Client.
type waits struct {
	n      atomic.Int64 // waiters in all: Release looks no further when 0
	mu     sync.Mutex
	keys   map[string]*keyQueue
	tokens map[string]*waiter // waiters that may be queued in Redis

	// The subscription.
	channel string
	sub     int // subNone, subStarting, subUp, subDown
	subGen  int
	ready   chan struct{} // closed when a start ends
	retryAt time.Time     // with subDown: when to try again
	cancel  func()        // with subUp: ends the dedicated connection
	idle    *time.Timer
}

const (
	subNone = iota
	subStarting
	subUp
	subDown
)

// queueName is the name of the local queue of keys: the key itself, or the
// keys joined by NUL.
func queueName(keys []string) string {
	if len(keys) == 1 {
		return keys[0]
	}
	return strings.Join(keys, "\x00")
}

// join puts an Obtain that waits in its local queue.
func (c *Client) join(l *Lock, ms string, o *Options) *waiter {
	w := &waiter{l: l, ms: ms, o: o, signal: make(chan struct{}, 1)}
	name := queueName(l.keys)
	ws := &c.waits
	ws.mu.Lock()
	if ws.keys == nil {
		ws.keys = make(map[string]*keyQueue)
		ws.tokens = make(map[string]*waiter)
	}
	q := ws.keys[name]
	if q == nil {
		q = &keyQueue{name: name}
		ws.keys[name] = q
	}
	w.q = q
	q.waiters = append(q.waiters, w)
	ws.n.Add(1)
	if ws.idle != nil {
		ws.idle.Stop()
	}
	ws.mu.Unlock()
	return w
}

// joinBehind puts a new Obtain in its local queue when other goroutines of
// this Client already wait for its keys, so that it does not overtake them;
// else it returns nil.
func (c *Client) joinBehind(l *Lock, ms string, o *Options) *waiter {
	ws := &c.waits
	ws.mu.Lock()
	q := ws.keys[queueName(l.keys)]
	ok := q != nil && len(q.waiters) > 0
	ws.mu.Unlock()
	if !ok {
		return nil
	}
	return c.join(l, ms, o)
}

// leave takes w out of its queue once its Obtain returns: obtained or not.
// A waiter that gave up while a Release of this Client passes it the lock
// leaves it to that Release to give back; one that may be queued in Redis is
// taken out of that queue (and what it was granted meanwhile released) in
// the background, within the release timeout.
func (c *Client) leave(w *waiter, obtained bool) {
	ws := &c.waits
	ws.mu.Lock()
	q := w.q
	first := len(q.waiters) > 0 && q.waiters[0] == w
	if i := indexOf(q.waiters, w); i >= 0 {
		q.waiters = append(q.waiters[:i], q.waiters[i+1:]...)
	}
	if w.queued && ws.tokens[w.l.token] == w {
		delete(ws.tokens, w.l.token)
	}
	if obtained {
		q.local = true
	}
	switch {
	case len(q.waiters) == 0:
		if ws.keys[q.name] == q {
			delete(ws.keys, q.name)
		}
	case first && !q.local:
		// The next one talks to Redis now.
		q.waiters[0].wake()
	}
	if !obtained && w.pending {
		w.gone = true
	}
	abandon := !obtained && w.queued && !w.granted
	giveBack := !obtained && w.granted
	if ws.n.Add(-1) == 0 {
		c.idleLater()
	}
	ws.mu.Unlock()
	switch {
	case giveBack:
		go c.passOn(w)
	case abandon:
		go c.giveBack(w, w.entry)
	}
}

func indexOf(ws []*waiter, w *waiter) int {
	for i, x := range ws {
		if x == w {
			return i
		}
	}
	return -1
}

// wake tells w to try again now, or that it was granted the lock.
func (w *waiter) wake() {
	select {
	case w.signal <- struct{}{}:
	default:
	}
}

// giveBack drops the entry of a waiter that returned from Redis' queues and
// releases what it was granted meanwhile, passing the lock on to the next
// waiter queued in Redis; within the release timeout. (Its Client's next
// waiter was woken when it left.)
func (c *Client) giveBack(w *waiter, entry string) {
	c.cleanup(w.l, false, w.l.token, entry)
}

// passOn releases the lock passed to a waiter that had returned, as a
// Release of its Client does: to the next waiter, queued in Redis or of this
// Client; within the release timeout, trying again after a transport error.
func (c *Client) passOn(w *waiter) {
	ctx, cancel := context.WithTimeout(context.Background(), c.releaseTimeout)
	defer cancel()
	if err := c.release(ctx, w.l); err != nil && !rueidis.IsRedisNil(err) {
		c.cleanup(w.l, false, w.l.token)
	}
}

// buildEntry returns w's queue entry (lua/queue.lua).
func (c *Client) buildEntry(w *waiter) string {
	if w.entry != "" {
		return w.entry
	}
	var meta string
	if w.o != nil {
		meta = w.o.Metadata
	}
	fields := make([]string, 0, 5+len(w.l.keys))
	fields = append(fields, c.waits.channel, w.l.token, w.ms, w.o.fenceKey(), meta)
	fields = append(fields, w.l.keys...)
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
	w.entry = string(b)
	return w.entry
}

// wakeReason is what ended a wait.
type wakeReason uint8

const (
	wokeByBackoff wakeReason = iota
	wokeByExpiry
	wokeByRelease
	wokeByDeadline // the ctx deadline is too close for another attempt
	wokeByCtx      // the ctx ended
)

// sleep waits for news for w: a grant or a wake-up, the holder's expiry
// (left > 0), the backoff, or the ctx; and never past limit less margin.
func (c *Client) sleep(ctx context.Context, w *waiter, timer *time.Timer, backoff, left time.Duration, limit time.Time, margin time.Duration) wakeReason {
	d, reason := backoff, wokeByBackoff
	if left > 0 && left+expiryMargin < d {
		d, reason = left+expiryMargin, wokeByExpiry
	}
	if until := time.Until(limit) - margin; until < d {
		d, reason = until, wokeByDeadline
	}
	if d <= 0 {
		return reason
	}
	timer.Reset(d)
	select {
	case <-w.signal:
		timer.Stop()
		return wokeByRelease
	case <-timer.C:
		return reason
	case <-ctx.Done():
		timer.Stop()
		return wokeByCtx
	}
}

// first tells whether w is the first of its local queue.
func (c *Client) first(w *waiter) bool {
	c.waits.mu.Lock()
	defer c.waits.mu.Unlock()
	return len(w.q.waiters) > 0 && w.q.waiters[0] == w
}

// granted tells whether the lock passed to w, and its fence token.
func (c *Client) granted(w *waiter) (bool, int64) {
	c.waits.mu.Lock()
	defer c.waits.mu.Unlock()
	return w.granted, w.fence
}

// entryFor returns the entry w's next attempt sends, and whether an attempt
// sent it before; "" when w is not the first of its queue, when the lock
// passed to a waiter of this Client (whose Release will pass it on), or when
// the Client has no channel: it is then not queued in Redis (nothing would
// tell it of a grant) and waits by the backoff.
func (c *Client) entryFor(ctx context.Context, w *waiter, deadline time.Time) (entry string, again bool) {
	ws := &c.waits
	ws.mu.Lock()
	if len(w.q.waiters) == 0 || w.q.waiters[0] != w || w.q.local {
		ws.mu.Unlock()
		return "", false
	}
	ready := c.subscribe()
	ws.mu.Unlock()
	if ready != nil {
		t := time.NewTimer(c.releaseTimeout)
		if !deadline.IsZero() {
			t.Reset(time.Until(deadline))
		}
		select {
		case <-ready:
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	ws.mu.Lock()
	defer ws.mu.Unlock()
	if ws.sub != subUp {
		return "", false
	}
	again = w.queued
	w.queued = true
	ws.tokens[w.l.token] = w
	return c.buildEntry(w), again
}

// subscribe starts the subscription when there is none (or the last one
// failed long enough ago) and returns a channel closed when it is up or has
// failed; nil when there is nothing to wait for. Called with waits.mu held.
func (c *Client) subscribe() <-chan struct{} {
	ws := &c.waits
	switch ws.sub {
	case subUp:
		return nil
	case subStarting:
		return ws.ready
	case subDown:
		if time.Now().Before(ws.retryAt) {
			return nil
		}
	}
	if ws.channel == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		ws.channel = "redislock:" + hex.EncodeToString(b[:])
	}
	ws.sub = subStarting
	ws.subGen++
	ws.ready = make(chan struct{})
	go c.runSubscription(ws.subGen, ws.ready)
	return ws.ready
}

// runSubscription subscribes to the Client's channel on a dedicated
// connection, then watches it until it ends.
func (c *Client) runSubscription(gen int, ready chan struct{}) {
	ws := &c.waits
	dc, cancel := c.client.Dedicate()
	errs := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: c.onMessage})
	ctx, stop := context.WithTimeout(context.Background(), c.releaseTimeout)
	err := dc.Do(ctx, dc.B().Subscribe().Channel(ws.channel).Build()).Error()
	stop()
	ws.mu.Lock()
	if err != nil || gen != ws.subGen {
		ws.sub, ws.retryAt = subDown, time.Now().Add(resubscribeAfter)
		close(ready)
		ws.mu.Unlock()
		cancel()
		return
	}
	ws.sub, ws.cancel = subUp, cancel
	close(ready)
	if ws.n.Load() == 0 {
		c.idleLater()
	}
	ws.mu.Unlock()

	<-errs // the connection ended: closed by idle, or lost
	ws.mu.Lock()
	if gen == ws.subGen && ws.sub == subUp {
		// Lost: grants sent meanwhile are lost too. Every waiter that
		// may be queued tries again now (finding the lock its own if it
		// was granted), and the next wait subscribes again.
		ws.sub, ws.retryAt, ws.cancel = subDown, time.Now(), nil
		for _, w := range ws.tokens {
			w.wake()
		}
	}
	ws.mu.Unlock()
	cancel()
}

// onMessage delivers a message of the Client's channel: "<fence>:<token>"
// when the lock passed to that waiter, "w:<token>" when it is to try again.
func (c *Client) onMessage(m rueidis.PubSubMessage) {
	head, token, ok := strings.Cut(m.Message, ":")
	if !ok {
		return
	}
	ws := &c.waits
	ws.mu.Lock()
	defer ws.mu.Unlock()
	w := ws.tokens[token]
	if w == nil {
		return // its Obtain returned: it gave back what it was granted
	}
	if head == "w" {
		w.wake()
		return
	}
	fence, err := strconv.ParseInt(head, 10, 64)
	if err != nil {
		return
	}
	w.granted, w.fence = true, fence
	w.wake()
}

// idleLater drops the subscription subscriptionLinger from now unless a
// waiter comes meanwhile. Called with waits.mu held.
func (c *Client) idleLater() {
	ws := &c.waits
	if ws.sub != subUp {
		return
	}
	if ws.idle == nil {
		ws.idle = time.AfterFunc(subscriptionLinger, c.dropIdle)
		return
	}
	ws.idle.Reset(subscriptionLinger)
}

func (c *Client) dropIdle() {
	ws := &c.waits
	ws.mu.Lock()
	var cancel func()
	if ws.n.Load() == 0 && ws.sub == subUp {
		cancel = ws.cancel
		ws.sub, ws.cancel = subNone, nil
		ws.subGen++
	}
	ws.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// candidate returns the first local waiter for keys, marked pending, that a
// Release of this Client may pass the lock to; nil when there is none.
func (c *Client) candidate(keys []string) *waiter {
	ws := &c.waits
	ws.mu.Lock()
	defer ws.mu.Unlock()
	q := ws.keys[queueName(keys)]
	if q == nil || len(q.waiters) == 0 {
		return nil
	}
	w := q.waiters[0]
	if w.pending || w.granted {
		return nil
	}
	w.pending = true
	c.buildEntry(w)
	return w
}

// settle tells the candidate of a Release what became of the lock: passed
// to it (code >= 3), to a waiter queued in Redis (2), or freed (1, or an
// error: then the lock was not this Release's to give).
func (c *Client) settle(w *waiter, code int64, err error) {
	ws := &c.waits
	ws.mu.Lock()
	w.pending = false
	granted := err == nil && code >= 3
	if granted {
		w.granted, w.fence = true, code-3
		w.wake()
	} else {
		if err == nil {
			w.q.local = false
		}
		w.wake()
		if w.gone && len(w.q.waiters) > 0 {
			// The candidate has returned: the first of the queue now
			// goes on in its place.
			w.q.waiters[0].wake()
		}
	}
	gone := w.gone
	ws.mu.Unlock()
	switch {
	case gone && granted:
		go c.passOn(w)
	case granted:
		// Hand the processor to the new holder, as sync.Mutex does in
		// starvation mode: the releaser may block next (a sleep, a
		// syscall), and the runtime would leave the woken waiter queued
		// on this P until it takes the P back.
		runtime.Gosched()
	}
}
