// The race detector changes allocation counts, so these budgets are checked
// only without it: `go test -race` leaves this file out, plain `go test`
// (and `make bench-smoke`'s build) keeps it.

//go:build !race

package redislock_test

import (
	"context"
	"runtime"
	"testing"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// The allocation budgets of the hot path, against a real redis-server. A
// change that goes over one fails here; timing is left to the benchmarks.
const (
	// budgetObtainReleaseAllocs and budgetObtainReleaseBytes bound one
	// Obtain+Release with a random token, one key, no metadata and no fence
	// key. Today: 1 allocation, 144 B, the *Lock itself, which holds the
	// key slice and the token's bytes.
	budgetObtainReleaseAllocs = 2
	budgetObtainReleaseBytes  = 256
	// budgetRefreshAllocs and budgetReleaseAllocs bound one Refresh and one
	// Release of a held lock. Today: 0 each.
	budgetRefreshAllocs = 1
	budgetReleaseAllocs = 1
)

// allocRuns is how many calls each measurement averages.
const allocRuns = 500

// obtainReleaseCycle returns one Obtain+Release by locker, on a key of
// its own ring each call.
func obtainReleaseCycle(t *testing.T, locker *redislock.Client, name string) func() {
	ctx := context.Background()
	keys := benchKeyRing(name, benchKeys)
	i := 0
	return func() {
		l, err := locker.Obtain(ctx, keys[i%len(keys)], benchTTL, nil)
		i++
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func TestAllocs_ObtainRelease(t *testing.T) {
	cycle := obtainReleaseCycle(t, allocLocker(t), "alloc-or")
	allocs := testing.AllocsPerRun(allocRuns, cycle)
	bytes := bytesPerRun(allocRuns, cycle)
	t.Logf("Obtain+Release: %v allocs, %.0f B", allocs, bytes)
	if allocs > budgetObtainReleaseAllocs {
		t.Errorf("Obtain+Release: %v allocations, over the budget of %d", allocs, budgetObtainReleaseAllocs)
	}
	if bytes > budgetObtainReleaseBytes {
		t.Errorf("Obtain+Release: %.0f B, over the budget of %d B", bytes, budgetObtainReleaseBytes)
	}
}

func TestAllocs_Refresh(t *testing.T) {
	ctx := context.Background()
	locker := allocLocker(t)
	l, err := locker.Obtain(ctx, benchKeyRing("alloc-refresh", 1)[0], benchTTL, nil)
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(allocRuns, func() {
		if err := l.Refresh(ctx, benchTTL, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Refresh: %v allocs", allocs)
	if allocs > budgetRefreshAllocs {
		t.Errorf("Refresh: %v allocations, over the budget of %d", allocs, budgetRefreshAllocs)
	}
}

func TestAllocs_Release(t *testing.T) {
	ctx := context.Background()
	locker := allocLocker(t)
	// AllocsPerRun calls f once more than it is told, to warm up.
	keys := benchKeyRing("alloc-release", allocRuns+1)
	locks := make([]*redislock.Lock, len(keys))
	for i, key := range keys {
		l, err := locker.Obtain(ctx, key, benchTTL, nil)
		if err != nil {
			t.Fatal(err)
		}
		locks[i] = l
	}
	i := 0
	allocs := testing.AllocsPerRun(allocRuns, func() {
		if err := locks[i].Release(ctx); err != nil {
			t.Fatal(err)
		}
		i++
	})
	t.Logf("Release: %v allocs", allocs)
	if allocs > budgetReleaseAllocs {
		t.Errorf("Release: %v allocations, over the budget of %d", allocs, budgetReleaseAllocs)
	}
}

// allocLocker returns a lock client to a redis-server of its own, with
// every connection of its rueidis client open (see benchWarmClient).
func allocLocker(t *testing.T) *redislock.Client {
	t.Helper()
	client := redistest.StartServer(t).Client(t)
	benchWarmClient(t, client)
	return redislock.New(client)
}

// bytesPerRun is testing.AllocsPerRun for bytes: the average bytes
// allocated by one call of f, over runs calls after a warm-up call, on one
// CPU as AllocsPerRun measures. Every goroutine's allocations count, so a
// budget keeps a margin for the client's own background work.
func bytesPerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

// budgetQuorumObtainReleaseAllocs bounds one Obtain+Release of a quorum
// Client over three nodes (random token, one key, no fence key). Measured:
// 31 allocations, 2.0 kB, 29 of them listed here. The obtain's own: the *Lock (1) and the
// quorumAttempt its nodes' goroutines read (1). The release's own: the name
// of the channel its nodes publish on, the script's arguments and the
// function that runs the script on a node (3). The attempt's fan-out
// (quorum.each) makes 12: the reply slice and the closure that writes it
// (2); the ctx that bounds the nodes' calls: its timerCtx, Done channel and
// cancel func (3) and its timer (1); the WaitGroup, the ctx variable and
// the loop variable of each of the two other nodes, shared with their
// goroutines (4); and those goroutines' closures (2). The release's
// (quorum.settle, which returns once the outcome is known and leaves the
// slower nodes' calls running) makes 12: the ctx detached from the
// caller's cancellation (1) and the one that bounds the nodes' calls
// (4, as above); the settling struct, its answer channel and that
// channel's buffer (3); each node's goroutine (3); the reply slice (1).
// The budget leaves 4 for rueidis' and the runtime's noise.
const budgetQuorumObtainReleaseAllocs = 35

func TestAllocs_QuorumObtainRelease(t *testing.T) {
	var clients []rueidis.Client
	for range 3 {
		client := redistest.StartServer(t).Client(t)
		benchWarmClient(t, client)
		clients = append(clients, client)
	}
	cycle := obtainReleaseCycle(t, redislock.NewQuorum(clients), "alloc-quorum")
	allocs := testing.AllocsPerRun(allocRuns, cycle)
	t.Logf("quorum Obtain+Release: %v allocs, %.0f B", allocs, bytesPerRun(allocRuns, cycle))
	if allocs > budgetQuorumObtainReleaseAllocs {
		t.Errorf("quorum Obtain+Release: %v allocations, over the budget of %d", allocs, budgetQuorumObtainReleaseAllocs)
	}
}
