package safety_test

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/safety"
)

// crashRun runs 10,000 acquisitions (fewer with -short) by 8 clients on 4
// keys while redis-server is killed with SIGKILL and restarted 3 times,
// after delay each time; it returns the history and the fenced resource.
func crashRun(t *testing.T, args []string, ttl, delay time.Duration) (*safety.Recorder, *safety.FencedResource) {
	t.Helper()
	srv := safety.StartServer(t, safety.ServerOptions{Args: args})
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	total := 10000
	if testing.Short() {
		total = 3000
	}
	kills := make(chan struct{}, 3)
	var once [3]sync.Once
	var slow atomic.Bool
	w := &safety.Workload{
		Clients:      clients(t, 8, srv.Addr, rec),
		Keys:         []string{"a", "b", "c", "d"},
		Acquisitions: total,
		TTL:          ttl,
		// Around a crash, holders work for 150ms: some lock is held by a
		// client that wakes up after the restart.
		Hold: func(r *rand.Rand) time.Duration {
			if slow.Load() {
				return 150 * time.Millisecond
			}
			return time.Duration(r.IntN(500)) * time.Microsecond
		},
		RefreshOneIn: 4,
		Resource:     res,
		OnAcquire: func(n int) {
			for i := range 3 {
				if n == (i+1)*total/4 {
					once[i].Do(func() { kills <- struct{}{} })
				}
			}
		},
	}
	var downtime []time.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 3 {
			select {
			case <-kills:
			case <-t.Context().Done():
				return
			}
			slow.Store(true)
			time.Sleep(20 * time.Millisecond)
			start := time.Now()
			srv.Stop(t)
			time.Sleep(delay)
			srv.Restart(t)
			slow.Store(false)
			downtime = append(downtime, time.Since(start).Round(time.Millisecond))
		}
	}()
	start := time.Now()
	n := w.Run(t.Context())
	<-done
	t.Logf("%d acquisitions in %v; 3 kill -9 and restarts, down for %v", n, time.Since(start).Round(time.Millisecond), downtime)
	require.Len(t, downtime, 3)
	return rec, res
}

// Scenario 3: kill -9 and restart of redis-server during 10,000
// acquisitions.
func TestCrashRestart(t *testing.T) {
	t.Run("appendfsync always", func(t *testing.T) {
		rec, res := crashRun(t, []string{"--appendonly", "yes", "--appendfsync", "always"}, time.Second, 0)
		requireSafe(t, rec, res, true)
	})

	t.Run("no persistence, restart after the longest TTL", func(t *testing.T) {
		const ttl = 200 * time.Millisecond
		rec, res := crashRun(t, nil, ttl, ttl+50*time.Millisecond)
		// Every lock had expired when the server came back: no two holders
		// at once. The fence counters restarted from 0, though: fencing
		// needs a counter that survives a restart.
		requireSafe(t, rec, nil, false)
		rep := res.Check()
		t.Logf("fenced resource: %v", rep)
		v := safety.Linearizable(rec.Ops(), safety.CheckOptions{Fence: true})
		t.Logf("porcupine with fence tokens: %v", v)
		require.NotEmpty(t, rep.Violations, "the fence counters went back to 0 with the data")
		require.Equal(t, "NOT linearizable", resultName(v))
	})

	t.Run("negative control: no persistence, immediate restart", func(t *testing.T) {
		rec, res := crashRun(t, nil, time.Second, 0)
		ops := rec.Ops()
		overlaps := safety.Overlaps(ops, 5*time.Millisecond)
		v := safety.Linearizable(ops, safety.CheckOptions{})
		rep := res.Check()
		t.Logf("history: %v", safety.Summarize(ops))
		t.Logf("overlaps: %d; porcupine: %v; fenced resource: %v", overlaps, v, rep)
		require.Positive(t, overlaps, "locks lost with the data: the overlap count must see it")
		require.Equal(t, "NOT linearizable", resultName(v), "porcupine must flag the data loss")
		require.NotEmpty(t, rep.Violations, "the fenced resource must flag the data loss")
	})
}
