package redislock

// Taking a quorum lock: one attempt on every node at once, the fence token
// made a quorum register, and what a minority granted given back.

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

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
