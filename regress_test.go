package redislock_test

// Regression tests of the obtain path, through the public API alone: each
// builds the sequence of events that once went wrong and asserts what must
// hold instead.

import (
	"context"
	"crypto/tls"
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// eventLog is an Observer that keeps a copy of every Event, in the order
// the operations ended.
type eventLog struct {
	mu     sync.Mutex
	events []redislock.Event
}

func (r *eventLog) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (r *eventLog) End(_ context.Context, ev *redislock.Event) {
	cp := *ev
	cp.Keys = append([]string(nil), ev.Keys...)
	r.mu.Lock()
	r.events = append(r.events, cp)
	r.mu.Unlock()
}

// find returns the events of op on key.
func (r *eventLog) find(op redislock.Op, key string) []redislock.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []redislock.Event
	for _, ev := range r.events {
		if ev.Op == op && len(ev.Keys) > 0 && ev.Keys[0] == key {
			out = append(out, ev)
		}
	}
	return out
}

// count returns how many events of op ended with outcome.
func (r *eventLog) count(op redislock.Op, outcome redislock.Outcome) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		if ev.Op == op && ev.Outcome == outcome {
			n++
		}
	}
	return n
}

// waits is the number of waits an obtain made.
func waits(ev redislock.Event) int {
	return ev.WokenByRelease + ev.WokenByExpiry + ev.WokenByBackoff
}

// A newcomer's retry budget is its own, whatever other goroutines of its
// Client wait for: LimitRetry(s, 1) on a held key allows exactly one wait,
// also while another goroutine of the same Client waits for another key.
func TestRegress_retryBudgetBesideOtherWaiters(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		holders := redislock.New(b.client)
		ha, err := holders.Obtain(t.Context(), "a", time.Minute, nil)
		require.NoError(t, err)
		hb, err := holders.Obtain(t.Context(), "b", time.Minute, nil)
		require.NoError(t, err)

		rec := &eventLog{}
		c := redislock.New(b.client, redislock.WithObserver(rec))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		gotA := obtainAsync(ctx, c, []string{"a"}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "a") == 1 }, "the waiter for a queues in Redis")

		_, err = c.Obtain(ctx, "b", time.Minute, &redislock.Options{
			RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(5*time.Millisecond), 1),
		})
		require.ErrorIs(t, err, redislock.ErrNotObtained)
		evs := rec.find(redislock.OpObtain, "b")
		require.Len(t, evs, 1)
		ev := evs[0]
		t.Logf("obtain of b: %d attempts, woken by release %d, by expiry %d, by backoff %d",
			ev.Attempts, ev.WokenByRelease, ev.WokenByExpiry, ev.WokenByBackoff)
		assert.Equal(t, 1, waits(ev), "LimitRetry(s, 1) allows one wait")
		assert.GreaterOrEqual(t, ev.Attempts, 2, "the wait is followed by an attempt")

		require.NoError(t, ha.Release(t.Context()))
		r := <-gotA
		require.NoError(t, r.err)
		require.NoError(t, r.lock.Release(t.Context()))
		require.NoError(t, hb.Release(t.Context()))
	})
}

// A Watch outlives a transient READONLY: a master turned replica (of a
// port where nothing listens, so it keeps its data) and back 300ms later
// refuses a refresh or two, which a later refresh makes good well within
// the TTL.
func TestRegress_watchSurvivesTransientReadOnly(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	rec := &eventLog{}
	c := redislock.New(srv.Client(t), redislock.WithObserver(rec))
	const ttl = 3 * time.Second // a refresh every 1s, a retry every 300ms
	lock, err := c.Obtain(t.Context(), "watched", ttl, nil)
	require.NoError(t, err)
	work, stop := lock.Watch(t.Context(), ttl)
	defer stop()

	// A port where nothing listens: the replica never syncs, and keeps
	// its data.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	deadPort := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	require.NoError(t, l.Close())

	failedBefore := rec.count(redislock.OpRefresh, redislock.OutcomeError)
	_, err = srv.Do(t, "REPLICAOF", "127.0.0.1", deadPort)
	require.NoError(t, err)
	undone := false
	undo := func() {
		if !undone {
			undone = true
			_, err := srv.Do(t, "REPLICAOF", "NO", "ONE")
			require.NoError(t, err)
		}
	}
	defer undo()
	require.Eventually(t, func() bool { return rec.count(redislock.OpRefresh, redislock.OutcomeError) > failedBefore },
		5*time.Second, time.Millisecond, "a refresh meets READONLY")
	time.Sleep(300 * time.Millisecond) // the fault lasts 300ms, then is undone
	undo()

	okAfter := rec.count(redislock.OpRefresh, redislock.OutcomeOK)
	deadline := time.After(10 * time.Second)
	for rec.count(redislock.OpRefresh, redislock.OutcomeOK) < okAfter+2 {
		select {
		case <-work.Done():
			t.Fatalf("the watch gave up on a transient READONLY: %v", context.Cause(work))
		case <-deadline:
			t.Fatal("no two refreshes succeeded within 10s of the fault's end")
		case <-time.After(5 * time.Millisecond):
		}
	}
	require.NoError(t, work.Err(), "cancelled: %v", context.Cause(work))
	left, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.Positive(t, left, "the lock is still held")
	requireStopped(t, stop)
	require.NoError(t, lock.Release(t.Context()))
}

// gatedDialer is a rueidis DialCtxFn whose dials wait, while it is closed,
// until it opens or the dialing ctx ends: a slow (re)connect.
type gatedDialer struct {
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{} // gets a value when a dial starts to wait
}

func (g *gatedDialer) close() {
	g.mu.Lock()
	g.gate = make(chan struct{})
	g.entered = make(chan struct{}, 16)
	g.mu.Unlock()
}

func (g *gatedDialer) open() {
	g.mu.Lock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
	g.mu.Unlock()
}

func (g *gatedDialer) dial(ctx context.Context, dst string, d *net.Dialer, _ any) (net.Conn, error) {
	g.mu.Lock()
	gate, entered := g.gate, g.entered
	g.mu.Unlock()
	if gate != nil {
		select {
		case entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return d.DialContext(ctx, "tcp", dst)
}

// A Release whose own ctx is live succeeds, and deletes the lock, even when
// the connection it needs is being dialled for another call whose ctx is
// then cancelled.
//
// The mechanism, in rueidis v1.0.79: a command on the auto-pipelined
// connection goes through mux.pipeline (mux.go:323), which asks mux.pipe
// (mux.go:199) -> mux._pipe (mux.go:158) for the wire. After the connection
// was lost, the wire is m.init again (the close hook, mux.go:136-146, or
// the CompareAndSwap in mux.go:326-328), so the first caller dials it:
// mux.go:177 calls m.wireFn(ctx) with that caller's ctx, which reaches
// _newPipe (pipe.go:112) -> connFn(ctx) (pipe.go:113) -> dial
// (rueidis.go:612-626: DialCtxFn or Dialer.DialContext with that ctx), and
// the handshake p.DoMulti(ctx, HELLO ...) (pipe.go:233) runs with it too
// (bounded by the dial timeout, pipe.go:224-228).
// Every other caller that needs the wire meanwhile finds the singleconnect
// in place (mux.go:163-172) and waits on sc.g.Wait(), then gets sc.w and
// sc.e (mux.go:188-194). When the first caller's ctx is cancelled, the dial
// fails with context.Canceled, wireFn returns the dead wire with that error
// stored in it (mux.go:80-84), and every waiter's command runs on the dead
// wire: it fails with the first caller's "context canceled", its own ctx
// being live. singleClient.Do (client.go:51-70) does not retry it for a
// write such as EVALSHA.
func TestRegress_releaseBehindCancelledDial(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	g := &gatedDialer{}
	rc := redistest.NewClient(t, srv.Addr, func(o *rueidis.ClientOption) {
		// One pipelined connection: every command needs the one dial (with
		// several, a command with a key picks one of them at random).
		o.PipelineMultiplex = -1
		o.DialCtxFn = func(ctx context.Context, dst string, d *net.Dialer, _ *tls.Config) (net.Conn, error) {
			return g.dial(ctx, dst, d, nil)
		}
	})
	c := redislock.New(rc, redislock.WithReleaseTimeout(5*time.Second))
	lock, err := c.Obtain(t.Context(), "held", time.Minute, nil)
	require.NoError(t, err)

	// Lose the connection, and make its redial slow.
	g.close()
	defer g.open()
	_, err = srv.Do(t, "CLIENT", "KILL", "TYPE", "normal")
	require.NoError(t, err)

	// Another call needs the connection and dials it, with its own ctx.
	other, cancelOther := context.WithCancel(t.Context())
	defer cancelOther()
	otherDone := make(chan struct{})
	go func() {
		defer close(otherDone)
		for other.Err() == nil {
			_ = rc.Do(other, rc.B().Ping().Build()).Error()
		}
	}()
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection is not redialled")
	}

	// The Release queues behind that dial, with a live ctx.
	released := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		released <- lock.Release(ctx)
	}()
	time.Sleep(100 * time.Millisecond) // the Release reaches the dial in progress
	cancelOther()
	<-otherDone
	g.open()

	select {
	case err = <-released:
	case <-time.After(15 * time.Second):
		t.Fatal("the Release did not return")
	}
	require.NoError(t, err, "a Release with a live ctx fails for another call's cancellation")
	exists, err := srv.Do(t, "EXISTS", "held")
	require.NoError(t, err)
	require.Equal(t, "0", exists, "the lock is left held")
}

// signalling is a RetryStrategy that reports each call to NextBackoff on
// calls, then returns backoff.
type signalling struct {
	backoff time.Duration
	calls   chan struct{}
}

func (s *signalling) NextBackoff() time.Duration {
	select {
	case s.calls <- struct{}{}:
	default:
	}
	return s.backoff
}

// A waiter whose first attempt met a transport error, and whose Client had
// not subscribed yet when a Release of that Client looked at it, is told
// when the lock passes to it later: it obtains the lock, at once, not after
// its backoff or never.
func TestRegress_grantAfterFirstAttemptFailed(t *testing.T) {
	b := realBackend(t)
	const key = "lock"
	fl := &flaky{Client: b.client, names: []string{"SET"}}
	a := redislock.New(fl)
	other := redislock.New(b.client)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	// Client A holds the lock; a waiter of another Client queues in Redis.
	held, err := a.Obtain(t.Context(), key, time.Minute, nil)
	require.NoError(t, err)
	gotX := obtainAsync(ctx, other, []string{key}, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, key) == 1 }, "the other Client's waiter queues in Redis")

	// A waiter W of Client A: its first attempt fails with a transport
	// error, and it waits (by a backoff that no test waits out).
	fl.fails.Store(1)
	strategy := &signalling{backoff: time.Hour, calls: make(chan struct{}, 1)}
	wCtx, wCancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer wCancel()
	gotW := obtainAsync(wCtx, a, []string{key}, &redislock.Options{RetryStrategy: strategy})
	select {
	case <-strategy.calls:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter does not wait")
	}
	require.Zero(t, fl.fails.Load(), "the waiter's first attempt failed")
	time.Sleep(50 * time.Millisecond) // the waiter is in its Client's queue

	// Client A releases while W waits: the lock passes to the waiter
	// queued in Redis, and W is woken and queues in Redis in its turn.
	require.NoError(t, held.Release(t.Context()))
	x := <-gotX
	require.NoError(t, x.err)
	eventually(t, func() bool { return queueLen(t, b, key) == 1 }, "W queues in Redis")

	// The other Client releases: the lock passes to W, which must hear it.
	released := time.Now()
	require.NoError(t, x.lock.Release(t.Context()))
	w := <-gotW
	if w.err != nil {
		// Whatever went wrong, the lock must not stay held by nobody.
		left := "free"
		if !assert.Eventually(t, func() bool { return b.mustDo(t, "EXISTS", key) == "0" },
			2*redislock.DefaultReleaseTimeout, time.Millisecond) {
			left = "held by nobody"
		}
		t.Fatalf("the waiter was not told of its grant: %v after the release: %v (the lock is then %s)",
			time.Since(released).Round(time.Millisecond), w.err, left)
	}
	require.NoError(t, w.lock.Release(t.Context()))
	require.Equal(t, "0", b.mustDo(t, "EXISTS", key))
}

// onFirstBackoff is a RetryStrategy for one Obtain: LimitRetry(backoff, max)
// that calls trigger on its first NextBackoff, then spins for spin before
// it answers.
type onFirstBackoff struct {
	backoff time.Duration
	max     int
	trigger func()
	spin    time.Duration
	calls   atomic.Int64
}

func (s *onFirstBackoff) NextBackoff() time.Duration {
	n := s.calls.Add(1)
	if n == 1 {
		t0 := time.Now()
		s.trigger()
		for time.Since(t0) < s.spin {
		}
	}
	if n > int64(s.max) {
		return 0
	}
	return s.backoff
}

// A newcomer that arrives while the last waiter of its Client for the same
// key gives up is never stranded: it obtains a lock that is released while
// it waits without sleeping its (long) backoff, whatever the instant the
// other waiter leaves.
func TestRegress_newcomerBesideLeavingWaiter(t *testing.T) {
	b := realBackend(t)
	rounds := 1000
	if testing.Short() {
		rounds = 100
	}
	holders := redislock.New(b.client)
	c := redislock.New(b.client)
	for i := range rounds {
		key := "newcomer:" + strconv.Itoa(i)
		holder, err := holders.Obtain(t.Context(), key, time.Minute, nil)
		require.NoError(t, err)

		// The last waiter of c for key, queued in Redis and asleep.
		leaveCtx, leave := context.WithCancel(t.Context())
		gotOld := obtainAsync(leaveCtx, c, []string{key}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, key) == 1 }, "the waiter queues in Redis")

		// The newcomer: the waiter gives up as it asks for its first
		// backoff, at instants spread over a few microseconds.
		strategy := &onFirstBackoff{backoff: 10 * time.Second, max: 3, trigger: leave, spin: time.Duration(i%16) * time.Microsecond}
		newCtx, cancelNew := context.WithTimeout(t.Context(), 5*time.Second)
		gotNew := obtainAsync(newCtx, c, []string{key}, &redislock.Options{RetryStrategy: strategy})
		var old result
		select {
		case old = <-gotOld:
		case <-time.After(10 * time.Second):
			leave() // the newcomer never waited
			old = <-gotOld
		}
		require.ErrorIs(t, old.err, context.Canceled)

		// The lock is released while the newcomer waits.
		require.NoError(t, holder.Release(t.Context()))
		r := <-gotNew
		cancelNew()
		leave()
		require.NoError(t, r.err, "round %d: the newcomer did not obtain a lock released while it waited (ctx 5s, backoff 10s)", i)
		require.NoError(t, r.lock.Release(t.Context()))
	}
}

// Waiters that give up at any instant around a release, over and over:
// once every call has returned (and the library's cleanups have had their
// release timeout), no lock is held, neither by a token that some caller
// has nor by one that nobody has (a waiter whose attempt, in flight when it
// gave up, queued it in Redis again after its cleanup).
func TestRegress_giveUpRacingReleaseLeavesNothingHeld(t *testing.T) {
	b := realBackend(t)
	const (
		// The default: a cleanup try may take more than 500ms on a loaded
		// machine under -race, and a lost command that lands after the
		// release timeout is not undone (README, Guarantees).
		releaseTimeout = redislock.DefaultReleaseTimeout
		parallel       = 4 // keys at a time
		cancelWithin   = 6 * time.Millisecond
		releaseWithin  = 3 * time.Millisecond
	)
	rounds := 300
	if testing.Short() {
		rounds = 60
	}
	clients := []*redislock.Client{
		redislock.New(b.client, redislock.WithReleaseTimeout(releaseTimeout)),
		redislock.New(b.client, redislock.WithReleaseTimeout(releaseTimeout)),
	}
	opt := &redislock.Options{RetryStrategy: forever}
	var obtained atomic.Int64

	// round holds key, then four waiters, two a Client, each cancelled at
	// its own instant, and the release at another.
	round := func(key string) error {
		holder, err := clients[0].Obtain(t.Context(), key, time.Minute, nil)
		if err != nil {
			return err
		}
		var wg sync.WaitGroup
		got := make([]<-chan result, 4)
		for j := range got {
			ctx, cancel := context.WithCancel(t.Context())
			got[j] = obtainAsync(ctx, clients[j%2], []string{key}, opt)
			wg.Go(func() {
				pause(time.Duration(rand.Int64N(int64(cancelWithin))))
				cancel()
			})
		}
		pause(time.Duration(rand.Int64N(int64(releaseWithin))))
		errs := []error{holder.Release(t.Context())}
		wg.Wait()
		for _, ch := range got {
			r := <-ch
			switch {
			case r.err == nil:
				obtained.Add(1)
				errs = append(errs, r.lock.Release(t.Context()))
			case !errors.Is(r.err, context.Canceled):
				errs = append(errs, r.err)
			}
		}
		return errors.Join(errs...)
	}

	keys := make([]string, rounds*parallel)
	for i := range keys {
		keys[i] = "gaveup:" + strconv.Itoa(i)
	}
	for i := 0; i < len(keys); i += parallel {
		errs := make([]error, parallel)
		var wg sync.WaitGroup
		for j := range parallel {
			wg.Go(func() { errs[j] = round(keys[i+j]) })
		}
		wg.Wait()
		require.NoError(t, errors.Join(errs...), "rounds %d to %d", i, i+parallel-1)
	}
	t.Logf("%d rounds of %d keys: %d waiters obtained the lock", rounds, parallel, obtained.Load())

	// Every cleanup ends within its release timeout.
	var held []string
	deadline := time.Now().Add(4 * releaseTimeout)
	for {
		held = held[:0]
		for _, key := range keys {
			if b.mustDo(t, "EXISTS", key) == "1" {
				held = append(held, key)
			}
		}
		if len(held) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, key := range held {
		queue, err := b.client.Do(t.Context(), b.client.B().Lrange().Key(key+":redislock-waiters").Start(0).Stop(-1).Build()).AsStrSlice()
		t.Logf("%s: value %q, PTTL %s ms, queue %q (%v)", key, b.mustDo(t, "GET", key), b.mustDo(t, "PTTL", key), queue, err)
	}
	require.Empty(t, held, "%d of %d locks are held though every caller has returned (and released what it obtained): held by nobody until their TTL",
		len(held), len(keys))
}

// Two waiters of one Client with the same custom token, on different keys:
// a grant of "a" must not make the Obtain of "b" succeed while "b" is held.
func TestRegress_sharedTokenGrantMisdelivered(t *testing.T) {
	b := realBackend(t)
	holders := redislock.New(b.client)
	ha, err := holders.Obtain(t.Context(), "a", time.Minute, nil)
	require.NoError(t, err)
	hb, err := holders.Obtain(t.Context(), "b", time.Minute, nil)
	require.NoError(t, err)

	c := redislock.New(b.client)
	opt := &redislock.Options{Token: "worker-1", RetryStrategy: redislock.LinearBackoff(10 * time.Second)}
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	gotA := obtainAsync(ctx, c, []string{"a"}, opt)
	eventually(t, func() bool { return queueLen(t, b, "a") == 1 }, "waiter a queues")
	gotB := obtainAsync(ctx, c, []string{"b"}, opt)
	awaitBlocked(t, 2)
	// A grant names a token: only one of the two may be queued in Redis.
	require.Equal(t, 0, queueLen(t, b, "b"), "the second waiter with the token is queued in Redis")

	require.NoError(t, ha.Release(t.Context()))
	ra := <-gotA
	require.NoError(t, ra.err, "the waiter for a hears of its grant")
	require.NoError(t, ra.lock.Release(t.Context()))
	rb := <-gotB // its backoff outlasts its ctx: it ends with the ctx
	require.ErrorIs(t, rb.err, redislock.ErrNotObtained, "Obtain(b) while b is held by %q", hb.Token())
	require.NoError(t, hb.Release(t.Context()))
}

// A lock passed within one Client (q.local) that expires: its Release says
// ErrLockNotHeld, and the next local waiter must not sleep out its backoff
// while the lock is free.
func TestRegress_localHandoffExpiredStrands(t *testing.T) {
	b := realBackend(t)
	x := redislock.New(b.client)
	hx, err := x.Obtain(t.Context(), "k", time.Minute, nil)
	require.NoError(t, err)

	c := redislock.New(b.client)
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	got1 := make(chan result, 1)
	go func() {
		l, err := c.Obtain(ctx, "k", 200*time.Millisecond, &redislock.Options{RetryStrategy: forever})
		got1 <- result{l, err}
	}()
	eventually(t, func() bool { return queueLen(t, b, "k") == 1 }, "w1 queues")
	got2 := obtainAsync(ctx, c, []string{"k"}, &redislock.Options{RetryStrategy: redislock.LinearBackoff(10 * time.Second)})
	awaitBlocked(t, 1)
	time.Sleep(20 * time.Millisecond)

	require.NoError(t, hx.Release(t.Context()))
	r1 := <-got1
	require.NoError(t, r1.err)
	eventually(t, func() bool { return b.mustDo(t, "EXISTS", "k") == "0" }, "w1's lock expires")
	require.ErrorIs(t, r1.lock.Release(t.Context()), redislock.ErrLockNotHeld)
	freed := time.Now()
	r2 := <-got2
	require.NoError(t, r2.err, "w2 did not obtain a free lock: %v after it was freed", time.Since(freed))
	t.Logf("w2 obtained %v after the lock was known free", time.Since(freed))
}

// A Release tries at most once more after a try whose outcome is unknown.
func TestRegress_releaseUnknownTries(t *testing.T) {
	b := realBackend(t)
	fl := &flaky{Client: b.client, names: []string{"EVALSHA"}}
	rec := &counter{}
	c := redislock.New(fl, redislock.WithObserver(rec))
	l, err := c.Obtain(t.Context(), "k", time.Minute, nil)
	require.NoError(t, err)
	fl.fails.Store(100)
	err = l.Release(t.Context())
	t.Logf("release: %v; tries %d; EVALSHA seen %d", err, rec.last.Load().Attempts, fl.seen.Load())
	require.LessOrEqual(t, rec.last.Load().Attempts, 2, "at most one more try after an unknown outcome")
}

// slowGiveBack delays the release scripts that drop a queue entry (a
// give-back): a loaded machine or a slow link.
type slowGiveBack struct {
	rueidis.Client
	delay             time.Duration
	started, finished atomic.Int64 // give-backs
}

func (s *slowGiveBack) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	args := cmd.Commands()
	if len(args) == 7 && args[0] == "EVALSHA" && args[5] != "" {
		s.started.Add(1)
		defer s.finished.Add(1)
		time.Sleep(s.delay)
	}
	return s.Client.Do(ctx, cmd)
}

// A waiter with a custom token gives up; the lock passes to its entry; the
// caller obtains again with the same token (idempotent) and succeeds. The
// give-back of the first call must not release the second call's lock.
func TestRegress_giveBackReleasesLaterSameTokenObtain(t *testing.T) {
	b := realBackend(t)
	x := redislock.New(b.client)
	hx, err := x.Obtain(t.Context(), "k", time.Minute, nil)
	require.NoError(t, err)

	slow := &slowGiveBack{Client: b.client, delay: 300 * time.Millisecond}
	c := redislock.New(slow)
	opt := &redislock.Options{Token: "job-42", RetryStrategy: forever}
	wctx, cancel := context.WithCancel(t.Context())
	gotW := obtainAsync(wctx, c, []string{"k"}, opt)
	eventually(t, func() bool { return queueLen(t, b, "k") == 1 }, "w queues")
	cancel()
	require.ErrorIs(t, (<-gotW).err, redislock.ErrNotObtained)

	require.NoError(t, hx.Release(t.Context())) // passes k to job-42's entry
	// The same-token Obtain waits for the give-back of the waiter that
	// gave up, so that the give-back cannot release what it takes.
	v, err := c.Obtain(t.Context(), "k", time.Minute, &redislock.Options{Token: "job-42"})
	require.NoError(t, err, "same-token obtain")
	eventually(t, func() bool { return slow.started.Load() > 0 && slow.started.Load() == slow.finished.Load() },
		"the give-backs are done")
	ttl, err := v.TTL(t.Context())
	require.NoError(t, err)
	require.Positive(t, ttl, "the lock Obtain just returned was released behind its holder's back")
}
