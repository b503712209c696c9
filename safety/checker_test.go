package safety_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/safety"
)

const ms = time.Millisecond

// op builds one operation of a hand-written history; times in ms.
func op(client int, kind safety.Kind, token string, call, ret int, outcome safety.Outcome) safety.Op {
	o := safety.Op{Client: client, Key: "k", Kind: kind, Token: token, TTL: 100 * ms,
		Call: time.Duration(call) * ms, Return: time.Duration(ret) * ms, Outcome: outcome}
	if outcome == safety.Unknown {
		o.Ended, o.Return = o.Return, safety.Pending
	}
	return o
}

func fenced(o safety.Op, fence int64) safety.Op {
	o.Fence = fence
	return o
}

func ttl(o safety.Op, d time.Duration) safety.Op {
	o.TTL = d
	return o
}

// The model, on histories small enough to judge by hand.
func TestLinearizable_model(t *testing.T) {
	const (
		obtain  = safety.Obtain
		refresh = safety.Refresh
		release = safety.Release
		cleanup = safety.Cleanup
		ok      = safety.OK
		refused = safety.Refused
		unknown = safety.Unknown
	)
	for _, tc := range []struct {
		name  string
		ops   []safety.Op
		fence bool
		want  string
	}{
		{"one holder at a time", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(0, release, "A", 2, 3, ok), op(1, obtain, "B", 4, 5, ok),
		}, false, "linearizable"},
		{"two holders at once", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(1, obtain, "B", 2, 3, ok),
		}, false, "NOT linearizable"},
		{"taken over once the TTL has passed", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(1, obtain, "B", 150, 151, ok),
		}, false, "linearizable"},
		{"taken over just before the TTL", []safety.Op{
			op(0, obtain, "A", 10, 11, ok), op(1, obtain, "B", 80, 90, ok),
		}, false, "NOT linearizable"},
		{"a refresh moves the expiry", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(0, refresh, "A", 50, 51, ok), op(1, obtain, "B", 120, 121, ok),
		}, false, "NOT linearizable"},
		{"the release of a lock another token holds", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(1, obtain, "B", 150, 151, ok), op(0, release, "A", 160, 161, ok),
		}, false, "NOT linearizable"},
		{"a lost lock is refused", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(1, obtain, "B", 150, 151, ok),
			op(0, refresh, "A", 160, 161, refused), op(0, release, "A", 170, 171, refused),
		}, false, "linearizable"},
		{"refused while held", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(1, obtain, "B", 2, 3, refused),
		}, false, "linearizable"},
		{"refused while free", []safety.Op{
			op(1, obtain, "B", 2, 3, refused),
		}, false, "NOT linearizable"},
		{"a release refused while the lock is valid", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(0, release, "A", 10, 11, refused),
		}, false, "NOT linearizable"},
		{"an unknown release may have applied", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(0, release, "A", 2, 3, unknown), op(1, obtain, "B", 4, 5, ok),
		}, false, "linearizable"},
		{"an unknown obtain may hold the lock", []safety.Op{
			op(0, obtain, "T", 0, 1, unknown), op(1, obtain, "B", 4, 5, refused),
		}, false, "linearizable"},
		{"an unknown obtain may apply late, and its cleanup free it", []safety.Op{
			op(2, obtain, "T", 0, 1, unknown), op(2, cleanup, "T", 0, 1, unknown),
			op(0, obtain, "A", 10, 11, ok), op(0, release, "A", 20, 21, ok),
			op(1, obtain, "B", 30, 31, refused), op(1, obtain, "B", 40, 41, ok),
		}, false, "linearizable"},
		{"an unknown obtain cannot take a valid lock", []safety.Op{
			op(0, obtain, "A", 0, 1, ok), op(2, obtain, "T", 5, 6, unknown),
			op(0, release, "A", 20, 21, refused),
		}, false, "NOT linearizable"},
		{"an unknown release may apply within MaxDelay", []safety.Op{
			ttl(op(0, obtain, "A", 0, 1, ok), time.Minute), op(0, release, "A", 2, 3, unknown),
			op(1, obtain, "B", 4000, 4001, refused), op(1, obtain, "B", 4500, 4501, ok),
		}, false, "linearizable"},
		{"an unknown release cannot apply after MaxDelay", []safety.Op{
			ttl(op(0, obtain, "A", 0, 1, ok), time.Minute), op(0, release, "A", 2, 3, unknown),
			op(1, obtain, "B", 5500, 5501, refused), op(1, obtain, "B", 6000, 6001, ok),
		}, false, "NOT linearizable"},
		{"fence tokens increase", []safety.Op{
			fenced(op(0, obtain, "A", 0, 1, ok), 1), op(0, release, "A", 2, 3, ok),
			fenced(op(1, obtain, "B", 4, 5, ok), 2),
		}, true, "linearizable"},
		{"a fence token that went back", []safety.Op{
			fenced(op(0, obtain, "A", 0, 1, ok), 5), op(0, release, "A", 2, 3, ok),
			fenced(op(1, obtain, "B", 4, 5, ok), 3),
		}, true, "NOT linearizable"},
		{"a fence token that went back, unchecked", []safety.Op{
			fenced(op(0, obtain, "A", 0, 1, ok), 5), op(0, release, "A", 2, 3, ok),
			fenced(op(1, obtain, "B", 4, 5, ok), 3),
		}, false, "linearizable"},
		{"the same token again keeps its fence token", []safety.Op{
			fenced(op(0, obtain, "A", 0, 1, ok), 1), fenced(op(0, obtain, "A", 2, 3, ok), 1),
		}, true, "linearizable"},
		{"the same token again with another fence token", []safety.Op{
			fenced(op(0, obtain, "A", 0, 1, ok), 1), fenced(op(0, obtain, "A", 2, 3, ok), 2),
		}, true, "NOT linearizable"},
		{"a short TTL, then a long one", []safety.Op{
			ttl(op(0, obtain, "A", 0, 1, ok), 10*ms), op(1, obtain, "B", 20, 21, ok),
		}, false, "linearizable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := safety.Linearizable(tc.ops, safety.CheckOptions{Fence: tc.fence, Slack: ms})
			assert.Equal(t, tc.want, resultName(v), "%v", v)
		})
	}
}

func TestOverlaps(t *testing.T) {
	ops := []safety.Op{
		op(0, safety.Obtain, "A", 0, 1, safety.OK),
		op(1, safety.Obtain, "B", 2, 3, safety.OK),           // overlaps A
		op(0, safety.Release, "A", 5, 6, safety.OK),          // A surely held until 5
		op(2, safety.Obtain, "C", 200, 201, safety.OK),       // after B's TTL
		op(1, safety.Release, "B", 300, 301, safety.Refused), // B's TTL ended at 102
	}
	require.Equal(t, 1, safety.Overlaps(ops, ms))
	require.Zero(t, safety.Overlaps(ops[2:], ms))
}

func TestFencedResource(t *testing.T) {
	r := safety.NewFencedResource()
	require.True(t, r.Write(0, "k", 1, 0, true))
	require.True(t, r.Write(1, "k", 3, 1, true))
	require.False(t, r.Write(0, "k", 2, 2, false), "a stale writer")
	require.False(t, r.Write(2, "k", 3, 3, true), "the same fence token twice")
	require.True(t, r.Write(2, "other", 1, 4, true), "keys are apart")
	rep := r.Check()
	require.Equal(t, 5, rep.Writes)
	require.Equal(t, 3, rep.Accepted)
	require.Equal(t, 1, rep.Stale)
	require.Len(t, rep.Violations, 1)
}

// mode gives a hand-written obtain a mode (and a semaphore's limit).
func mode(o safety.Op, m safety.Mode, limit int) safety.Op {
	o.Mode, o.Limit = m, limit
	return o
}

// The kinds' model, on histories small enough to judge by hand.
func TestKindsLinearizable_model(t *testing.T) {
	const (
		obtain  = safety.Obtain
		refresh = safety.Refresh
		release = safety.Release
		ok      = safety.OK
		refused = safety.Refused
		unknown = safety.Unknown
	)
	shared := func(o safety.Op) safety.Op { return mode(o, safety.Shared, 0) }
	sem := func(o safety.Op, limit int) safety.Op { return mode(o, safety.Semaphore, limit) }
	for _, tc := range []struct {
		name string
		ops  []safety.Op
		want string
	}{
		{"readers together", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), shared(op(1, obtain, "B", 2, 3, ok)),
		}, "linearizable"},
		{"a writer with a reader", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), op(1, obtain, "W", 2, 3, ok),
		}, "NOT linearizable"},
		{"a reader with a writer", []safety.Op{
			op(1, obtain, "W", 0, 1, ok), shared(op(0, obtain, "A", 2, 3, ok)),
		}, "NOT linearizable"},
		{"a writer once the readers left", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), shared(op(1, obtain, "B", 0, 1, ok)),
			op(0, release, "A", 2, 3, ok), op(1, release, "B", 2, 3, ok), op(2, obtain, "W", 4, 5, ok),
		}, "linearizable"},
		{"a writer once a reader's lease ended", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), op(1, obtain, "W", 150, 151, ok),
			op(0, release, "A", 160, 161, refused),
		}, "linearizable"},
		{"a reader's release after a writer took its place", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), op(1, obtain, "W", 150, 151, ok),
			op(0, release, "A", 160, 161, ok),
		}, "NOT linearizable"},
		{"a refreshed reader keeps the writer out", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), op(0, refresh, "A", 90, 91, ok), op(1, obtain, "W", 150, 151, ok),
		}, "NOT linearizable"},
		{"a semaphore of 2 with 2 holders", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 2), sem(op(1, obtain, "B", 2, 3, ok), 2),
		}, "linearizable"},
		{"a semaphore of 2 with 3 holders", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 2), sem(op(1, obtain, "B", 2, 3, ok), 2), sem(op(2, obtain, "C", 4, 5, ok), 2),
		}, "NOT linearizable"},
		{"a place freed by a release", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 2), sem(op(1, obtain, "B", 2, 3, ok), 2),
			op(0, release, "A", 4, 5, ok), sem(op(2, obtain, "C", 6, 7, ok), 2),
		}, "linearizable"},
		{"a place freed by one of two leases (either)", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 2), sem(op(1, obtain, "B", 0, 1, ok), 2),
			sem(op(2, obtain, "C", 99, 100, ok), 2),
			op(1, release, "B", 101, 102, ok), op(0, release, "A", 101, 102, refused),
		}, "linearizable"},
		{"a place freed by a lease that a release then finds held", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 2), sem(op(1, obtain, "B", 0, 1, ok), 2),
			sem(op(2, obtain, "C", 99, 100, ok), 2),
			op(1, release, "B", 101, 102, ok), op(0, release, "A", 101, 102, ok),
		}, "NOT linearizable"},
		{"a semaphore holder with a reader", []safety.Op{
			sem(op(0, obtain, "A", 0, 1, ok), 3), shared(op(1, obtain, "B", 2, 3, ok)),
		}, "NOT linearizable"},
		{"a refused obtain promises nothing (queued behind a writer)", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, refused)),
		}, "linearizable"},
		{"a release of unknown outcome may have freed the key", []safety.Op{
			shared(op(0, obtain, "A", 0, 1, ok)), op(0, release, "A", 2, 3, unknown), op(1, obtain, "W", 4, 5, ok),
		}, "linearizable"},
		{"an obtain of unknown outcome may never have held", []safety.Op{
			op(0, obtain, "A", 0, 1, unknown), shared(op(1, obtain, "B", 2, 3, ok)),
		}, "linearizable"},
		{"an obtain again once a writer's lease may have ended", []safety.Op{
			op(0, obtain, "W", 0, 1, ok), shared(op(1, obtain, "X", 2, 3, unknown)),
			shared(op(1, obtain, "X", 150, 151, ok)),
		}, "linearizable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := safety.KindsLinearizable(tc.ops, safety.CheckOptions{Slack: ms})
			assert.Equal(t, tc.want, resultName(v), "%v", v)
		})
	}
}

// Regressions: histories with a violation that the exclusive model finds,
// which the kinds model must find too, the operations of each case's moded
// taken as exclusive and then as shared (against an exclusive W).
func TestKindsLinearizable_violations(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ops   []safety.Op
		moded []int
	}{
		// A step placed later in the linearization must not apply at
		// an earlier instant. H holds the key surely until 99 (obtained
		// over [0,1], TTL 100); a refused refresh of H over [50,150]
		// takes H out at 99 at the earliest; W's obtain over [60,70]
		// returned before that, so W and H held the key together.
		{"instants never go back", []safety.Op{
			op(0, safety.Obtain, "H", 0, 1, safety.OK),
			op(0, safety.Refresh, "H", 50, 150, safety.Refused),
			op(1, safety.Obtain, "W", 60, 70, safety.OK),
		}, []int{0}},
		// An obtain by a token the model holds is judged as a fresh
		// obtain: X's obtain of unknown outcome over [2,3] cannot have
		// held while W held surely (until 99), and X's OK obtain over
		// [10,11] with the same token is one with W still holding.
		{"an obtain again after one of unknown outcome", []safety.Op{
			op(0, safety.Obtain, "W", 0, 1, safety.OK),
			op(1, safety.Obtain, "X", 2, 3, safety.Unknown),
			op(1, safety.Obtain, "X", 10, 11, safety.OK),
		}, []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ex := safety.Linearizable(tc.ops, safety.CheckOptions{Slack: ms})
			require.Equal(t, "NOT linearizable", resultName(ex), "exclusive model: %v", ex)
			for _, m := range []safety.Mode{safety.Exclusive, safety.Shared} {
				ops := slices.Clone(tc.ops)
				for _, i := range tc.moded {
					ops[i].Mode = m
				}
				v := safety.KindsLinearizable(ops, safety.CheckOptions{Slack: ms})
				assert.Equal(t, "NOT linearizable", resultName(v), "%s: %v", m, v)
			}
		})
	}
}
