package bench

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
)

// The shared locks and semaphores of this library, alone: no Go library
// that the module proxy serves here does either (itcomusic/redismutex and
// GettEngineering/redis-semaphore-go are not served), so the baseline is
// this library's exclusive lock in the same run and shape.

const (
	// semLimit and semGoroutines: a semaphore of 4 with 16 goroutines.
	semLimit, semGoroutines = 4, 16
	// semHold is how long a permit is held.
	semHold = 200 * time.Microsecond
	// rwReaders readers hold rwReadHold, one writer rwWriteHold; each
	// pauses handoffPause between its acquisitions.
	rwReaders   = 8
	rwReadHold  = 200 * time.Microsecond
	rwWriteHold = 50 * time.Microsecond
	// kindBackoff is the backoff of every wait: it only bounds a wait
	// without news (waiters are woken by the release).
	kindBackoff = 100 * time.Millisecond
)

// kindShapes: every goroutine on one redislock.Client (and one rueidis
// client), or each on its own.
var kindShapes = []struct {
	name   string
	shared bool
}{{"shared", true}, {"clients", false}}

// lockers returns n redislock.Clients (one shared by all when shared), each
// on a rueidis client of its own, reporting to obs; they are closed when b
// ends.
func lockers(b *testing.B, addr string, n int, shared bool, obs redislock.Observer) []*redislock.Client {
	b.Helper()
	if shared {
		n = 1
	}
	out := make([]*redislock.Client, n)
	for i := range out {
		rc, err := newRueidisClient(addr)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(rc.Close)
		out[i] = redislock.New(rc, redislock.WithObserver(obs))
	}
	return out
}

// woken counts the obtains that waited and how their waits ended, and the
// round trips of the exclusive ones (a read-write lock's writer).
type woken struct {
	obtains, byRelease, byBackoff  atomic.Int64
	exclusive, exclusiveRoundTrips atomic.Int64
}

func (w *woken) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (w *woken) End(_ context.Context, ev *redislock.Event) {
	if !ev.Op.IsObtain() || ev.Err != nil {
		return
	}
	w.obtains.Add(1)
	if ev.Op == redislock.OpObtain {
		w.exclusive.Add(1)
		w.exclusiveRoundTrips.Add(int64(ev.Attempts))
	}
	w.byRelease.Add(int64(ev.WokenByRelease))
	w.byBackoff.Add(int64(ev.WokenByBackoff))
}

// report adds woken-release and woken-backoff: the waits that a release
// ended (the permit or the key passed to the waiter, or it was told to try
// again), and those that the backoff ended, per acquisition.
func (w *woken) report(b *testing.B) {
	if n := w.obtains.Load(); n > 0 {
		b.ReportMetric(float64(w.byRelease.Load())/float64(n), "woken-release/acq")
		b.ReportMetric(float64(w.byBackoff.Load())/float64(n), "woken-backoff/acq")
	}
}

// BenchmarkSemaphore is 16 goroutines taking one of 4 permits of a key,
// holding it 200µs and pausing handoffPause (200µs) after each release,
// until b.N acquisitions; kind=exclusive is the same loop on an exclusive
// lock (one holder), for the commands per acquisition. Metrics: acq/s, the
// wait of an acquisition at p50 and p99 (µs), fairness (the smallest
// goroutine's share over the fair share), woken-release/acq and
// woken-backoff/acq (how waits ended, per acquisition), cmds/acq
// (the commands the server ran per acquisition, those of scripts included).
func BenchmarkSemaphore(b *testing.B) {
	e := setup(b)
	for _, s := range kindShapes {
		for _, kind := range []string{"semaphore", "exclusive"} {
			b.Run("shape="+s.name+"/kind="+kind, func(b *testing.B) {
				obs := &woken{}
				ls := lockers(b, e.srv.Addr, semGoroutines, s.shared, obs)
				key := keyRing("semaphore", e.libs[0], 1)[0]
				opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(kindBackoff)}
				obtain := func(ctx context.Context, l *redislock.Client) (*redislock.Lock, error) {
					if kind == "exclusive" {
						return l.Obtain(ctx, key, ttl, opt)
					}
					return l.ObtainSemaphore(ctx, key, semLimit, ttl, opt)
				}
				waits := make([][]time.Duration, semGoroutines)
				var acquired, inside, most atomic.Int64
				c := e.counter(b)
				b.ResetTimer()
				start := time.Now()
				var wg sync.WaitGroup
				for g := range semGoroutines {
					l := ls[g%len(ls)]
					wg.Go(func() {
						for acquired.Load() < int64(b.N) {
							ctx, cancel := context.WithTimeout(context.Background(), handoffWaitTimeout)
							t0 := time.Now()
							lock, err := obtain(ctx, l)
							d := time.Since(t0)
							cancel()
							if err != nil {
								b.Errorf("goroutine %d: %v", g, err)
								return
							}
							acquired.Add(1)
							waits[g] = append(waits[g], d)
							n := inside.Add(1)
							for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
							}
							pause(semHold)
							inside.Add(-1)
							if err := lock.Release(context.Background()); err != nil {
								b.Errorf("goroutine %d: release: %v", g, err)
								return
							}
							pause(handoffPause)
						}
					})
				}
				wg.Wait()
				elapsed := time.Since(start)
				b.StopTimer()
				all, least := mergeWaits(waits)
				c.report(b, len(all), "cmds/acq")
				slices.Sort(all)
				b.ReportMetric(float64(len(all))/elapsed.Seconds(), "acq/s")
				b.ReportMetric(micros(percentile(all, 50)), "p50-wait-us")
				b.ReportMetric(micros(percentile(all, 99)), "p99-wait-us")
				b.ReportMetric(float64(least)*semGoroutines/float64(len(all)), "fairness")
				obs.report(b)
				limit := int64(semLimit)
				if kind == "exclusive" {
					limit = 1
				}
				if most.Load() > limit {
					b.Errorf("%d holders at once, over %d", most.Load(), limit)
				}
			})
		}
	}
}

// BenchmarkRWLock is a read-write lock under a steady stream of readers: 8
// goroutines take the key shared and hold it 200µs, one writer takes it
// exclusive and holds it 50µs, each pausing handoffPause (200µs) after
// each release; it runs until the writer's b.N-th acquisition. Metrics:
// the readers' and the writer's acq/s and wait at p50 and p99 (µs; the
// writer's p99 is the starvation figure: about one reader hold time plus
// a round trip or two when the readers cannot starve it), cmds/acq over
// every acquisition, and woken-release; what the writer's wait is made
// of: write-rtts/acq (its round trips per acquisition) and rtt-p50-us,
// rtt-p99-us (the round trip of one GET on a client of its own, every
// 500µs through the run: the floor of each of those round trips under the
// same load).
func BenchmarkRWLock(b *testing.B) {
	e := setup(b)
	for _, s := range kindShapes {
		b.Run("shape="+s.name, func(b *testing.B) {
			obs := &woken{}
			ls := lockers(b, e.srv.Addr, rwReaders+1, s.shared, obs)
			key := keyRing("rwlock", e.libs[0], 1)[0]
			opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(kindBackoff)}
			run, stop := context.WithCancel(context.Background())
			defer stop()
			var (
				readWaits  = make([][]time.Duration, rwReaders)
				writeWaits []time.Duration
				readers    atomic.Int32
				writer     atomic.Int32
				bad        atomic.Int64
				wg         sync.WaitGroup
			)
			loop := func(l *redislock.Client, write bool, hold time.Duration, waits *[]time.Duration) {
				for run.Err() == nil {
					ctx, cancel := context.WithTimeout(run, handoffWaitTimeout)
					t0 := time.Now()
					var lock *redislock.Lock
					var err error
					if write {
						lock, err = l.Obtain(ctx, key, ttl, opt)
					} else {
						lock, err = l.ObtainShared(ctx, key, ttl, opt)
					}
					d := time.Since(t0)
					cancel()
					if err != nil {
						if run.Err() == nil {
							b.Errorf("obtain (write %v): %v", write, err)
							stop()
						}
						return
					}
					*waits = append(*waits, d)
					if write {
						if writer.Add(1) != 1 || readers.Load() != 0 {
							bad.Add(1)
						}
						if len(*waits) == b.N {
							stop()
						}
					} else if readers.Add(1); writer.Load() != 0 {
						bad.Add(1)
					}
					pause(hold)
					if write {
						writer.Add(-1)
					} else {
						readers.Add(-1)
					}
					if err := lock.Release(context.Background()); err != nil {
						b.Errorf("release (write %v): %v", write, err)
						stop()
						return
					}
					pause(handoffPause)
				}
			}
			probe, err := newRueidisClient(e.srv.Addr)
			if err != nil {
				b.Fatal(err)
			}
			defer probe.Close()
			var rtts []time.Duration
			c := e.counter(b)
			b.ResetTimer()
			start := time.Now()
			wg.Go(func() {
				get := probe.B().Get().Key(key + ":probe").Build().Pin()
				for run.Err() == nil {
					t0 := time.Now()
					_ = probe.Do(context.Background(), get).Error()
					rtts = append(rtts, time.Since(t0))
					pause(500 * time.Microsecond)
				}
			})
			for r := range rwReaders {
				wg.Go(func() { loop(ls[r%len(ls)], false, rwReadHold, &readWaits[r]) })
			}
			wg.Go(func() { loop(ls[rwReaders%len(ls)], true, rwWriteHold, &writeWaits) })
			wg.Wait()
			elapsed := time.Since(start)
			b.StopTimer()
			reads, _ := mergeWaits(readWaits)
			c.report(b, len(reads)+len(writeWaits), "cmds/acq")
			slices.Sort(reads)
			slices.Sort(writeWaits)
			b.ReportMetric(float64(len(reads))/elapsed.Seconds(), "read-acq/s")
			b.ReportMetric(float64(len(writeWaits))/elapsed.Seconds(), "write-acq/s")
			if len(reads) > 0 {
				b.ReportMetric(micros(percentile(reads, 50)), "read-p50-us")
				b.ReportMetric(micros(percentile(reads, 99)), "read-p99-us")
			}
			if len(writeWaits) > 0 {
				b.ReportMetric(micros(percentile(writeWaits, 50)), "write-p50-us")
				b.ReportMetric(micros(percentile(writeWaits, 99)), "write-p99-us")
			}
			obs.report(b)
			if n := obs.exclusive.Load(); n > 0 {
				b.ReportMetric(float64(obs.exclusiveRoundTrips.Load())/float64(n), "write-rtts/acq")
			}
			if len(rtts) > 0 {
				slices.Sort(rtts)
				b.ReportMetric(micros(percentile(rtts, 50)), "rtt-p50-us")
				b.ReportMetric(micros(percentile(rtts, 99)), "rtt-p99-us")
			}
			if n := bad.Load(); n > 0 {
				b.Errorf("%d acquisitions broke the read-write rule", n)
			}
		})
	}
}

var _ rueidis.Client // newRueidisClient's
