package safety_test

import (
	"net"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// clients returns n recorded clients, each with a rueidis client of its own
// to addr (so that each has its own connections).
func clients(t *testing.T, n int, addr string, rec *safety.Recorder, opts ...func(*rueidis.ClientOption)) []*safety.Client {
	t.Helper()
	out := make([]*safety.Client, n)
	for i := range out {
		rc := safety.NewClient(t, addr, opts...)
		out[i] = &safety.Client{ID: i, Locker: redislock.New(rc), Rec: rec}
	}
	return out
}

// requireSafe runs both checkers on a history and fails t on any violation.
func requireSafe(t *testing.T, rec *safety.Recorder, res *safety.FencedResource, fence bool) {
	t.Helper()
	ops := rec.Ops()
	t.Logf("history: %v", safety.Summarize(ops))
	overlaps := safety.Overlaps(ops, 5*time.Millisecond)
	t.Logf("overlaps: %d", overlaps)
	v := safety.Linearizable(ops, safety.CheckOptions{Fence: fence, VisualizeDir: t.TempDir()})
	t.Logf("porcupine: %v", v)
	require.Zero(t, overlaps, "two tokens held one key at once")
	require.Equal(t, "linearizable", resultName(v), "porcupine: %v", v)
	if res != nil {
		rep := res.Check()
		t.Logf("fenced resource: %v", rep)
		require.Empty(t, rep.Violations, "writes rejected while their lock was valid")
	}
}

func resultName(v safety.Verdict) string {
	s := v.String()
	for i := range s {
		if s[i] == ':' {
			return s[:i]
		}
	}
	return s
}

// rueidisDialer is a dialer with a timeout, for clients that must fail fast.
func rueidisDialer(d time.Duration) net.Dialer { return net.Dialer{Timeout: d} }
