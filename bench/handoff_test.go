package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// handoffPause is how long a goroutine of BenchmarkContendedHandoff
	// stays away after each release, so that a waiter may take the lock.
	handoffPause = 200 * time.Microsecond
	// handoffWaitTimeout bounds one wait of BenchmarkContendedHandoff: a
	// lost wake-up fails the run in seconds rather than hanging it.
	handoffWaitTimeout = 20 * time.Second

	// expiryTTL is the TTL of the holder of BenchmarkContendedExpiry, who
	// never releases.
	expiryTTL = 20 * time.Millisecond
	// expiryGap bounds the random gap before each holder of
	// BenchmarkContendedExpiry: Redis deletes expired keys in the background
	// 10 times a second (hz 10), and a waiter that learns of an expiry from
	// the server (an invalidation, a keyspace notification) hears of it at
	// the next cycle; without the gap the loop falls in step with that cycle
	// (rueidislock then waits 80ms every time).
	expiryGap = 100 * time.Millisecond
	// expiryWaitTimeout bounds one wait of BenchmarkContendedExpiry, about 10
	// times the longest a working waiter needs: a wait that ends with it
	// counts as a stall, and the waiter waits again, once.
	expiryWaitTimeout = time.Second
	// clockSlack is how early a waiter may obtain before the computed
	// expiry instant before the run fails: Redis keeps expiry times in
	// whole milliseconds.
	clockSlack = time.Millisecond
)

// peer is a library as BenchmarkContendedHandoff and BenchmarkContendedExpiry
// use it: each call of connect makes a client (a go-redis client, a rueidis
// client, a rueidislock Locker) of its own, with its own connections.
type peer struct {
	name    string
	connect func(addr string) (*lib, error)
}

// peers are the libraries of the scenarios with a pause and with an expiry.
// Unlike BenchmarkContended, lib=redislock here waits with a 100ms
// LinearBackoff, the setting a user who relies on the library's wake-ups
// picks (the backoff only bounds the wait); lib=redislock-1ms polls like the
// peers.
var peers = []peer{
	{"redislock", func(addr string) (*lib, error) { return newRedislock(addr, "redislock", 100*time.Millisecond) }},
	{"redislock-1ms", func(addr string) (*lib, error) { return newRedislock(addr, "redislock-1ms", time.Millisecond) }},
	{"bsm", func(addr string) (*lib, error) { return newBSM(addr, "bsm", time.Millisecond) }},
	{"redsync-goredis", newRedsyncGoredis},
	{"rueidislock-km1", func(addr string) (*lib, error) { return newRueidislock(addr, "rueidislock-km1", 1, true) }},
}

// connectN makes n clients of p, each warmed up, or fails b.
func connectN(b *testing.B, e *env, p peer, n int) []*lib {
	b.Helper()
	return connectEach(b, p.name, func() (*lib, error) { return p.connect(e.srv.Addr) }, n)
}

// connectEach makes n libs with connect, each warmed up, or fails b.
func connectEach(b *testing.B, name string, connect func() (*lib, error), n int) []*lib {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	libs := make([]*lib, 0, n)
	for range n {
		l, err := connect()
		if err == nil {
			libs = append(libs, l)
			err = warm(ctx, l)
		}
		if err != nil {
			closeAll(libs)
			b.Fatalf("%s: %v", name, err)
		}
	}
	return libs
}

func closeAll(libs []*lib) {
	for _, l := range libs {
		l.close()
	}
}

// shape is how the goroutines of BenchmarkContendedHandoff share clients:
// goroutine g uses client g % clients.
type shape struct {
	name       string
	goroutines int
	clients    int
}

var shapes = []shape{
	{"shared", 8, 1},   // 8 goroutines on one client (or Locker)
	{"clients8", 8, 8}, // 8 goroutines, each with a client of its own
	{"g64c8", 64, 8},   // 64 goroutines over 8 clients
}

// BenchmarkContendedHandoff is goroutines competing for one key, each
// pausing handoffPause (200µs) after each release before it waits again: the
// pause lets a waiter take the lock, so this measures the hand-over from
// one holder to the next, where BenchmarkContended (no pause) rewards the
// releaser that takes its lock straight back. Sub-benchmarks are named
// shape=S/lib=L (benchstat -col /lib); see shapes and peers. b.N is the
// number of acquisitions, shared among the goroutines.
//
// Metrics: acq/s, up to the b.N-th acquisition (see handoffRun); the wait of
// an acquisition (from the call to its return) at p50, p99 and max, in µs,
// where a wait still under way when the run ends counts with its length so
// far, a lower bound, so that a starved goroutine shows; fairness, the smallest goroutine's share of
// the acquisitions divided by the fair share 1/G (1 when all goroutines get
// as many, 0 when one starved; unlike BenchmarkContended's fairness, which is
// the share itself); handoff, the fraction of acquisitions whose holder is
// another goroutine than the previous holder (1 for a perfect round robin,
// near 0 when a releaser keeps re-taking its lock); and the commands the
// server executed per acquisition (cmds/acq), failed attempts and the
// commands scripts run included.
//
// With BENCH_WAITS_DIR set, each sub-benchmark writes every wait of its
// last (largest) run to $BENCH_WAITS_DIR/<shape>-<lib>.txt: see writeWaits.
func BenchmarkContendedHandoff(b *testing.B) {
	e := setup(b)
	for _, s := range shapes {
		b.Run("shape="+s.name, func(b *testing.B) {
			for _, p := range peers {
				var libs []*lib // made on the first run, kept for the larger ones
				b.Run("lib="+p.name, func(b *testing.B) {
					if libs == nil {
						libs = connectN(b, e, p, s.clients)
					}
					handoffRun(b, e.counter, s, p.name, libs)
				})
				closeAll(libs)
			}
		})
	}
}

// handoffRun is one run of BenchmarkContendedHandoff. It ends at the b.N-th
// acquisition, when it cancels the waits under way, rather than when every
// goroutine is done: a goroutine that waits for the lock (with a ticket, as
// BenchmarkContended hands them out) would otherwise keep the run going
// after the others are gone, and 63 waiters that poll in step every 100ms
// drain one a poll, for seconds, which would measure the end of the run
// rather than its steady state.
func handoffRun(b *testing.B, newCounter func(testing.TB) counter, s shape, name string, libs []*lib) {
	key := keyRing("handoff", libs[0], 1)[0]
	var (
		acquired atomic.Int64
		hs       holders
		wg       sync.WaitGroup
		end      time.Time // when the b.N-th acquisition was recorded
	)
	waits := make([][]time.Duration, s.goroutines)
	since := make([]atomic.Int64, s.goroutines) // UnixNano of the wait under way, 0 for none
	var censored []time.Duration                // the waits under way at the end
	run, stop := context.WithCancel(context.Background())
	defer stop()
	hs.reset()
	c := newCounter(b)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := range s.goroutines {
		l := libs[g%len(libs)]
		wg.Go(func() {
			for run.Err() == nil {
				ctx, cancel := context.WithTimeout(run, handoffWaitTimeout)
				t0 := time.Now()
				since[g].Store(t0.UnixNano())
				h, err := l.wait(ctx, key)
				d := time.Since(t0)
				cancel()
				if err != nil {
					if run.Err() == nil {
						b.Errorf("goroutine %d: wait: %v", g, err)
						stop()
					}
					return
				}
				since[g].Store(0)
				k := acquired.Add(1)
				if k <= int64(b.N) {
					waits[g] = append(waits[g], d)
					hs.enter(g)
					hs.leave()
				}
				if k == int64(b.N) {
					// The others are waiting, pausing or (k > b.N, not
					// counted) holding the lock.
					end = time.Now()
					for o := range since {
						if t := since[o].Load(); t != 0 && o != g {
							censored = append(censored, end.Sub(time.Unix(0, t)))
						}
					}
					stop()
				}
				if err := h.Release(context.Background()); err != nil {
					b.Errorf("goroutine %d: release: %v", g, err)
					stop()
					return
				}
				if k >= int64(b.N) {
					return
				}
				pause(handoffPause)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	if end.IsZero() { // failed
		return
	}
	elapsed := end.Sub(start)

	all, least := mergeWaits(waits)
	n := len(all)
	c.report(b, n, "cmds/acq")
	all = append(all, censored...)
	slices.Sort(all)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "acq/s")
	b.ReportMetric(micros(percentile(all, 50)), "p50-wait-us")
	b.ReportMetric(micros(percentile(all, 99)), "p99-wait-us")
	b.ReportMetric(micros(all[len(all)-1]), "max-wait-us")
	b.ReportMetric(float64(least)*float64(s.goroutines)/float64(n), "fairness")
	hs.report(b)
	if dir := os.Getenv("BENCH_WAITS_DIR"); dir != "" {
		if err := writeWaits(filepath.Join(dir, s.name+"-"+name+".txt"), b.Name(), all, len(censored)); err != nil {
			b.Errorf("BENCH_WAITS_DIR: %v", err)
		}
	}
}

// spinPause is BENCH_PAUSE=spin.
var spinPause = os.Getenv("BENCH_PAUSE") == "spin"

// pause waits d without burning a CPU for it (pause_linux_test.go sleeps
// most of it; elsewhere it spins): time.Sleep(200µs) returns after 1.09ms at
// p50 here (Go timers below 1ms fire on about 1ms boundaries), which would
// make the pause five times too long, and a spin for the whole pause takes a
// CPU from redis-server on a 2-vCPU machine.
//
// BENCH_PAUSE=spin spins for the whole pause instead: a holder that
// computes between its locks rather than one that waits on I/O. On a small
// machine the two read differently (BENCHMARKS.md has both): a sleeping
// pause lets vCPUs go idle, and each handoff then pays for waking one.
func pause(d time.Duration) {
	t0 := time.Now()
	if !spinPause {
		sleepMost(d)
	}
	for time.Since(t0) < d {
		runtime.Gosched()
	}
}

// holders follows who holds the lock of a contended benchmark: it counts
// the acquisitions that change hands and fails the run when two goroutines
// hold the lock at once (the harness sees that much of a lock's safety).
type holders struct {
	last    atomic.Int64 // goroutine of the previous acquisition, -1 before the first
	n       atomic.Int64 // acquisitions
	changes atomic.Int64 // acquisitions by another goroutine than the previous one
	inside  atomic.Int32 // goroutines holding the lock now
	overlap atomic.Int64 // acquisitions made while another goroutine held the lock
}

func (h *holders) reset() { h.last.Store(-1) }

// enter records that goroutine g obtained the lock; leave, called before
// its release is sent, that it is about to let go.
func (h *holders) enter(g int) {
	if h.inside.Add(1) != 1 {
		h.overlap.Add(1)
	}
	h.n.Add(1)
	if prev := h.last.Swap(int64(g)); prev >= 0 && prev != int64(g) {
		h.changes.Add(1)
	}
}

func (h *holders) leave() { h.inside.Add(-1) }

// report adds the handoff metric, changes of hands over the acquisitions
// that had a predecessor (nothing for a single acquisition), and fails b
// when the lock was ever held twice.
func (h *holders) report(b *testing.B) {
	b.Helper()
	if n := h.overlap.Load(); n > 0 {
		b.Errorf("%d acquisitions while another goroutine held the lock", n)
	}
	if f, ok := h.handoff(); ok {
		b.ReportMetric(f, "handoff")
	}
}

// handoff returns the changes of hands over the acquisitions that had a
// predecessor; false before the second acquisition.
func (h *holders) handoff() (float64, bool) {
	n := h.n.Load()
	if n < 2 {
		return 0, false
	}
	return float64(h.changes.Load()) / float64(n-1), true
}

// writeWaits writes waits to path: a comment line naming the benchmark,
// then one wait a line, in integer nanoseconds (cmd/waitcdf reads them);
// censored of them were still under way when the run ended.
func writeWaits(path, name string, waits []time.Duration, censored int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintf(w, "# %s: %d waits in ns, %d of them cut short by the end of the run\n", name, len(waits), censored)
	var buf []byte
	for _, d := range waits {
		buf = strconv.AppendInt(buf[:0], int64(d), 10)
		buf = append(buf, '\n')
		_, _ = w.Write(buf)
	}
	return errors.Join(w.Flush(), f.Close())
}

// BenchmarkContendedExpiry is a holder that obtains a lock for expiryTTL
// (20ms) and vanishes (it never releases nor extends it), and a waiter, on a
// client of its own, that arrives 0-10ms later (uniformly at random) and
// waits for the key with its library's own means (see peers). b.N is the
// number of such hand-overs, one after the other on one key, each after a
// random gap of 0-100ms (see expiryGap).
//
// Metrics: the time from the key's expiry to the waiter's return with the
// lock, at p50, p99 and max, in µs (expiry-p50-us, ...); the commands the
// server executed per hand-over (cmds/acq: the holder's obtain, the waiter's
// attempts and its release); and stalls, the fraction of hand-overs whose
// waiter was still waiting expiryWaitTimeout (1s) after it arrived (a lost
// wake-up), which then waited again (its latency counts both waits). The expiry instant is taken on the client, as
// the instant the holder's obtain was called plus the TTL: the server starts
// the TTL when it runs the command, up to one round trip (some 30-200µs)
// later, so the figures are high by at most that much. A waiter that obtains
// more than clockSlack (1ms) before that instant fails the run: the lock was
// not exclusive.
func BenchmarkContendedExpiry(b *testing.B) {
	e := setup(b)
	for _, p := range peers {
		var libs []*lib // the holder's client, then the waiter's
		b.Run("lib="+p.name, func(b *testing.B) {
			if libs == nil {
				libs = connectN(b, e, p, 2)
			}
			expiryRun(b, e, libs[0], libs[1])
		})
		closeAll(libs)
	}
}

func expiryRun(b *testing.B, e *env, holder, waiter *lib) {
	ctx := context.Background()
	key := keyRing("expiry", holder, 1)[0]
	var lats []time.Duration
	c := e.counter(b)
	b.ReportAllocs()
	stalls := 0
	for b.Loop() {
		time.Sleep(rand.N(expiryGap))
		t0 := time.Now()
		stop, err := holder.vanish(ctx, key)
		if err != nil {
			b.Fatalf("holder: %v", err)
		}
		expiry := t0.Add(expiryTTL)
		time.Sleep(rand.N(expiryTTL / 2)) // the waiter arrives
		h, err := waitFor(waiter, key, expiryWaitTimeout)
		if errors.Is(err, context.DeadlineExceeded) {
			stalls++
			h, err = waitFor(waiter, key, expiryWaitTimeout)
		}
		got := time.Now()
		if err != nil {
			b.Fatalf("waiter: %v", err)
		}
		lat := got.Sub(expiry)
		if lat < -clockSlack {
			b.Errorf("the waiter obtained the lock %v before the holder's expiry", -lat)
		}
		lats = append(lats, lat)
		if err := h.Release(ctx); err != nil {
			b.Fatalf("release: %v", err)
		}
		stop()
	}
	c.report(b, len(lats), "cmds/acq")
	slices.Sort(lats)
	b.ReportMetric(micros(percentile(lats, 50)), "expiry-p50-us")
	b.ReportMetric(micros(percentile(lats, 99)), "expiry-p99-us")
	b.ReportMetric(micros(lats[len(lats)-1]), "expiry-max-us")
	b.ReportMetric(float64(stalls)/float64(len(lats)), "stalls")
}

// waitFor is l.wait for at most timeout.
func waitFor(l *lib, key string, timeout time.Duration) (held, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.wait(ctx, key)
}

func TestHolders(t *testing.T) {
	var h holders
	h.reset()
	if _, ok := h.handoff(); ok {
		t.Error("handoff of no acquisition")
	}
	for _, g := range []int{3, 3, 1, 1, 1, 2} { // 2 changes of hands in 5
		h.enter(g)
		h.leave()
	}
	if f, _ := h.handoff(); f != 0.4 {
		t.Errorf("handoff = %v, want 0.4", f)
	}
	if n := h.overlap.Load(); n != 0 {
		t.Errorf("overlap = %d, want 0", n)
	}
	h.enter(1)
	h.enter(2)
	if n := h.overlap.Load(); n != 1 {
		t.Errorf("overlap = %d after two enters, want 1", n)
	}
}

// TestPause checks that pause lasts at least its duration, and logs how
// close it and time.Sleep come to handoffPause.
func TestPause(t *testing.T) {
	const n = 200
	measure := func(wait func(time.Duration)) (p50, p99 time.Duration) {
		ds := make([]time.Duration, n)
		for i := range ds {
			t0 := time.Now()
			wait(handoffPause)
			ds[i] = time.Since(t0)
		}
		slices.Sort(ds)
		return percentile(ds, 50), percentile(ds, 99)
	}
	p50, p99 := measure(pause)
	if p50 < handoffPause {
		t.Errorf("pause(%v) took %v at p50", handoffPause, p50)
	}
	s50, s99 := measure(time.Sleep)
	t.Logf("pause(%v): p50 %v, p99 %v; time.Sleep: p50 %v, p99 %v", handoffPause, p50, p99, s50, s99)
}

// TestPeersVanish checks the vanish adapter of every peer: the key stays
// taken until expiryTTL has passed, and is free once it has.
func TestPeersVanish(t *testing.T) {
	e := setup(t)
	for _, p := range peers {
		t.Run("lib="+p.name, func(t *testing.T) {
			ctx := context.Background()
			holder, err := p.connect(e.srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer holder.close()
			other, err := p.connect(e.srv.Addr)
			if err != nil {
				t.Fatal(err)
			}
			defer other.close()
			key := keyRing("vanish", holder, 1)[0]
			t0 := time.Now()
			stop, err := holder.vanish(ctx, key)
			if err != nil {
				t.Fatalf("vanish: %v", err)
			}
			_, err = other.obtain(ctx, key)
			if time.Since(t0) < expiryTTL-clockSlack && !errors.Is(err, errBusy) {
				t.Fatalf("obtain within the TTL: %v, want errBusy", err)
			}
			time.Sleep(time.Until(t0.Add(expiryTTL + 5*time.Millisecond)))
			h, err := other.obtain(ctx, key)
			if err != nil {
				t.Fatalf("obtain after the TTL: %v", err)
			}
			stop()
			if err := h.Release(ctx); err != nil {
				t.Fatalf("release after the holder's stop: %v", err)
			}
		})
	}
}
