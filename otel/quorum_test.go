package redislockotel_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

// TestObserver_quorum checks the node counts of a quorum's spans, and the
// error.type of a lock that no majority either way decided.
func TestObserver_quorum(t *testing.T) {
	var servers []*redistest.Server
	var clients []rueidis.Client
	for range 3 {
		srv := redistest.StartServer(t)
		servers = append(servers, srv)
		clients = append(clients, newClient(t, srv.Addr, false))
	}
	tm := newTelemetry(t)
	locker := redislock.NewQuorum(clients, redislockotel.Instrument(tm.options()...))
	ctx := context.Background()

	servers[0].Stop(t)
	lock, err := locker.Obtain(ctx, "q", 10*time.Second, nil)
	require.NoError(t, err)
	require.NoError(t, lock.Release(ctx))
	servers[1].Stop(t)
	_, err = locker.Obtain(ctx, "q", 10*time.Second, nil)
	require.ErrorIs(t, err, redislock.ErrNoQuorum)

	got := tm.lockSpans()
	require.Len(t, got, 3)
	for i, want := range [][3]int64{{2, 0, 1}, {2, 0, 1}, {1, 0, 2}} {
		attrs := attrsOf(got[i].Attributes)
		assert.Equal(t, want[0], attrs["redislock.nodes.granted"], "span %d", i)
		assert.Equal(t, want[1], attrs["redislock.nodes.refused"], "span %d", i)
		if i == 1 {
			// The release returns once two nodes deleted the lock: the
			// stopped node's failure counts only if it came first.
			assert.Contains(t, []any{int64(0), int64(1)}, attrs["redislock.nodes.failed"], "span %d", i)
			continue
		}
		assert.Equal(t, want[2], attrs["redislock.nodes.failed"], "span %d", i)
	}
	assert.Equal(t, codes.Error, got[2].Status.Code)
	assert.Equal(t, "no_quorum", attrsOf(got[2].Attributes)["error.type"])
}
