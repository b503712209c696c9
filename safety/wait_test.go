package safety_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// waitBackoff is the retry backoff of the wake-up tests: long enough that
// acquisitions driven by it would show (8 clients polling a contended key
// every 250ms could take it about 32 times a second), so that the
// acquisitions are driven by the wake-ups of releases.
const waitBackoff = 250 * time.Millisecond

// waitTTL is the TTL of the wake-up tests: long, so that a lock left held by
// nobody (a waiter that gave up but was granted it) is still there when the
// run is over, instead of expiring unseen.
const waitTTL = 10 * time.Second

// wakeCounter is an Observer that counts how the obtains of a test ended
// and how their waits ended.
type wakeCounter struct {
	obtains, obtained, waited, gaveUpWaiting atomic.Int64
	byRelease, byExpiry, byBackoff           atomic.Int64
}

var _ redislock.Observer = (*wakeCounter)(nil)

func (w *wakeCounter) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (w *wakeCounter) End(_ context.Context, ev *redislock.Event) {
	if ev.Op != redislock.OpObtain {
		return
	}
	w.obtains.Add(1)
	if ev.Err == nil {
		w.obtained.Add(1)
	}
	if ev.Contended > 0 {
		w.waited.Add(1)
		if ev.Err != nil {
			w.gaveUpWaiting.Add(1)
		}
	}
	w.byRelease.Add(int64(ev.WokenByRelease))
	w.byExpiry.Add(int64(ev.WokenByExpiry))
	w.byBackoff.Add(int64(ev.WokenByBackoff))
}

func (w *wakeCounter) String() string {
	return fmt.Sprintf("%d obtains (%d OK, %d waited, %d gave up waiting); waits woken by a release %d, by the holder's expiry %d, by the backoff %d",
		w.obtains.Load(), w.obtained.Load(), w.waited.Load(), w.gaveUpWaiting.Load(), w.byRelease.Load(), w.byExpiry.Load(), w.byBackoff.Load())
}

// sharingClients returns n recorded clients that share lockers
// redislock.Clients (client i uses locker i%lockers), each on a rueidis
// client of its own to addr and reporting to obs.
func sharingClients(t *testing.T, n, lockers int, addr string, rec *safety.Recorder, obs redislock.Observer) []*safety.Client {
	t.Helper()
	ls := make([]*redislock.Client, lockers)
	for i := range ls {
		ls[i] = redislock.New(safety.NewClient(t, addr), redislock.WithObserver(obs))
	}
	out := make([]*safety.Client, n)
	for i := range out {
		out[i] = &safety.Client{ID: i, Locker: ls[i%lockers], Rec: rec}
	}
	return out
}

// gaveUp reports whether op is an obtain that gave up at the end of its
// ctx: ErrNotObtained joined with the ctx error.
func gaveUp(op safety.Op) bool {
	return op.Kind == safety.Obtain && op.Outcome == safety.Unknown && errors.Is(op.Err, redislock.ErrNotObtained) &&
		(errors.Is(op.Err, context.DeadlineExceeded) || errors.Is(op.Err, context.Canceled))
}

// withoutGaveUp returns the history of rec as the checkers are to judge
// it: every obtain that gave up at the end of its ctx has no effect, and
// it returns how many did.
//
// Such an obtain promises nothing of the lock at any instant of its call
// (its waiter may have been queued behind others while the lock was free),
// so it is no "refused" for the model. It may have been granted the lock,
// by a release (while it waited or just after it gave up) or by an attempt
// in flight at the end of its ctx; the library gives that back in the
// background, and meanwhile the lock is held by a token that nobody uses,
// which the rest of the history sees only as a longer wait, and the fence
// tokens as a gap (fenceGaps). What the library owes it is that it is
// given back: requireNothingLeft checks that.
func withoutGaveUp(rec *safety.Recorder) (*safety.Recorder, int) {
	out := safety.NewRecorder()
	n := 0
	for _, op := range rec.Ops() {
		if op.Outcome == safety.Unknown {
			op.Return = op.Ended // Add sets Ended from Return
		}
		if gaveUp(op) {
			op.Outcome = safety.NoEffect
			n++
		}
		out.Add(op)
	}
	return out, n
}

// fenceGaps counts, over every key, the fence tokens that the server
// handed out (counters holds each key's counter at the end) and no OK
// obtain of the history returned: every grant INCRs the counter (each
// obtain of these tests has a fence key), so these are the locks granted
// to waiters that gave up, or to obtains in flight at their deadline.
func fenceGaps(ops []safety.Op, counters map[string]int64) int {
	seen := map[string]map[int64]bool{}
	for _, op := range ops {
		if op.Kind == safety.Obtain && op.Outcome == safety.OK && op.Fence > 0 {
			if seen[op.Key] == nil {
				seen[op.Key] = map[int64]bool{}
			}
			seen[op.Key][op.Fence] = true
		}
	}
	gaps := 0
	for key, top := range counters {
		gaps += int(top) - len(seen[key])
	}
	return gaps
}

// fenceCounters returns the value of each key's fence counter.
func fenceCounters(t *testing.T, admin rueidis.Client, keys []string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, k := range keys {
		n, err := admin.Do(t.Context(), admin.B().Get().Key(safety.FenceKey(k)).Build()).AsInt64()
		if rueidis.IsRedisNil(err) {
			continue
		}
		require.NoError(t, err)
		out[k] = n
	}
	return out
}

// leftovers returns, for every key of the server but the fence counters
// (lock keys, waiter queues), a description: type, PTTL, contents.
func leftovers(ctx context.Context, admin rueidis.Client) ([]string, error) {
	var out []string
	cursor := "0"
	for {
		entry, err := admin.Do(ctx, admin.B().Arbitrary("SCAN").Args(cursor, "COUNT", "1000").Build()).AsScanEntry()
		if err != nil {
			return nil, err
		}
		for _, k := range entry.Elements {
			if strings.HasSuffix(k, ":fence") {
				continue
			}
			typ, _ := admin.Do(ctx, admin.B().Type().Key(k).Build()).ToString()
			pttl, _ := admin.Do(ctx, admin.B().Pttl().Key(k).Build()).AsInt64()
			var value string
			switch typ {
			case "string":
				value, _ = admin.Do(ctx, admin.B().Get().Key(k).Build()).ToString()
			case "list":
				items, _ := admin.Do(ctx, admin.B().Lrange().Key(k).Start(0).Stop(-1).Build()).AsStrSlice()
				value = fmt.Sprintf("%q", items)
			}
			out = append(out, fmt.Sprintf("%q (%s, PTTL %dms): %q", k, typ, pttl, value))
		}
		if entry.Cursor == 0 {
			break
		}
		cursor = strconv.FormatUint(entry.Cursor, 10)
	}
	slices.Sort(out)
	return out, nil
}

// requireNothingLeft polls the server, once every call of the run has
// returned, until no lock key and no waiter queue is left (fence counters
// stay): within the release timeout, in which the library gives back what a
// waiter that gave up was granted and drops its queue entry. It fails t with
// what is left, and returns how long it took.
func requireNothingLeft(t *testing.T, admin rueidis.Client) time.Duration {
	t.Helper()
	start := time.Now()
	limit := redislock.DefaultReleaseTimeout + deadlineMargin
	var first []string
	for {
		left, err := leftovers(t.Context(), admin)
		require.NoError(t, err)
		if first == nil {
			first = left
			if first == nil {
				first = []string{}
			}
		}
		if len(left) == 0 {
			t.Logf("keys left when the last call returned: %d; none left %v later", len(first), time.Since(start).Round(time.Millisecond))
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Logf("keys left when the last call returned: %d", len(first))
			for _, k := range left {
				t.Errorf("left %v after the last call returned: %s", limit, k)
			}
			t.FailNow()
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// every runs fn every d until ctx ends, and returns how many times it ran.
func every(ctx context.Context, d time.Duration, fn func(ctx context.Context)) int {
	tick := time.NewTicker(d)
	defer tick.Stop()
	n := 0
	for {
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
			fn(ctx)
			n++
		}
	}
}

// waitFault is a fault injected while a wake-up test runs: called before
// the run, with the workload (to hook OnAcquire), it returns a function
// that runs in a goroutine of its own until ctx ends and returns what it
// did, for the log.
type waitFault func(t *testing.T, srv *safety.Server, admin rueidis.Client, w *safety.Workload) func(ctx context.Context) string

// scriptFlushes flushes the script cache every 50ms.
func scriptFlushes(t *testing.T, _ *safety.Server, admin rueidis.Client, _ *safety.Workload) func(ctx context.Context) string {
	return func(ctx context.Context) string {
		n := every(ctx, 50*time.Millisecond, func(ctx context.Context) {
			if err := admin.Do(ctx, admin.B().ScriptFlush().Build()).Error(); err != nil && ctx.Err() == nil {
				t.Errorf("SCRIPT FLUSH: %v", err)
			}
		})
		if n == 0 {
			t.Errorf("no SCRIPT FLUSH during the run")
		}
		return fmt.Sprintf("%d SCRIPT FLUSH", n)
	}
}

// pubsubKills kills every pub/sub connection (the Clients' subscriptions)
// every 50ms.
func pubsubKills(t *testing.T, _ *safety.Server, admin rueidis.Client, _ *safety.Workload) func(ctx context.Context) string {
	return func(ctx context.Context) string {
		var killed int64
		n := every(ctx, 50*time.Millisecond, func(ctx context.Context) {
			k, err := admin.Do(ctx, admin.B().Arbitrary("CLIENT", "KILL").Args("TYPE", "pubsub").Build()).AsInt64()
			if err != nil && ctx.Err() == nil {
				t.Errorf("CLIENT KILL TYPE pubsub: %v", err)
			}
			killed += k
		})
		if killed == 0 {
			t.Errorf("CLIENT KILL TYPE pubsub killed nothing in %d tries", n)
		}
		return fmt.Sprintf("CLIENT KILL TYPE pubsub %d times: %d subscriptions killed", n, killed)
	}
}

// pauses pauses the server for 200ms 4 times, at a fifth, two fifths...
// of the acquisitions: CLIENT PAUSE 200 WRITE, then SIGSTOP and SIGCONT,
// in turn.
func pauses(t *testing.T, srv *safety.Server, admin rueidis.Client, w *safety.Workload) func(ctx context.Context) string {
	const times, pause = 4, 200 * time.Millisecond
	at := make(chan struct{}, times)
	var once [times]sync.Once
	total := w.Acquisitions
	w.OnAcquire = func(n int) {
		for i := range times {
			if n == (i+1)*total/(times+1) {
				once[i].Do(func() { at <- struct{}{} })
			}
		}
	}
	return func(ctx context.Context) string {
		var did []string
		for i := range times {
			select {
			case <-ctx.Done():
				t.Errorf("%d pauses of %d", len(did), times)
				return fmt.Sprintf("%d pauses of %v: %v", len(did), pause, did)
			case <-at:
			}
			if i%2 == 0 {
				err := admin.Do(ctx, admin.B().Arbitrary("CLIENT", "PAUSE").Args(strconv.FormatInt(pause.Milliseconds(), 10), "WRITE").Build()).Error()
				if err != nil {
					t.Errorf("CLIENT PAUSE: %v", err)
				}
				time.Sleep(pause)
				did = append(did, "CLIENT PAUSE WRITE")
			} else {
				srv.Pause(t)
				time.Sleep(pause)
				srv.Resume(t)
				did = append(did, "SIGSTOP")
			}
		}
		return fmt.Sprintf("%d pauses of %v: %v", len(did), pause, did)
	}
}

// impatience is what the impatient goroutines of a run did.
type impatience struct {
	obtains, obtained, gaveUp atomic.Int64
}

// impatient obtains keys with a ctx that ends after 1 to 20ms, so that it
// gives up while it waits, queued, and now and then while a release passes
// it the lock; what it obtains it holds briefly, writes with and releases,
// as the workload does. It stops when ctx ends.
func impatient(ctx context.Context, c *safety.Client, keys []string, res *safety.FencedResource, seed uint64, st *impatience) {
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	for ctx.Err() == nil {
		key := keys[rng.IntN(len(keys))]
		octx, cancel := context.WithTimeout(ctx, time.Duration(1+rng.IntN(20))*time.Millisecond)
		h, err := c.Obtain(octx, key, waitTTL, &redislock.Options{RetryStrategy: redislock.LinearBackoff(waitBackoff), FenceKey: safety.FenceKey(key)})
		cancel()
		st.obtains.Add(1)
		if err != nil {
			if errors.Is(err, context.DeadlineExceeded) {
				st.gaveUp.Add(1)
			}
			sleep(ctx, time.Duration(rng.IntN(5))*time.Millisecond)
			continue
		}
		st.obtained.Add(1)
		sleep(ctx, time.Duration(rng.IntN(200))*time.Microsecond)
		h.Write(res)
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = h.Release(rctx)
		cancel()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// TestWakeUp runs the contended workload with waiting woken by the release
// (wait.go): 8 clients, short holds, a backoff of 250ms that only bounds a
// wait without news, 3,000 acquisitions a run (1,000 with -short), under
// each fault; each with a redislock.Client a client, and with 8 goroutines
// sharing 2 redislock.Clients (local queues, passing the lock within a
// Client). Both checkers stay clean, no lock of a waiter that gave up is
// left held by nobody, and no waiter queue is left behind.
func TestWakeUp(t *testing.T) {
	total := 3000
	if testing.Short() {
		total = 1000
	}
	for _, tc := range []struct {
		name string
		keys []string
		// fault, when set, runs during the run.
		fault waitFault
		// impatient goroutines obtain with 1-20ms deadlines beside the
		// workload's clients.
		impatient int
	}{
		{"no fault", []string{"a"}, nil, 0},
		{"SCRIPT FLUSH every 50ms", []string{"a", "b"}, scriptFlushes, 0},
		{"subscriptions killed every 50ms", []string{"a", "b"}, pubsubKills, 0},
		{"server paused 4 times", []string{"a", "b", "c", "d"}, pauses, 0},
		{"waiters giving up", []string{"a", "b"}, nil, 4},
	} {
		for _, mode := range []struct {
			name    string
			lockers int
		}{{"a Client each", 0}, {"2 shared Clients", 2}} {
			t.Run(tc.name+"/"+mode.name, func(t *testing.T) {
				srv := safety.StartServer(t, safety.ServerOptions{})
				admin := srv.Client(t)
				rec := safety.NewRecorder()
				res := safety.NewFencedResource()
				obs := &wakeCounter{}
				n := 8 + tc.impatient
				lockers := n
				if mode.lockers > 0 {
					lockers = mode.lockers
				}
				cs := sharingClients(t, n, lockers, srv.Addr, rec, obs)
				w := &safety.Workload{
					Clients:      cs[:8],
					Keys:         tc.keys,
					Acquisitions: total,
					TTL:          waitTTL,
					Hold:         func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) * time.Microsecond },
					RefreshOneIn: 4,
					Retry:        redislock.LinearBackoff(waitBackoff),
					MaxDuration:  30 * time.Second,
					Resource:     res,
				}
				ctx, stop := context.WithCancel(t.Context())
				var wg sync.WaitGroup
				var did string
				if tc.fault != nil {
					run := tc.fault(t, srv, admin, w)
					wg.Go(func() { did = run(ctx) })
				}
				var imp impatience
				for i, c := range cs[8:] {
					wg.Go(func() { impatient(ctx, c, tc.keys, res, uint64(100+i), &imp) })
				}
				start := time.Now()
				got := w.Run(t.Context())
				took := time.Since(start)
				stop()
				wg.Wait()

				t.Logf("%d acquisitions on %d keys in %v: %.0f/s (a wait by the backoff alone lasts %v)",
					got, len(tc.keys), took.Round(time.Millisecond), float64(got)/took.Seconds(), waitBackoff)
				t.Logf("%d goroutines on %d redislock.Clients: %v", n, lockers, obs)
				if did != "" {
					t.Logf("fault: %s", did)
				}
				if tc.impatient > 0 {
					t.Logf("%d impatient goroutines (1-20ms deadlines): %d obtains, %d OK, %d gave up at their deadline",
						tc.impatient, imp.obtains.Load(), imp.obtained.Load(), imp.gaveUp.Load())
				}
				require.GreaterOrEqual(t, got, total, "the run ended before its acquisitions")
				if tc.impatient == 0 {
					for _, op := range rec.Ops() {
						require.Equal(t, safety.OK, op.Outcome, "a call failed: %v: %v", op, op.Err)
					}
				}

				gaps := fenceGaps(rec.Ops(), fenceCounters(t, admin, tc.keys))
				checked, gave := withoutGaveUp(rec)
				t.Logf("obtains that gave up at the end of their ctx, left out of the checks: %d; fence tokens that no OK obtain returned (granted to a waiter that gave up, or in flight at its deadline): %d",
					gave, gaps)
				if tc.impatient > 0 {
					require.Positive(t, gave, "no waiter gave up")
					require.Positive(t, gaps, "no waiter that gave up was granted the lock")
				}
				requireSafe(t, checked, res, true)
				requireNothingLeft(t, admin)
			})
		}
	}
}

// A goroutine of a Client gives up while a Release of the same Client
// passes it the lock (the server's writes are paused meanwhile, so that
// the release is in flight when it gives up). The library gives that lock
// back in the background; the next goroutine of the Client that waits for
// the key must then be woken, not left to sleep its whole backoff while
// the lock is free.
//
// A holds the lock (passed to it from another Client, so that its Client
// marks the key's local queue as "held here"), B and C wait behind it in
// their Client's local queue with a backoff of 2s; A releases while CLIENT
// PAUSE WRITE holds its script, B's ctx is cancelled, the pause ends.
func TestWakeUp_gaveUpWhilePassed(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	obs := &wakeCounter{}
	locker := redislock.New(srv.Client(t), redislock.WithObserver(obs))
	const backoff = 2 * time.Second
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(backoff)}
	other, err := redislock.New(srv.Client(t)).Obtain(t.Context(), "k", time.Minute, nil)
	require.NoError(t, err)
	type result struct {
		lock *redislock.Lock
		err  error
		at   time.Time
	}
	obtain := func(ctx context.Context) <-chan result {
		ch := make(chan result, 1)
		go func() {
			l, err := locker.Obtain(ctx, "k", time.Minute, opt)
			ch <- result{l, err, time.Now()}
		}()
		time.Sleep(30 * time.Millisecond) // queued before the next one
		return ch
	}
	a := obtain(t.Context())
	bctx, cancelB := context.WithCancel(t.Context())
	defer cancelB()
	b := obtain(bctx)
	cctx, cancelC := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancelC()
	c := obtain(cctx)
	require.NoError(t, other.Release(t.Context()))
	ra := <-a
	require.NoError(t, ra.err)

	srv.MustDo(t, "CLIENT", "PAUSE", "300", "WRITE")
	released := make(chan error, 1)
	go func() { released <- ra.lock.Release(t.Context()) }() // passes the lock to B
	time.Sleep(50 * time.Millisecond)
	cancelB()
	rb := <-b
	require.ErrorIs(t, rb.err, redislock.ErrNotObtained)
	require.NoError(t, <-released)
	freed := time.Now()
	rc := <-c
	require.NoError(t, rc.err)
	waited := rc.at.Sub(freed)
	t.Logf("B gave up while A's release passed it the lock: %v; C obtained %v after A's release returned (backoff %v)",
		rb.err, waited.Round(time.Millisecond), backoff)
	require.NoError(t, rc.lock.Release(t.Context()))
	t.Logf("the Client's obtains: %v", obs)
	require.Zero(t, obs.byBackoff.Load(), "a wait ended by its backoff (2s): C slept while the lock was free, nobody woke it")
}
