package bench

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// env is what every test and benchmark of the package shares: one
// redis-server, an admin client that reads its statistics, and one client
// (or locker) per library.
type env struct {
	srv   *redistest.Server
	dir   string
	admin rueidis.Client
	libs  []*lib
}

var shared struct {
	once sync.Once
	env  *env
	err  error
}

// TestMain stops the shared server, by its pid, once every test and
// benchmark has run.
func TestMain(m *testing.M) {
	code := m.Run()
	if shared.env != nil {
		shared.env.close()
	}
	os.Exit(code)
}

// setup returns the shared env, starting the server and the clients on
// first use. Without redis-server it skips tb, or fails it when
// REDISLOCK_REQUIRE_REDIS=1.
func setup(tb testing.TB) *env {
	tb.Helper()
	redistest.Require(tb)
	shared.once.Do(func() { shared.env, shared.err = newEnv() })
	if shared.err != nil {
		tb.Fatal(shared.err)
	}
	return shared.env
}

func newEnv() (*env, error) {
	dir, err := os.MkdirTemp("", "redislock-bench-")
	if err != nil {
		return nil, err
	}
	srv, err := redistest.Start(dir)
	if err != nil {
		return nil, err
	}
	admin, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr}, DisableCache: true})
	if err != nil {
		srv.Close()
		return nil, err
	}
	libs, err := newLibs(srv.Addr)
	if err != nil {
		admin.Close()
		srv.Close()
		return nil, err
	}
	e := &env{srv: srv, dir: dir, admin: admin, libs: libs}
	if err := e.warm(); err != nil {
		e.close()
		return nil, err
	}
	return e, nil
}

// warm runs every operation of every library, so that no benchmark
// measures a connection being opened or a script being loaded (EVALSHA's
// NOSCRIPT, then EVAL). A standalone rueidis client sends each keyed command
// on one of its connections at random and opens each on first use (some
// 4,000 allocations): 32 obtain+release cycles open them all.
func (e *env) warm() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, l := range e.libs {
		if err := warm(ctx, l); err != nil {
			return err
		}
	}
	return nil
}

// warm runs every operation of l (see env.warm).
func warm(ctx context.Context, l *lib) error {
	keys := keyRing("warm", l, 5)
	for range 32 {
		h, err := l.obtain(ctx, keys[0])
		if err == nil {
			err = h.Release(ctx)
		}
		if err != nil {
			return fmt.Errorf("warming %s up: %w", l.name, err)
		}
	}
	h, err := l.obtain(ctx, keys[0])
	if err == nil && l.refresh {
		err = h.Refresh(ctx)
	}
	if err == nil {
		err = h.Release(ctx)
	}
	if err == nil && l.multi != nil {
		if h, err = l.multi(ctx, keys[1:4]); err == nil {
			err = h.Release(ctx)
		}
	}
	if err == nil {
		if h, err = l.wait(ctx, keys[4]); err == nil {
			err = h.Release(ctx)
		}
	}
	if err != nil {
		return fmt.Errorf("warming %s up: %w", l.name, err)
	}
	return nil
}

func (e *env) close() {
	for _, l := range e.libs {
		l.close()
	}
	e.admin.Close()
	e.srv.Close()
	_ = os.RemoveAll(e.dir)
}

// runs numbers the benchmark and test runs, so that each uses keys of its
// own: a lock left behind by a failed run cannot block the next one.
var runs atomic.Int64

// keyRing returns n keys under a prefix of their own.
func keyRing(scenario string, l *lib, n int) []string {
	prefix := fmt.Sprintf("bench:%s:%s:%d:", scenario, l.name, runs.Add(1))
	keys := make([]string, n)
	for i := range keys {
		keys[i] = prefix + strconv.Itoa(i)
	}
	return keys
}

// commands returns how many commands the server has executed, from INFO
// commandstats, leaving out INFO itself and the commands named in except.
// Commands that scripts run with redis.call count too: Redis counts them.
func (e *env) commands(tb testing.TB, except ...string) int64 {
	tb.Helper()
	info, err := e.admin.Do(context.Background(), e.admin.B().Info().Section("commandstats").Build()).ToString()
	if err != nil {
		tb.Fatalf("INFO commandstats: %v", err)
	}
	n, err := redistest.CommandCalls(info, except...)
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// counter measures the commands of one benchmark run: on the shared
// server (env.counter), or on the servers of a quorum.
type counter struct {
	commands func(testing.TB) int64
	before   int64
	// cpu, when set, is the servers' CPU time (INFO cpu); with it, report
	// adds the servers' and this process' CPU time per n.
	cpu                   func(testing.TB) time.Duration
	cpuBefore, selfBefore time.Duration
}

func (e *env) counter(tb testing.TB) counter {
	tb.Helper()
	commands := func(tb testing.TB) int64 { return e.commands(tb) }
	return counter{commands: commands, before: commands(tb)}
}

// report adds the metric unit ("cmds/acq", "cmds/op"): the commands the
// server executed since the counter was made, per n. Nothing is reported for
// n of 0.
func (c counter) report(b *testing.B, n int, unit string) {
	b.Helper()
	after := c.commands(b)
	if n > 0 {
		b.ReportMetric(float64(after-c.before)/float64(n), unit)
	}
	if c.cpu != nil && n > 0 {
		per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n) }
		b.ReportMetric(per(c.cpu(b)-c.cpuBefore), "srv-cpu-us/acq")
		b.ReportMetric(per(selfCPU()-c.selfBefore), "proc-cpu-us/acq")
	}
}
