package safety

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
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

// RequireRedis skips tb, loudly, when redis-server is missing; when
// RequireEnv is 1 it fails tb instead.
func RequireRedis(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("redis-server"); err == nil {
		return
	}
	const msg = "redis-server is missing: the safety tests need it; install it with: apt-get install -y redis-server"
	if os.Getenv(RequireEnv) == "1" {
		tb.Fatal(msg)
	}
	tb.Skip("SKIPPED: " + msg)
}

// ServerOptions configure a Server started by StartServer.
type ServerOptions struct {
	// Args are appended to the command line, after the defaults (no
	// persistence, a log file in the server's directory).
	Args []string
	// Config, when not empty, is written to a config file that is passed
	// first on the command line (ACL users are easiest there).
	Config string
	// TLS serves TLS only (--port 0 --tls-port P) with a self-signed
	// certificate for 127.0.0.1, made for the server; clients get it from
	// Server.TLSConfig.
	TLS bool
	// CLIArgs are given to redis-cli by Server.Do, for instance
	// "--user", "u", "--pass", "p".
	CLIArgs []string
}

// Server is one redis-server process on 127.0.0.1, started by this process.
// Stop, Restart, Pause and Resume act on its own pid only.
type Server struct {
	Addr string
	Port int
	Dir  string // its working directory: config, certificate, AOF, log

	opts     ServerOptions
	argv     []string
	tlsFiles [2]string // certificate, key
	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{} // closed once cmd has exited
}

// StartServer starts redis-server on a free loopback port in a temporary
// directory of its own and returns once it answers PING. The server is
// killed when tb ends.
func StartServer(tb testing.TB, opts ServerOptions) *Server {
	tb.Helper()
	RequireRedis(tb)
	dir := tb.TempDir()
	s := &Server{Dir: dir, opts: opts}
	if opts.TLS {
		if err := s.writeCertificate(); err != nil {
			tb.Fatalf("safety: certificate: %v", err)
		}
	}
	var lastErr error
	for range 5 {
		port, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		s.Port, s.Addr = port, "127.0.0.1:"+strconv.Itoa(port)
		s.argv = s.commandLine()
		if lastErr = s.start(); lastErr == nil {
			tb.Cleanup(s.kill)
			return s
		}
	}
	tb.Fatalf("safety: starting redis-server: %v", lastErr)
	return nil
}

func (s *Server) commandLine() []string {
	var argv []string
	if s.opts.Config != "" {
		conf := filepath.Join(s.Dir, "redis.conf")
		if err := os.WriteFile(conf, []byte(s.opts.Config), 0o600); err == nil {
			argv = append(argv, conf)
		}
	}
	port := strconv.Itoa(s.Port)
	if s.opts.TLS {
		argv = append(argv, "--port", "0", "--tls-port", port,
			"--tls-cert-file", s.tlsFiles[0], "--tls-key-file", s.tlsFiles[1],
			"--tls-ca-cert-file", s.tlsFiles[0], "--tls-auth-clients", "no")
	} else {
		argv = append(argv, "--port", port)
	}
	argv = append(argv, "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", s.Dir,
		"--logfile", filepath.Join(s.Dir, "redis.log"))
	return append(argv, s.opts.Args...)
}

// start runs the process and waits until it answers PING (or refuses it for
// want of a password, which proves it is up).
func (s *Server) start() error {
	cmd := exec.Command("redis-server", s.argv...)
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
		reply, err := s.do(500*time.Millisecond, "PING")
		if err == nil && reply == "PONG" || strings.Contains(reply, "NOAUTH") || strings.Contains(reply, "NOPERM") {
			return nil
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.kill()
	return fmt.Errorf("redis-server on port %d did not answer PING within 10s", s.Port)
}

// TLSConfig returns a client configuration that trusts the server's
// certificate, or nil for a server without TLS.
func (s *Server) TLSConfig() *tls.Config {
	if !s.opts.TLS {
		return nil
	}
	pemCert, err := os.ReadFile(s.tlsFiles[0])
	if err != nil {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCert)
	return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Client returns a rueidis client to the server (with its TLS
// configuration), closed when tb ends; opts may adjust its options.
func (s *Server) Client(tb testing.TB, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	return NewClient(tb, s.Addr, func(o *rueidis.ClientOption) {
		o.TLSConfig = s.TLSConfig()
		for _, f := range opts {
			f(o)
		}
	})
}

// NewClient returns a rueidis client to addr, closed when tb ends; opts may
// adjust its options.
func NewClient(tb testing.TB, addr string, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	opt := rueidis.ClientOption{InitAddress: []string{addr}}
	for _, f := range opts {
		f(&opt)
	}
	client, err := rueidis.NewClient(opt)
	if err != nil {
		tb.Fatalf("safety: client to %s: %v", addr, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// Do runs one command through redis-cli, on a connection of its own, and
// returns the reply as redis-cli prints it.
func (s *Server) Do(args ...string) (string, error) {
	return s.do(5*time.Second, args...)
}

// MustDo is Do that fails tb on error.
func (s *Server) MustDo(tb testing.TB, args ...string) string {
	tb.Helper()
	reply, err := s.Do(args...)
	if err != nil {
		tb.Fatalf("safety: %v", err)
	}
	return reply
}

func (s *Server) do(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	argv := []string{"-p", strconv.Itoa(s.Port)}
	if s.opts.TLS {
		argv = append(argv, "--tls", "--cacert", s.tlsFiles[0])
	}
	argv = append(append(argv, s.opts.CLIArgs...), args...)
	cmd := exec.CommandContext(ctx, "redis-cli", argv...)
	out, err := cmd.CombinedOutput()
	reply := strings.TrimSpace(strings.ReplaceAll(string(out),
		"Warning: Using a password with '-a' or '-u' option on the command line interface may not be safe.", ""))
	if err != nil {
		return reply, fmt.Errorf("redis-cli %s: %w: %s", args[0], err, reply)
	}
	if strings.HasPrefix(reply, "ERR") || strings.HasPrefix(reply, "NOPERM") ||
		strings.HasPrefix(reply, "NOAUTH") || strings.HasPrefix(reply, "Could not connect") {
		return reply, errors.New(reply)
	}
	return reply, nil
}

// Pid returns the process id of the running server (0 when stopped).
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop kills the server with SIGKILL, as a crash would (nothing is saved
// beyond what the AOF already holds), and waits for it to exit.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.kill()
}

// Restart starts the server again on the same port, directory and command
// line, after Stop; it returns once the server answers PING.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	var err error
	for range 50 { // the port may linger for a moment
		if err = s.start(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	tb.Fatalf("safety: restarting redis-server: %v", err)
}

// Pause stops the server with SIGSTOP: it keeps its connections and answers
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
		tb.Fatal("safety: the server is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		tb.Fatalf("safety: %v: %v", sig, err)
	}
}

// kill sends SIGKILL to the server's own pid and waits for it to exit.
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

// writeCertificate makes a self-signed ECDSA certificate for 127.0.0.1,
// valid for a day, and writes it and its key in the server's directory.
func (s *Server) writeCertificate() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	s.tlsFiles = [2]string{filepath.Join(s.Dir, "cert.pem"), filepath.Join(s.Dir, "key.pem")}
	if err := os.WriteFile(s.tlsFiles[0], pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(s.tlsFiles[1], pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// freePort returns a port that 127.0.0.1 can listen on.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
