package redislock_test

import (
	"context"
	"errors"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// backend is one Redis the API tests run against: an in-process miniredis
// (tier 1) or a real redis-server started by the test (tier 2).
type backend struct {
	name   string
	client rueidis.Client
	// do runs one command outside the library, for setup and inspection.
	do func(args ...string) (string, error)
	// expire lets d pass for the server's TTLs.
	expire func(d time.Duration)
}

// forEachBackend runs f as a subtest against a fresh miniredis and a fresh
// redis-server.
func forEachBackend(t *testing.T, f func(t *testing.T, b backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { f(t, miniBackend(t)) })
	t.Run("redis-server", func(t *testing.T) { f(t, realBackend(t)) })
}

func miniBackend(t *testing.T) backend {
	t.Helper()
	m := miniredis.RunT(t)
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{m.Addr()},
		DisableCache:      true,
		ForceSingleClient: true,
	})
	require.NoError(t, err)
	t.Cleanup(client.Close)
	return backend{
		name:   "miniredis",
		client: client,
		do:     doWith(client),
		expire: m.FastForward,
	}
}

func realBackend(t *testing.T) backend {
	t.Helper()
	redistest.Require(t)
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	return backend{
		name:   "redis-server",
		client: client,
		do:     doWith(client),
		expire: func(d time.Duration) { time.Sleep(d + 5*time.Millisecond) },
	}
}

// doWith runs a command through client and renders its reply as a string;
// a nil reply is "(nil)".
func doWith(client rueidis.Client) func(args ...string) (string, error) {
	return func(args ...string) (string, error) {
		res := client.Do(context.Background(), client.B().Arbitrary(args...).Build())
		if rueidis.IsRedisNil(res.Error()) {
			return "(nil)", nil
		}
		msg, err := res.ToMessage()
		if err != nil {
			return "", err
		}
		if n, err := msg.AsInt64(); err == nil {
			return strconv.FormatInt(n, 10), nil
		}
		return msg.ToString()
	}
}

// mustDo runs a command and fails the test on error.
func (b backend) mustDo(t *testing.T, args ...string) string {
	t.Helper()
	s, err := b.do(args...)
	require.NoError(t, err, "%v", args)
	return s
}

// dbsize returns the number of keys in the backend.
func (b backend) dbsize(t *testing.T) int {
	t.Helper()
	n, err := strconv.Atoi(b.mustDo(t, "DBSIZE"))
	require.NoError(t, err)
	return n
}

// assertTTL checks that the lock's TTL is within 5% below want.
func assertTTL(t *testing.T, lock *redislock.Lock, want time.Duration) {
	t.Helper()
	got, err := lock.TTL(t.Context())
	require.NoError(t, err)
	require.LessOrEqual(t, got, want)
	require.Greater(t, got, want*95/100, "TTL %v, want about %v", got, want)
}

// counter is an Observer that keeps the last Event of each operation.
type counter struct {
	events atomic.Int64
	last   atomic.Pointer[redislock.Event]
}

func (c *counter) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

func (c *counter) End(_ context.Context, ev *redislock.Event) {
	c.events.Add(1)
	cp := *ev
	cp.Keys = append([]string(nil), ev.Keys...)
	c.last.Store(&cp)
}

// errInjected is the transport error the flaky client returns.
var errInjected = errors.New("injected transport error")

// flaky wraps a rueidis.Client and fails commands whose name is in names:
// the next `fails` of them, either before sending (lost request) or after
// the server applied them (lost reply).
type flaky struct {
	rueidis.Client
	names     []string
	fails     atomic.Int32
	afterSend bool
	seen      atomic.Int32
}

func (f *flaky) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	name := strings.ToUpper(cmd.Commands()[0])
	match := false
	for _, n := range f.names {
		match = match || n == name
	}
	if !match {
		return f.Client.Do(ctx, cmd)
	}
	f.seen.Add(1)
	if f.fails.Add(-1) < 0 {
		f.fails.Store(0)
		return f.Client.Do(ctx, cmd)
	}
	if f.afterSend {
		_ = f.Client.Do(ctx, cmd).Error()
	}
	return rueidis.NewErrorResult(errInjected)
}

// awaitBlocked waits, up to 5s, until n goroutines started by obtainAsync
// (or obtainKindAsync)
// are blocked in the library itself: not running, not waiting for a Redis
// reply (no rueidis frame on the stack), but parked in a select, a channel
// receive or a sync.Cond. A waiter behind another of its Client makes no
// round trip of its own: this is how a test knows that it has joined.
func awaitBlocked(t *testing.T, n int) {
	t.Helper()
	count := func() int {
		buf := make([]byte, 1<<20)
		for {
			if m := runtime.Stack(buf, true); m < len(buf) {
				buf = buf[:m]
				break
			}
			buf = make([]byte, 2*len(buf))
		}
		blocked := 0
		for g := range strings.SplitSeq(string(buf), "\n\n") {
			header, stack, _ := strings.Cut(g, "\n")
			parked := strings.Contains(header, " [select") || strings.Contains(header, " [chan receive") ||
				strings.Contains(header, " [sync.Cond.Wait")
			if parked && (strings.Contains(stack, "redislock_test.obtainAsync.func") || strings.Contains(stack, "redislock_test.obtainKindAsync.func")) &&
				!strings.Contains(stack, "github.com/redis/rueidis") {
				blocked++
			}
		}
		return blocked
	}
	require.Eventually(t, func() bool { return count() >= n }, 5*time.Second, time.Millisecond,
		"%d waiters blocked in the library", n)
}
