package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// TestRunCmd_cluster: run and status with --cluster on a 3-master cluster,
// a URL with more seeds (?addr=), a fence key that shares the key's slot by
// its hash tag, and a waiter, whose queue status finds in the key's slot.
func TestRunCmd_cluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Redis Cluster")
	}
	cl := redistest.StartCluster(t, 3, 0)
	env := []string{"REDISLOCK_URL=redis://" + cl.Addrs[0] + "?addr=" + strings.Join(cl.Addrs[1:], "&addr=")}
	dir := t.TempDir()
	log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
	holder := start(t, nil, env, "run", "--cluster", "--fence-key", "{job}:fence", "--metadata", "holder", "job", "--", "sh", "-c", holdScript(log, release, 0))
	awaitLine(t, log, "started")
	waiter := start(t, nil, env, "run", "--cluster", "--wait", "1m", "job", "--", "true")
	eventually(t, "status sees the waiter", func() bool {
		code, out, _ := runCmd(t, nil, env, "status", "--cluster", "--fence-key", "{job}:fence", "job")
		return code == 0 && strings.Contains(out, "metadata  holder\n") && strings.Contains(out, "fence     1\n") &&
			strings.Contains(out, "waiters   1\n") && strings.Contains(out, "counter   1 ")
	})
	require.NoError(t, os.WriteFile(release, nil, 0o644))
	require.Equal(t, 0, holder.wait(t), holder.stderr.String())
	require.Equal(t, 0, waiter.wait(t), waiter.stderr.String())
	code, out, errOut := runCmd(t, nil, env, "status", "--cluster", "job")
	require.Equal(t, 1, code, errOut)
	require.Equal(t, "key       job\nheld      no\nwaiters   0\n", out)

	// A standalone server is not a cluster.
	srv := redistest.StartServer(t)
	code, _, errOut = runCmd(t, srv, nil, "run", "--cluster", "job", "--", "true")
	require.Equal(t, exitError, code)
	require.Contains(t, errOut, "is not a Redis Cluster")
}

// TestRunCmd_sentinel: run and status find the master through a Sentinel,
// named by --sentinel or by ?master_set= in the URL.
func TestRunCmd_sentinel(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a Sentinel deployment")
	}
	d := redistest.StartSentinel(t, 1, 1)
	url := "REDISLOCK_URL=redis://" + d.SentinelAddrs[0]
	marker := filepath.Join(t.TempDir(), "ran")
	code, _, errOut := runCmd(t, nil, []string{url}, "run", "--sentinel", redistest.MasterName, "--metadata", "via sentinel", "job", "--",
		"sh", "-c", "redis-cli -p "+strconv.Itoa(d.Master(t).Port)+" get job > "+marker)
	require.Equal(t, 0, code, errOut)
	require.Contains(t, readFile(t, marker), "via sentinel", "the lock was taken on the master")
	code, out, errOut := runCmd(t, nil, []string{url + "?master_set=" + redistest.MasterName}, "status", "job")
	require.Equal(t, 1, code, errOut)
	require.Contains(t, out, "held      no\n")
}
