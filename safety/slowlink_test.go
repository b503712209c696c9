package safety_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/safety"
)

// A link on which every reply arrives late and stays so (a far region, a
// saturated proxy): an Obtain with a 150ms deadline returns not obtained,
// and the lock the server granted is released by the cleanup within the
// release timeout (2s), whether the cleanup can reuse the connection (busy)
// or must reconnect, which costs a round trip of its own (idle: the
// deadline closed the connection). The latencies are below and above the
// 250ms that each cleanup attempt had before; the slowest one needs
// 2 x 800ms of the 2s. 0 orphans.
func TestSlowLink_noOrphan(t *testing.T) {
	for _, latency := range []int{200, 400, 800} {
		for _, mode := range []string{"idle", "busy"} {
			t.Run(fmt.Sprintf("latency=%dms/%s", latency, mode), func(t *testing.T) {
				t.Parallel()
				srv := safety.StartServer(t, safety.ServerOptions{})
				warmScripts(t, srv)
				p := startProxy(t, srv.Addr)
				locker := redislock.New(connection(t, p, mode))
				p.toxic("latency", "downstream", fmt.Sprintf(`{"latency":%d}`, latency))
				ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
				start := time.Now()
				_, err := locker.Obtain(ctx, "k", time.Minute, &redislock.Options{FenceKey: "k:fence"})
				took := time.Since(start)
				cancel()
				require.ErrorIs(t, err, redislock.ErrNotObtained)
				require.ErrorIs(t, err, context.DeadlineExceeded)
				requireReturnedBy(t, start, took, 150*time.Millisecond, "the call outlived its deadline")
				gone := waitGone(t, srv, "k", redislock.DefaultReleaseTimeout+deadlineMargin)
				require.Equal(t, "1", srv.MustDo(t, "GET", "k:fence"), "the server granted the lock")
				t.Logf("the orphan was released %v after the Obtain returned", gone.Round(time.Millisecond))
			})
		}
	}
}
