package redislock

// Quorum locks: a lock held on a majority of n independent Redis
// deployments (the Redlock algorithm). A quorum is a kind of lock in the
// one engine (obtain.go): the engine's attempt, release, refresh and TTL
// calls fan out to every node at once, and their replies are counted here;
// joining, backoff, waiting and giving up are the engine's. Each node is a
// single-server Client of its own (New), so that WithReplicas, a Cluster
// member's slots and the error policy apply to each node as they do to one
// server. A quorum waiter is never queued in the nodes' wait queues.

import (
	"context"
	_ "embed"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

const (
	// QuorumCallFraction bounds each node's call of a quorum Obtain,
	// ObtainMulti or Refresh: it ends after the TTL divided by it (a TTL of
	// 10s gives each node 1s), or at the ctx deadline if that comes first.
	QuorumCallFraction = 10

	// splitJitter bounds the random pause of a quorum waiter whose attempt
	// found the nodes split between contenders, none with a majority: the
	// contenders try again at different instants.
	splitJitter = 5 * time.Millisecond
)

var (
	//go:embed lua/fence.lua
	luaFence string
	//go:embed lua/unlock.lua
	luaUnlock string

	scriptFence = newLuaScript(luaOwned + luaFence)

	// A quorum's nodes take the lock as one server does, and release it
	// without looking for a wait queue: nobody is queued on them.
	quorumNode        = &kind{obtain: exclusive.obtain, release: newLuaScript(luaOwned + luaUnlock)}
	quorumNodeCluster = &kind{obtain: exclusiveCluster.obtain, release: quorumNode.release}
)

// NewQuorum returns a Client whose locks are held on a majority (n/2+1) of
// n independent Redis deployments: standalone, Sentinel or Cluster rueidis
// clients (a Cluster member holds each key in its own slots). An even n is
// allowed; its majority is n/2+1 too (4 nodes need 3). The options apply to
// the Client and to each node (WithReplicas: each node's write waits for
// that many of the node's replicas). See the README's "Quorum locks" for
// what a quorum promises and what it cannot.
//
// Its methods return the errors they return on one server, and a
// *QuorumError (wrapping ErrNoQuorum and the nodes' errors) when failed
// nodes leave no majority either way. Obtain, ObtainMulti and Refresh
// bound each node's call by TTL/QuorumCallFraction; Release and TTL by the
// release timeout (DefaultReleaseTimeout, 2s, unless WithReleaseTimeout).
//
// It panics when clients is empty, holds a nil client, or holds one client
// twice. The Client is safe for concurrent use.
func NewQuorum(clients []rueidis.Client, opts ...ClientOption) *Client {
	if len(clients) == 0 {
		panic("redislock: NewQuorum: no clients")
	}
	for i, cl := range clients {
		if cl == nil {
			panic("redislock: NewQuorum: client " + strconv.Itoa(i+1) + " is nil")
		}
		for j := range i {
			if clients[j] == cl {
				panic(fmt.Sprintf("redislock: NewQuorum: clients %d and %d are the same client", j+1, i+1))
			}
		}
	}
	c := &Client{kind: exclusive, releaseTimeout: DefaultReleaseTimeout}
	c.sub.init(c)
	for _, opt := range opts {
		opt(c)
	}
	q := &quorum{nodes: make([]*Client, len(clients)), majority: len(clients)/2 + 1}
	for i, cl := range clients {
		n := New(cl, WithReleaseTimeout(c.releaseTimeout))
		n.replicas, n.replicaTimeout = c.replicas, c.replicaTimeout
		n.kind = quorumNode
		if n.cluster {
			n.kind = quorumNodeCluster
		}
		c.cluster = c.cluster || n.cluster
		q.nodes[i] = n
	}
	c.q = q
	return c
}

// quorum is the nodes of a quorum Client.
type quorum struct {
	nodes    []*Client
	majority int
	wake     wakers // quorum_wake.go
}

// each calls f for every node at once (the first on the calling
// goroutine), with a ctx that ends after bound, and returns once all have
// returned: a paused or unreachable node holds up the call no longer than
// bound or the ctx deadline.
func (q *quorum) each(ctx context.Context, bound time.Duration, f func(ctx context.Context, i int)) {
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	var wg sync.WaitGroup
	for i := 1; i < len(q.nodes); i++ {
		wg.Go(func() { f(ctx, i) })
	}
	f(ctx, 0)
	wg.Wait()
}

// validity is what is left of ttl after an attempt that started at start:
// the TTL, less the time the attempt took (on the monotonic clock), less
// the drift allowance between the nodes' clocks and this one (1% of the TTL
// plus 2ms, as in Redlock's reference).
func validity(ttl time.Duration, start time.Time) time.Duration {
	return ttl - time.Since(start) - ttl/100 - 2*time.Millisecond
}

// sendQuorum is a quorum Client's attempt (the engine's step 2), with what
// it learned of the nodes and of its outcome. It hands q.tryObtain what it
// needs rather than the obtainCall, which stays on the stack.
func (a *obtainCall) sendQuorum(ctx context.Context) attemptReply {
	at := quorumAttempt{op: a.op, l: a.l, ttl: a.r.ttl, ttlMs: a.ttl, plain: a.plain(), fenceKey: a.o.fenceKey()}
	if !at.plain {
		at.args = a.args(queueNone, "")
	}
	rep, t := a.c.q.tryObtain(ctx, &at)
	a.stats.nodes = t
	if t.ambiguous {
		a.unknown = true // a failed node may hold a grant: given up, it is cleaned up
	}
	return rep
}

// quorumAttempt is what one attempt of a quorum sends.
type quorumAttempt struct {
	op       Op // the obtain's, for its error
	l        *Lock
	ttl      time.Duration
	ttlMs    string
	plain    bool   // a SET NX PX on each node
	fenceKey string // "" for none
	args     []string
}

// tryObtain is a quorum Client's attempt: the kind's attempt on every node
// at once, each bounded by the ctx and TTL/QuorumCallFraction; with a fence
// key, the fence token made a quorum register (raiseFence). It is granted
// only when a majority granted and validity is left; otherwise what the
// nodes granted is given back before it returns. A majority held by
// another token (or nodes split between contenders) reads as held; no
// majority either way because nodes failed is a *QuorumError.
func (q *quorum) tryObtain(ctx context.Context, at *quorumAttempt) (attemptReply, tally) {
	start := time.Now()
	l := at.l
	reps := make([]nodeReply, len(q.nodes))
	q.each(ctx, at.ttl/QuorumCallFraction, func(ctx context.Context, i int) {
		var rep attemptReply
		if at.plain {
			rep = q.nodes[i].tryPlain(ctx, l, at.ttlMs)
		} else {
			// Each node's own KEYS: a Cluster member declares its wait
			// queues too (Client.scriptKeys).
			rep = q.nodes[i].tryObtain(ctx, l, q.nodes[i].scriptKeys(l.keys, at.fenceKey), at.args)
		}
		reps[i] = nodeReply{refused: rep.held, n: rep.fence, left: rep.left, err: rep.err}
	})
	t := count(ctx, reps)
	var fence int64
	if t.granted >= q.majority && at.fenceKey != "" {
		fence = q.raiseFence(ctx, at, reps)
		t = count(ctx, reps)
	}
	expired := false
	if t.granted >= q.majority {
		if validity(at.ttl, start) > 0 {
			return attemptReply{fence: fence}, t
		}
		expired = true
	}
	if t.granted > 0 && !q.giveBack(ctx, l, reps) {
		t.ambiguous = true
	}
	switch {
	case ctx.Err() != nil:
		return attemptReply{err: ctx.Err()}, t
	case expired || (t.failed > 0 && t.refused < q.majority):
		return attemptReply{err: t.error(at.op, len(q.nodes), expired)}, t
	case t.granted > 0:
		// Split between contenders: each gave its grants back; they try
		// again at random instants within splitJitter.
		return attemptReply{held: true, left: rand.N(splitJitter)}, t
	}
	var left time.Duration
	for _, rep := range reps {
		if rep.refused && rep.left > 0 && (left == 0 || rep.left < left) {
			left = rep.left
		}
	}
	return attemptReply{held: true, left: left}, t
}

// raiseFence makes the fence token a quorum register: it is f, the
// largest of the granting nodes' counters, written back as a maximum to
// every granting node whose counter was lower (fence.lua), so that a
// majority holds a counter of at least f before the obtain returns. A
// granting node that could not be raised counts as refused (it lost the
// lock meanwhile) or failed. Any later majority intersects this one, and
// its INCR on a node in both exceeds f.
func (q *quorum) raiseFence(ctx context.Context, at *quorumAttempt, reps []nodeReply) int64 {
	var f int64
	for _, rep := range reps {
		if rep.err == nil && !rep.refused {
			f = max(f, rep.n)
		}
	}
	lagging := false
	for _, rep := range reps {
		lagging = lagging || (rep.err == nil && !rep.refused && rep.n < f)
	}
	if !lagging {
		return f
	}
	l := at.l
	keys := append(l.keys[:len(l.keys):len(l.keys)], at.fenceKey) // fence.lua's KEYS
	args := []string{l.token, strconv.FormatInt(f, 10), l.metadata}
	q.each(ctx, at.ttl/QuorumCallFraction, func(ctx context.Context, i int) {
		rep := &reps[i]
		if rep.err != nil || rep.refused || rep.n == f {
			return
		}
		node := q.nodes[i]
		_, acked, err := node.exec(ctx, &scriptFence, keys, args)
		switch {
		case rueidis.IsRedisNil(err):
			rep.refused = true
		case err == nil && acked < node.replicas:
			rep.err = node.notReplicated("fence", l, acked)
		case err != nil:
			rep.err = err
		default:
			rep.n = f
		}
	})
	return f
}

// giveBack deletes l's token on the nodes that granted it (and a node
// whose fence write-back failed, which may hold it), detached from the
// caller's cancellation and bounded by the release timeout. It reports
// whether every such node answered.
func (q *quorum) giveBack(ctx context.Context, l *Lock, reps []nodeReply) bool {
	ok := true
	var mu sync.Mutex
	// A minority given back tells no waiter: the nodes that matter to them
	// are held, or split between contenders that try again at random.
	args := []string{l.token, "", ""}
	q.each(context.WithoutCancel(ctx), q.nodes[0].releaseTimeout, func(ctx context.Context, i int) {
		if reps[i].refused || (reps[i].err != nil && reps[i].n == 0) {
			return
		}
		if err := q.unlock(ctx, i, l, args); err != nil && !rueidis.IsRedisNil(err) {
			mu.Lock()
			ok = false
			mu.Unlock()
		}
	})
	return ok
}

// unlock deletes l on node i if its token holds it (unlock.lua), and
// publishes on the release channel of its keys for the waiters of other
// quorum Clients (args: the token, the channel, the releasing Client's
// name).
func (q *quorum) unlock(ctx context.Context, i int, l *Lock, args []string) error {
	node := q.nodes[i]
	return node.kind.release.lua.Exec(ctx, node.client, l.keys, args).Error()
}

// release is one try of a quorum Client's release: the kind's release on
// every node at once, within the ctx and the release timeout. nil when a
// majority deleted the lock; a nil reply (rueidis.IsRedisNil) when fewer
// than a majority held it; a *QuorumError when the failed nodes leave it
// unknown. A lock of a random token returns as soon as the outcome is
// known (settle), and the other nodes' deletes finish in the background; a
// custom token's waits for every node, so that no delete of this call
// lands after an obtain of the same token that follows it. A goroutine of
// this Client that waits for the same keys is woken to try again.
func (q *quorum) release(ctx context.Context, c *Client, l *Lock, by releaser, ev *Event) error {
	var w *waiter
	if c.queues.n.Load() > 0 {
		w = c.queues.offer(l.keys)
	}
	args := []string{l.token, releasedChannel(l.keys), c.sub.channel}
	unlock := func(ctx context.Context, i int) nodeReply {
		err := q.unlock(ctx, i, l, args)
		if rueidis.IsRedisNil(err) {
			return nodeReply{refused: true}
		}
		return nodeReply{err: err}
	}
	var reps []nodeReply
	if l.randomToken() {
		reps = q.settle(ctx, c.releaseTimeout, unlock)
	} else {
		reps = make([]nodeReply, len(q.nodes))
		q.each(ctx, c.releaseTimeout, func(ctx context.Context, i int) { reps[i] = unlock(ctx, i) })
	}
	t := count(ctx, reps)
	t.report(ev)
	var err error
	switch {
	case t.granted >= q.majority:
	case t.failed > 0 && t.granted+t.failed >= q.majority:
		err = t.error(OpRelease, len(q.nodes), false)
	default:
		err = rueidis.Nil
	}
	if w != nil {
		if giveBack, _ := c.queues.settleOffer(w, 1, err, by == byHolder); giveBack {
			c.startGiveBack(w)
		}
	}
	return err
}

// settle calls f for every node at once, each on a goroutine of its own
// with a ctx detached from ctx's cancellation that ends after bound, and
// returns the replies as soon as they settle a release: a majority deleted
// the lock, or more than n-majority refused (no majority held it); else
// once every node answered, or when ctx ends (a node that has not answered
// then failed with ctx's error). A node that had not answered when settle
// returned is unanswered in the replies, and its call finishes in the
// background, within bound.
func (q *quorum) settle(ctx context.Context, bound time.Duration, f func(ctx context.Context, i int) nodeReply) []nodeReply {
	n := len(q.nodes)
	s := &settling{answers: make(chan nodeAnswer, n)} // never blocks a node's goroutine
	s.left.Store(int32(n))
	var dctx context.Context
	dctx, s.cancel = context.WithTimeout(context.WithoutCancel(ctx), bound)
	for i := range n {
		go s.call(dctx, f, i)
	}
	reps := make([]nodeReply, n)
	for i := range reps {
		reps[i].unanswered = true
	}
	granted, refused := 0, 0
	for range n {
		select {
		case a := <-s.answers:
			reps[a.i] = a.rep
			switch {
			case a.rep.err != nil:
			case a.rep.refused:
				refused++
			default:
				granted++
			}
			if granted >= q.majority || refused > n-q.majority {
				return reps
			}
		case <-ctx.Done():
			for i := range reps {
				if reps[i].unanswered {
					reps[i] = nodeReply{err: ctx.Err()}
				}
			}
			return reps
		}
	}
	return reps
}

// settling is the calls of one settle: their answers, and the ctx that
// bounds them, cancelled once the last one returns.
type settling struct {
	answers chan nodeAnswer
	cancel  context.CancelFunc
	left    atomic.Int32
}

// nodeAnswer is node i's reply.
type nodeAnswer struct {
	i   int
	rep nodeReply
}

func (s *settling) call(ctx context.Context, f func(ctx context.Context, i int) nodeReply, i int) {
	s.answers <- nodeAnswer{i, f(ctx, i)}
	if s.left.Add(-1) == 0 {
		s.cancel()
	}
}

// refresh is one try of a quorum Client's refresh: the refresh script on
// every node at once, each bounded by the ctx and TTL/QuorumCallFraction.
// While a majority still holds the token, it takes the keys back (as an
// obtain of the same token, SET NX) on the nodes where they vanished, so
// that the lock does not live on ever fewer nodes; a refresh that fails
// takes nothing back. nil when a majority holds the lock with the new TTL
// and validity is left; a nil reply (rueidis.IsRedisNil) when fewer than a
// majority held it; a *QuorumError otherwise.
func (q *quorum) refresh(ctx context.Context, l *Lock, ttl time.Duration, args []string, ev *Event) error {
	start := time.Now()
	bound := ttl / QuorumCallFraction
	reps := make([]nodeReply, len(q.nodes))
	q.each(ctx, bound, func(ctx context.Context, i int) {
		node := q.nodes[i]
		_, acked, err := node.exec(ctx, &scriptRefresh, l.keys, args)
		switch {
		case rueidis.IsRedisNil(err):
			reps[i].refused = true
		case err == nil && acked < node.replicas:
			reps[i].err = node.notReplicated("refresh", l, acked)
		default:
			reps[i].err = err
		}
	})
	t := count(ctx, reps)
	if t.granted >= q.majority && t.refused > 0 {
		back := []string{l.token, args[1], l.metadata, "0"}
		q.each(ctx, bound, func(ctx context.Context, i int) {
			if !reps[i].refused {
				return
			}
			if rep := q.nodes[i].tryObtain(ctx, l, q.nodes[i].scriptKeys(l.keys, ""), back); rep.err == nil && !rep.held {
				reps[i].refused = false
			}
		})
		t = count(ctx, reps)
	}
	t.report(ev)
	switch {
	case t.granted >= q.majority && validity(ttl, start) > 0:
		return nil
	case t.granted >= q.majority:
		return t.error(OpRefresh, len(q.nodes), true)
	case t.failed > 0 && t.granted+t.failed >= q.majority:
		return t.error(OpRefresh, len(q.nodes), false)
	}
	return rueidis.Nil
}

// ttl is a quorum Client's TTL: the time until fewer than a majority would
// hold the lock, the majority-th largest of the nodes' remaining TTLs (a
// node that does not hold it, or does not answer within the ctx and the
// release timeout, counts as 0). 0 once lost; a *QuorumError when the
// failed nodes leave it unknown.
func (q *quorum) ttl(ctx context.Context, c *Client, l *Lock, ev *Event) (time.Duration, error) {
	reps := make([]nodeReply, len(q.nodes))
	args := []string{l.token}
	q.each(ctx, c.releaseTimeout, func(ctx context.Context, i int) {
		ms, err := scriptPTTL.Exec(ctx, q.nodes[i].client, l.keys, args).AsInt64()
		reps[i] = nodeReply{refused: rueidis.IsRedisNil(err), n: ms}
		if !reps[i].refused {
			reps[i].err = err
		}
	})
	t := count(ctx, reps)
	t.report(ev)
	ttls := make([]time.Duration, 0, len(reps))
	for _, rep := range reps {
		if rep.err == nil && !rep.refused {
			ttls = append(ttls, time.Duration(rep.n)*time.Millisecond)
		}
	}
	if len(ttls) >= q.majority {
		slices.Sort(ttls)
		return ttls[len(ttls)-q.majority], nil
	}
	if t.failed > 0 && t.granted+t.failed >= q.majority {
		return 0, t.error(OpTTL, len(q.nodes), false)
	}
	return 0, nil
}
