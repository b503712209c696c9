// Package redistest starts real redis-server processes on free loopback
// ports for the tests and benchmarks of this repository: a standalone server
// and a local Redis Cluster. Every process is stopped, by its own pid, when
// the test that started it ends; nothing here uses pkill or killall.
//
// All functions and methods are safe for concurrent use, and servers started
// by tests in parallel packages do not collide: a port taken by someone else
// between picking and binding is detected and another port is tried.
package redistest

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// requireEnv names the environment variable that turns a missing
// redis-server from a skip into a failure; make test and CI set it to 1.
const requireEnv = "REDISLOCK_REQUIRE_REDIS"

// Timeouts, generous for a loaded CI machine.
const (
	startTimeout = 10 * time.Second // until a new server answers PING
	doTimeout    = 10 * time.Second // one Do command
	readyTimeout = 30 * time.Second // until a new cluster is ready
	startTries   = 10               // ports tried before StartServer gives up
)

// Available reports whether redis-server is on PATH, and redis-cli with it
// (StartCluster needs it; Debian's redis-server package brings both).
func Available() bool {
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			return false
		}
	}
	return true
}

// Require skips tb, with a message saying how to install redis-server, when
// redis-server is missing. When the environment variable
// REDISLOCK_REQUIRE_REDIS is 1 (make test and CI set it) it fails tb
// instead. StartServer and StartCluster call it themselves.
func Require(tb testing.TB) {
	tb.Helper()
	if Available() {
		return
	}
	const msg = "redistest: redis-server or redis-cli is not on PATH; " +
		"install it with: apt-get install -y redis-server"
	if os.Getenv(requireEnv) == "1" {
		tb.Fatal(msg + " (" + requireEnv + "=1 makes this a failure)")
	}
	tb.Skip("SKIPPED: " + msg)
}

// Server is one redis-server process on 127.0.0.1, started by StartServer or
// StartCluster. Addr, Port and Dir never change, not even across Restart.
type Server struct {
	Addr string // "127.0.0.1:Port"
	Port int
	Dir  string // working directory: dump, AOF, nodes.conf and redis.log

	args []string // appended to the command line, kept for Restart
	cfg  Config
	tls  *tls.Config // nil unless cfg.TLS

	mu   sync.Mutex
	cmd  *exec.Cmd     // nil while stopped
	done chan struct{} // closed when cmd has exited
}

// StartServer starts a standalone redis-server on a free 127.0.0.1 port,
// without persistence (--save ” --appendonly no) and with a temporary
// directory of its own; args are appended to its command line and win over
// those defaults (for instance "--enable-debug-command", "local" or
// "--appendonly", "yes"). It returns once the server answers PING, within
// 10 s, and fails tb otherwise. When tb ends the server gets SHUTDOWN NOSAVE,
// then SIGKILL if it is still alive, and is waited for.
func StartServer(tb testing.TB, args ...string) *Server {
	tb.Helper()
	return startServer(tb, false, Config{}, args)
}

// Config is what StartServerConfig adds to a standalone server. The zero
// value adds nothing.
type Config struct {
	// File, when not empty, is the text of a config file, written to the
	// server's directory as redis.conf and passed first on its command line,
	// where redis-server wants it (ACL users are easiest there). Command-line
	// arguments win over it.
	File string
	// TLS makes the server speak TLS only (--port 0 --tls-port Port, client
	// certificates not required) with a self-signed ECDSA certificate for
	// 127.0.0.1, valid for a day, made for it in its directory. Do, the
	// readiness check and Client then dial TLS; other clients get the
	// configuration from TLSConfig.
	TLS bool
	// Username and Password, when Password is not empty, are sent with AUTH
	// on every connection of Do and of the readiness check, for a server
	// whose default user is off or has a password. An empty Username is the
	// default user.
	Username, Password string
}

// StartServerConfig starts a standalone redis-server like StartServer, with
// cfg's config file, TLS and credentials; StartServerConfig(tb, Config{},
// args...) is StartServer(tb, args...).
func StartServerConfig(tb testing.TB, cfg Config, args ...string) *Server {
	tb.Helper()
	return startServer(tb, false, cfg, args)
}

// startServer starts a server, retrying on other ports when one fails to
// start (most likely because someone else took the port meanwhile). A
// cluster node also needs port+10000 free, for its cluster bus.
func startServer(tb testing.TB, cluster bool, cfg Config, extra []string) *Server {
	tb.Helper()
	Require(tb)
	s, err := launch(tb.TempDir, cluster, cfg, extra)
	if err != nil {
		tb.Fatalf("redistest: starting redis-server: %v", err)
	}
	tb.Cleanup(s.shutdown)
	return s
}

// Start starts a standalone redis-server like StartServer, for code that
// has no testing.TB (a TestMain, a benchmark harness): dir is its working
// directory, and the caller stops it with Close.
func Start(dir string, args ...string) (*Server, error) {
	if !Available() {
		return nil, errors.New("redistest: redis-server is missing; install it with: apt-get install -y redis-server")
	}
	tries := 0
	return launch(func() string {
		tries++
		d := filepath.Join(dir, strconv.Itoa(tries)) // fresh each try
		_ = os.MkdirAll(d, 0o755)
		return d
	}, false, Config{}, args)
}

// Close stops a server made by Start: SHUTDOWN NOSAVE, then SIGKILL of its
// own pid if it is still alive after 5 s.
func (s *Server) Close() { s.shutdown() }

// launch starts a server on a free port, trying startTries ports, each with
// a fresh directory from newDir, where cfg's files are written.
func launch(newDir func() string, cluster bool, cfg Config, extra []string) (*Server, error) {
	var err error
	for range startTries {
		dir := newDir() // fresh each try: a failed node may leave nodes.conf
		args := slices.Clone(extra)
		if cluster {
			args = append([]string{
				"--cluster-enabled", "yes",
				"--cluster-config-file", filepath.Join(dir, "nodes.conf"),
				"--cluster-node-timeout", "1000",
				"--repl-diskless-sync-delay", "0",
			}, args...)
		}
		var port int
		if port, err = freePort(cluster); err != nil {
			return nil, err
		}
		s := &Server{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), Port: port, Dir: dir, args: args, cfg: cfg}
		if err = s.writeFiles(); err != nil {
			return nil, err
		}
		if err = s.start(); err == nil {
			return s, nil
		}
	}
	return nil, err
}

// writeFiles writes the config file and the TLS certificate of s.cfg in
// s.Dir.
func (s *Server) writeFiles() error {
	if s.cfg.File != "" {
		if err := os.WriteFile(filepath.Join(s.Dir, "redis.conf"), []byte(s.cfg.File), 0o600); err != nil {
			return err
		}
	}
	if s.cfg.TLS {
		var err error
		s.tls, err = writeCertificate(s.Dir)
		return err
	}
	return nil
}

func (s *Server) start() error {
	var argv []string
	if s.cfg.File != "" {
		argv = append(argv, filepath.Join(s.Dir, "redis.conf")) // must come first
	}
	port := strconv.Itoa(s.Port)
	if s.cfg.TLS {
		cert, key := filepath.Join(s.Dir, certFile), filepath.Join(s.Dir, keyFile)
		argv = append(argv, "--tls-port", port, "--tls-cert-file", cert, "--tls-key-file", key,
			"--tls-ca-cert-file", cert, "--tls-auth-clients", "no")
		port = "0"
	}
	argv = append(argv, "--port", port, "--bind", "127.0.0.1",
		"--daemonize", "no", "--save", "", "--appendonly", "no", "--dir", s.Dir)
	argv = append(argv, s.args...)
	log, err := os.OpenFile(filepath.Join(s.Dir, "redis.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer log.Close() // the child keeps its own descriptor
	cmd := exec.Command("redis-server", argv...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(done)
	}()
	pid := strconv.Itoa(cmd.Process.Pid)

	var lastErr error
	for deadline := time.Now().Add(startTimeout); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		select {
		case <-done:
			return fmt.Errorf("redis-server on port %d exited:\n%s", s.Port, s.logTail())
		default:
		}
		var reply, info string
		if reply, lastErr = s.do(250*time.Millisecond, "PING"); lastErr != nil || reply != "PONG" {
			continue
		}
		if info, lastErr = s.do(time.Second, "INFO", "server"); lastErr != nil {
			continue
		}
		if infoField(info, "process_id") != pid {
			killWait(cmd, done)
			return fmt.Errorf("port %d answers from another process", s.Port)
		}
		s.mu.Lock()
		s.cmd, s.done = cmd, done
		s.mu.Unlock()
		return nil
	}
	killWait(cmd, done)
	return fmt.Errorf("redis-server on port %d did not answer PING within %v (%v):\n%s", s.Port, startTimeout, lastErr, s.logTail())
}

// Client returns a rueidis client to the server, with rueidis' defaults
// (RESP3, client-side caching) and, for a TLS server, TLSConfig, changed by
// opts, and closes it when tb ends. It does not log in with Config's
// credentials; opts may. The client reconnects by itself after Restart.
func (s *Server) Client(tb testing.TB, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	withTLS := func(o *rueidis.ClientOption) { o.TLSConfig = s.TLSConfig() }
	return NewClient(tb, s.Addr, append([]func(*rueidis.ClientOption){withTLS}, opts...)...)
}

// NewClient returns a rueidis client to addr (any server or proxy), with
// rueidis' defaults changed by opts, and closes it when tb ends.
func NewClient(tb testing.TB, addr string, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	opt := rueidis.ClientOption{InitAddress: []string{addr}}
	for _, f := range opts {
		f(&opt)
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("redistest: client to %s: %v", addr, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// Do runs one command on a connection of its own (RESP2, over TLS and after
// AUTH when Config says so, 10 s timeout), for test setup such as FLUSHALL, SCRIPT FLUSH, DEBUG or INFO. It
// returns the reply as text: a string or an integer as is, a nil as "", an
// array as its elements joined by newlines. A Redis error reply comes back
// as an error with the server's message ("ERR ...", "MOVED ...").
func (s *Server) Do(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	return s.do(doTimeout, args...)
}

func (s *Server) do(timeout time.Duration, args ...string) (string, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, timeout)
	if err != nil {
		return "", err
	}
	if s.tls != nil {
		conn = tls.Client(conn, s.tls)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(timeout)); err != nil {
		return "", err
	}
	r := bufio.NewReader(conn)
	if s.cfg.Password != "" {
		auth := []string{"AUTH", s.cfg.Password}
		if s.cfg.Username != "" {
			auth = []string{"AUTH", s.cfg.Username, s.cfg.Password}
		}
		if _, err := command(conn, r, auth); err != nil {
			return "", err
		}
	}
	return command(conn, r, args)
}

// command writes one command to conn and reads its reply from r.
func command(conn net.Conn, r *bufio.Reader, args []string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(conn, b.String()); err != nil {
		return "", err
	}
	return readReply(r)
}

// readReply reads one RESP2 reply.
func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return "", errors.New("redistest: empty reply line")
	}
	switch kind, rest := line[0], line[1:]; kind {
	case '+', ':':
		return rest, nil
	case '-':
		return "", errors.New(rest)
	case '$', '*':
		n, err := strconv.Atoi(rest)
		if err != nil || n < 0 {
			return "", err // n < 0: a nil
		}
		if kind == '$' {
			buf := make([]byte, n+2)
			_, err := io.ReadFull(r, buf)
			return string(buf[:n]), err
		}
		elems := make([]string, n)
		for i := range elems {
			if elems[i], err = readReply(r); err != nil {
				return "", err
			}
		}
		return strings.Join(elems, "\n"), nil
	}
	return "", fmt.Errorf("redistest: unexpected reply %q", line)
}

// Pid returns the process id of the running server, or 0 while it is
// stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// TLSConfig returns a client configuration that trusts the certificate of
// a server started with Config.TLS, a new one each call, or nil for a
// server without TLS.
func (s *Server) TLSConfig() *tls.Config {
	if s.tls == nil {
		return nil
	}
	return s.tls.Clone()
}

// Stop kills the server with SIGKILL, a crash in which nothing is saved
// beyond what an AOF already holds, and waits for it to exit. Stopping a
// stopped server does nothing.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	if cmd, done := s.take(); cmd != nil {
		killWait(cmd, done)
	}
}

// Restart starts the server again with the same port, directory and
// arguments, after Stop (a server still running is stopped first), and waits
// until it answers PING. It fails tb when the port stays taken for 5 s.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.Stop(tb)
	var err error
	for range 50 {
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	tb.Fatalf("redistest: restarting redis-server: %v", err)
}

// Pause freezes the server with SIGSTOP: it keeps its connections open and
// answers nothing until Resume. A paused server is resumed before it is shut
// down at the end of the test.
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
	cmd := s.cmd
	s.mu.Unlock()
	if cmd == nil {
		tb.Fatalf("redistest: %v: server on port %d is stopped", sig, s.Port)
	}
	if err := cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("redistest: %v: %v", sig, err)
	}
}

// take marks the server stopped and returns the process it had, if any.
func (s *Server) take() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	return cmd, done
}

// shutdown ends the server when its test ends: SHUTDOWN NOSAVE, then
// SIGKILL of its own pid if it is still alive after 5 s.
func (s *Server) shutdown() {
	cmd, done := s.take()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGCONT) // a paused server could not obey
	_, _ = s.do(time.Second, "SHUTDOWN", "NOSAVE")
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		killWait(cmd, done)
	}
}

// killWait sends SIGKILL to cmd's own pid and waits until it has exited.
func killWait(cmd *exec.Cmd, done <-chan struct{}) {
	_ = cmd.Process.Kill()
	<-done
}

func (s *Server) logTail() string {
	log, _ := os.ReadFile(filepath.Join(s.Dir, "redis.log"))
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}

// Cluster is a local Redis Cluster on 127.0.0.1, started by StartCluster.
type Cluster struct {
	Addrs []string  // every node's address: masters first, then replicas
	Nodes []*Server // the nodes, in the order of Addrs
}

// StartCluster starts a Redis Cluster of masters masters with replicas
// replicas each (--cluster-node-timeout 1000), on free ports whose cluster
// bus ports (port+10000) are free too, and creates it with
// redis-cli --cluster create. It returns once every node reports
// cluster_state:ok with all 16384 slots served and every replica is in sync
// with its master, within 30 s, and fails tb otherwise. The nodes are
// stopped when tb ends.
func StartCluster(tb testing.TB, masters, replicas int) *Cluster {
	tb.Helper()
	if masters < 3 || replicas < 0 {
		tb.Fatalf("redistest: a cluster needs at least 3 masters and no negative replicas, not %d and %d", masters, replicas)
	}
	nodes := make([]*Server, masters*(1+replicas))
	addrs := make([]string, len(nodes))
	for i := range nodes {
		nodes[i] = startServer(tb, true, Config{}, nil)
		addrs[i] = nodes[i].Addr
	}

	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	ctx, cancel := context.WithTimeout(tb.Context(), readyTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "redis-cli", args...).CombinedOutput(); err != nil {
		tb.Fatalf("redistest: redis-cli --cluster create: %v\n%s", err, out)
	}

	// Wait for every node, and order them masters first.
	c := &Cluster{}
	var replicaNodes []*Server
	deadline := time.Now().Add(readyTimeout)
	for _, n := range nodes {
		for {
			role, err := n.ready()
			if err == nil {
				if role == "master" {
					c.Nodes = append(c.Nodes, n)
				} else {
					replicaNodes = append(replicaNodes, n)
				}
				break
			}
			if time.Now().After(deadline) {
				tb.Fatalf("redistest: cluster node %s not ready after %v: %v", n.Addr, readyTimeout, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c.Nodes = append(c.Nodes, replicaNodes...)
	for _, n := range c.Nodes {
		c.Addrs = append(c.Addrs, n.Addr)
	}
	return c
}

// ready returns the node's role once it serves the whole cluster (and, for
// a replica, is in sync with its master), or why not yet.
func (s *Server) ready() (role string, err error) {
	info, err := s.do(time.Second, "CLUSTER", "INFO")
	if err != nil {
		return "", err
	}
	if infoField(info, "cluster_state") != "ok" || infoField(info, "cluster_slots_ok") != "16384" {
		return "", fmt.Errorf("CLUSTER INFO:\n%s", info)
	}
	repl, err := s.do(time.Second, "INFO", "replication")
	if err != nil {
		return "", err
	}
	role = infoField(repl, "role")
	if role != "master" && infoField(repl, "master_link_status") != "up" {
		return "", fmt.Errorf("INFO replication:\n%s", repl)
	}
	return role, nil
}

// Client returns a rueidis cluster client seeded with every node's address,
// and closes it when tb ends.
func (c *Cluster) Client(tb testing.TB) rueidis.Client {
	tb.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: c.Addrs})
	if err != nil {
		tb.Fatalf("redistest: cluster client: %v", err)
	}
	tb.Cleanup(client.Close)
	return client
}

// freePort returns a port that 127.0.0.1 could listen on a moment ago; with
// bus, port+10000 too. The caller must still cope with losing it to a race.
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
		if lb, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+10000))); err == nil {
			_ = lb.Close()
			return port, nil
		}
	}
	return 0, errors.New("redistest: no free port with a free bus port")
}

// infoField returns the value of field in an INFO or CLUSTER INFO reply.
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v
		}
	}
	return ""
}

// ParseCommandStats reads the calls of each command from the reply of INFO
// commandstats ("cmdstat_get:calls=3,usec=..." a line). The commands that
// scripts run with redis.call are counted there too.
func ParseCommandStats(info string) (map[string]int64, error) {
	stats := make(map[string]int64)
	for line := range strings.Lines(info) {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_")
		if !ok {
			continue
		}
		name, fields, ok := strings.Cut(rest, ":calls=")
		if !ok {
			return nil, errors.New("INFO commandstats: unexpected line: " + line)
		}
		calls, _, _ := strings.Cut(fields, ",")
		n, err := strconv.ParseInt(calls, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("INFO commandstats: %q: %w", line, err)
		}
		stats[name] = n
	}
	return stats, nil
}

// CommandCalls returns how many commands the reply of INFO commandstats
// counts, INFO itself and the commands named in except left out (the
// commands that scripts run with redis.call included).
func CommandCalls(info string, except ...string) (int64, error) {
	stats, err := ParseCommandStats(info)
	if err != nil {
		return 0, err
	}
	var n int64
	for name, calls := range stats {
		if name != "info" && !slices.Contains(except, name) {
			n += calls
		}
	}
	return n, nil
}
