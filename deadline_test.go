package redislock_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// A deadline that passes while an Obtain waits must read as ErrNotObtained
// joined with the ctx error, every time: these tests hold a key with another
// token on a real redis-server and let the deadline pass while an Obtain
// retries it every 5ms.

const (
	deadlineBackoff = 5 * time.Millisecond
	deadlineRuns    = 200
	otherToken      = "held-by-another-token"
)

// deadlineSetup starts a redis-server and returns it with a lock client
// over a client to it, every connection of which is open.
func deadlineSetup(t *testing.T) (*redistest.Server, *redislock.Client, func(t *testing.T, key string)) {
	t.Helper()
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	benchWarmClient(t, client)
	hold := func(t *testing.T, key string) {
		t.Helper()
		require.NoError(t, client.Do(t.Context(), client.B().Set().Key(key).Value(otherToken).Px(time.Minute).Build()).Error())
	}
	return srv, redislock.New(client), hold
}

// TestObtain_Deadline_timeout is bsm/redislock's flaky
// TestObtain_retry_context_deadline, 200 times: a real WithTimeout(20ms)
// ends while Obtain retries every 5ms, now and then during an attempt.
func TestObtain_Deadline_timeout(t *testing.T) {
	srv, locker, hold := deadlineSetup(t)

	// A random token: the library knows that nobody else can hold it, so
	// even an attempt in flight at the deadline reads as not obtained.
	t.Run("token=random", func(t *testing.T) {
		key := "deadline:timeout:random"
		hold(t, key)
		opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(deadlineBackoff)}
		failures := map[string]int{}
		bad := 0
		for range deadlineRuns {
			l, err := deadlineObtain(locker, key, opt, 20*time.Millisecond)
			require.Nil(t, l)
			if !errors.Is(err, redislock.ErrNotObtained) || !errors.Is(err, context.DeadlineExceeded) {
				bad++
				failures[fmt.Sprint(err)]++
			}
		}
		assert.Zero(t, bad, "%d of %d runs did not return ErrNotObtained joined with DeadlineExceeded: %v",
			bad, deadlineRuns, failures)
		assertHeldByOther(t, srv, key)
	})

	// A custom token: an attempt in flight at the deadline has an unknown
	// outcome (the caller may have been granted the lock), so it may return
	// an error that is not ErrNotObtained. Only a not-obtained error must be
	// joined with the ctx error.
	t.Run("token=custom", func(t *testing.T) {
		key := "deadline:timeout:custom"
		hold(t, key)
		opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(deadlineBackoff), Token: "my-own-token"}
		outcomes := map[string]int{}
		for range deadlineRuns {
			l, err := deadlineObtain(locker, key, opt, 20*time.Millisecond)
			require.Nil(t, l)
			require.Error(t, err)
			if errors.Is(err, redislock.ErrNotObtained) {
				require.ErrorIs(t, err, context.DeadlineExceeded)
				outcomes["not obtained"]++
			} else {
				outcomes["unknown: "+err.Error()]++
			}
		}
		t.Logf("outcomes of %d runs: %v", deadlineRuns, outcomes)
		assertHeldByOther(t, srv, key)
	})
}

// deadlineObtain obtains key with a ctx that times out after timeout.
func deadlineObtain(locker *redislock.Client, key string, opt *redislock.Options, timeout time.Duration) (*redislock.Lock, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return locker.Obtain(ctx, key, time.Minute, opt)
}

// assertHeldByOther checks that key still holds the other token's value.
func assertHeldByOther(t *testing.T, srv *redistest.Server, key string) {
	t.Helper()
	got, err := srv.Do(t, "GET", key)
	require.NoError(t, err)
	assert.Equal(t, otherToken, got, "the other token lost its lock")
}

// TestObtain_Deadline_lagging gives Obtain a ctx whose deadline passes 2ms
// after the first attempt, before the first retry (5ms), while its Done
// channel closes and its Err turns DeadlineExceeded only 50ms later: what
// happens when the runtime has not yet run the ctx's own timer. Obtain must
// send nothing after the deadline (a MONITOR on a connection of its own
// checks the server's timestamps) and return ErrNotObtained joined with
// DeadlineExceeded, with a random token and with a custom one alike: the
// first attempt's reply, that another token holds the key, is known.
func TestObtain_Deadline_lagging(t *testing.T) {
	const (
		before = 2 * time.Millisecond  // from the call to the deadline
		lag    = 50 * time.Millisecond // from the deadline to Done and Err
		slack  = time.Millisecond      // a command sent at the deadline may run this much later
	)
	srv, locker, hold := deadlineSetup(t)
	for _, tc := range []struct {
		name string
		opt  *redislock.Options
	}{
		{"token=random", &redislock.Options{RetryStrategy: redislock.LinearBackoff(deadlineBackoff)}},
		{"token=custom", &redislock.Options{RetryStrategy: redislock.LinearBackoff(deadlineBackoff), Token: "my-own-token"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := "deadline:lagging:" + tc.name
			hold(t, key)
			// Load the scripts and take any first-call cost out of the way.
			_, err := locker.Obtain(t.Context(), key, time.Minute, &redislock.Options{Token: tc.opt.Token})
			require.ErrorIs(t, err, redislock.ErrNotObtained)

			// The first attempt must run before the deadline for the run to
			// say anything; on a loaded machine it may not: try again.
			for try := 1; ; try++ {
				mon := startMonitor(t, srv)
				start := time.Now()
				deadline := start.Add(before)
				ctx := newLaggingCtx(deadline, lag)
				_, err := locker.Obtain(ctx, key, time.Minute, tc.opt)
				returned := time.Since(deadline)
				<-ctx.Done()
				time.Sleep(20 * time.Millisecond) // for a command the lagging ctx let through, or a cleanup
				cmds := mon.stop(t, key)

				if len(cmds) == 0 || cmds[0].at.After(deadline) {
					require.Less(t, try, 5, "the first attempt never ran before the deadline: %v", cmds)
					t.Logf("try %d: the first attempt ran after the deadline, trying again", try)
					continue
				}
				var late []string
				for _, c := range cmds {
					if c.at.After(deadline.Add(slack)) {
						late = append(late, "+"+c.at.Sub(deadline).Round(time.Microsecond).String()+" "+c.command())
					}
				}
				t.Logf("Obtain returned %v after the deadline; %d commands on the key, %d of them late; err: %v",
					returned.Round(time.Microsecond), len(cmds), len(late), err)
				assert.ErrorIs(t, err, redislock.ErrNotObtained)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.Empty(t, late, "commands sent after the deadline")
				assertHeldByOther(t, srv, key)
				return
			}
		})
	}
}

// laggingCtx is a ctx whose deadline has passed while Err still returns nil
// and Done is open: Done closes, and Err turns DeadlineExceeded, only lag
// after the deadline. It has no values.
type laggingCtx struct {
	deadline time.Time
	done     chan struct{}
	ended    atomic.Bool
}

var _ context.Context = (*laggingCtx)(nil)

func newLaggingCtx(deadline time.Time, lag time.Duration) *laggingCtx {
	c := &laggingCtx{deadline: deadline, done: make(chan struct{})}
	time.AfterFunc(time.Until(deadline)+lag, func() {
		c.ended.Store(true) // before close: Err is set once Done is closed
		close(c.done)
	})
	return c
}

func (c *laggingCtx) Deadline() (time.Time, bool) { return c.deadline, true }
func (c *laggingCtx) Done() <-chan struct{}       { return c.done }
func (c *laggingCtx) Value(any) any               { return nil }

func (c *laggingCtx) Err() error {
	if c.ended.Load() {
		return context.DeadlineExceeded
	}
	return nil
}

// monitor reads a MONITOR stream on a connection of its own.
type monitor struct {
	srv  *redistest.Server
	conn net.Conn
	done chan struct{}
	mu   sync.Mutex
	cmds []monitored
}

// monitored is one command of a MONITOR stream, with the server's time.
type monitored struct {
	at   time.Time
	line string // after the time: [db client] "CMD" "arg" ...
}

func (m monitored) String() string { return m.at.Format("15:04:05.000000") + " " + m.command() }

// command is the client and the command name, without arguments (a token
// stays out of the test's output).
func (m monitored) command() string {
	client, rest, _ := strings.Cut(m.line, "] ")
	name, _, _ := strings.Cut(rest, " ")
	return client + "] " + name
}

// startMonitor sends MONITOR to srv on a connection of its own and records
// what it reports until stop.
func startMonitor(t *testing.T, srv *redistest.Server) *monitor {
	t.Helper()
	conn, err := net.DialTimeout("tcp", srv.Addr, 5*time.Second)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	r := bufio.NewReader(conn)
	_, err = conn.Write([]byte("*1\r\n$7\r\nMONITOR\r\n"))
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	ok, err := r.ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "+OK\r\n", ok)
	require.NoError(t, conn.SetReadDeadline(time.Time{}))

	m := &monitor{srv: srv, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(m.done)
		for {
			// +1700000000.123456 [0 127.0.0.1:40000] "SET" "key" ...
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n")
			stamp, rest, _ := strings.Cut(line, " ")
			sec, usec, _ := strings.Cut(stamp, ".")
			s, err1 := strconv.ParseInt(sec, 10, 64)
			us, err2 := strconv.ParseInt(usec, 10, 64)
			if err1 != nil || err2 != nil {
				continue
			}
			m.mu.Lock()
			m.cmds = append(m.cmds, monitored{at: time.Unix(s, us*1000), line: rest})
			m.mu.Unlock()
		}
	}()
	return m
}

// stop waits until the monitor has seen everything the server ran before
// this call (an ECHO of a marker), closes it and returns the commands that
// name key, in order.
func (m *monitor) stop(t *testing.T, key string) []monitored {
	t.Helper()
	marker := "monitor-end-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	_, err := m.srv.Do(t, "ECHO", marker)
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.cmds) > 0 && strings.Contains(m.cmds[len(m.cmds)-1].line, marker)
	}, 5*time.Second, time.Millisecond, "MONITOR never reported the marker")
	_ = m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	var keyed []monitored
	for _, c := range m.cmds {
		if strings.Contains(c.line, key) {
			keyed = append(keyed, c)
		}
	}
	return keyed
}
