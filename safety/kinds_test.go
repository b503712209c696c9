package safety_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// kindModel is a model of TestKinds: how each obtain draws its mode.
type kindModel struct {
	name string
	keys []string
	kind func(r *rand.Rand) (safety.Mode, int)
}

var kindModels = []kindModel{
	{"semaphore of 3", []string{"a"}, func(*rand.Rand) (safety.Mode, int) { return safety.Semaphore, 3 }},
	{"read-write", []string{"a", "b"}, func(r *rand.Rand) (safety.Mode, int) {
		if r.IntN(4) == 0 {
			return safety.Exclusive, 0
		}
		return safety.Shared, 0
	}},
}

// impatientKind is impatient (wait_test.go) for a model: it obtains with
// 1-20ms deadlines, so that it gives up while it waits.
func impatientKind(ctx context.Context, c *safety.Client, keys []string, m kindModel, seed uint64, st *impatience) {
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	for ctx.Err() == nil {
		key := keys[rng.IntN(len(keys))]
		mode, limit := m.kind(rng)
		octx, cancel := context.WithTimeout(ctx, time.Duration(1+rng.IntN(20))*time.Millisecond)
		h, err := c.ObtainKind(octx, key, mode, limit, waitTTL, &redislock.Options{RetryStrategy: redislock.LinearBackoff(waitBackoff), FenceKey: safety.FenceKey(key)})
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
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		_ = h.Release(rctx)
		cancel()
	}
}

// requireNoCrowd runs Crowding on a history and fails t on any violation.
func requireNoCrowd(t *testing.T, rec *safety.Recorder) {
	t.Helper()
	ops := rec.Ops()
	modes := map[safety.Mode]int{}
	for _, op := range ops {
		if op.Kind == safety.Obtain && op.Outcome == safety.OK {
			modes[op.Mode]++
		}
	}
	crowds := safety.Crowding(ops, 5*time.Millisecond)
	t.Logf("history: %v; acquisitions by mode: %v; crowds: %d", safety.Summarize(ops), modes, len(crowds))
	for i, c := range crowds {
		if i == 5 {
			break
		}
		t.Errorf("crowd: %v", c)
	}
}

// requireKindsLinearizable checks a history with the kinds' porcupine model
// and fails t unless it is linearizable. The cleanup of an obtain that has
// no effect in the history (one that gave up, withoutGaveUp) has none
// either: the model never saw its token hold anything. Left in, each would
// be an operation of unknown outcome whose window (seconds) overlaps every
// other, for porcupine to place anywhere.
func requireKindsLinearizable(t *testing.T, rec *safety.Recorder) {
	t.Helper()
	ops := rec.Ops()
	dropped := map[string]bool{}
	for _, op := range ops {
		if op.Kind == safety.Obtain && op.Outcome == safety.NoEffect {
			dropped[op.Key+"\x00"+op.Token] = true
		}
	}
	for i, op := range ops {
		if op.Kind == safety.Cleanup && dropped[op.Key+"\x00"+op.Token] {
			ops[i].Outcome = safety.NoEffect
		}
	}
	v := safety.KindsLinearizable(ops, safety.CheckOptions{VisualizeDir: t.TempDir()})
	t.Logf("porcupine (kinds): %v", v)
	require.Equal(t, porcupine.Ok, v.Result, "the history is not linearizable: %v", v)
}

// TestKinds runs the semaphore model (limit 3: never more than 3 holders)
// and the read-write model (ObtainShared, one obtain in four an exclusive
// Obtain: never a writer with anyone) under contention: 8 clients on 2
// keys, 4 of them sharing 2 redislock.Clients, a backoff of 250ms that only
// bounds a wait without news, under the faults the exclusive lock is
// checked under (TestWakeUp): none, SCRIPT FLUSH, subscriptions killed,
// the server paused, waiters giving up mid-wait. Crowding finds nothing,
// the history is linearizable (KindsLinearizable; obtains that gave up at
// the end of their ctx left out, as withoutGaveUp says),
// every call but the impatient ones succeeds, the fenced resource (written
// by exclusive holders) accepts every valid write, and nothing is left in
// Redis.
func TestKinds(t *testing.T) {
	total := 2000
	if testing.Short() {
		total = 600
	}
	for _, m := range kindModels {
		for _, tc := range []struct {
			name      string
			fault     waitFault
			impatient int
		}{
			{"no fault", nil, 0},
			{"SCRIPT FLUSH every 50ms", scriptFlushes, 0},
			{"subscriptions killed every 50ms", pubsubKills, 0},
			{"server paused 4 times", pauses, 0},
			{"waiters giving up", nil, 4},
		} {
			t.Run(m.name+"/"+tc.name, func(t *testing.T) {
				srv := safety.StartServer(t, safety.ServerOptions{})
				admin := srv.Client(t)
				rec := safety.NewRecorder()
				res := safety.NewFencedResource()
				obs := &wakeCounter{}
				n := 8 + tc.impatient
				cs := sharingClients(t, n, n, srv.Addr, rec, obs)
				shared := sharingClients(t, 4, 2, srv.Addr, rec, obs)
				for i, c := range shared {
					c.ID = n + i
				}
				cs = append(cs[:4], shared...) // 4 Clients of their own, 4 goroutines on 2 Clients
				cs = append(cs, sharingClients(t, tc.impatient, tc.impatient, srv.Addr, rec, obs)...)
				keys := m.keys
				w := &safety.Workload{
					Clients:      cs[:8],
					Keys:         keys,
					Acquisitions: total,
					TTL:          waitTTL,
					Hold:         func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) * time.Microsecond },
					RefreshOneIn: 4,
					Retry:        redislock.LinearBackoff(waitBackoff),
					MaxDuration:  30 * time.Second,
					Resource:     res,
					Kind:         m.kind,
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
					c.ID = 100 + i
					wg.Go(func() { impatientKind(ctx, c, keys, m, uint64(100+i), &imp) })
				}
				start := time.Now()
				got := w.Run(t.Context())
				took := time.Since(start)
				stop()
				wg.Wait()
				t.Logf("%d acquisitions in %v: %.0f/s; %v", got, took.Round(time.Millisecond), float64(got)/took.Seconds(), obs)
				if did != "" {
					t.Logf("fault: %s", did)
				}
				require.GreaterOrEqual(t, got, total, "the run ended before its acquisitions")
				if tc.impatient > 0 {
					t.Logf("%d impatient goroutines: %d obtains, %d OK, %d gave up", tc.impatient, imp.obtains.Load(), imp.obtained.Load(), imp.gaveUp.Load())
				} else {
					for _, op := range rec.Ops() {
						require.Equal(t, safety.OK, op.Outcome, "a call failed: %v: %v", op, op.Err)
					}
				}
				checked, gave := withoutGaveUp(rec)
				t.Logf("obtains that gave up at the end of their ctx: %d", gave)
				if tc.impatient > 0 {
					require.Positive(t, gave, "no waiter gave up")
				}
				requireNoCrowd(t, checked)
				requireKindsLinearizable(t, checked)
				rep := res.Check()
				t.Logf("fenced resource: %v", rep)
				require.Empty(t, rep.Violations, "writes rejected while their lock was valid")
				requireNothingLeft(t, admin)
			})
		}
	}
}

// Negative control: Crowding and the porcupine model (KindsLinearizable)
// flag a semaphore that admits more than its limit (the history of a
// semaphore of 3, judged as one of 2) and readers that hold with one
// another (judged as writers); the same history judged by the true rule
// passes both.
func TestKinds_negativeControl(t *testing.T) {
	for _, m := range kindModels {
		t.Run(m.name, func(t *testing.T) {
			srv := safety.StartServer(t, safety.ServerOptions{})
			rec := safety.NewRecorder()
			w := &safety.Workload{
				Clients:      clients(t, 8, srv.Addr, rec),
				Keys:         []string{"a"},
				Acquisitions: 200,
				TTL:          time.Second,
				Hold:         func(r *rand.Rand) time.Duration { return time.Duration(1+r.IntN(3)) * time.Millisecond },
				Retry:        redislock.LinearBackoff(waitBackoff),
				Kind:         m.kind,
			}
			w.Run(t.Context())
			require.Empty(t, safety.Crowding(rec.Ops(), 5*time.Millisecond))
			requireKindsLinearizable(t, rec)
			broken := safety.NewRecorder()
			for _, op := range rec.Ops() {
				switch op.Mode {
				case safety.Semaphore:
					op.Limit = 2
				case safety.Shared:
					op.Mode = safety.Exclusive
				}
				if op.Outcome == safety.Unknown {
					op.Return = op.Ended
				}
				broken.Add(op)
			}
			crowds := safety.Crowding(broken.Ops(), 5*time.Millisecond)
			t.Logf("crowds found in the history judged by the broken rule: %d", len(crowds))
			require.NotEmpty(t, crowds, "Crowding must flag the broken rule")
			v := safety.KindsLinearizable(broken.Ops(), safety.CheckOptions{})
			t.Logf("porcupine (kinds) on the history judged by the broken rule: %v", v)
			require.Equal(t, porcupine.Illegal, v.Result, "the model must flag the broken rule")
		})
	}
}
