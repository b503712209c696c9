package redislock

// Quorum locks: a lock held on a majority of n independent Redis
// deployments (the Redlock algorithm). A quorum is a kind of lock in the
// one engine (obtain.go): the engine's attempt, release, refresh and TTL
// calls fan out to every node at once, and their replies are counted here;
// joining, backoff, waiting and giving up are the engine's. Each node is a
// single-server Client of its own (New), so that WithReplicas, a Cluster
// member's slots and the error policy apply to each node as they do to one
// server. A quorum waiter is never queued in the nodes' wait queues.
//
// Here: the nodes, their fan-out, and refresh and TTL. Taking a lock is
// quorum_obtain.go, giving it back quorum_release.go, counting the nodes'
// replies quorum_count.go, hearing of releases quorum_wake.go.

import (
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strconv"
	"sync"
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
// With a custom token (Options.Token), an Obtain that reaches no majority
// gives back what the nodes granted, also where the token held the lock
// before the call: keep a held quorum lock with Refresh, not by obtaining
// it again.
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
