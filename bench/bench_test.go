package bench

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The benchmarks compare the libraries side by side in one run, against one
// redis-server: each is a table of sub-benchmarks named lib=NAME, so that
//
//	benchstat -col /lib results.txt
//
// puts the libraries in columns, this library first. Every benchmark works
// with -benchtime=1x.

const (
	// parallelism is the SetParallelism of the parallel benchmarks: 32
	// goroutines a CPU.
	parallelism = 32
	// keysPerGoroutine is how many keys each goroutine cycles through.
	keysPerGoroutine = 16
	// contenders is how many goroutines compete for the one key of
	// BenchmarkContended.
	contenders = 8
	// waitTimeout bounds one wait of BenchmarkContended.
	waitTimeout = time.Minute
)

// BenchmarkObtainRelease is one goroutine obtaining and releasing locks on
// keys nobody else holds.
func BenchmarkObtainRelease(b *testing.B) {
	e := setup(b)
	for _, l := range e.libs {
		b.Run(l.String(), func(b *testing.B) { serialRun(b, l, e.counter) })
	}
}

// serialRun is one run of BenchmarkObtainRelease for l; newCounter counts
// the commands of its servers.
func serialRun(b *testing.B, l *lib, newCounter func(testing.TB) counter) {
	ctx := context.Background()
	keys := keyRing("or", l, keysPerGoroutine)
	c := newCounter(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		h, err := l.obtain(ctx, keys[i%len(keys)])
		i++
		if err != nil {
			b.Fatalf("obtain: %v", err)
		}
		if err := h.Release(ctx); err != nil {
			b.Fatalf("release: %v", err)
		}
	}
	c.report(b, b.N, "cmds/acq")
}

// BenchmarkObtainReleaseParallel is BenchmarkObtainRelease from 32
// goroutines a CPU, each on keys of its own.
func BenchmarkObtainReleaseParallel(b *testing.B) {
	e := setup(b)
	for _, l := range e.libs {
		b.Run(l.String(), func(b *testing.B) { parallelRun(b, l, e.counter) })
	}
}

// parallelRun is one run of BenchmarkObtainReleaseParallel for l.
func parallelRun(b *testing.B, l *lib, newCounter func(testing.TB) counter) {
	ctx := context.Background()
	goroutines := parallelism * runtime.GOMAXPROCS(0)
	keys := keyRing("orp", l, goroutines*keysPerGoroutine)
	var next atomic.Int64
	c := newCounter(b)
	b.ReportAllocs()
	b.SetParallelism(parallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		// Each goroutine has keys of its own.
		g := int(next.Add(1)-1) % goroutines
		mine := keys[g*keysPerGoroutine : (g+1)*keysPerGoroutine]
		i := 0
		for pb.Next() {
			h, err := l.obtain(ctx, mine[i%len(mine)])
			i++
			if err != nil {
				b.Errorf("obtain: %v", err)
				return
			}
			if err := h.Release(ctx); err != nil {
				b.Errorf("release: %v", err)
				return
			}
		}
	})
	b.StopTimer()
	c.report(b, b.N, "cmds/acq")
}

// BenchmarkObtainMulti obtains 3 keys at once, all or nothing, and releases
// them, for the libraries that have a multi-key lock.
func BenchmarkObtainMulti(b *testing.B) {
	e := setup(b)
	for _, l := range e.libs {
		if l.multi == nil {
			continue
		}
		b.Run(l.String(), func(b *testing.B) {
			ctx := context.Background()
			keys := keyRing("multi", l, 3*keysPerGoroutine)
			c := e.counter(b)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := 3 * (i % keysPerGoroutine)
				i++
				h, err := l.multi(ctx, keys[j:j+3])
				if err != nil {
					b.Fatalf("obtain: %v", err)
				}
				if err := h.Release(ctx); err != nil {
					b.Fatalf("release: %v", err)
				}
			}
			c.report(b, b.N, "cmds/acq")
		})
	}
}

// BenchmarkRefresh refreshes one held lock, for the libraries that have a
// refresh (rueidislock extends its locks itself, in the background).
func BenchmarkRefresh(b *testing.B) {
	e := setup(b)
	for _, l := range e.libs {
		if !l.refresh {
			continue
		}
		b.Run(l.String(), func(b *testing.B) {
			ctx := context.Background()
			h, err := l.obtain(ctx, keyRing("refresh", l, 1)[0])
			if err != nil {
				b.Fatalf("obtain: %v", err)
			}
			c := e.counter(b)
			b.ReportAllocs()
			for b.Loop() {
				if err := h.Refresh(ctx); err != nil {
					b.Fatalf("refresh: %v", err)
				}
			}
			c.report(b, b.N, "cmds/op")
			if err := h.Release(ctx); err != nil {
				b.Fatalf("release: %v", err)
			}
		})
	}
}

// BenchmarkContended is 8 goroutines competing for one key, each waiting
// with its library's own means: polling every pollInterval (1ms) for this
// library, bsm/redislock, redsync and the floor; invalidation notices for
// rueidislock. A holder releases at once: the critical section is empty, so
// the figures are those of the hand-over. b.N is the number of acquisitions,
// shared among the goroutines.
//
// Metrics: acq/s; the wait of an acquisition (from the call to its return)
// at p50, p99 and max, in µs (units p50-wait-us, ...); fairness, the smallest goroutine's share of
// the acquisitions (1/8 = 0.125 when all get as many; 0 when one starved);
// handoff, the fraction of acquisitions whose holder is another goroutine
// than the previous holder (see BenchmarkContendedHandoff); and the commands
// the server executed per acquisition, failed attempts included.
func BenchmarkContended(b *testing.B) {
	e := setup(b)
	for _, l := range e.libs {
		b.Run(l.String(), func(b *testing.B) {
			key := keyRing("contended", l, 1)[0]
			var (
				tickets atomic.Int64
				waits   [contenders][]time.Duration
				hs      holders
				wg      sync.WaitGroup
			)
			hs.reset()
			tickets.Store(int64(b.N))
			c := e.counter(b)
			b.ReportAllocs()
			b.ResetTimer()
			start := time.Now()
			for w := range contenders {
				wg.Go(func() {
					for tickets.Add(-1) >= 0 {
						if err := contend(l, key, waitTimeout, w, &hs, &waits[w]); err != nil {
							b.Errorf("goroutine %d: %v", w, err)
							return
						}
					}
				})
			}
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()

			all, least := mergeWaits(waits[:])
			n := len(all)
			c.report(b, n, "cmds/acq")
			if n == 0 {
				return
			}
			slices.Sort(all)
			b.ReportMetric(float64(n)/elapsed.Seconds(), "acq/s")
			b.ReportMetric(micros(percentile(all, 50)), "p50-wait-us")
			b.ReportMetric(micros(percentile(all, 99)), "p99-wait-us")
			b.ReportMetric(micros(all[n-1]), "max-wait-us")
			b.ReportMetric(float64(least)/float64(n), "fairness")
			hs.report(b)
		})
	}
}

// contend is goroutine g waiting for key, for at most timeout: it records
// the wait (from the call to its return) and the holder in hs, and releases
// the lock.
func contend(l *lib, key string, timeout time.Duration, g int, hs *holders, waits *[]time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	t0 := time.Now()
	h, err := l.wait(ctx, key)
	if err != nil {
		return errors.Join(errors.New("wait"), err)
	}
	*waits = append(*waits, time.Since(t0))
	hs.enter(g)
	hs.leave()
	if err := h.Release(context.Background()); err != nil {
		return errors.Join(errors.New("release"), err)
	}
	return nil
}

// mergeWaits returns the waits of every goroutine in one slice, and the
// fewest acquisitions a goroutine made.
func mergeWaits(waits [][]time.Duration) (all []time.Duration, least int) {
	least = -1
	for _, ws := range waits {
		all = append(all, ws...)
		if least < 0 || len(ws) < least {
			least = len(ws)
		}
	}
	return all, least
}

// percentile returns the p-th percentile of sorted (nearest rank); sorted
// must not be empty.
func percentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
