package redislock_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// The library's own benchmarks, against a real redis-server that each
// top-level benchmark starts (make bench). The comparison with its peers is
// in the bench module. Every benchmark works with -benchtime=1x.

const (
	benchTTL = 10 * time.Second
	// benchParallelism is the SetParallelism of the parallel benchmarks: 32
	// goroutines a CPU.
	benchParallelism = 32
	// benchKeys is how many keys each goroutine cycles through.
	benchKeys = 16
)

// benchCase is one way of obtaining a lock, or the baseline: two raw
// round trips (SET NX PX, DEL), the least an obtain and a release can cost.
type benchCase struct {
	name     string
	opt      *redislock.Options
	baseline bool
}

var benchCases = []benchCase{
	{name: "baseline", baseline: true},
	{name: "plain"},
	{name: "metadata", opt: &redislock.Options{Metadata: "owner=worker-17;job=nightly-export"}},
	{name: "fence", opt: &redislock.Options{FenceKey: "bench:fence"}},
	{name: "metadata+fence", opt: &redislock.Options{Metadata: "owner=worker-17;job=nightly-export", FenceKey: "bench:fence"}},
}

// benchServer starts a redis-server for one top-level benchmark and returns
// a client to it, every connection open, and a lock client over that.
func benchServer(b *testing.B) (rueidis.Client, *redislock.Client) {
	b.Helper()
	client := redistest.StartServer(b).Client(b)
	benchWarmClient(b, client)
	return client, redislock.New(client)
}

// benchWarmClient opens every connection of client. A standalone rueidis
// client sends each keyed command on one of its connections at random (2
// with 2 CPUs, 4 from 4 CPUs: its PipelineMultiplex) and opens a connection
// on first use, with some 4,000 allocations (its ring of 1,024 slots): left
// to chance, that happened during an allocation test about one run in four.
func benchWarmClient(tb testing.TB, client rueidis.Client) {
	tb.Helper()
	ctx := context.Background()
	for range 64 { // the odds of missing one of 4 connections: under 1e-7
		if err := client.Do(ctx, client.B().Get().Key("bench:warm").Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
			tb.Fatal(err)
		}
	}
}

// benchRun numbers the runs of a benchmark, so that each uses keys of its
// own: a lock left behind by a failed run cannot block the next one.
var benchRun atomic.Int64

// benchKeyRing returns n keys under a prefix of their own.
func benchKeyRing(name string, n int) []string {
	prefix := "bench:" + name + ":" + strconv.FormatInt(benchRun.Add(1), 10) + ":"
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// obtainRelease runs one cycle of bc on key.
func (bc benchCase) obtainRelease(ctx context.Context, client rueidis.Client, locker *redislock.Client, key string) error {
	if bc.baseline {
		if err := client.Do(ctx, client.B().Set().Key(key).Value("token").Nx().Px(benchTTL).Build()).Error(); err != nil {
			return err
		}
		return client.Do(ctx, client.B().Del().Key(key).Build()).Error()
	}
	l, err := locker.Obtain(ctx, key, benchTTL, bc.opt)
	if err != nil {
		return err
	}
	return l.Release(ctx)
}

// BenchmarkObtainRelease obtains and releases locks on keys nobody else
// holds, from one goroutine.
func BenchmarkObtainRelease(b *testing.B) {
	client, locker := benchServer(b)
	for _, bc := range benchCases {
		b.Run("case="+bc.name, func(b *testing.B) {
			ctx := context.Background()
			keys := benchKeyRing("or", benchKeys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if err := bc.obtainRelease(ctx, client, locker, keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkObtainReleaseParallel is BenchmarkObtainRelease from 32
// goroutines a CPU, each on keys of its own: the calls share connections
// through rueidis' auto-pipelining.
func BenchmarkObtainReleaseParallel(b *testing.B) {
	client, locker := benchServer(b)
	for _, bc := range benchCases {
		b.Run("case="+bc.name, func(b *testing.B) {
			benchParallel(b, "orp", func(ctx context.Context, key string) error {
				return bc.obtainRelease(ctx, client, locker, key)
			})
		})
	}
}

// BenchmarkObtainMulti obtains 3 keys at once and releases them.
func BenchmarkObtainMulti(b *testing.B) {
	_, locker := benchServer(b)
	for _, bc := range benchCases {
		if bc.baseline {
			continue
		}
		b.Run("case="+bc.name, func(b *testing.B) {
			ctx := context.Background()
			keys := benchKeyRing("multi", 3*benchKeys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				j := 3 * (i % benchKeys)
				i++
				l, err := locker.ObtainMulti(ctx, keys[j:j+3], benchTTL, bc.opt)
				if err != nil {
					b.Fatal(err)
				}
				if err := l.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRefresh refreshes one held lock; the baseline is a raw PEXPIRE.
func BenchmarkRefresh(b *testing.B) {
	client, locker := benchServer(b)
	for _, bc := range benchCases {
		b.Run("case="+bc.name, func(b *testing.B) {
			ctx := context.Background()
			key := benchKeyRing("refresh", 1)[0]
			if bc.baseline {
				if err := client.Do(ctx, client.B().Set().Key(key).Value("token").Px(benchTTL).Build()).Error(); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := client.Do(ctx, client.B().Pexpire().Key(key).Milliseconds(benchTTL.Milliseconds()).Build()).Error(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			l, err := locker.Obtain(ctx, key, benchTTL, bc.opt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := l.Refresh(ctx, benchTTL, nil); err != nil {
					b.Fatal(err)
				}
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// BenchmarkTTL reads the remaining TTL of one held lock; the baseline is a
// raw PTTL.
func BenchmarkTTL(b *testing.B) {
	client, locker := benchServer(b)
	for _, bc := range benchCases {
		b.Run("case="+bc.name, func(b *testing.B) {
			ctx := context.Background()
			key := benchKeyRing("ttl", 1)[0]
			if bc.baseline {
				if err := client.Do(ctx, client.B().Set().Key(key).Value("token").Px(benchTTL).Build()).Error(); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := client.Do(ctx, client.B().Pttl().Key(key).Build()).Error(); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			l, err := locker.Obtain(ctx, key, benchTTL, bc.opt)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if ttl, err := l.TTL(ctx); err != nil || ttl <= 0 {
					b.Fatalf("TTL = %v, %v", ttl, err)
				}
			}
			if err := l.Release(ctx); err != nil {
				b.Fatal(err)
			}
		})
	}
}

// Contention: goroutines competing for one key through one shared Client.
const (
	// contenders is how many goroutines compete in BenchmarkContended.
	contenders = 8
	// contendedPause is how long a goroutine of case=pause waits after its
	// release before it tries again.
	contendedPause = 200 * time.Microsecond
	// contendedWaitTimeout bounds one wait of BenchmarkContended: a hang
	// fails the benchmark instead of stalling it.
	contendedWaitTimeout = 30 * time.Second
)

// BenchmarkContended is 8 goroutines competing for one key through one
// shared Client, each waiting with LinearBackoff(retry). With case=pause a
// goroutine pauses 200µs after each release, the hand-over a real service
// sees; with case=nopause it tries again at once, which rewards barging. The
// critical section is empty. b.N is the number of acquisitions, shared among
// the goroutines (tickets).
//
// Metrics: acq/s; the wait of an acquisition (from the call of Obtain to
// its return) at p50, p99 and max, in µs; fairness, the smallest
// goroutine's share of the acquisitions divided by the fair share 1/8 (1.0:
// all got as many; 0: one starved); handoff, the fraction of acquisitions
// whose holder is another goroutine than the previous one's; cmds/acq, the
// commands the server executed per acquisition (INFO commandstats, failed
// attempts and the commands scripts call included).
func BenchmarkContended(b *testing.B) {
	srv := redistest.StartServer(b)
	client := srv.Client(b)
	benchWarmClient(b, client)
	locker := redislock.New(client)
	for _, mode := range []struct {
		name  string
		pause bool
	}{{"pause", true}, {"nopause", false}} {
		b.Run("case="+mode.name, func(b *testing.B) {
			for _, retry := range []time.Duration{100 * time.Millisecond, time.Millisecond} {
				b.Run("retry="+retry.String(), func(b *testing.B) {
					opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(retry)}
					benchContended(b, srv, locker, opt, mode.pause)
				})
			}
		})
	}
}

// benchContended runs one case of BenchmarkContended.
func benchContended(b *testing.B, srv *redistest.Server, locker *redislock.Client, opt *redislock.Options, doPause bool) {
	key := benchKeyRing("contended", 1)[0]
	var (
		tickets  atomic.Int64
		last     atomic.Int64 // the goroutine that obtained the lock last, -1 at first
		handoffs atomic.Int64
		waits    [contenders][]time.Duration
		wg       sync.WaitGroup
	)
	tickets.Store(int64(b.N))
	last.Store(-1)
	before := benchCommands(b, srv)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for g := range contenders {
		wg.Go(func() {
			for tickets.Add(-1) >= 0 {
				wait, err := contendOnce(locker, key, opt, func() {
					if prev := last.Swap(int64(g)); prev >= 0 && prev != int64(g) {
						handoffs.Add(1)
					}
				})
				if err != nil {
					b.Errorf("goroutine %d: %v", g, err)
					return
				}
				waits[g] = append(waits[g], wait)
				if doPause {
					pause(contendedPause)
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	after := benchCommands(b, srv)

	var all []time.Duration
	least := -1
	for _, ws := range waits {
		all = append(all, ws...)
		if least < 0 || len(ws) < least {
			least = len(ws)
		}
	}
	n := len(all)
	if n == 0 {
		return
	}
	slices.Sort(all)
	b.ReportMetric(float64(n)/elapsed.Seconds(), "acq/s")
	b.ReportMetric(benchMicros(benchPercentile(all, 50)), "p50-wait-us")
	b.ReportMetric(benchMicros(benchPercentile(all, 99)), "p99-wait-us")
	b.ReportMetric(benchMicros(all[n-1]), "max-wait-us")
	b.ReportMetric(float64(least)*contenders/float64(n), "fairness")
	if n > 1 {
		b.ReportMetric(float64(handoffs.Load())/float64(n-1), "handoff")
	}
	b.ReportMetric(float64(after-before)/float64(n), "cmds/acq")
}

// contendOnce obtains key, waiting at most contendedWaitTimeout, calls
// held while it holds the lock, and releases it. It returns the wait.
func contendOnce(locker *redislock.Client, key string, opt *redislock.Options, held func()) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), contendedWaitTimeout)
	defer cancel()
	t0 := time.Now()
	l, err := locker.Obtain(ctx, key, benchTTL, opt)
	wait := time.Since(t0)
	if err != nil {
		return wait, errors.Join(errors.New("obtain"), err)
	}
	held()
	if err := l.Release(ctx); err != nil {
		return wait, errors.Join(errors.New("release"), err)
	}
	return wait, nil
}

// benchCommands returns how many commands srv has executed, INFO left out,
// from INFO commandstats read on a connection of its own. The commands that
// scripts run with redis.call count too: Redis counts them.
func benchCommands(tb testing.TB, srv *redistest.Server) int64 {
	tb.Helper()
	info, err := srv.Do(tb, "INFO", "commandstats")
	if err != nil {
		tb.Fatalf("INFO commandstats: %v", err)
	}
	n, err := redistest.CommandCalls(info)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// benchPercentile returns the p-th percentile of sorted (nearest rank);
// sorted must not be empty.
func benchPercentile(sorted []time.Duration, p int) time.Duration {
	rank := (p*len(sorted) + 99) / 100 // ceil(p/100 * n)
	return sorted[max(rank, 1)-1]
}

func benchMicros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
