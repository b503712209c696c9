package redislock_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// quorumNodes is a quorum Client over n redis-servers of its own.
type quorumNodes struct {
	client  *redislock.Client
	servers []*redistest.Server
	clients []rueidis.Client
	obs     *opLog
}

// opLog is an Observer that keeps the last Event, and the last of each Op.
type opLog struct {
	counter
	byOp [8]atomic.Pointer[redislock.Event]
}

func (o *opLog) End(ctx context.Context, ev *redislock.Event) {
	cp := *ev
	o.byOp[ev.Op].Store(&cp)
	o.counter.End(ctx, ev)
}

func startQuorum(t *testing.T, n int, opts ...redislock.ClientOption) *quorumNodes {
	t.Helper()
	return startQuorumArgs(t, n, nil, opts...)
}

// startQuorumArgs is startQuorum with args for each redis-server. Every
// connection of each node's rueidis client is opened first, so that no
// dial counts against a node's call bound.
func startQuorumArgs(t *testing.T, n int, args []string, opts ...redislock.ClientOption) *quorumNodes {
	t.Helper()
	redistest.Require(t)
	qn := &quorumNodes{obs: &opLog{}}
	for range n {
		srv := redistest.StartServer(t, args...)
		qn.servers = append(qn.servers, srv)
		// A stopped node's dial fails at once; a paused one is bounded by
		// the library, not by rueidis' defaults.
		qn.clients = append(qn.clients, srv.Client(t, func(o *rueidis.ClientOption) {
			o.Dialer.Timeout = time.Second
		}))
		benchWarmClient(t, qn.clients[len(qn.clients)-1])
	}
	opts = append([]redislock.ClientOption{redislock.WithObserver(qn.obs)}, opts...)
	qn.client = redislock.NewQuorum(qn.clients, opts...)
	return qn
}

// value returns key's value on node i, "" when it has none.
func (qn *quorumNodes) value(t *testing.T, i int, key string) string {
	t.Helper()
	v, err := qn.servers[i].Do(t, "GET", key)
	require.NoError(t, err)
	return v
}

// holders counts the nodes whose key holds token.
func (qn *quorumNodes) holders(t *testing.T, key, token string) int {
	t.Helper()
	n := 0
	for i := range qn.servers {
		if v := qn.value(t, i, key); v == token || (len(v) > len(token) && v[:len(token)+1] == token+"\x00") {
			n++
		}
	}
	return n
}

// lastCounts returns the node counts of the last observed operation.
func (qn *quorumNodes) lastCounts() [3]int {
	ev := qn.obs.last.Load()
	return [3]int{ev.NodesGranted, ev.NodesRefused, ev.NodesFailed}
}

func TestNewQuorum_badInput(t *testing.T) {
	redistest.Require(t)
	a := redistest.StartServer(t).Client(t)
	require.PanicsWithValue(t, "redislock: NewQuorum: no clients", func() { redislock.NewQuorum(nil) })
	require.PanicsWithValue(t, "redislock: NewQuorum: client 2 is nil", func() { redislock.NewQuorum([]rueidis.Client{a, nil}) })
	require.PanicsWithValue(t, "redislock: NewQuorum: clients 1 and 2 are the same client",
		func() { redislock.NewQuorum([]rueidis.Client{a, a}) })
}

func TestQuorum_badInput(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx := t.Context()
	_, err := qn.client.Obtain(ctx, "k", 0, nil)
	require.ErrorIs(t, err, redislock.ErrInvalidTTL)
	_, err = qn.client.ObtainMulti(ctx, []string{"k", "k"}, time.Second, nil)
	require.ErrorIs(t, err, redislock.ErrInvalidKey)
	_, err = qn.client.Obtain(ctx, "k", time.Second, &redislock.Options{FenceKey: "k"})
	require.ErrorIs(t, err, redislock.ErrInvalidKey)
	// Shared locks and semaphores are not taken over a quorum.
	_, err = qn.client.ObtainShared(ctx, "k", time.Second, nil)
	require.ErrorIs(t, err, errors.ErrUnsupported)
	require.NotErrorIs(t, err, redislock.ErrNotObtained)
	_, err = qn.client.ObtainSemaphore(ctx, "k", 2, time.Second, nil)
	require.ErrorIs(t, err, errors.ErrUnsupported)
	_, err = qn.client.ObtainSemaphore(ctx, "k", 0, time.Second, nil)
	require.ErrorIs(t, err, redislock.ErrInvalidLimit)
	for i, srv := range qn.servers {
		n, err := srv.Do(t, "DBSIZE")
		require.NoError(t, err)
		require.Equal(t, "0", n, "node %d", i+1)
	}
}

func TestQuorum_ObtainRelease(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx := t.Context()
	l, err := qn.client.Obtain(ctx, "q:or", time.Minute, &redislock.Options{Metadata: "m"})
	require.NoError(t, err)
	require.Equal(t, [3]int{3, 0, 0}, qn.lastCounts())
	require.Equal(t, 3, qn.holders(t, "q:or", l.Token()))
	_, err = qn.client.Obtain(ctx, "q:or", time.Minute, nil)
	require.ErrorIs(t, err, redislock.ErrNotObtained)
	require.Equal(t, [3]int{0, 3, 0}, qn.lastCounts())
	require.NoError(t, l.Release(ctx))
	// It returns once a majority deleted the lock; the third node's
	// delete may still be on its way.
	counts := qn.lastCounts()
	require.GreaterOrEqual(t, counts[0], 2)
	require.Equal(t, [2]int{0, 0}, [2]int{counts[1], counts[2]})
	require.Eventually(t, func() bool { return qn.holders(t, "q:or", l.Token()) == 0 }, 5*time.Second, time.Millisecond)
	require.ErrorIs(t, l.Release(ctx), redislock.ErrLockNotHeld)
}

// TestQuorum_heldByOther: a minority held by another token does not stop
// an obtain; a majority does (ErrNotObtained), and the minority granted is
// given back.
func TestQuorum_heldByOther(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx := t.Context()
	_, err := qn.servers[0].Do(t, "SET", "q:held", "other", "PX", "60000")
	require.NoError(t, err)
	l, err := qn.client.Obtain(ctx, "q:held", time.Minute, nil)
	require.NoError(t, err)
	require.Equal(t, [3]int{2, 1, 0}, qn.lastCounts())
	require.NoError(t, l.Release(ctx))
	require.Equal(t, "other", qn.value(t, 0, "q:held"))

	_, err = qn.servers[1].Do(t, "SET", "q:held", "other", "PX", "60000")
	require.NoError(t, err)
	_, err = qn.client.Obtain(ctx, "q:held", time.Minute, &redislock.Options{Token: "mine"})
	require.ErrorIs(t, err, redislock.ErrNotObtained)
	require.Equal(t, [3]int{1, 2, 0}, qn.lastCounts())
	require.Empty(t, qn.value(t, 2, "q:held"))
}

// TestQuorum_keysDeleted: Refresh takes back a key that vanished on one
// node; with keys gone on two nodes, Refresh fails and takes nothing back,
// and Release reports the lock not held.
func TestQuorum_keysDeleted(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx := t.Context()
	l, err := qn.client.Obtain(ctx, "q:del", time.Minute, nil)
	require.NoError(t, err)
	_, err = qn.servers[0].Do(t, "DEL", "q:del")
	require.NoError(t, err)
	require.NoError(t, l.Refresh(ctx, time.Minute, nil))
	require.Equal(t, 3, qn.holders(t, "q:del", l.Token()), "taken back")

	_, err = qn.servers[0].Do(t, "DEL", "q:del")
	require.NoError(t, err)
	require.NoError(t, l.Release(ctx), "held on two of three")

	l, err = qn.client.Obtain(ctx, "q:del", time.Minute, nil)
	require.NoError(t, err)
	for i := range 2 {
		_, err = qn.servers[i].Do(t, "DEL", "q:del")
		require.NoError(t, err)
	}
	require.ErrorIs(t, l.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
	require.Equal(t, 1, qn.holders(t, "q:del", l.Token()), "nothing taken back")
	ttl, err := l.TTL(ctx)
	require.NoError(t, err)
	require.Zero(t, ttl)
	require.ErrorIs(t, l.Release(ctx), redislock.ErrLockNotHeld)
}

// TestQuorum_TTL: the majority-th largest remaining TTL.
func TestQuorum_TTL(t *testing.T) {
	qn := startQuorum(t, 3, redislock.WithReleaseTimeout(300*time.Millisecond))
	ctx := t.Context()
	l, err := qn.client.Obtain(ctx, "q:ttl", time.Minute, nil)
	require.NoError(t, err)
	for i, s := range []string{"10000", "30000", "20000"} {
		_, err := qn.servers[i].Do(t, "PEXPIRE", "q:ttl", s)
		require.NoError(t, err)
	}
	ttl, err := l.TTL(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, 20*time.Second)
	require.Greater(t, ttl, 19*time.Second)
	qn.servers[1].Stop(t)
	ttl, err = l.TTL(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, ttl, 10*time.Second, "a node that does not answer counts as 0")
	require.Greater(t, ttl, 9*time.Second)
}

// TestQuorum_validity: a TTL under the drift allowance (1% + 2ms) leaves
// no validity: the lock is never returned, whether the nodes answered
// within their bound (Expired) or not.
func TestQuorum_validity(t *testing.T) {
	qn := startQuorum(t, 3)
	for i := range 20 {
		l, err := qn.client.Obtain(t.Context(), "q:valid:"+strconv.Itoa(i), 2*time.Millisecond, nil)
		require.Nil(t, l)
		var qe *redislock.QuorumError
		require.ErrorAs(t, err, &qe)
		require.NotErrorIs(t, err, redislock.ErrNotObtained)
		require.True(t, qe.Expired || qe.Failed > 0, "%v", err)
	}
}

// TestQuorum_fencing: counters A=10, B=5, C=5, one node down in turn
// (killed, and restarted from its AOF with appendfsync always): fence
// tokens strictly increase whichever majority granted them (a maximum over
// INCRs alone would give 11, then 7).
func TestQuorum_fencing(t *testing.T) {
	qn := startQuorumArgs(t, 3, []string{"--appendonly", "yes", "--appendfsync", "always"})
	ctx := t.Context()
	for i, n := range []string{"10", "5", "5"} {
		_, err := qn.servers[i].Do(t, "SET", "q:fence", n)
		require.NoError(t, err)
	}
	opt := &redislock.Options{FenceKey: "q:fence"}
	var last int64
	for round, down := range []int{2, 0, 1, 2, 0, 1} {
		qn.servers[down].Stop(t)
		l, err := qn.client.Obtain(ctx, "q:fenced:"+strconv.Itoa(round), 10*time.Second, opt)
		qn.servers[down].Restart(t)
		require.NoError(t, err, "round %d", round)
		// The node's client has seen its connections die: each reconnects
		// on its next command (see benchWarmClient).
		client := qn.clients[down]
		require.Eventually(t, func() bool {
			for range 64 {
				// Pinned: rueidis may still be writing a command on a
				// connection that died when Do returns its error, and must
				// not hand its memory to the next command meanwhile.
				if err := client.Do(ctx, client.B().Get().Key("q:warm").Build().Pin()).Error(); err != nil && !rueidis.IsRedisNil(err) {
					return false
				}
			}
			return true
		}, 5*time.Second, time.Millisecond)
		require.Greater(t, l.FenceToken(), last, "round %d, node %d down", round, down+1)
		last = l.FenceToken()
	}
	require.Equal(t, int64(16), last, "11, then one more each round")
}

// TestQuorum_contention: several quorum Clients, several goroutines each,
// one key: never two holders, and every goroutine gets its turns (no
// deadlock when the nodes' grants split between contenders).
func TestQuorum_contention(t *testing.T) {
	qn := startQuorum(t, 3)
	clients := []*redislock.Client{qn.client, redislock.NewQuorum(qn.clients), redislock.NewQuorum(qn.clients)}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var held, total, lastFence atomic.Int64
	var wg sync.WaitGroup
	const goroutines, turns = 3, 5
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(2 * time.Millisecond), FenceKey: "q:contended:fence"}
	for _, c := range clients {
		for range goroutines {
			wg.Go(func() {
				for range turns {
					l, err := c.Obtain(ctx, "q:contended", 10*time.Second, opt)
					if err != nil {
						t.Error(err)
						return
					}
					if held.Add(1) != 1 {
						t.Error("two holders")
					}
					if f := l.FenceToken(); f <= lastFence.Load() {
						t.Errorf("fence token %d after %d", f, lastFence.Load())
					} else {
						lastFence.Store(f)
					}
					total.Add(1)
					held.Add(-1)
					if err := l.Release(ctx); err != nil {
						t.Error(err)
					}
				}
			})
		}
	}
	wg.Wait()
	require.Equal(t, int64(len(clients)*goroutines*turns), total.Load())
}

// TestQuorum_wokenByRelease: a waiter whose backoff and holder's TTL are
// both far away is woken by its Client's Release.
func TestQuorum_wokenByRelease(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := qn.client.Obtain(ctx, "q:wake", time.Minute, nil)
	require.NoError(t, err)
	got := obtainAsync(ctx, qn.client, []string{"q:wake"},
		&redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Minute)})
	awaitBlocked(t, 1)
	require.NoError(t, l.Release(ctx))
	res := <-got
	require.NoError(t, res.err)
	// Woken, not by the one-minute backoff: by the Release, and perhaps
	// once more by a node's message on the keys' channel.
	ev := qn.obs.byOp[redislock.OpObtain].Load()
	require.GreaterOrEqual(t, ev.WokenByRelease, 1)
	require.Zero(t, ev.WokenByBackoff)
}

// TestQuorum_wokenAcrossClients: a waiter of another quorum Client, whose
// backoff and holder's TTL are both far away, is woken by the release's
// message on its keys' channel, once it has subscribed on every node.
func TestQuorum_wokenAcrossClients(t *testing.T) {
	qn := startQuorum(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	l, err := qn.client.Obtain(ctx, "q:wake2", time.Minute, nil)
	require.NoError(t, err)
	obs := &opLog{}
	other := redislock.NewQuorum(qn.clients, redislock.WithObserver(obs))
	got := obtainAsync(ctx, other, []string{"q:wake2"},
		&redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Minute)})
	for i, srv := range qn.servers {
		require.Eventually(t, func() bool {
			n, err := srv.Do(t, "PUBSUB", "NUMSUB", "redislock:released:q:wake2")
			return err == nil && strings.HasSuffix(n, "1")
		}, 5*time.Second, time.Millisecond, "node %d", i+1)
	}
	require.NoError(t, l.Release(ctx))
	res := <-got
	require.NoError(t, res.err)
	// Woken by the messages of the nodes (one each at most), not by the
	// one-minute backoff.
	ev := obs.byOp[redislock.OpObtain].Load()
	require.GreaterOrEqual(t, ev.WokenByRelease, 1)
	require.LessOrEqual(t, ev.WokenByRelease, 3)
	require.Zero(t, ev.WokenByBackoff)
	require.NoError(t, res.lock.Release(ctx))
}

// TestQuorum_Watch: the watched ctx is cancelled once a majority is lost.
func TestQuorum_Watch(t *testing.T) {
	qn := startQuorum(t, 3)
	pauses := redistest.WatchPauses(t)
	// A refresh of a node that gets no reply within a third of the TTL
	// counts as a failed node, and the watch then ends for want of a
	// majority, not because the lock was lost: so it does when the test
	// process itself is paused that long (seen under a load of 14). Such a
	// try is made again, on a new key, up to three times.
	for try := 1; ; try++ {
		key := "q:watch:" + strconv.Itoa(try)
		start := time.Now()
		cause := quorumWatchOnce(t, qn, key)
		if errors.Is(cause, redislock.ErrLockNotHeld) {
			return
		}
		paused := pauses.Paused(start, time.Now())
		require.GreaterOrEqual(t, paused, watchTTL/3, "the watch ended with %v, not ErrLockNotHeld (the process paused %v)", cause, paused)
		require.Less(t, try, 3, "the process was paused for a third of the TTL in each try")
		t.Logf("try %d: the watch ended with %v while the process was paused %v", try, cause, paused)
	}
}

// quorumWatchOnce watches a lock on key, takes it over on 2 of the 3
// nodes, and returns why the watch ended.
func quorumWatchOnce(t *testing.T, qn *quorumNodes, key string) error {
	ctx := t.Context()
	l, err := qn.client.Obtain(ctx, key, watchTTL, nil)
	require.NoError(t, err)
	work, stop := l.Watch(ctx, watchTTL)
	defer stop()
	for i := range 2 {
		_, err = qn.servers[i].Do(t, "SET", key, "other")
		require.NoError(t, err)
	}
	select {
	case <-work.Done():
	case <-time.After(10 * watchTTL):
		t.Fatal("the watched ctx is still live")
	}
	return context.Cause(work)
}
