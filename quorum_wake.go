package redislock

// How a quorum waiter hears of a release by another Client: every release
// on a quorum's node publishes on the channel of its keys (unlock.lua),
// and a quorum Client whose goroutines wait for those keys subscribes to
// that channel on each node, on one dedicated connection a node (opened on
// the first wait, kept for the Client's life, opened again once lost). A
// message wakes the Client's first waiter for the keys, which tries again
// at once. Subscribing runs in the background, bounded by the release
// timeout: a node where it fails (down, paused, an ACL without channel
// permissions) only leaves its waiters to the backoff and the holders'
// TTL, as does a release that comes before the subscription is up.

import (
	"context"
	"math/rand/v2"
	"strings"
	"sync"

	"github.com/redis/rueidis"
)

// releasedPrefix starts the channel a release of a quorum's node publishes
// on; the keys' queue name (waitqueue.go) ends it.
const releasedPrefix = "redislock:released:"

func releasedChannel(keys []string) string { return releasedPrefix + queueName(keys) }

// wakers is a quorum Client's subscriptions to release channels.
type wakers struct {
	mu    sync.Mutex
	conns []rueidis.DedicatedClient // by node; nil until needed, or after it was lost
	refs  map[string]int            // by channel: the waiters that want it
}

// watch subscribes the Client to the release channel of w's keys on every
// node, once for all its waiters of those keys, in the background.
func (q *quorum) watch(c *Client, keys []string) {
	ch := releasedChannel(keys)
	q.wake.mu.Lock()
	if q.wake.refs == nil {
		q.wake.refs = make(map[string]int)
		q.wake.conns = make([]rueidis.DedicatedClient, len(q.nodes))
	}
	q.wake.refs[ch]++
	first := q.wake.refs[ch] == 1
	q.wake.mu.Unlock()
	if first {
		go q.subscribe(c, ch, true)
	}
}

// unwatch undoes one watch; the last one unsubscribes, in the background.
func (q *quorum) unwatch(c *Client, keys []string) {
	ch := releasedChannel(keys)
	q.wake.mu.Lock()
	q.wake.refs[ch]--
	last := q.wake.refs[ch] == 0
	if last {
		delete(q.wake.refs, ch)
	}
	q.wake.mu.Unlock()
	if last {
		go q.subscribe(c, ch, false)
	}
}

// subscribe sends SUBSCRIBE (on) or UNSUBSCRIBE for ch on every node's
// dedicated connection, within the release timeout.
func (q *quorum) subscribe(c *Client, ch string, on bool) {
	q.each(context.Background(), c.releaseTimeout, func(ctx context.Context, i int) {
		dc := q.conn(c, i)
		cmd := dc.B().Unsubscribe().Channel(ch).Build()
		if on {
			cmd = dc.B().Subscribe().Channel(ch).Build()
		}
		_ = dc.Do(ctx, cmd).Error()
	})
}

// conn returns node i's dedicated pub/sub connection, opening it when
// there is none (outside the lock: opening may dial).
func (q *quorum) conn(c *Client, i int) rueidis.DedicatedClient {
	q.wake.mu.Lock()
	dc := q.wake.conns[i]
	q.wake.mu.Unlock()
	if dc != nil {
		return dc
	}
	dc, cancel := q.nodes[i].client.Dedicate()
	errs := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: func(m rueidis.PubSubMessage) {
		if m.Message != c.sub.channel { // the Client's own release woke its waiter already
			c.queues.wakeFirst(strings.TrimPrefix(m.Channel, releasedPrefix))
		}
	}})
	q.wake.mu.Lock()
	if other := q.wake.conns[i]; other != nil {
		q.wake.mu.Unlock()
		cancel() // another goroutine opened one meanwhile
		return other
	}
	q.wake.conns[i] = dc
	q.wake.mu.Unlock()
	go func() {
		<-errs // lost, or the client closed: the next watch opens another
		q.wake.mu.Lock()
		if q.wake.conns[i] == dc {
			q.wake.conns[i] = nil
		}
		q.wake.mu.Unlock()
		cancel()
	}()
	return dc
}

// spread is the pause of a waiter woken by a release's message before it
// tries again: every waiting Client heard the same message, and attempts
// sent at once would split the nodes between them, so each waits a random
// time under splitJitter, and the first to try usually takes a majority
// alone. It returns wokeByRelease, or wokeByCtx when the ctx ended.
func (q *quorum) spread(ctx context.Context, a *obtainCall) wakeReason {
	if a.r.sleep(ctx, rand.N(splitJitter), nil) == wokeByCtx {
		return wokeByCtx
	}
	return wokeByRelease
}
