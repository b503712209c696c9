package redislock_test

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// The quorum with nodes down, paused, of other kinds, or more of them.

// TestQuorum_nodeDown: one node of three stopped, then paused: the lock is
// held on the other two; two of three down: no quorum, and nothing left.
func TestQuorum_nodeDown(t *testing.T) {
	for _, mode := range []string{"stopped", "paused"} {
		t.Run(mode, func(t *testing.T) {
			qn := startQuorum(t, 3, redislock.WithReleaseTimeout(300*time.Millisecond))
			ctx := t.Context()
			down := func(i int) {
				if mode == "stopped" {
					qn.servers[i].Stop(t)
					return
				}
				qn.servers[i].Pause(t)
				t.Cleanup(func() { qn.servers[i].Resume(t) })
			}
			down(0)
			l, err := qn.client.Obtain(ctx, "q:down", 4*time.Second, nil)
			require.NoError(t, err)
			require.Equal(t, [3]int{2, 0, 1}, qn.lastCounts())
			ttl, err := l.TTL(ctx)
			require.NoError(t, err)
			require.Positive(t, ttl)
			require.LessOrEqual(t, ttl, 4*time.Second)
			require.NoError(t, l.Refresh(ctx, 4*time.Second, nil))
			require.NoError(t, l.Release(ctx))
			// Settled by the two others: the down node's failure is
			// counted if it came first.
			counts := qn.lastCounts()
			require.Equal(t, [2]int{2, 0}, [2]int{counts[0], counts[1]})

			down(1)
			_, err = qn.client.Obtain(ctx, "q:down", 4*time.Second, nil)
			var qe *redislock.QuorumError
			require.ErrorAs(t, err, &qe)
			require.ErrorIs(t, err, redislock.ErrNoQuorum)
			require.NotErrorIs(t, err, redislock.ErrNotObtained)
			require.Equal(t, [3]int{1, 0, 2}, [3]int{qe.Granted, qe.Refused, qe.Failed})
			require.Len(t, qe.Errs, 2)
			if mode == "stopped" {
				var op *net.OpError
				require.ErrorAs(t, err, &op) // the node's own error
			} else {
				require.ErrorIs(t, err, context.DeadlineExceeded) // the node's call bound
			}
			v, err := qn.servers[2].Do(t, "DBSIZE")
			require.NoError(t, err)
			require.Equal(t, "0", v, "the minority grant is given back")
		})
	}
}

// TestQuorum_moreNodes: 5 nodes hold a lock with 2 of them down, not with
// 3; 4 nodes (an even n) need 3.
func TestQuorum_moreNodes(t *testing.T) {
	for _, n := range []int{4, 5} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			qn := startQuorum(t, n)
			ctx := t.Context()
			majority := n/2 + 1
			for i := range n - majority {
				qn.servers[i].Stop(t)
			}
			l, err := qn.client.Obtain(ctx, "q:more", time.Minute, nil)
			require.NoError(t, err)
			require.Equal(t, [3]int{majority, 0, n - majority}, qn.lastCounts())
			require.NoError(t, l.Release(ctx))
			qn.servers[n-majority].Stop(t)
			_, err = qn.client.Obtain(ctx, "q:more", time.Minute, nil)
			require.ErrorIs(t, err, redislock.ErrNoQuorum)
			require.Equal(t, [3]int{majority - 1, 0, n - majority + 1}, qn.lastCounts())
		})
	}
}

// TestQuorum_members: a Cluster, a Sentinel and a standalone member; a
// multi-key fenced lock keeps its keys in one slot of the cluster.
func TestQuorum_members(t *testing.T) {
	redistest.Require(t)
	cluster := redistest.StartCluster(t, 3, 0).Client(t)
	a, b := redistest.StartServer(t).Client(t), redistest.StartSentinel(t, 1, 1).Client(t)
	locker := redislock.NewQuorum([]rueidis.Client{cluster, a, b})
	ctx := t.Context()
	_, err := locker.ObtainMulti(ctx, []string{"q:a", "q:b"}, time.Minute, nil)
	require.ErrorIs(t, err, redislock.ErrCrossSlot, "a Cluster member's slots apply")
	l, err := locker.ObtainMulti(ctx, []string{"{q}:a", "{q}:b"}, time.Minute, &redislock.Options{FenceKey: "{q}:fence"})
	require.NoError(t, err)
	require.Equal(t, int64(1), l.FenceToken())
	v, err := cluster.Do(ctx, cluster.B().Get().Key("{q}:b").Build()).ToString()
	require.NoError(t, err)
	require.Contains(t, v, l.Token())
	n, err := a.Do(ctx, a.B().Dbsize().Build()).AsInt64()
	require.NoError(t, err)
	require.Equal(t, int64(3), n, "a standalone member holds the two keys and the counter, no wait queue")
	// Gone on the cluster member: Refresh takes the keys back there.
	require.NoError(t, cluster.Do(ctx, cluster.B().Del().Key("{q}:a", "{q}:b").Build()).Error())
	require.NoError(t, l.Refresh(ctx, time.Minute, nil))
	v, err = cluster.Do(ctx, cluster.B().Get().Key("{q}:a").Build()).ToString()
	require.NoError(t, err)
	require.Contains(t, v, l.Token())
	require.NoError(t, l.Release(ctx))
	require.ErrorIs(t, l.Release(ctx), redislock.ErrLockNotHeld)
}

// TestQuorum_WithReplicas applies to each member: nodes without replicas
// acknowledge no write, so each fails, and what they wrote is released.
func TestQuorum_WithReplicas(t *testing.T) {
	qn := startQuorum(t, 3, redislock.WithReplicas(1, 10*time.Millisecond))
	_, err := qn.client.Obtain(t.Context(), "q:replicas", time.Minute, nil)
	require.ErrorIs(t, err, redislock.ErrNoQuorum)
	require.ErrorIs(t, err, redislock.ErrNotReplicated)
	require.Equal(t, [3]int{0, 0, 3}, qn.lastCounts())
	for i, srv := range qn.servers {
		require.Eventually(t, func() bool {
			n, err := srv.Do(t, "DBSIZE")
			return err == nil && n == "0"
		}, 5*time.Second, time.Millisecond, "node %d", i+1)
	}
}

// TestQuorum_errorOp: with two of three nodes down, each operation's
// *QuorumError names that operation (ObtainMulti its own, as on one
// server).
func TestQuorum_errorOp(t *testing.T) {
	qn := startQuorum(t, 3, redislock.WithReleaseTimeout(300*time.Millisecond))
	ctx := t.Context()
	l, err := qn.client.ObtainMulti(ctx, []string{"q:op:a", "q:op:b"}, 4*time.Second, nil)
	require.NoError(t, err)
	qn.servers[0].Stop(t)
	qn.servers[1].Stop(t)
	for _, tc := range []struct {
		op   redislock.Op
		call func() error
	}{
		{redislock.OpObtain, func() error {
			_, err := qn.client.Obtain(ctx, "q:op:c", time.Second, nil)
			return err
		}},
		{redislock.OpObtainMulti, func() error {
			_, err := qn.client.ObtainMulti(ctx, []string{"q:op:c", "q:op:d"}, time.Second, nil)
			return err
		}},
		{redislock.OpRefresh, func() error { return l.Refresh(ctx, time.Second, nil) }},
		{redislock.OpTTL, func() error {
			_, err := l.TTL(ctx)
			return err
		}},
		{redislock.OpRelease, func() error { return l.Release(ctx) }},
	} {
		t.Run(tc.op.String(), func(t *testing.T) {
			var qe *redislock.QuorumError
			require.ErrorAs(t, tc.call(), &qe)
			require.Equal(t, tc.op, qe.Op)
			require.Equal(t, [3]int{1, 0, 2}, [3]int{qe.Granted, qe.Refused, qe.Failed})
		})
	}
}

// TestQuorum_Release_settled: a Release returns once a majority deleted
// the lock, not after a paused node's release timeout; that node's delete
// lands once it resumes. With a custom token, it waits for every node
// (within the release timeout), so that a delete of its own cannot land
// after an obtain of the same token that follows it.
func TestQuorum_Release_settled(t *testing.T) {
	t.Run("random token", func(t *testing.T) {
		qn := startQuorum(t, 3, redislock.WithReleaseTimeout(time.Minute))
		ctx := t.Context()
		l, err := qn.client.Obtain(ctx, "q:settled", time.Minute, nil)
		require.NoError(t, err)
		qn.servers[0].Pause(t) // resumed below, or when the test ends
		released := make(chan error, 1)
		go func() { released <- l.Release(ctx) }()
		select {
		case err := <-released:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Release waited for the paused node")
		}
		require.Equal(t, [3]int{2, 0, 0}, qn.lastCounts())
		qn.servers[0].Resume(t)
		require.Eventually(t, func() bool { return qn.value(t, 0, "q:settled") == "" }, 10*time.Second, time.Millisecond,
			"the paused node's delete lands once it resumes")
	})
	t.Run("custom token", func(t *testing.T) {
		qn := startQuorum(t, 3, redislock.WithReleaseTimeout(300*time.Millisecond))
		ctx := t.Context()
		l, err := qn.client.Obtain(ctx, "q:settled", time.Minute, &redislock.Options{Token: "mine"})
		require.NoError(t, err)
		qn.servers[0].Pause(t) // resumed when the test ends
		require.NoError(t, l.Release(ctx))
		require.Equal(t, [3]int{2, 0, 1}, qn.lastCounts(), "the paused node failed at the release timeout")
	})
}

// TestQuorum_customTokenGivenBack pins a documented limit: an Obtain with
// a custom token that already holds the lock, and that reaches no majority,
// gives back what the nodes granted, the token's own lock included (a
// node's reply does not tell a fresh grant from the token's lock taken
// again).
func TestQuorum_customTokenGivenBack(t *testing.T) {
	qn := startQuorum(t, 3, redislock.WithReleaseTimeout(300*time.Millisecond))
	ctx := t.Context()
	_, err := qn.servers[2].Do(t, "SET", "q:custom", "other", "PX", "60000")
	require.NoError(t, err)
	opt := &redislock.Options{Token: "mine"}
	_, err = qn.client.Obtain(ctx, "q:custom", time.Minute, opt)
	require.NoError(t, err)
	require.Equal(t, 2, qn.holders(t, "q:custom", "mine"))

	qn.servers[1].Stop(t)
	_, err = qn.client.Obtain(ctx, "q:custom", time.Minute, opt)
	require.ErrorIs(t, err, redislock.ErrNoQuorum)
	require.Equal(t, [3]int{1, 1, 1}, qn.lastCounts())
	require.Empty(t, qn.value(t, 0, "q:custom"), "the token's own lock on node 1 was given back")
}
