package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// TestRunCmd_exclusive: two runners, each running a command three times
// under one lock with --wait, never overlap: the log they share alternates
// start and end of one command at a time.
func TestRunCmd_exclusive(t *testing.T) {
	srv := redistest.StartServer(t)
	log := filepath.Join(t.TempDir(), "log")
	script := fmt.Sprintf("echo start $1 >> %s; sleep 0.2; echo end $1 >> %s", log, log)
	const rounds = 3
	var wg sync.WaitGroup
	codes := make([][]int, 2)
	for r := range 2 {
		wg.Go(func() {
			for i := range rounds {
				id := fmt.Sprintf("%d.%d", r, i)
				code, _, errOut := runCmd(t, srv, nil, "run", "--wait", "1m", "job", "--", "sh", "-c", script, "sh", id)
				assert.Empty(t, errOut, id)
				codes[r] = append(codes[r], code)
			}
		})
	}
	wg.Wait()
	require.Equal(t, [][]int{{0, 0, 0}, {0, 0, 0}}, codes)

	lines := strings.Split(strings.TrimSpace(readFile(t, log)), "\n")
	require.Len(t, lines, 2*2*rounds, "%q", lines)
	seen := map[string]bool{}
	for i := 0; i < len(lines); i += 2 {
		id, ok := strings.CutPrefix(lines[i], "start ")
		require.True(t, ok, "line %d: %q in %q", i, lines[i], lines)
		require.Equal(t, "end "+id, lines[i+1], "another command started before %s ended: %q", id, lines)
		require.False(t, seen[id], id)
		seen[id] = true
	}
	require.Len(t, seen, 2*rounds)
	require.Empty(t, get(t, srv, "job"), "released")
}

// TestRunCmd_waitZero: without --wait, a run that finds the lock held exits
// at once with 75 (or --conflict-exit-code) while the holder runs, and its
// command does not run.
func TestRunCmd_waitZero(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
	holder := start(t, srv, nil, "run", "--metadata", "the holder", "job", "--", "sh", "-c", holdScript(log, release, 0))
	awaitLine(t, log, "started")

	other := filepath.Join(dir, "other")
	code, out, errOut := runCmd(t, srv, nil, "run", "job", "--", "touch", other)
	require.Equal(t, exitNotObtained, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, `lock "job" is held by another: "the holder", ttl `)
	require.Contains(t, errOut, "the command did not run")

	code, _, errOut = runCmd(t, srv, nil, "run", "--conflict-exit-code", "0", "job", "--", "touch", other)
	require.Equal(t, 0, code, errOut)
	code, _, errOut = runCmd(t, srv, nil, "run", "--conflict-exit-code", "3", "--wait", "200ms", "job", "--", "touch", other)
	require.Equal(t, 3, code, errOut)
	require.Contains(t, errOut, "(waited 200ms)")
	require.Zero(t, llen(t, srv), "the waiter that gave up left the queue")

	require.False(t, holder.exited(), "the holder ran all along")
	require.NoFileExists(t, other)
	require.NoError(t, os.WriteFile(release, nil, 0o644))
	require.Equal(t, 0, holder.wait(t), holder.stderr.String())
	require.Equal(t, "started\ndone\n", readFile(t, log))
}

// TestRunCmd_lost: a lock key deleted while the command runs gets the
// command SIGTERM before the TTL would have expired (the watchdog refreshes
// every third of it), and run exits 76. A command that ignores SIGTERM gets
// SIGKILL --kill-after later.
func TestRunCmd_lost(t *testing.T) {
	srv := redistest.StartServer(t)
	const ttl = 3 * time.Second
	for _, tc := range []struct {
		name      string
		trap      string // in the script, before anything else
		killAfter string
		wantLog   string
		wantKill  string
	}{
		{"SIGTERM", "trap 'echo TERM >> LOG; exit 9' TERM; ", "1m", "started\nTERM\n", "sending SIGTERM to the command, SIGKILL in 1m0s"},
		{"SIGKILL", "trap '' TERM; ", "300ms", "started\n", "sending SIGKILL to the command"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
			key := "job-" + tc.name
			script := strings.ReplaceAll(tc.trap, "LOG", log) + holdScript(log, release, 0)
			p := start(t, srv, nil, "run", "--ttl", ttl.String(), "--kill-after", tc.killAfter, key, "--", "sh", "-c", script)
			awaitLine(t, log, "started")
			require.NotEmpty(t, get(t, srv, key))

			_, err := srv.Do(t, "DEL", key)
			require.NoError(t, err)
			deleted := time.Now()
			require.Equal(t, exitLost, p.wait(t), p.stderr.String())
			require.Less(t, time.Since(deleted), ttl, "the command outlived the TTL the lock would have had")
			require.Equal(t, tc.wantLog, readFile(t, log), "stopped before it was done")
			require.Contains(t, p.stderr.String(), `lock "`+key+`" lost: its key was deleted, expired, or taken by another token`)
			require.Contains(t, p.stderr.String(), tc.wantKill)
			require.Empty(t, get(t, srv, key))
		})
	}
}

// TestRunCmd_signals: SIGTERM, SIGINT and SIGHUP sent to run reach the
// command, whose status run exits with, and the lock is released after it.
func TestRunCmd_signals(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP} {
		name := signalNames[sig]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
			key := "job-" + name
			trap := strings.TrimPrefix(name, "SIG")
			p := start(t, srv, nil, "run", key, "--", "sh", "-c", holdScript(log, release, 7, trap))
			awaitLine(t, log, "started")

			require.NoError(t, p.cmd.Process.Signal(sig))
			require.Equal(t, 7, p.wait(t), p.stderr.String())
			require.Equal(t, "started\n"+trap+"\n", readFile(t, log))
			require.Empty(t, get(t, srv, key), "released")
			require.NotContains(t, p.stderr.String(), "redislock") // sh may say how sleep ended
		})
	}

	// A signal while waiting for the lock: the command does not run.
	t.Run("waiting", func(t *testing.T) {
		dir := t.TempDir()
		log, release := filepath.Join(dir, "log"), filepath.Join(dir, "release")
		holder := start(t, srv, nil, "run", "job", "--", "sh", "-c", holdScript(log, release, 0))
		awaitLine(t, log, "started")
		waiter := start(t, srv, nil, "run", "--wait", "1m", "job", "--", "touch", filepath.Join(dir, "waiter"))
		eventually(t, "the waiter is queued", func() bool { return llen(t, srv) > 0 })

		require.NoError(t, waiter.cmd.Process.Signal(syscall.SIGTERM))
		require.Equal(t, 128+int(syscall.SIGTERM), waiter.wait(t))
		require.Contains(t, waiter.stderr.String(), `interrupted by SIGTERM while obtaining "job": the command did not run`)
		require.NoFileExists(t, filepath.Join(dir, "waiter"))
		// It left the queue before it exited: else the release would
		// pass the lock to it, gone, and the lock would stay held.
		require.Zero(t, llen(t, srv), "the waiter left the queue")
		require.NoError(t, os.WriteFile(release, nil, 0o644))
		require.Equal(t, 0, holder.wait(t))
		require.Empty(t, get(t, srv, "job"), "released, and passed to no one")
	})
}

// llen returns the length of the waiters' queue of "job".
func llen(t *testing.T, srv *redistest.Server) int {
	t.Helper()
	v, err := srv.Do(t, "LLEN", "job:redislock-waiters")
	require.NoError(t, err)
	var n int
	_, err = fmt.Sscan(v, &n)
	require.NoError(t, err)
	return n
}

// TestRunCmd_exitStatus: the command's status passes through (128+N for a
// signal N), and a command that cannot run is 126 or 127; the lock is
// released in every case.
func TestRunCmd_exitStatus(t *testing.T) {
	srv := redistest.StartServer(t)
	for _, tc := range []struct {
		argv []string
		want int
	}{
		{[]string{"true"}, 0},
		{[]string{"sh", "-c", "exit 42"}, 42},
		{[]string{"sh", "-c", "kill -KILL $$"}, 128 + int(syscall.SIGKILL)},
		{[]string{"/nonexistent/command"}, exitNotFound},
		{[]string{"no-such-command-on-path"}, exitNotFound},
		{[]string{os.DevNull}, exitCannotRun},
	} {
		t.Run(strings.Join(tc.argv, " "), func(t *testing.T) {
			code, _, errOut := runCmd(t, srv, nil, append([]string{"run", "job", "--"}, tc.argv...)...)
			require.Equal(t, tc.want, code, errOut)
			require.Empty(t, get(t, srv, "job"), "released")
		})
	}
}

// TestRunCmd_fence: with --fence-key the command gets its fence token, one
// more at each holder, and never the lock's token.
func TestRunCmd_fence(t *testing.T) {
	srv := redistest.StartServer(t)
	dir := t.TempDir()
	for i := 1; i <= 2; i++ {
		envFile := filepath.Join(dir, fmt.Sprint("env", i))
		code, _, errOut := runCmd(t, srv, nil, "run", "--fence-key", "job:fence", "job", "--", "sh", "-c", "env > "+envFile)
		require.Equal(t, 0, code, errOut)
		env := readFile(t, envFile)
		require.True(t, hasLine(env, fmt.Sprintf("%s=%d", fenceEnv, i)), env)
	}
	// Without --fence-key there is none.
	envFile := filepath.Join(dir, "env")
	code, _, errOut := runCmd(t, srv, nil, "run", "job", "--", "sh", "-c", "env > "+envFile)
	require.Equal(t, 0, code, errOut)
	require.NotContains(t, readFile(t, envFile), fenceEnv)
}

// TestRunCmd_usage: bad usage is exit status 2, with the problem and the
// synopsis on stderr; nothing runs, and a password never shows.
func TestRunCmd_usage(t *testing.T) {
	const synopsis = "usage: redislock run [flags] KEY [--] COMMAND [ARG...]"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"bad URL", nil, []string{"--url", "redis://locker:s3cr%2Fet@127.0.0.1:notaport", "job", "true"}, `--url: redis://locker:xxxxx@127.0.0.1:notaport is not a Redis URL`},
		{"bad URL scheme", nil, []string{"--url", "http://locker:s3cret@127.0.0.1", "job", "true"}, "--url: http://locker:xxxxx@127.0.0.1 is not a Redis URL: redis: invalid URL scheme: http"},
		{"bad REDISLOCK_URL", []string{"REDISLOCK_URL=redis://locker:s3cret@[::1"}, []string{"job", "true"}, "$REDISLOCK_URL: redis://locker:xxxxx@[::1 is not a Redis URL"},
		{"several addresses", nil, []string{"--url", "redis://127.0.0.1:1?addr=127.0.0.1:2", "job", "true"}, "--url: several addresses (?addr=) need --cluster or --sentinel"},
		{"cluster and sentinel", nil, []string{"--cluster", "--sentinel", "mymaster", "job", "true"}, "--cluster and Sentinel"},
		{"ttl 0", nil, []string{"--ttl", "0", "job", "true"}, "--ttl must be between 100ms and 8760h (365 days), got 0s"},
		{"ttl not a duration", nil, []string{"--ttl", "30", "job", "true"}, `invalid value "30" for flag -ttl`},
		{"ttl too long", nil, []string{"--ttl", "9000h", "job", "true"}, "--ttl must be between 100ms and 8760h"},
		{"wait negative", nil, []string{"--wait", "-1s", "job", "true"}, "--wait must not be negative"},
		{"kill-after negative", nil, []string{"--kill-after", "-1s", "job", "true"}, "--kill-after must not be negative"},
		{"conflict exit code", nil, []string{"--conflict-exit-code", "256", "job", "true"}, "--conflict-exit-code must be between 0 and 255"},
		{"metadata too long", nil, []string{"--metadata", strings.Repeat("m", 4097), "job", "true"}, "--metadata is 4097 bytes, over 4096"},
		{"fence key is the key", nil, []string{"--fence-key", "job", "job", "true"}, "--fence-key must differ from KEY"},
		{"no key", nil, []string{}, "no KEY given"},
		{"empty key", nil, []string{"", "true"}, "KEY is empty"},
		{"no command", nil, []string{"job"}, "no COMMAND given"},
		{"no command after --", nil, []string{"job", "--"}, "no COMMAND given"},
		{"flag after key", nil, []string{"job", "--wait", "1s", "--", "true"}, `"--wait" after KEY: flags go before KEY`},
		{"unknown flag", nil, []string{"--nope", "job", "true"}, "flag provided but not defined: -nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := runCmd(t, nil, tc.env, append([]string{"run"}, tc.args...)...)
			assert.Equal(t, exitUsage, code)
			assert.Empty(t, out)
			assert.Contains(t, errOut, "redislock run: "+tc.want)
			assert.Contains(t, errOut, synopsis)
			assert.Contains(t, errOut, `"redislock run --help"`)
			assert.NotContains(t, errOut, "s3cr")
		})
	}
}

// TestRunCmd_unreachable: Redis that cannot be reached is 125, the command
// does not run, and the password does not show.
func TestRunCmd_unreachable(t *testing.T) {
	marker := filepath.Join(t.TempDir(), "ran")
	code, out, errOut := runCmd(t, nil, nil, "run", "--url", "redis://locker:s3cret@127.0.0.1:1", "job", "--", "touch", marker)
	require.Equal(t, exitError, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "redislock run: connect to redis://locker:xxxxx@127.0.0.1:1: ")
	require.NotContains(t, errOut, "s3cret")
	require.NoFileExists(t, marker)
}

// TestRunCmd_help: --help is a manual on stdout: every flag with its
// default, the exit statuses, a crontab line.
func TestRunCmd_help(t *testing.T) {
	code, out, errOut := runBench(t, t.Context(), "run", "--help")
	require.Equal(t, 0, code)
	require.Empty(t, errOut)
	for _, want := range []string{
		"NAME", "SYNOPSIS", "redislock run [flags] KEY [--] COMMAND [ARG...]", "DESCRIPTION", "FLAGS", "EXIT STATUS", "ENVIRONMENT", "EXAMPLES",
		"--url URL", "(default: $REDISLOCK_URL, else redis://127.0.0.1:6379)", "--cluster\n", "(default: false)",
		"--sentinel NAME", "--ttl DURATION", "(default: 30s)", "--wait DURATION", "(default: 0s)",
		"--conflict-exit-code N", "(default: 75)", "--metadata TEXT", "(default: HOST:PID",
		"--fence-key KEY", "(default: none)", "--kill-after DURATION", "(default: 10s)",
		"\n  75 ", "\n  76 ", "\n  125 ", "\n  126 ", "\n  127 ", "0 3 * * * ",
	} {
		require.Contains(t, out, want)
	}
}

// TestRunCmd_runKilled: on Linux, a run killed with SIGKILL takes its
// command with it, and the lock expires after its TTL.
func TestRunCmd_runKilled(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("a parent-death signal is Linux's")
	}
	srv := redistest.StartServer(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := start(t, srv, nil, "run", "--ttl", "1s", "job", "--", "sh", "-c", "echo $$ > "+pidFile+"; exec sleep 60")
	eventually(t, "the command has written its pid", func() bool { return strings.HasSuffix(readFile(t, pidFile), "\n") })
	pid := strings.TrimSpace(readFile(t, pidFile))

	require.NoError(t, p.cmd.Process.Kill())
	p.wait(t)
	eventually(t, "the command is gone", func() bool {
		stat, err := os.ReadFile("/proc/" + pid + "/stat")
		// Gone, or a zombie that nobody has reaped yet.
		return err != nil || strings.Contains(string(stat), ") Z ")
	})
	eventually(t, "the lock has expired", func() bool { return get(t, srv, "job") == "" })
}

// awaitDequeued knows the library's queue entry: while a waiter of this
// process (its metadata, its key) is queued, it waits until its ctx ends.
// It matched the entry's last two fields before the entry got a kind field
// between them: it returned at once, and a run that gave up could exit
// before its entry left the queue (TestRunCmd_waitZero failed in CI).
func TestAwaitDequeued_matchesTheLibrarysEntry(t *testing.T) {
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	ctx := t.Context()
	holder, err := redislock.New(client).Obtain(ctx, "job", time.Minute, nil)
	require.NoError(t, err)
	defer func() { require.NoError(t, holder.Release(ctx)) }()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	waited := make(chan error, 1)
	go func() {
		_, err := redislock.New(client).Obtain(wctx, "job", time.Minute, &redislock.Options{Metadata: "me", RetryStrategy: redislock.LinearBackoff(time.Hour)})
		waited <- err
	}()
	eventually(t, "the waiter queues", func() bool { return llen(t, srv) == 1 })

	actx, acancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer acancel()
	awaitDequeued(actx, client, runConfig{key: "job", metadata: "me"})
	require.Error(t, actx.Err(), "awaitDequeued returned while this process' entry was queued")
	require.Equal(t, 1, llen(t, srv))

	// Another process' entry (other metadata) is not waited for.
	bctx, bcancel := context.WithTimeout(ctx, time.Minute)
	defer bcancel()
	awaitDequeued(bctx, client, runConfig{key: "job", metadata: "someone else"})
	require.NoError(t, bctx.Err())

	cancel()
	require.ErrorIs(t, <-waited, context.Canceled)
}
