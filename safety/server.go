package safety

import (
	"crypto/tls"
	"testing"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// RequireEnv names the environment variable that turns a missing
// redis-server from a skip into a failure. make test and CI set it to 1.
const RequireEnv = "REDISLOCK_REQUIRE_REDIS"

// RequireRedis skips tb, loudly, when redis-server (or redis-cli) is
// missing; when RequireEnv is 1 it fails tb instead.
func RequireRedis(tb testing.TB) {
	tb.Helper()
	redistest.Require(tb)
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
	// CLIArgs are the credentials with which Server.Do logs in, spelled
	// as for redis-cli: "--user", "u", "--pass", "p" (or "-a", "p").
	// StartServer fails on any other argument.
	CLIArgs []string
}

// Server is one redis-server process on 127.0.0.1, started by this process.
// Stop, Restart, Pause and Resume act on its own pid only. It is a thin
// layer over the repository's internal/redistest.
type Server struct {
	Addr string
	Port int
	Dir  string // its working directory: config, certificate, AOF, log

	srv *redistest.Server
	tb  testing.TB // the test that owns the server, for Do
}

// StartServer starts redis-server on a free loopback port in a temporary
// directory of its own and returns once it answers PING. The server is
// killed when tb ends.
func StartServer(tb testing.TB, opts ServerOptions) *Server {
	tb.Helper()
	cfg := redistest.Config{File: opts.Config, TLS: opts.TLS}
	for i := 0; i < len(opts.CLIArgs); i += 2 {
		if i+1 == len(opts.CLIArgs) {
			tb.Fatalf("safety: CLIArgs: %s has no value", opts.CLIArgs[i])
		}
		switch v := opts.CLIArgs[i+1]; opts.CLIArgs[i] {
		case "--user":
			cfg.Username = v
		case "--pass", "-a":
			cfg.Password = v
		default:
			tb.Fatalf("safety: CLIArgs: %s is not supported", opts.CLIArgs[i])
		}
	}
	srv := redistest.StartServerConfig(tb, cfg, opts.Args...)
	return &Server{Addr: srv.Addr, Port: srv.Port, Dir: srv.Dir, srv: srv, tb: tb}
}

// TLSConfig returns a client configuration that trusts the server's
// certificate, or nil for a server without TLS.
func (s *Server) TLSConfig() *tls.Config { return s.srv.TLSConfig() }

// Client returns a rueidis client to the server (with its TLS
// configuration), closed when tb ends; opts may adjust its options.
func (s *Server) Client(tb testing.TB, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	return s.srv.Client(tb, opts...)
}

// NewClient returns a rueidis client to addr, closed when tb ends; opts may
// adjust its options.
func NewClient(tb testing.TB, addr string, opts ...func(*rueidis.ClientOption)) rueidis.Client {
	tb.Helper()
	return redistest.NewClient(tb, addr, opts...)
}

// Do runs one command on a connection of its own, logged in with
// CLIArgs' credentials, and returns the reply as text: a string or an
// integer as is, a nil as "", an array as its elements joined by newlines.
// A Redis error reply comes back as an error with the server's message.
func (s *Server) Do(args ...string) (string, error) {
	return s.srv.Do(s.tb, args...)
}

// MustDo is Do that fails tb on error.
func (s *Server) MustDo(tb testing.TB, args ...string) string {
	tb.Helper()
	reply, err := s.Do(args...)
	if err != nil {
		tb.Fatalf("safety: %s: %v", args[0], err)
	}
	return reply
}

// Pid returns the process id of the running server (0 when stopped).
func (s *Server) Pid() int { return s.srv.Pid() }

// Stop kills the server with SIGKILL, as a crash would (nothing is saved
// beyond what the AOF already holds), and waits for it to exit.
func (s *Server) Stop(tb testing.TB) {
	tb.Helper()
	s.srv.Stop(tb)
}

// Restart starts the server again on the same port, directory and command
// line, after Stop; it returns once the server answers PING.
func (s *Server) Restart(tb testing.TB) {
	tb.Helper()
	s.srv.Restart(tb)
}

// Pause stops the server with SIGSTOP: it keeps its connections and answers
// nothing until Resume.
func (s *Server) Pause(tb testing.TB) {
	tb.Helper()
	s.srv.Pause(tb)
}

// Resume continues a paused server with SIGCONT.
func (s *Server) Resume(tb testing.TB) {
	tb.Helper()
	s.srv.Resume(tb)
}
