package redislockotel_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
)

// requireRedisEnv turns a missing redis-server from a skip into a failure;
// make test and CI set it to 1.
const requireRedisEnv = "REDISLOCK_REQUIRE_REDIS"

// startRedis starts a redis-server of its own on a free loopback port and
// returns its address. The server is stopped, by its own pid, when tb ends.
// Without redis-server on PATH, tb is skipped (failed when
// REDISLOCK_REQUIRE_REDIS=1).
func startRedis(tb testing.TB) string {
	tb.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		msg := "redis-server is not on PATH: install it with `sudo apt-get install -y redis-server`"
		if os.Getenv(requireRedisEnv) == "1" {
			tb.Fatalf("%s (%s=1)", msg, requireRedisEnv)
		}
		tb.Skipf("SKIPPED, NOT RUN: %s, or set %s=1 to make this a failure", msg, requireRedisEnv)
	}
	var lastErr error
	for range 5 { // a port taken between picking and binding: try another
		addr, err := runRedis(tb, bin)
		if err == nil {
			return addr
		}
		lastErr = err
	}
	tb.Fatalf("redis-server did not start: %v", lastErr)
	return ""
}

// runRedis starts one redis-server and waits until it answers PING.
func runRedis(tb testing.TB, bin string) (string, error) {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return "", err
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))

	cmd := exec.Command(bin, "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", tb.TempDir())
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return "", err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Kill() // this test's own server, by its pid
		<-exited
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		if ping(addr) {
			tb.Cleanup(stop)
			return addr, nil
		}
		select {
		case err := <-exited:
			exited <- err
			return "", &startError{addr: addr, err: err, out: out.String()}
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", &startError{addr: addr, out: out.String()}
		}
	}
}

type startError struct {
	addr string
	err  error
	out  string
}

func (e *startError) Error() string {
	msg := "redis-server on " + e.addr
	if e.err != nil {
		msg += ": " + e.err.Error()
	}
	return msg + ", output " + strconv.Quote(e.out)
}

// ping reports whether the server at addr answers PING with PONG.
func ping(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return false
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	return err == nil && line == "+PONG\r\n"
}

// syncBuffer collects the output of a redis-server.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newClient returns a rueidis client to addr, closed when tb ends.
func newClient(tb testing.TB, addr string, mini bool) rueidis.Client {
	tb.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		DisableCache:      true,
		ForceSingleClient: mini, // miniredis speaks neither CLIENT TRACKING nor cluster
	})
	if err != nil {
		tb.Fatalf("rueidis.NewClient(%s): %v", addr, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// backend is a Redis server the tests run against.
type backend struct {
	name string
	// start returns a client and, for miniredis, the server (to move its
	// clock).
	start func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis)
}

var backends = []backend{
	{"miniredis", func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis) {
		mr := miniredis.RunT(tb)
		return newClient(tb, mr.Addr(), true), mr
	}},
	{"redis-server", func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis) {
		return newClient(tb, startRedis(tb), false), nil
	}},
}
