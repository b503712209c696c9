package safety_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// deadlineMargin is how long after its ctx deadline a call may return: a
// timer and goroutines to schedule on a busy 2-core machine. Measured in
// the flapping test (8 clients, the worst of about 20,000 calls): 12ms
// without the race detector; up to 115ms with it, which pauses the whole
// process now and then, hence 250ms under -race.
var deadlineMargin = func() time.Duration {
	if raceEnabled {
		return 250 * time.Millisecond
	}
	return 50 * time.Millisecond
}()

// oneConnection makes a rueidis client keep a single connection to the
// server. By default it keeps 2 on this 2-core machine and picks one at
// random for each keyed command, which makes the order of an obtain and its
// cleanup a matter of chance; with one, a fault test is deterministic.
func oneConnection(o *rueidis.ClientOption) { o.PipelineMultiplex = -1 }

// warmScripts caches the library's scripts on the server, through a client
// of its own, so that an obtain under a toxic makes one round trip (no
// NOSCRIPT first).
func warmScripts(t *testing.T, srv *safety.Server) {
	t.Helper()
	client := srv.Client(t)
	lock, err := redislock.Obtain(t.Context(), client, "warm", time.Second, &redislock.Options{FenceKey: "warm:fence"})
	require.NoError(t, err)
	_, err = lock.TTL(t.Context())
	require.NoError(t, err)
	require.NoError(t, lock.Refresh(t.Context(), time.Second, nil))
	require.NoError(t, lock.Release(t.Context()))
}

// connection returns a client through p with one connection: "idle" as
// made (rueidis then runs a lone call synchronously, and a ctx deadline
// closes the connection), or "busy" (pipelining: a call that ends by its
// deadline leaves the connection open).
func connection(t *testing.T, p *proxy, mode string) rueidis.Client {
	t.Helper()
	client := safety.NewClient(t, p.Addr(), oneConnection)
	if mode == "busy" {
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		// A call with a ctx that has no deadline starts the pipeline.
		require.NoError(t, client.Do(ctx, client.B().Ping().Build()).Error())
	}
	return client
}

// waitGone polls key on srv (directly, not through a proxy) until it is
// gone, and returns how long that took; it fails t after limit.
func waitGone(t *testing.T, srv *safety.Server, key string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < limit {
		if srv.MustDo(t, "EXISTS", key) == "0" {
			return time.Since(start)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("%s still held %v after the obtain returned: an orphan lock", key, limit)
	return 0
}

// ambiguousObtain obtains through a proxy while a toxic is on the replies,
// with a 100ms deadline, and removes the toxic after heal; it checks that
// the call returned by its deadline, with ErrNotObtained joined with the
// deadline when the deadline cut the attempt short (a random token's
// attempt in flight at the deadline is the library's to settle), and with
// an error that is not ErrNotObtained after a transport error (a reset
// connection), that the server did grant the lock (its fence
// counter is 1), and that the cleanup released it long before its TTL.
func ambiguousObtain(t *testing.T, kind, attrs string, heal time.Duration) {
	const ttl = 30 * time.Second
	for _, mode := range []string{"idle", "busy"} {
		t.Run(mode, func(t *testing.T) {
			srv := safety.StartServer(t, safety.ServerOptions{})
			warmScripts(t, srv)
			p := startProxy(t, srv.Addr)
			locker := redislock.New(connection(t, p, mode))
			name := p.toxic(kind, "downstream", attrs)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
			start := time.Now()
			_, err := locker.Obtain(ctx, "k", ttl, &redislock.Options{FenceKey: "k:fence"})
			took := time.Since(start)
			cancel()
			require.Error(t, err)
			if errors.Is(err, context.DeadlineExceeded) {
				require.ErrorIs(t, err, redislock.ErrNotObtained, "the library settles a random token's attempt in flight at the deadline")
			} else {
				require.NotErrorIs(t, err, redislock.ErrNotObtained, "a transport error is an unknown outcome, not ErrNotObtained")
			}
			requireReturnedBy(t, start, took, 100*time.Millisecond, "the call outlived its deadline")
			go func() {
				time.Sleep(heal)
				p.remove(name)
			}()
			gone := waitGone(t, srv, "k", 3*time.Second)
			require.Equal(t, "1", srv.MustDo(t, "GET", "k:fence"), "the server granted the lock")
			t.Logf("%s %s, %s connection: Obtain returned after %v (%v); the orphan lock was gone %v later (connection healed after %v; TTL %v)",
				kind, attrs, mode, took.Round(time.Millisecond), err, gone.Round(time.Millisecond), heal, ttl)
		})
	}
}

// Scenario 4: the reply to an obtain is late (300ms of latency on the
// replies). The call returns by its ctx deadline, not obtained, and the lock
// the server granted is released by the library's cleanup as soon as the
// connection allows, not at the end of its TTL.
func TestAmbiguousObtain_lateReply(t *testing.T) {
	ambiguousObtain(t, "latency", `{"latency":300}`, 500*time.Millisecond)
}

// Scenario 4: the reply to an obtain is lost: the replies are dropped and
// the connection closed after 300ms (a timeout toxic), and the network
// heals after 500ms, well within the release timeout (2s). On a busy
// connection the cleanup follows the obtain at once; on an idle one the
// deadline closed the connection, and the cleanup's new connection is lost
// too.
func TestAmbiguousObtain_lostReply(t *testing.T) {
	ambiguousObtain(t, "timeout", `{"timeout":300}`, 500*time.Millisecond)
}

// Scenario 4: the reply to an obtain is lost with its connection (reset
// when the reply comes), and every new connection is reset too until the
// network heals 300ms later, well within the release timeout (2s): the
// orphan lock must be released then.
func TestAmbiguousObtain_connectionReset(t *testing.T) {
	ambiguousObtain(t, "reset_peer", `{"timeout":0}`, 300*time.Millisecond)
}

// lateObtain makes an obtain with a custom token whose reply is late, on
// an idle connection, so that its outcome is unknown and its cleanup must
// reconnect (300ms), and returns a client on a direct connection for the
// retry.
func lateObtain(t *testing.T, opt *redislock.Options) *redislock.Client {
	t.Helper()
	srv := safety.StartServer(t, safety.ServerOptions{})
	warmScripts(t, srv)
	p := startProxy(t, srv.Addr)
	client := connection(t, p, "idle")
	name := p.toxic("latency", "downstream", `{"latency":300}`)
	t.Cleanup(func() { p.remove(name) })
	ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
	defer cancel()
	_, err := redislock.Obtain(ctx, client, "k", 30*time.Second, opt)
	require.Error(t, err)
	require.NotErrorIs(t, err, redislock.ErrNotObtained)
	return redislock.New(srv.Client(t))
}

// Scenario 4: after an obtain with an unknown outcome, a retry with the
// same token reports success, with the fence token of the first attempt.
func TestAmbiguousObtain_retrySameToken(t *testing.T) {
	opt := &redislock.Options{Token: "retry-token", FenceKey: "k:fence"}
	locker := lateObtain(t, opt)
	lock, err := locker.Obtain(t.Context(), "k", 30*time.Second, opt)
	require.NoError(t, err, "a retry with the same token reports success")
	require.Equal(t, int64(1), lock.FenceToken(), "the lock the first attempt took, fence token kept")
}

// The lock a retry with the same token reported must stay held: the
// cleanup of the first attempt, which runs with the same token, must not
// delete it.
func TestAmbiguousObtain_retrySameTokenKeepsLock(t *testing.T) {
	opt := &redislock.Options{Token: "retry-token", FenceKey: "k:fence"}
	locker := lateObtain(t, opt)
	lock, err := locker.Obtain(t.Context(), "k", 30*time.Second, opt)
	require.NoError(t, err)
	time.Sleep(time.Second) // the cleanup's release arrives after ~300ms
	left, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Positive(t, left, "the lock a retry with the same token reported was deleted behind its back")
	require.NoError(t, lock.Release(t.Context()))
}
