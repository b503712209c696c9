package redislock_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// tcpProxy forwards connections to an address until it is stopped: then it
// closes its listener and every connection, a partition.
type tcpProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func startTCPProxy(t *testing.T, upstream string) *tcpProxy {
	t.Helper()
	p := &tcpProxy{}
	p.ln = proxyConns(t, upstream, func(down, up net.Conn) {
		p.mu.Lock()
		p.conns = append(p.conns, down, up)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(up, down); up.Close() }()
		go func() { _, _ = io.Copy(down, up); down.Close() }()
	})
	t.Cleanup(p.stop)
	return p
}

// proxyConns listens on a free loopback port and, for each connection it
// accepts, dials upstream and hands both ends to serve, until the listener
// is closed.
func proxyConns(t *testing.T, upstream string, serve func(down, up net.Conn)) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() {
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", upstream)
			if err != nil {
				down.Close()
				continue
			}
			serve(down, up)
		}
	}()
	return ln
}

func (p *tcpProxy) port() string { return strconv.Itoa(p.ln.Addr().(*net.TCPAddr).Port) }

func (p *tcpProxy) stop() {
	p.ln.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// awaitReplicaCaughtUp waits until master sees one replica online that has
// acknowledged its whole replication stream (a replica acknowledges once a
// second): a WAIT then waits for the new write alone.
func awaitReplicaCaughtUp(t *testing.T, master *redistest.Server) {
	t.Helper()
	var info string
	ok := assert.Eventually(t, func() bool {
		var err error
		if info, err = master.Do(t, "INFO", "replication"); err != nil {
			return false
		}
		field := func(prefix string) string {
			for line := range strings.SplitSeq(info, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(line), prefix); ok {
					return v
				}
			}
			return ""
		}
		replica := "," + field("slave0:") + ","
		offset := field("master_repl_offset:")
		return strings.Contains(replica, ",state=online,") && offset != "" && strings.Contains(replica, ",offset="+offset+",")
	}, 30*time.Second, 10*time.Millisecond)
	require.True(t, ok, "the replica never caught up: %s", info)
}

// A master with one replica behind a proxy: the replica acknowledges the
// writes of a Client made WithReplicas(1, ...) while the proxy forwards;
// once the proxy stops, an obtain reports ErrNotReplicated and releases
// what it wrote, and a refresh reports it and keeps the lock. That WAIT runs
// on the connection of the write is what makes this fail: on another
// connection it would answer at once. The WAIT timeout is generous (a loaded
// machine may take hundreds of milliseconds to forward a write through the
// proxy and its acknowledgement back); once the proxy stops, each WAIT waits
// it out.
func TestWithReplicas(t *testing.T) {
	const replicaTimeout = 2 * time.Second
	redistest.Require(t)
	master := redistest.StartServer(t, "--repl-diskless-sync-delay", "0")
	p := startTCPProxy(t, master.Addr)
	replica := redistest.StartServer(t, "--replicaof", "127.0.0.1", p.port(), "--repl-diskless-sync-delay", "0")
	awaitReplicaCaughtUp(t, master)

	rc := master.Client(t)
	client := redislock.New(rc, redislock.WithReplicas(1, replicaTimeout))
	opt := &redislock.Options{FenceKey: "fence"}
	lock, err := client.Obtain(t.Context(), "lock", time.Minute, opt)
	require.NoError(t, err)
	require.NoError(t, lock.Refresh(t.Context(), time.Minute, nil))
	v, err := replica.Do(t, "EXISTS", "lock")
	require.NoError(t, err)
	assert.Equal(t, "1", v, "the replica has the lock")

	// A waiter is passed the lock by the release, and confirms it.
	got := obtainAsync(t.Context(), client, []string{"lock"}, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool {
		n, err := master.Do(t, "LLEN", "lock:redislock-waiters")
		return err == nil && n == "1"
	}, "the waiter queues")
	require.NoError(t, lock.Release(t.Context()))
	r := <-got
	require.NoError(t, r.err)

	p.stop()
	start := time.Now()
	err = r.lock.Refresh(t.Context(), time.Minute, nil)
	require.ErrorIs(t, err, redislock.ErrNotReplicated)
	assert.GreaterOrEqual(t, time.Since(start), replicaTimeout, "WAIT waited its timeout")
	ttl, err := r.lock.TTL(t.Context())
	require.NoError(t, err)
	assert.Positive(t, ttl, "a refresh that was not replicated keeps the lock")
	require.NoError(t, r.lock.Release(t.Context()))

	_, err = client.Obtain(t.Context(), "other", time.Minute, opt)
	require.ErrorIs(t, err, redislock.ErrNotReplicated)
	require.NotErrorIs(t, err, redislock.ErrNotObtained)
	// What the obtain wrote is released in the background, within the
	// release timeout.
	eventually(t, func() bool {
		v, err := master.Do(t, "EXISTS", "other")
		return err == nil && v == "0"
	}, "what the obtain wrote is released")

	// Without the option, the same obtain succeeds: nothing waits.
	plain, err := redislock.New(rc).Obtain(context.Background(), "other", time.Minute, nil)
	require.NoError(t, err)
	require.NoError(t, plain.Release(t.Context()))
}

func TestWithReplicas_badInput(t *testing.T) {
	assert.PanicsWithValue(t, "redislock: WithReplicas(-1, 1s): n must be 0 or more", func() { redislock.WithReplicas(-1, time.Second) })
	assert.PanicsWithValue(t, "redislock: WithReplicas(1, 999µs): the timeout must be 1ms or more", func() { redislock.WithReplicas(1, 999*time.Microsecond) })
	assert.NotPanics(t, func() { redislock.WithReplicas(0, 0) })
}

// A Client made WithReplicas takes a dedicated connection for each write.
// rueidis dials and greets a new one with context.Background(), under its
// dial and write timeouts (a minute here), not the caller's deadline: with
// the master stopped (SIGSTOP) before the first write, the Obtain must
// still return by its own deadline, while the master is stopped, not when
// it answers again.
func TestWithReplicas_stoppedMasterKeepsDeadline(t *testing.T) {
	redistest.Require(t)
	master := redistest.StartServer(t)
	rc := master.Client(t, func(o *rueidis.ClientOption) {
		o.Dialer.Timeout = time.Minute
		o.ConnWriteTimeout = time.Minute
	})
	client := redislock.New(rc, redislock.WithReplicas(1, time.Second))

	master.Pause(t)
	resumed := false
	defer func() {
		if !resumed {
			master.Resume(t)
		}
	}()
	returned := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := client.Obtain(ctx, "lock", time.Minute, nil)
		returned <- err
	}()
	select {
	case err := <-returned:
		require.ErrorIs(t, err, context.DeadlineExceeded)
	case <-time.After(30 * time.Second):
		t.Fatal("the Obtain did not return while the master was stopped")
	}
	resumed = true
	master.Resume(t)
	v, err := master.Do(t, "EXISTS", "lock")
	require.NoError(t, err)
	assert.Equal(t, "0", v, "nothing was written")
}
