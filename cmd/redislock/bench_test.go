package main

import (
	"bytes"
	"context"
	"errors"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// requireSummary checks that out holds a successful summary and returns the
// number of acquisitions it reports.
func requireSummary(t *testing.T, out string) int {
	t.Helper()
	for _, line := range []string{
		"summary", "time to acquire  mean", "p50", "p99", "max",
		"contention", "attempts", "per acquisition", "not obtained",
		"errors           0", "violations       0", "\nok\n",
	} {
		require.Contains(t, out, line)
	}
	m := regexp.MustCompile(`acquisitions\s+(\d+) in [0-9.]+s: \d+/s`).FindStringSubmatch(out)
	require.NotNil(t, m, "no acquisitions line in:\n%s", out)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	require.Positive(t, n, out)
	return n
}

func TestRun_bench_miniredis(t *testing.T) {
	code, out, errOut := runBench(t, t.Context(), "bench", "-duration", "300ms", "-interval", "100ms")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Empty(t, errOut)
	require.Contains(t, out, "embedded miniredis")
	requireSummary(t, out)
	require.Contains(t, out, "fence off")
	require.NotContains(t, out, "fence            ")

	// A header, then progress lines: elapsed, acquisitions, per second,
	// errors.
	require.Contains(t, out, "elapsed")
	progress := regexp.MustCompile(`(?m)^\s+[0-9.]+s\s+\d+\s+\d+\s+\d+$`).FindAllString(out, -1)
	require.GreaterOrEqual(t, len(progress), 2, out)

	// With 8 workers on 2 keys, some attempts find the lock held.
	m := regexp.MustCompile(`contention\s+([0-9.]+) \((\d+) of (\d+) attempts`).FindStringSubmatch(out)
	require.NotNil(t, m, out)
	contended, _ := strconv.Atoi(m[2])
	attempts, _ := strconv.Atoi(m[3])
	require.Positive(t, contended, out)
	require.Greater(t, attempts, contended, out)
}

func TestRun_bench_fence(t *testing.T) {
	code, out, errOut := runBench(t, t.Context(), "bench", "-fence", "-duration", "300ms", "-interval", "100ms", "-workers", "4", "-keys", "3")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	n := requireSummary(t, out)
	require.Contains(t, out, "fence on")
	require.Contains(t, out, "fence            ok: "+strconv.Itoa(n)+" fence tokens, strictly increasing per key")
}

// TestRun_bench_redisServer runs the demo, fenced, against a real
// redis-server, and checks what it left in Redis.
func TestRun_bench_redisServer(t *testing.T) {
	srv := redistest.StartServer(t)
	code, out, errOut := runBench(t, t.Context(), "bench", "-addr", srv.Addr, "-fence", "-duration", "300ms", "-interval", "100ms")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "Redis standalone at "+srv.Addr)
	n := requireSummary(t, out)
	require.Contains(t, out, "fence            ok")

	// Every acquisition incremented its key's fence counter once.
	total := 0
	for i := range 2 {
		v, err := srv.Do(t, "GET", "redislock:demo:{"+strconv.Itoa(i)+"}:fence")
		require.NoError(t, err)
		if v != "" {
			c, err := strconv.Atoi(v)
			require.NoError(t, err, v)
			total += c
		}
	}
	require.GreaterOrEqual(t, total, n)
}

// TestRun_bench_cluster runs the demo, fenced, against a 3-master Redis
// Cluster: a lock key and its fence key share a slot by their hash tag.
func TestRun_bench_cluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cl := redistest.StartCluster(t, 3, 0)
	code, out, errOut := runBench(t, t.Context(), "bench", "-cluster", "-addr", strings.Join(cl.Addrs, ","),
		"-fence", "-keys", "6", "-duration", "300ms", "-interval", "100ms")
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "Redis cluster at ")
	requireSummary(t, out)
	require.Contains(t, out, "fence            ok")
}

func TestRun_bench_clusterOnStandalone(t *testing.T) {
	srv := redistest.StartServer(t)
	code, out, errOut := runBench(t, t.Context(), "bench", "-cluster", "-addr", srv.Addr, "-duration", "100ms")
	require.Equal(t, 1, code, out)
	require.Contains(t, errOut, "is not a Redis Cluster")
}

func TestRun_bench_unreachable(t *testing.T) {
	code, out, errOut := runBench(t, t.Context(), "bench", "-addr", "127.0.0.1:1", "-duration", "100ms")
	require.Equal(t, 1, code, out)
	require.Empty(t, out)
	require.Contains(t, errOut, "redislock bench: connect to 127.0.0.1:1")
}

// TestRun_bench_interrupted: a ctx that ends (Ctrl-C in main) stops the run
// early, and the summary is still printed.
func TestRun_bench_interrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	code, out, errOut := runBench(t, ctx, "bench", "-duration", "1m", "-interval", "50ms")
	require.Less(t, time.Since(start), 10*time.Second)
	require.Equal(t, 0, code, "stdout:\n%s\nstderr:\n%s", out, errOut)
	require.Contains(t, out, "interrupted after")
	requireSummary(t, out)
}

// TestSummary_fail: a violation, a fence token out of order or an error
// fails the run with exit status 1.
func TestSummary_fail(t *testing.T) {
	st := newStats()
	st.record(time.Millisecond)
	st.acquired.Store(10)
	st.calls.Store(10)
	st.violations.Store(1)
	st.fenceBad.Store(2)
	st.fail(errors.New("release redislock:demo:{0}: boom"))
	var out bytes.Buffer
	code := summary(&out, config{fence: true}, time.Second, false, st)
	require.Equal(t, 1, code)
	require.Contains(t, out.String(), "violations       1")
	require.Contains(t, out.String(), "fence            FAILED: 2 of 10")
	require.Contains(t, out.String(), "first: release redislock:demo:{0}: boom")
	require.Contains(t, out.String(), "FAIL: 1 errors, 1 mutual exclusion violations, 2 fence tokens out of order")
}
