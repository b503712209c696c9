package redislock_test

import (
	"context"
	"runtime"
	"strconv"
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
			ctx := context.Background()
			goroutines := benchParallelism * runtime.GOMAXPROCS(0)
			keys := benchKeyRing("orp", goroutines*benchKeys)
			var next atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(benchParallelism)
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				g := int(next.Add(1)-1) % goroutines
				mine := keys[g*benchKeys : (g+1)*benchKeys]
				i := 0
				for pb.Next() {
					if err := bc.obtainRelease(ctx, client, locker, mine[i%len(mine)]); err != nil {
						b.Errorf("obtain+release: %v", err)
						return
					}
					i++
				}
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
