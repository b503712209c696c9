package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// runBench runs the command with args and returns its exit status, stdout
// and stderr.
func runBench(t *testing.T, ctx context.Context, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

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

func TestRun_usage(t *testing.T) {
	const usage = "usage: redislock bench [flags]"
	for _, tc := range []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{"no args", nil, []string{"usage:", "redislock bench [flags]"}},
		{"-h", []string{"-h"}, []string{"usage:", "redislock bench [flags]"}},
		{"help", []string{"help"}, []string{"usage:"}},
		{"unknown command", []string{"serve"}, []string{`unknown command "serve"`, "usage:"}},
		{"bench -h", []string{"bench", "-h"}, []string{usage, "-addr", "-cluster", "-workers", "-keys", "-duration", "-ttl", "-hold", "-retry", "-fence", "-interval"}},
		{"unknown flag", []string{"bench", "-nope"}, []string{"flag provided but not defined: -nope", usage}},
		{"not a number", []string{"bench", "-workers", "many"}, []string{`invalid value "many" for flag -workers`, usage}},
		{"argument", []string{"bench", "extra"}, []string{`unexpected argument "extra"`, usage}},
		{"workers 0", []string{"bench", "-workers", "0"}, []string{"-workers must be between 1 and 10000, got 0", usage}},
		{"workers too many", []string{"bench", "-workers", "10001"}, []string{"-workers must be between 1 and 10000", usage}},
		{"keys 0", []string{"bench", "-keys", "0"}, []string{"-keys must be between 1 and 1000000, got 0", usage}},
		{"duration 0", []string{"bench", "-duration", "0s"}, []string{"-duration must be positive, got 0s", usage}},
		{"duration negative", []string{"bench", "-duration", "-1s"}, []string{"-duration must be positive, got -1s", usage}},
		{"ttl under 1ms", []string{"bench", "-ttl", "999us"}, []string{"-ttl must be between 1ms and 24h, got 999µs", usage}},
		{"ttl 0", []string{"bench", "-ttl", "0"}, []string{"-ttl must be between 1ms and 24h, got 0s", usage}},
		{"hold negative", []string{"bench", "-hold", "-1ms"}, []string{"-hold must not be negative", usage}},
		{"hold not under ttl", []string{"bench", "-ttl", "10ms", "-hold", "10ms"}, []string{"-hold (10ms) must be shorter than -ttl (10ms)", usage}},
		{"retry 0", []string{"bench", "-retry", "0"}, []string{"-retry must be positive, got 0s", usage}},
		{"interval 0", []string{"bench", "-interval", "0"}, []string{"-interval must be positive, got 0s", usage}},
		{"cluster without addr", []string{"bench", "-cluster"}, []string{"-cluster needs -addr", usage}},
		{"addr without port", []string{"bench", "-addr", "localhost"}, []string{`-addr: "localhost" is not a host:port`, usage}},
		{"addr empty item", []string{"bench", "-cluster", "-addr", "127.0.0.1:7000,"}, []string{`-addr: "" is not a host:port`, usage}},
		{"several addrs without cluster", []string{"bench", "-addr", "127.0.0.1:7000,127.0.0.1:7001"}, []string{"several addresses need -cluster", usage}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runBench(t, t.Context(), tc.args...)
			assert.Equal(t, 2, code)
			assert.Empty(t, out, "nothing on stdout")
			for _, want := range tc.want {
				assert.Contains(t, errOut, want)
			}
			assert.NotContains(t, errOut, "goroutine ", "no stack trace")
		})
	}
}

// TestHistogram_quantile checks the histogram against exact quantiles of a
// sorted sample: within 1/16 above, never below, and an exact max and mean.
func TestHistogram_quantile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h histogram
	var all []time.Duration
	var sum time.Duration
	for range 100_000 {
		// Log-uniform from 1ns to about 1s.
		d := time.Duration(1 << r.IntN(30))
		d += time.Duration(r.Int64N(int64(d)))
		h.record(d)
		all = append(all, d)
		sum += d
	}
	slices.Sort(all)
	require.Equal(t, all[len(all)-1], h.max)
	require.Equal(t, sum/time.Duration(len(all)), h.mean())
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := all[max(int(q*float64(len(all)))-1, 0)]
		got := h.quantile(q)
		require.GreaterOrEqual(t, got, exact, "q %v", q)
		require.LessOrEqual(t, float64(got), float64(exact)*(1+1.0/16)+1, "q %v", q)
	}

	// Every value falls in a bucket whose upper bound is at least the value
	// and within 1/16 of it.
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 40, 1<<40 + 12345, 1 << 62} {
		b := bucket(v)
		require.GreaterOrEqual(t, upper(b), v, "v %d", v)
		require.LessOrEqual(t, float64(upper(b)), float64(v)*(1+1.0/16)+1, "v %d", v)
		if b > 0 {
			require.Less(t, upper(b-1), v, "v %d", v)
		}
	}
	var empty histogram
	require.Zero(t, empty.mean())
}

// TestSummary_fail: a violation, a fence token out of order or an error
// fails the run with exit status 1.
func TestSummary_fail(t *testing.T) {
	var h histogram
	h.record(time.Millisecond)
	st := &stats{}
	st.acquired.Store(10)
	st.calls.Store(10)
	st.violations.Store(1)
	st.fenceBad.Store(2)
	st.fail(errors.New("release redislock:demo:{0}: boom"))
	var out bytes.Buffer
	code := summary(&out, config{fence: true}, time.Second, false, st, &h)
	require.Equal(t, 1, code)
	require.Contains(t, out.String(), "violations       1")
	require.Contains(t, out.String(), "fence            FAILED: 2 of 10")
	require.Contains(t, out.String(), "first: release redislock:demo:{0}: boom")
	require.Contains(t, out.String(), "FAIL: 1 errors, 1 mutual exclusion violations, 2 fence tokens out of order")
}
