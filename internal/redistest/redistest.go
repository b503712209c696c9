// Package redistest starts real redis-server processes on free loopback
// ports for the tests and benchmarks of this repository: a standalone server
// and a local Redis Cluster. Every process is stopped, by its own pid, when
// the test that started it ends.
package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// RequireEnv names the environment variable that turns a missing
// redis-server from a skip into a failure. make test and CI set it to 1.
const RequireEnv = "REDISLOCK_REQUIRE_REDIS"

// Available reports whether redis-server is on PATH.
func Available() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Require skips tb, loudly, when redis-server is missing; when RequireEnv is
// 1 it fails tb instead.
func Require(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	const msg = "redis-server is missing: integration tests need it; install it with: apt-get install -y redis-server"
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatal(msg)
	}
	tb.Skip("SKIPPED: " + msg)
}

// Server is one redis-server process on 127.0.0.1.
type Server struct {
	Addr string
	Port int
	Dir  string // its working directory (dump, AOF, logs)

	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// StartServer starts a standalone redis-server on a free port, without
// persistence, in a temporary directory of its own; args are appended to its
// command line (for instance "--enable-debug-command", "local"). It returns
// once the server answers PING, and stops it when tb ends.
func StartServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	Require(tb)
	dir := tb.TempDir()
	var lastErr error
	for range 5 {
		port, err := freePort(false)
		if err != nil {
			tb.Fatal(err)
		}
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, args: args}
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.shutdown)
			return s
		}
	}
	tb.Fatalf("redistest: starting redis-server: %v", lastErr)
	return nil
}

// start runs the process and waits for PING.
func (s *Server) start() error {
	argv := append([]string{
		"--port", strconv.Itoa(s.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.Dir,
		"--logfile", filepath.Join(s.Dir, "redis.log"),
	}, s.args...)
	cmd := exec.Command("redis-server", argv...)
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-done:
			log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
			return fmt.Errorf("redis-server on port %d exited: %s", s.Port, lastLines(string(log), 5))
		default:
		}
		if reply, err := s.do(200*time.Millisecond, "PING"); err == nil && reply == "PONG" {
			return nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("redis-server on port %d did not answer PING within 10s", s.Port)
}

// Client returns a rueidis client to the server, closed when tb ends. opts
// may adjust its options.
func (s *Server) Client(tb testing.TB, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	opt := rueidis.ClientOption{InitAddress: []string{s.Addr}}
	for _, f := range opts {
		f(&opt)
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("redistest: client to %s: %v", s.Addr, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// Do runs one command on a connection of its own and returns the reply as
// text, as redis-cli prints it.
func (s *Server) Do(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	return s.do(5*time.Second, args...)
}

func (s *Server) do(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "redis-cli", append([]string{"-p", strconv.Itoa(s.Port)}, args...)...).CombinedOutput()
	reply := strings.TrimSpace(string(out))
	if err != nil {
		return reply, fmt.Errorf("redis-cli %s: %w: %s", strings.Join(args, " "), err, reply)
	}
	if strings.HasPrefix(reply, "ERR") || strings.HasPrefix(reply, "Could not connect") {
		return reply, errors.New(reply)
	}
	return reply, nil
}

// Pid returns the process id of the running server (0 when stopped).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.cmd.Process == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop kills the server with SIGKILL (a crash: nothing is saved) and waits
// for it to exit.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.kill()
}

// Restart starts the server again on the same port, directory and
// arguments, after Stop.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	var err error
	for range 50 { // the port may linger for a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("redistest: restarting redis-server: %v", err)
}

// Pause stops the server with SIGSTOP: it holds its connections and answers
// nothing until Resume.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	s.signal(tb, syscall.SIGSTOP)
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	s.signal(tb, syscall.SIGCONT)
}

func (s *Server) signal(tb testing.TB, sig syscall.Signal) {
	tb.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		tb.Fatal("redistest: server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("redistest: %v: %v", sig, err)
	}
}

// kill sends SIGKILL to the server's own pid and waits for it.
func (s *Server) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server must be able to die
	_ = cmd.Process.Kill()
	<-done
}

// shutdown stops the server at the end of the test.
func (s *Server) shutdown() {
	s.kill()
}

// Cluster is a local Redis Cluster on 127.0.0.1.
type Cluster struct {
	Addrs []string // masters first, then replicas
	Nodes []*Server
}

// StartCluster starts a Redis Cluster of masters masters with replicas
// replicas each, on free ports whose cluster bus ports (port+10000) are
// free too, and returns once every node reports cluster_state:ok with all
// 16384 slots assigned. The nodes are stopped when tb ends.
func StartCluster(tb testing.TB, masters, replicas int) *Cluster {
	tb.Helper()
	Require(tb)
	n := masters * (1 + replicas)
	c := &Cluster{}
	for range n {
		var node *Server
		for attempt := 0; node == nil; attempt++ {
			port, err := freePort(true)
			if err != nil {
				tb.Fatal(err)
			}
			dir := tb.TempDir()
			s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: dir, args: []string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "1000",
				"--repl-diskless-sync-delay", "0",
			}}
			if err := s.start(); err != nil {
				if attempt >= 4 {
					tb.Fatalf("redistest: cluster node: %v", err)
				}
				continue
			}
			tb.Cleanup(s.shutdown)
			node = s
		}
		c.Nodes = append(c.Nodes, node)
		c.Addrs = append(c.Addrs, node.Addr)
	}

	args := append([]string{"--cluster", "create"}, c.Addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}

	deadline := time.Now().Add(20 * time.Second)
	for _, node := range c.Nodes {
		for {
			info, err := node.do(time.Second, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") && strings.Contains(info, "cluster_slots_ok:16384") {
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: node %s not ready: %v %s", node.Addr, err, info)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return c
}

// Client returns a rueidis cluster client seeded with every node, closed
// when tb ends.
func (c *Cluster) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: c.Addrs})
	if err != nil {
		tb.Fatalf("redistest: cluster client: %v", err)
	}
	tb.Cleanup(client.Close)
	return client
}

// freePort returns a port that 127.0.0.1 can listen on; with bus, port+10000
// too.
func freePort(bus bool) (int, error) {
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !bus {
			return port, nil
		}
		if port+10000 > 65535 {
			continue
		}
		lb, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
		if err != nil {
			continue
		}
		_ = lb.Close()
		return port, nil
	}
	return 0, errors.New("redistest: no free port pair found")
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
