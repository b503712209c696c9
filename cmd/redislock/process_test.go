package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// The tests of run and status start the command as a user does: a binary
// built once, in processes of their own, against a real redis-server.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// binary returns the path of the redislock command, built once per test
// binary into a directory that TestMain removes.
func binary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "redislock-bin-")
		if err != nil {
			buildErr = err
			return
		}
		binDir = dir
		binPath = filepath.Join(dir, "redislock")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	require.NoError(t, buildErr)
	return binPath
}

var binDir string

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// patience bounds every wait of these tests for a condition: generous for a
// loaded machine, since a wait that succeeds ends as soon as it does.
const patience = 30 * time.Second

// proc is one process of the redislock command.
type proc struct {
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	done           chan struct{}
	code           int
}

// start starts the command with args, REDISLOCK_URL naming srv (when not
// nil) and the environment variables env, and stops it at the end of the
// test if it is still running.
func start(t *testing.T, srv *redistest.Server, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(binary(t), args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	if srv != nil {
		p.cmd.Env = append(p.cmd.Env, "REDISLOCK_URL=redis://"+srv.Addr)
	}
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	// A command that outlives run keeps the pipes open: Wait gives up on
	// them after that long.
	p.cmd.WaitDelay = 10 * time.Second
	require.NoError(t, p.cmd.Start())
	go func() {
		defer close(p.done)
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Signal(syscall.SIGTERM) // passed to the command
			select {
			case <-p.done:
			case <-time.After(patience):
				_ = p.cmd.Process.Kill()
				<-p.done
			}
		}
	})
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(patience):
		t.Fatalf("%v still running after %v; stderr:\n%s", p.cmd.Args, patience, p.stderr.String())
	}
	return p.code
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// runCmd runs the command with args to its end and returns its exit
// status, stdout and stderr.
func runCmd(t *testing.T, srv *redistest.Server, env []string, args ...string) (int, string, string) {
	t.Helper()
	p := start(t, srv, env, args...)
	code := p.wait(t)
	return code, p.stdout.String(), p.stderr.String()
}

// eventually waits until cond holds, failing the test after patience.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(patience)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", patience, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readFile returns the content of path, "" while it does not exist.
func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return ""
	}
	require.NoError(t, err)
	return string(b)
}

// awaitLine waits until the file at path has a line equal to line.
func awaitLine(t *testing.T, path, line string) {
	t.Helper()
	eventually(t, fmt.Sprintf("%s has the line %q", path, line), func() bool {
		return hasLine(readFile(t, path), line)
	})
}

func hasLine(text, line string) bool {
	for l := range strings.Lines(text) {
		if strings.TrimSuffix(l, "\n") == line {
			return true
		}
	}
	return false
}

// holdScript is a shell command under the lock that appends "started" to
// the file log, then waits until the file release exists (for at most a
// minute, so that nothing outlives a failed test for long) and appends
// "done". Each signal in traps is recorded in log by its name, after which
// the script exits with status exit.
func holdScript(log, release string, exit int, traps ...string) string {
	var b strings.Builder
	for _, sig := range traps {
		fmt.Fprintf(&b, "trap 'echo %s >> %s; exit %d' %s; ", sig, log, exit, sig)
	}
	fmt.Fprintf(&b, "echo started >> %s; i=0; while [ ! -e %s ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo done >> %s",
		log, release, log)
	return b.String()
}

// get returns the value of key ("" when it does not exist).
func get(t *testing.T, srv *redistest.Server, key string) string {
	t.Helper()
	v, err := srv.Do(t, "GET", key)
	require.NoError(t, err)
	return v
}
