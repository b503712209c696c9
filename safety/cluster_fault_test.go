package safety_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
	"github.com/seed-223c80a0/redislock/safety"
)

// owner returns the node of cl that serves key as a master now: the one
// that answers for it without MOVED.
func owner(t *testing.T, cl *redistest.Cluster, key string) *redistest.Server {
	t.Helper()
	for _, n := range cl.Nodes {
		if _, err := n.Do(t, "EXISTS", key); err == nil {
			if info, err := n.Do(t, "INFO", "replication"); err == nil && strings.Contains(info, "role:master") {
				return n
			}
		}
	}
	return nil
}

// clusterClients returns 8 recorded clients, each with a cluster client of
// its own, made with opts.
func clusterClients(t *testing.T, cl *redistest.Cluster, opts ...redislock.ClientOption) []*safety.Client {
	t.Helper()
	rec := safety.NewRecorder()
	cs := make([]*safety.Client, 8)
	for i := range cs {
		cs[i] = &safety.Client{ID: i, Locker: redislock.New(cl.Client(t), opts...), Rec: rec}
	}
	return cs
}

// Redis Cluster, 3 masters with a replica each: kill -9 of the master that
// serves the contended keys' slot, again and again. Calls end by their
// deadline; once the replica is promoted the API works again with no action
// of the user; the killed node comes back, empty, as the new master's
// replica. Without acknowledgement the locks lost are measured; with
// WithReplicas(1) (every replica of the slot), none may be lost.
func TestClusterFailover(t *testing.T) {
	if testing.Short() {
		t.Skip("the cluster failover soak (about a minute) runs without -short")
	}
	keys := []string{"{f}a", "{f}b", "{f}c", "{f}d"}
	for _, tc := range []struct {
		name   string
		opts   []redislock.ClientOption
		strict bool
	}{
		{"no acknowledgement", nil, false},
		{"WithReplicas(1 of 1)", []redislock.ClientOption{redislock.WithReplicas(1, 200*time.Millisecond)}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cl := redistest.StartCluster(t, 3, 1)
			const kills = 4
			res := runFaults(t, clusterClients(t, cl, tc.opts...), keys, kills, tc.strict, func(int) error {
				old := owner(t, cl, keys[0])
				if old == nil {
					return errors.New("no master serves the keys")
				}
				old.Stop(t)
				if err := until(func() bool { n := owner(t, cl, keys[0]); return n != nil && n != old }, "a promoted replica"); err != nil {
					return err
				}
				old.Restart(t) // it rejoins as the new master's replica
				return until(func() bool {
					info, err := old.Do(t, "INFO", "replication")
					return err == nil && strings.Contains(info, "role:slave") && strings.Contains(info, "master_link_status:up")
				}, "the killed node back as a replica in sync")
			})
			require.Equal(t, kills, res.failovers, "every kill happened")
			require.Positive(t, res.acquisitions)
			require.Zero(t, res.late, "calls outlived their deadline")
			if tc.strict {
				require.Zero(t, res.lost, "an acknowledged lock was lost")
				require.Zero(t, res.overlaps, "two tokens held one key at once")
				require.Equal(t, "linearizable", res.linearizable)
			}
		})
	}
}

// migrate moves slot from one node to another while clients use it:
// IMPORTING and MIGRATING, MIGRATE of its keys in batches, then SETSLOT
// NODE on every master.
func migrate(t *testing.T, cl *redistest.Cluster, slot int, from, to *redistest.Server) error {
	t.Helper()
	id := func(n *redistest.Server) (string, error) { return n.Do(t, "CLUSTER", "MYID") }
	fromID, err := id(from)
	if err != nil {
		return err
	}
	toID, err := id(to)
	if err != nil {
		return err
	}
	s := strconv.Itoa(slot)
	if _, err := to.Do(t, "CLUSTER", "SETSLOT", s, "IMPORTING", fromID); err != nil {
		return err
	}
	if _, err := from.Do(t, "CLUSTER", "SETSLOT", s, "MIGRATING", toID); err != nil {
		return err
	}
	for {
		keys, err := from.Do(t, "CLUSTER", "GETKEYSINSLOT", s, "10")
		if err != nil {
			return err
		}
		if keys == "" {
			break
		}
		args := append([]string{"MIGRATE", "127.0.0.1", strconv.Itoa(to.Port), "", "0", "5000", "KEYS"}, strings.Split(keys, "\n")...)
		if _, err := from.Do(t, args...); err != nil {
			return fmt.Errorf("MIGRATE: %w", err)
		}
		time.Sleep(2 * time.Millisecond) // let commands hit the half-moved slot
	}
	for _, n := range cl.Nodes {
		if info, err := n.Do(t, "INFO", "replication"); err == nil && strings.Contains(info, "role:master") {
			if _, err := n.Do(t, "CLUSTER", "SETSLOT", s, "NODE", toID); err != nil {
				return err
			}
		}
	}
	return nil
}

// A live resharding of the slot of the contended keys, back and forth
// between two masters, while 8 clients contend (with fence keys in the same
// slot) and an ObtainMulti loop takes two keys of the slot: MOVED, ASK and
// TRYAGAIN are handled within the caller's deadline, nothing overlaps, the
// history is linearizable and fence tokens keep increasing across the
// moves (the fenced resource).
func TestClusterResharding(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	keys := []string{"{r}a", "{r}b", "{r}c", "{r}d"}
	slotReply, err := cl.Nodes[0].Do(t, "CLUSTER", "KEYSLOT", "{r}")
	require.NoError(t, err)
	slot, err := strconv.Atoi(slotReply)
	require.NoError(t, err)

	// The ObtainMulti loop, with an in-process count of its holders.
	multi := redislock.New(cl.Client(t))
	var holders, multiOK, multiErr atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				l, err := multi.ObtainMulti(ctx, []string{"{r}x", "{r}y"}, time.Second, &redislock.Options{RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond)})
				cancel()
				if err != nil {
					multiErr.Add(1)
					continue
				}
				if holders.Add(1) != 1 {
					t.Errorf("two ObtainMulti holders at once")
				}
				time.Sleep(time.Millisecond)
				holders.Add(-1)
				_ = l.Release(context.WithoutCancel(t.Context()))
				multiOK.Add(1)
			}
		})
	}

	cs := clusterClients(t, cl)
	res := safety.NewFencedResource()
	rec := cs[0].Rec
	const moves = 6
	var moved atomic.Int32
	w := &safety.Workload{
		Clients:      cs,
		Keys:         keys,
		Acquisitions: 1 << 30,
		TTL:          time.Second,
		Hold:         nil,
		CallTimeout:  time.Second,
		Retry:        redislock.LinearBackoff(50 * time.Millisecond),
		MaxDuration:  time.Minute,
		Resource:     res,
	}
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		defer cancel()
		for i := range moves {
			time.Sleep(200 * time.Millisecond)
			from := owner(t, cl, keys[0])
			to := cl.Nodes[0]
			if to == from {
				to = cl.Nodes[1]
			}
			if err := migrate(t, cl, slot, from, to); err != nil {
				t.Errorf("move %d: %v", i, err)
				return
			}
			moved.Add(1)
		}
		time.Sleep(200 * time.Millisecond)
	}()
	n := w.Run(ctx)
	close(stop)
	wg.Wait()
	ops := rec.Ops()
	t.Logf("%d moves of slot %d; %d acquisitions; ObtainMulti: %d OK, %d not obtained or failed", moved.Load(), slot, n, multiOK.Load(), multiErr.Load())
	require.Equal(t, int32(moves), moved.Load())
	require.Positive(t, multiOK.Load(), "ObtainMulti works across the moves")
	require.Empty(t, lateCalls(t, rec, ops), "calls outlived their deadline")
	requireSafe(t, rec, res, true)
}
