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

// benchParallel runs Obtain+Release of locker from 32 goroutines a CPU,
// each on keys of its own.
func benchParallel(b *testing.B, locker *redislock.Client, name string) {
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
			l, err := locker.Obtain(ctx, mine[i%len(mine)], benchTTL, nil)
			if err == nil {
				err = l.Release(ctx)
			}
			if err != nil {
				b.Errorf("obtain+release: %v", err)
				return
			}
			i++
		}
	})
}

// BenchmarkReplicas is Obtain+Release on a master with one replica, without
// and with WithReplicas(1, 100ms): what the acknowledgement costs, serial
// and from 32 goroutines a CPU.
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
		locker := redislock.New(client, redislock.WithReplicas(n, 100*time.Millisecond))
		name := "replicas=" + string(rune('0'+n))
		b.Run("serial/"+name, func(b *testing.B) {
			ctx := context.Background()
			keys := benchKeyRing("rep", benchKeys)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				l, err := locker.Obtain(ctx, keys[i%len(keys)], benchTTL, nil)
				if err == nil {
					err = l.Release(ctx)
				}
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
		b.Run("parallel/"+name, func(b *testing.B) { benchParallel(b, locker, "repp") })
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
		b.Run(tc.name, func(b *testing.B) { benchParallel(b, redislock.New(tc.client), "masters") })
	}
}
