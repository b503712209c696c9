package redistest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

func TestServer(t *testing.T) {
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	require.NoError(t, client.Do(t.Context(), client.B().Set().Key("k").Value("v").Build()).Error())
	got, err := srv.Do(t, "GET", "k")
	require.NoError(t, err)
	require.Equal(t, "v", got)
	pid := srv.Pid()
	require.Positive(t, pid)

	// Pause: a command times out; Resume: it answers again.
	srv.Pause(t)
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	err = client.Do(ctx, client.B().Get().Key("k").Build()).Error()
	cancel()
	require.Error(t, err)
	srv.Resume(t)
	require.Eventually(t, func() bool {
		v, err := client.Do(t.Context(), client.B().Get().Key("k").Build()).ToString()
		return err == nil && v == "v"
	}, 5*time.Second, 20*time.Millisecond)

	// Stop (a crash without persistence) and Restart on the same port.
	srv.Stop(t)
	require.Zero(t, srv.Pid())
	srv.Restart(t)
	require.NotEqual(t, pid, srv.Pid())
	got, err = srv.Do(t, "EXISTS", "k")
	require.NoError(t, err)
	require.Equal(t, "0", got)
}

func TestCluster(t *testing.T) {
	cl := redistest.StartCluster(t, 3, 0)
	require.Len(t, cl.Addrs, 3)
	client := cl.Client(t)
	for _, key := range []string{"a", "b", "c", "d"} {
		require.NoError(t, client.Do(t.Context(), client.B().Set().Key(key).Value(key).Build()).Error())
		v, err := client.Do(t.Context(), client.B().Get().Key(key).Build()).ToString()
		require.NoError(t, err)
		require.Equal(t, key, v)
	}
}
