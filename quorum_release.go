package redislock

// Giving a quorum lock back: the unlock on every node, and a release that
// returns once its outcome is known.

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"
)

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
		w = c.queues.offer(queueName(l.keys))
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
		if giveBack, _ := c.queues.settleOffer(w, l, 1, err, by == byHolder); giveBack {
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
