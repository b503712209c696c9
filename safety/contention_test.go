package safety_test

import (
	"context"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"

	"github.com/seed-223c80a0/redislock/safety"
)

// Scenario 1: 8 clients, 10,000 acquisitions on 4 keys, no fault: both
// checkers find nothing.
func TestContention(t *testing.T) {
	srv := safety.StartServer(t, safety.ServerOptions{})
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	w := &safety.Workload{
		Clients:      clients(t, 8, srv.Addr, rec),
		Keys:         []string{"a", "b", "c", "d"},
		Acquisitions: 10000,
		TTL:          500 * time.Millisecond,
		Hold:         func(r *rand.Rand) time.Duration { return time.Duration(r.IntN(200)) * time.Microsecond },
		RefreshOneIn: 4,
		Resource:     res,
	}
	start := time.Now()
	n := w.Run(t.Context())
	t.Logf("%d acquisitions in %v", n, time.Since(start).Round(time.Millisecond))
	requireSafe(t, rec, res, true)
}

// overslept runs 8 clients on 2 keys with a 30ms TTL, one holder in ten
// sleeping 40ms, past its TTL, before it writes and releases; release
// replaces the library's release when not nil.
func overslept(t *testing.T, release func(raw rueidis.Client) func(context.Context, *redislock.Lock) error) (*safety.Recorder, *safety.FencedResource) {
	t.Helper()
	srv := safety.StartServer(t, safety.ServerOptions{})
	rec := safety.NewRecorder()
	res := safety.NewFencedResource()
	cs := clients(t, 8, srv.Addr, rec)
	if release != nil {
		raw := srv.Client(t)
		for _, c := range cs {
			c.Release = release(raw)
		}
	}
	w := &safety.Workload{
		Clients:      cs,
		Keys:         []string{"a", "b"},
		Acquisitions: 1000,
		TTL:          30 * time.Millisecond,
		Hold: func(r *rand.Rand) time.Duration {
			if r.IntN(10) == 0 {
				return 40 * time.Millisecond // past the TTL
			}
			return time.Duration(r.IntN(5)) * time.Millisecond
		},
		Resource: res,
	}
	n := w.Run(t.Context())
	t.Logf("%d acquisitions", n)
	return rec, res
}

// Negative control: a release by raw DEL deletes whoever holds the key. A
// holder that overslept its TTL then deletes the next holder's lock, and a
// third client obtains it while the second still holds it: each checker
// must flag the history. The same workload with the library's release is
// clean: holders that oversleep are no violation, only stale writes.
func TestNegativeControl_rawDel(t *testing.T) {
	t.Run("library release: clean", func(t *testing.T) {
		rec, res := overslept(t, nil)
		requireSafe(t, rec, res, true)
		require.Positive(t, res.Check().Stale, "some holder overslept its TTL")
	})
	t.Run("raw DEL: flagged", func(t *testing.T) {
		rec, res := overslept(t, safety.RawDelRelease)
		ops := rec.Ops()
		t.Logf("history: %v", safety.Summarize(ops))
		overlaps := safety.Overlaps(ops, 5*time.Millisecond)
		v := safety.Linearizable(ops, safety.CheckOptions{Fence: true})
		rep := res.Check()
		t.Logf("overlaps: %d; porcupine: %v; fenced resource: %v", overlaps, v, rep)
		require.Positive(t, overlaps, "the overlap count must see the raw DEL")
		require.Equal(t, "NOT linearizable", resultName(v), "porcupine must flag the raw DEL")
		require.NotEmpty(t, rep.Violations, "the fenced resource must flag the raw DEL")
	})
}
