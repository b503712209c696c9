package redislock_test

import (
	"context"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// benchParallel runs cycle from 32 goroutines a CPU, each on keys of its
// own: the calls share connections through rueidis' auto-pipelining.
func benchParallel(b *testing.B, name string, cycle func(ctx context.Context, key string) error) {
	b.Helper()
	ctx := context.Background()
	goroutines := benchParallelism * runtime.GOMAXPROCS(0)
	keys := benchKeyRing(name, goroutines*benchKeys)
	var next atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(benchParallelism)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		g := int(next.Add(1)-1) % goroutines
		mine := keys[g*benchKeys : (g+1)*benchKeys]
		i := 0
		for pb.Next() {
			if err := cycle(ctx, mine[i%len(mine)]); err != nil {
				b.Errorf("obtain+release: %v", err)
				return
			}
			i++
		}
	})
}

// obtainRelease is one plain Obtain+Release of locker.
func obtainRelease(locker *redislock.Client) func(ctx context.Context, key string) error {
	return func(ctx context.Context, key string) error {
		l, err := locker.Obtain(ctx, key, benchTTL, nil)
		if err != nil {
			return err
		}
		return l.Release(ctx)
	}
}

// benchSerial is Obtain+Release of locker in a loop, on keys named prefix.
func benchSerial(b *testing.B, ctx context.Context, prefix string, locker *redislock.Client) {
	keys := benchKeyRing(prefix, benchKeys)
	b.ReportAllocs()
	i := 0
	cycle := obtainRelease(locker)
	for b.Loop() {
		if err := cycle(ctx, keys[i%len(keys)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkReplicas is Obtain+Release on a master with one replica, without
// and with WithReplicas(1, 2s): what the acknowledgement costs, serial
// (with a ctx without and with a deadline) and from 32 goroutines a CPU.
func BenchmarkReplicas(b *testing.B) {
	master := redistest.StartServer(b, "--repl-diskless-sync-delay", "0")
	redistest.StartServer(b, "--replicaof", "127.0.0.1", master.Addr[strings.LastIndexByte(master.Addr, ':')+1:], "--repl-diskless-sync-delay", "0")
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// WAIT counts the replicas the master sees online.
		if info, err := master.Do(b, "INFO", "replication"); err == nil && strings.Contains(info, "state=online") {
			break
		}
		if time.Now().After(deadline) {
			b.Fatal("the replica did not sync")
		}
	}
	client := master.Client(b)
	benchWarmClient(b, client)
	for _, n := range []int{0, 1} {
		// The timeout only bounds a WAIT (a replica acknowledges in well
		// under a millisecond): on a loaded machine 100ms was too short,
		// and the benchmark failed instead of measuring.
		locker := redislock.New(client, redislock.WithReplicas(n, 2*time.Second))
		name := "replicas=" + string(rune('0'+n))
		b.Run("serial/"+name, func(b *testing.B) { benchSerial(b, context.Background(), "rep", locker) })
		// With a ctx that can end, as most callers' do, a write of
		// WithReplicas takes its dedicated connection by that ctx's end.
		b.Run("serial-deadline/"+name, func(b *testing.B) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
			defer cancel()
			benchSerial(b, ctx, "repd", locker)
		})
		b.Run("parallel/"+name, func(b *testing.B) { benchParallel(b, "repp", obtainRelease(locker)) })
	}
}

// BenchmarkMasters is the parallel Obtain+Release on one master (a
// standalone server) and on a 3-master Redis Cluster, in one run. Keys
// spread over the slots.
func BenchmarkMasters(b *testing.B) {
	one := redistest.StartServer(b).Client(b)
	benchWarmClient(b, one)
	cl := redistest.StartCluster(b, 3, 0)
	three := cl.Client(b)
	for _, tc := range []struct {
		name   string
		client rueidis.Client
	}{{"masters=1", one}, {"masters=3", three}} {
		b.Run(tc.name, func(b *testing.B) { benchParallel(b, "masters", obtainRelease(redislock.New(tc.client))) })
	}
}
