package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// TestStatusCmd reads a held key (metadata, TTL, fence token, a waiter
// queued, the fence counter) and a free one, as text and as JSON, and never
// shows the holder's token.
func TestStatusCmd(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
	for range 2 { // the fence counter at 2: the holder's fence token is 3
		code, _, errOut := runCmd(t, srv, nil, "run", "--fence-key", "job:fence", "job", "--", "true")
		require.Equal(t, 0, code, errOut)
	}
	holder := start(t, srv, nil, "run", "--ttl", "1m", "--metadata", "report on web-1", "--fence-key", "job:fence", "job", "--",
		"sh", "-c", "env > "+filepath.Join(dir, "env")+"; "+holdScript(log, release, 0))
	awaitLine(t, log, "started")
	waiter := start(t, srv, nil, "run", "--wait", "1m", "job", "--", "true")
	eventually(t, "the waiter is queued", func() bool { return llen(t, srv) > 0 })

	token, _, ok := strings.Cut(get(t, srv, "job"), "\x00")
	require.True(t, ok)
	require.NotEmpty(t, token)
	require.NotContains(t, readFile(t, filepath.Join(dir, "env")), token, "the command never sees the token")

	code, out, errOut := runCmd(t, srv, nil, "status", "--fence-key", "job:fence", "job")
	require.Equal(t, 0, code, errOut)
	require.Empty(t, errOut)
	require.NotContains(t, out, token)
	for _, want := range []string{"key       job\n", "held      yes\n", "metadata  report on web-1\n", "fence     3\n", "waiters   1\n", "counter   3 (job:fence, "} {
		require.Contains(t, out, want)
	}
	m := strings.SplitN(out[strings.Index(out, "ttl       ")+len("ttl       "):], "\n", 2)[0]
	ttl, err := time.ParseDuration(m)
	require.NoError(t, err, out)
	require.Positive(t, ttl)
	require.LessOrEqual(t, ttl, time.Minute)

	code, out, errOut = runCmd(t, srv, nil, "status", "--json", "job")
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, out, token)
	var st map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &st), out)
	require.Equal(t, "job", st["key"])
	require.Equal(t, true, st["held"])
	require.Equal(t, "report on web-1", st["metadata"])
	require.Equal(t, float64(3), st["fence_token"])
	require.Equal(t, float64(1), st["waiters"])
	require.Greater(t, st["ttl_ms"], float64(0))
	require.LessOrEqual(t, st["ttl_ms"], float64(time.Minute/time.Millisecond))
	require.NotContains(t, st, "fence_counter")

	require.NoError(t, os.WriteFile(release, nil, 0o644))
	require.Equal(t, 0, holder.wait(t), holder.stderr.String())
	require.Equal(t, 0, waiter.wait(t), waiter.stderr.String())

	// Free.
	code, out, errOut = runCmd(t, srv, nil, "status", "job")
	require.Equal(t, 1, code, errOut)
	require.Equal(t, "key       job\nheld      no\nwaiters   0\n", out)
	code, out, errOut = runCmd(t, srv, nil, "status", "--json", "--fence-key", "job:fence", "job")
	require.Equal(t, 1, code, errOut)
	require.JSONEq(t, `{"key":"job","held":false,"waiters":0,"fence_key":"job:fence","fence_counter":3}`, out)

	// A lock obtained with neither metadata nor fence key holds its token
	// alone: held, nothing more to tell.
	_, err = srv.Do(t, "SET", "bare", "sometoken", "PX", "60000")
	require.NoError(t, err)
	code, out, _ = runCmd(t, srv, nil, "status", "bare")
	require.Equal(t, 0, code)
	require.NotContains(t, out, "sometoken")
	require.Contains(t, out, "held      yes\nmetadata  \nttl       ")
}

// TestStatusCmd_usage: bad usage is 2, an unreachable server 125, and
// --help a manual.
func TestStatusCmd_usage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "no KEY given"},
		{[]string{"a", "b"}, `unexpected argument "b" after KEY`},
		{[]string{"--url", "redis://u:s3cret@h:x", "a"}, "--url: redis://u:xxxxx@h:x is not a Redis URL"},
		{[]string{"--json=maybe", "a"}, `invalid boolean value "maybe" for -json`},
	} {
		code, out, errOut := runCmd(t, nil, nil, append([]string{"status"}, tc.args...)...)
		require.Equal(t, exitUsage, code, errOut)
		require.Empty(t, out)
		require.Contains(t, errOut, "redislock status: "+tc.want)
		require.Contains(t, errOut, statusSynopsis)
		require.NotContains(t, errOut, "s3cret")
	}

	code, _, errOut := runCmd(t, nil, []string{"REDISLOCK_URL=redis://127.0.0.1:1"}, "status", "a")
	require.Equal(t, exitError, code)
	require.Contains(t, errOut, "redislock status: connect to redis://127.0.0.1:1: ")

	code, out, _ := runBench(t, t.Context(), "status", "--help")
	require.Equal(t, 0, code)
	for _, want := range []string{"SYNOPSIS", "GET KEY", "PTTL KEY", "LLEN", "--json\n", "--fence-key KEY", "(default: none)", "EXIT STATUS", "\n  125 "} {
		require.Contains(t, out, want)
	}
}
