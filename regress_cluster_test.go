package redislock_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// A release on a Redis Cluster while the lock's slot migrates, its lock key
// and wait queue moved to the importing node and its fence counter not yet:
// the release, redirected there (ASK), must not write the waiter's fence
// counter on that node. Scripts that wrote keys they did not declare did:
// a fresh counter at 1 on the importing node, a fence token that went back
// from 11 to 1, and the MIGRATE of the counter refused (BUSYKEY). Every key
// a script touches is declared now, and a fenced waiter whose counter the
// release does not declare is woken to take the lock itself.
func TestRegress_clusterMigrationKeepsFence(t *testing.T) {
	redistest.Require(t)
	cl := redistest.StartCluster(t, 3, 0)
	rc := cl.Client(t)
	const key, fence, queue = "{m}k", "{m}fence", "{m}k:redislock-waiters"
	var from, to *redistest.Server
	for _, n := range cl.Nodes {
		if _, err := n.Do(t, "EXISTS", key); err == nil {
			from = n
		} else if to == nil {
			to = n
		}
	}
	require.NotNil(t, from, "a node serves the key")
	require.NoError(t, rc.Do(t.Context(), rc.B().Set().Key(fence).Value("10").Build()).Error())

	holder, err := redislock.New(rc).Obtain(t.Context(), key, time.Minute, &redislock.Options{FenceKey: fence})
	require.NoError(t, err)
	require.Equal(t, int64(11), holder.FenceToken())
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	got := obtainAsync(ctx, redislock.New(rc), []string{key}, &redislock.Options{FenceKey: fence, RetryStrategy: redislock.LinearBackoff(20 * time.Millisecond)})
	eventually(t, func() bool {
		n, err := rc.Do(t.Context(), rc.B().Llen().Key(queue).Build()).AsInt64()
		return err == nil && n == 1
	}, "the waiter queues")

	// The slot migrates: the lock key and its queue first.
	slot, err := from.Do(t, "CLUSTER", "KEYSLOT", key)
	require.NoError(t, err)
	id := func(n *redistest.Server) string {
		s, err := n.Do(t, "CLUSTER", "MYID")
		require.NoError(t, err)
		return s
	}
	_, err = to.Do(t, "CLUSTER", "SETSLOT", slot, "IMPORTING", id(from))
	require.NoError(t, err)
	_, err = from.Do(t, "CLUSTER", "SETSLOT", slot, "MIGRATING", id(to))
	require.NoError(t, err)
	migrate := func(keys ...string) error {
		_, err := from.Do(t, append([]string{"MIGRATE", "127.0.0.1", strconv.Itoa(to.Port), "", "0", "5000", "KEYS"}, keys...)...)
		return err
	}
	require.NoError(t, migrate(key, queue))

	require.NoError(t, holder.Release(t.Context()))

	// Then the fence counter, and the slot is the importing node's.
	require.NoError(t, migrate(fence), "the fence counter moves to the importing node")
	for _, n := range cl.Nodes {
		_, err := n.Do(t, "CLUSTER", "SETSLOT", slot, "NODE", id(to))
		require.NoError(t, err)
	}

	r := <-got
	require.NoError(t, r.err)
	require.Greater(t, r.lock.FenceToken(), holder.FenceToken(), "fence tokens increase across the migration")
	require.NoError(t, r.lock.Release(t.Context()))
	v, err := to.Do(t, "GET", fence)
	require.NoError(t, err)
	require.Equal(t, strconv.FormatInt(r.lock.FenceToken(), 10), v)
}
