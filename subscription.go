package redislock

// The pub/sub channel of a Client: how a waiter queued in Redis hears that
// a release passed it the lock ("<fence>:<token>") or that it is to try
// again ("w:<token>"). A Client subscribes to its one channel, on a
// dedicated connection, while it has waiters that may be queued in Redis,
// and drops it subscriptionLinger after the last one returns. Where the
// channel is not to be had (an ACL without channel permissions, a refused
// SUBSCRIBE), waiters are not queued in Redis and wait by the backoff; when
// the connection is lost, every waiter that may be queued tries again at
// once (a lock granted meanwhile is its own: a same-token obtain takes it).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

const (
	// subscriptionLinger is how long a Client keeps its channel after its
	// last waiter that may be queued in Redis returned: a key contended
	// again at once does not pay a new SUBSCRIBE.
	subscriptionLinger = 250 * time.Millisecond

	// resubscribeAfter is how long a Client waits by the backoff alone after
	// the server refused a SUBSCRIBE before it tries again (a SUBSCRIBE
	// whose connection failed is tried again by the next attempt).
	resubscribeAfter = 10 * time.Second
)

type subState uint8

const (
	subNone subState = iota
	subStarting
	subUp
	subDown
)

// subscription is a Client's channel and the waiters it serves.
type subscription struct {
	c       *Client
	channel string // fixed for the Client's life

	mu      sync.Mutex
	state   subState
	gen     int           // counts starts and drops, so that a stale run ends quietly
	ready   chan struct{} // with subStarting: closed when the start ends
	retryAt time.Time     // with subDown: when to try again
	cancel  func()        // with subUp: ends the dedicated connection
	idle    *time.Timer
	waiters map[string]*waiter // by token: those that may be queued in Redis
}

func (s *subscription) init(c *Client) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	s.c, s.channel = c, "redislock:"+hex.EncodeToString(b[:])
}

// register makes sure the channel is up (starting it, and waiting for the
// start until ctx ends, deadline passes, or the release timeout) and that messages for w's token
// reach w; false when there is no channel: w is then not to be queued in
// Redis, since nothing would tell it of a grant; false too while another
// waiter with the same token is registered.
func (s *subscription) register(ctx context.Context, w *waiter, deadline time.Time) bool {
	s.mu.Lock()
	if s.idle != nil {
		s.idle.Stop()
	}
	ready := s.start()
	s.mu.Unlock()
	if ready != nil {
		wait := s.c.releaseTimeout
		if !deadline.IsZero() {
			wait = min(wait, time.Until(deadline))
		}
		t := time.NewTimer(wait)
		select {
		case <-ready:
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state != subUp {
		return false
	}
	if s.waiters == nil {
		s.waiters = make(map[string]*waiter)
	}
	if other := s.waiters[w.l.token]; other != nil && other != w {
		// A grant names a token: of two waiters with one (custom)
		// token, only one may be queued in Redis, or a grant for the
		// keys of one could reach the other.
		return false
	}
	s.waiters[w.l.token] = w
	return true
}

// up tells whether the channel is up now.
func (s *subscription) up() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state == subUp
}

// unregister stops the delivery of messages to w, once it can no longer be
// granted anything (obtained, or given back).
func (s *subscription) unregister(w *waiter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.waiters[w.l.token] != w {
		return
	}
	delete(s.waiters, w.l.token)
	if len(s.waiters) == 0 {
		s.idleLater()
	}
}

// start starts the subscription when there is none (or the last one failed
// long enough ago) and returns a channel closed when it is up or has
// failed; nil when there is nothing to wait for. Called with s.mu held.
func (s *subscription) start() <-chan struct{} {
	switch s.state {
	case subUp:
		return nil
	case subStarting:
		return s.ready
	case subDown:
		if time.Now().Before(s.retryAt) {
			return nil
		}
	}
	s.state = subStarting
	s.gen++
	s.ready = make(chan struct{})
	go s.run(s.gen, s.ready)
	return s.ready
}

// run subscribes on a dedicated connection, then watches it until it ends.
func (s *subscription) run(gen int, ready chan struct{}) {
	dc, cancel := s.c.client.Dedicate()
	errs := dc.SetPubSubHooks(rueidis.PubSubHooks{OnMessage: s.onMessage})
	ctx, stop := context.WithTimeout(context.Background(), s.c.releaseTimeout)
	err := dc.Do(ctx, dc.B().Subscribe().Channel(s.channel).Build()).Error()
	stop()
	s.mu.Lock()
	if err != nil || gen != s.gen {
		// A SUBSCRIBE the server refused (an ACL without the channel, say)
		// is not asked again for a while; one whose connection failed is
		// asked again by the next attempt: left to the backoff for
		// resubscribeAfter, a waiting writer of a shared lock would be
		// overtaken by readers at each of its tries.
		s.state, s.retryAt = subDown, time.Now()
		if _, refused := rueidis.IsRedisErr(err); refused {
			s.retryAt = s.retryAt.Add(resubscribeAfter)
		}
		close(ready)
		s.mu.Unlock()
		cancel()
		return
	}
	s.state, s.cancel = subUp, cancel
	close(ready)
	if len(s.waiters) == 0 {
		s.idleLater()
	}
	s.mu.Unlock()

	<-errs // the connection ended: closed by dropIdle, or lost
	s.mu.Lock()
	if gen == s.gen && s.state == subUp {
		// Lost: grants sent meanwhile are lost too. Every waiter that
		// may be queued tries again now, and the next wait subscribes
		// again.
		s.state, s.retryAt, s.cancel = subDown, time.Now(), nil
		for _, w := range s.waiters {
			w.wake()
		}
	}
	s.mu.Unlock()
	cancel()
}

// onMessage delivers a message of the channel: "<fence>:<token>" when the
// lock passed to that waiter, "w:<token>" when it is to try again.
func (s *subscription) onMessage(m rueidis.PubSubMessage) {
	head, token, ok := strings.Cut(m.Message, ":")
	if !ok {
		return
	}
	s.mu.Lock()
	w := s.waiters[token]
	s.mu.Unlock()
	if w == nil {
		return
	}
	if head == "w" {
		w.wake()
		return
	}
	fence, err := strconv.ParseInt(head, 10, 64)
	if err != nil {
		return
	}
	if s.c.queues.grant(w, fence) {
		s.c.startGiveBack(w)
	}
}

// idleLater drops the subscription subscriptionLinger from now unless a
// waiter registers meanwhile. Called with s.mu held.
func (s *subscription) idleLater() {
	if s.state != subUp {
		return
	}
	if s.idle == nil {
		s.idle = time.AfterFunc(subscriptionLinger, s.dropIdle)
		return
	}
	s.idle.Reset(subscriptionLinger)
}

func (s *subscription) dropIdle() {
	s.mu.Lock()
	var cancel func()
	if len(s.waiters) == 0 && s.state == subUp {
		cancel = s.cancel
		s.state, s.cancel = subNone, nil
		s.gen++
	}
	s.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}
