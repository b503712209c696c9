package redislock_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// A deadline that passes while an Obtain waits must read as ErrNotObtained
// joined with the ctx error, every time, and nothing is attempted after it.
// These tests hold a key with another token on a real redis-server and let
// the deadline pass while an Obtain retries it.
//
// The rule: once the ctx deadline has passed, the library sends
//   - no obtain attempt: no SET ... NX, no EVALSHA or EVAL of obtain.lua;
//   - release.lua (EVALSHA or EVAL), and nothing else that the test can see:
//     a waiter leaving the wait queue (the LREM of its entry), the release of
//     a lock passed to it meanwhile, the cleanup of an obtain whose outcome is
//     unknown.
//
// Outside the rule: the commands rueidis sends on its own (a connection's
// handshake, PING), and the subscription of the Client's pub/sub channel,
// which names no key and attempts nothing; neither passes through the
// Client's rueidis.Client.Do, and the test does not see them.
//
// How the test sees the rule kept. A recorder (a rueidis.Client) notes each
// command the library hands to Do or DoMulti, when it does and when the
// reply comes back. That time, not the server's: a MONITOR stamps a command
// when the server runs it, on a loaded machine milliseconds after it was
// sent. An attempt is "after the deadline" when the library decided to send
// it after the deadline. The library decides from its own clock, before it
// sends (it keeps max(1ms, two round trips) of margin), so a command handed
// over just after the deadline may have been decided just before it, and
// only ordering makes a verdict certain: an attempt handed over after a
// reply that came back after the deadline was decided after the deadline. The
// tests arrange for the deadline to pass during a reply the recorder holds
// back, or during a wait that no reply ends; see each test.
//
// Scripts are told apart by their SHA-1 (EVALSHA) or by the SHA-1 of their
// body (EVAL), computed from lua/ as the library builds them for a
// standalone server: owned.lua, "local cluster = false", queue.lua, then the
// script (owned.lua then the script for refresh.lua and pttl.lua). Telling
// them apart by what runs inside them (obtain.lua's get then pttl or
// rpush, release.lua's lrem, get, lpop, del) would tie the test to the
// scripts' insides, which change with them, and is ambiguous: both scripts
// begin with a get of the lock key, and a release that finds the key held
// by another runs nothing more. A script of unknown SHA fails the test, so
// a change in how the scripts are built shows as a failure, never as a
// silently wrong classification. The scripts are loaded before the tests
// (deadlineSetup): rueidis answers a NOSCRIPT by sending the same script
// again as EVAL, one attempt that the recorder would see as two.

const (
	deadlineBackoff = 5 * time.Millisecond
	deadlineRuns    = 200
	otherToken      = "held-by-another-token"
)

// cmdKind is what a command the library sends is, for the deadline rule.
type cmdKind int

const (
	kindOther   cmdKind = iota // anything else: not to be sent after the deadline
	kindAttempt                // SET NX, obtain.lua
	kindRelease                // release.lua
	kindUnknown                // a script the test does not know
)

// libraryScripts maps the SHA-1 of each script the library runs on a
// standalone server to its file name and its body, built as the library
// builds them (see the top of this file).
var libraryScripts = sync.OnceValues(func() (map[string]libraryScript, error) {
	files := map[string]string{}
	for _, name := range []string{"owned.lua", "queue.lua", "holders.lua", "obtain.lua", "release.lua", "refresh.lua", "pttl.lua"} {
		b, err := os.ReadFile(filepath.Join("lua", name))
		if err != nil {
			return nil, err
		}
		files[name] = string(b)
	}
	head := files["owned.lua"] + "local cluster = false\n" + files["queue.lua"]
	scripts := map[string]libraryScript{}
	for file, body := range map[string]string{
		"obtain.lua":  head + files["holders.lua"] + files["obtain.lua"],
		"release.lua": head + files["holders.lua"] + files["release.lua"],
		"refresh.lua": files["owned.lua"] + files["refresh.lua"],
		"pttl.lua":    files["owned.lua"] + files["pttl.lua"],
	} {
		scripts[sha1Hex(body)] = libraryScript{file: file, body: body}
	}
	return scripts, nil
})

type libraryScript struct{ file, body string }

func sha1Hex(s string) string {
	sum := sha1.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// classify tells what a command (its name and arguments) is, and names it
// without its arguments: a token stays out of the test's output.
func classify(args []string) (cmdKind, string) {
	scripts, _ := libraryScripts() // deadlineSetup checks the error
	name := strings.ToUpper(args[0])
	script := func(sha string) (cmdKind, string) {
		switch file := scripts[strings.ToLower(sha)].file; file {
		case "obtain.lua":
			return kindAttempt, name + " " + file
		case "release.lua":
			return kindRelease, name + " " + file
		case "":
			return kindUnknown, name + " of an unknown script " + sha
		default:
			return kindOther, name + " " + file
		}
	}
	switch {
	case name == "SET" && len(args) > 3:
		for _, a := range args[3:] {
			if strings.EqualFold(a, "NX") {
				return kindAttempt, "SET NX"
			}
		}
	case name == "EVALSHA" && len(args) > 1:
		return script(args[1])
	case name == "EVAL" && len(args) > 1:
		return script(sha1Hex(args[1]))
	}
	return kindOther, name
}

// sentCmd is one command the library handed to its rueidis.Client.
type sentCmd struct {
	kind          cmdKind
	name          string
	sent, replied time.Time
}

// recorder is a rueidis.Client that notes each command passed to Do and
// DoMulti. hold, when set, is called with each command once its reply has
// come back and before the library sees it: it may keep the reply back.
type recorder struct {
	rueidis.Client
	hold func(sentCmd)
	mu   sync.Mutex
	cmds []sentCmd
}

func (r *recorder) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c := sentCmd{sent: time.Now()}
	c.kind, c.name = classify(cmd.Commands()) // before Do, which may recycle cmd
	res := r.Client.Do(ctx, cmd)
	r.note(c)
	return res
}

func (r *recorder) DoMulti(ctx context.Context, multi ...rueidis.Completed) []rueidis.RedisResult {
	cs := make([]sentCmd, len(multi))
	for i, cmd := range multi {
		cs[i].sent = time.Now()
		cs[i].kind, cs[i].name = classify(cmd.Commands())
	}
	res := r.Client.DoMulti(ctx, multi...)
	for _, c := range cs {
		r.note(c)
	}
	return res
}

func (r *recorder) note(c sentCmd) {
	if r.hold != nil {
		r.hold(c)
	}
	c.replied = time.Now()
	r.mu.Lock()
	r.cmds = append(r.cmds, c)
	r.mu.Unlock()
}

// sent returns the commands noted so far, in the order they were sent.
func (r *recorder) sent() []sentCmd {
	r.mu.Lock()
	defer r.mu.Unlock()
	cmds := append([]sentCmd(nil), r.cmds...)
	for i := 1; i < len(cmds); i++ { // nearly sorted: an insertion sort
		for j := i; j > 0 && cmds[j].sent.Before(cmds[j-1].sent); j-- {
			cmds[j], cmds[j-1] = cmds[j-1], cmds[j]
		}
	}
	return cmds
}

// attempts returns the obtain attempts among cmds.
func attempts(cmds []sentCmd) []sentCmd {
	var out []sentCmd
	for _, c := range cmds {
		if c.kind == kindAttempt {
			out = append(out, c)
		}
	}
	return out
}

// brokenRule lists what in cmds certainly breaks the deadline rule: a script
// the test does not know (at any time); an obtain attempt sent after a reply
// that came back after the deadline; a command sent after the deadline that
// is neither an attempt nor release.lua. An attempt sent after the deadline
// with no such reply before it may have been decided before the deadline:
// each test judges those by what it arranged.
func brokenRule(cmds []sentCmd, deadline time.Time) []string {
	var broken []string
	lateReply := time.Time{} // the first reply that came back after the deadline
	for _, c := range cmds {
		if c.replied.After(deadline) && (lateReply.IsZero() || c.replied.Before(lateReply)) {
			lateReply = c.replied
		}
	}
	at := func(c sentCmd) string {
		return fmt.Sprintf("%s sent %v after the deadline", c.name, c.sent.Sub(deadline))
	}
	for _, c := range cmds {
		switch {
		case c.kind == kindUnknown:
			broken = append(broken, at(c)+" (the test computes the scripts' SHA-1 as the library builds them: has that changed?)")
		case c.kind == kindAttempt && !lateReply.IsZero() && c.sent.After(lateReply):
			broken = append(broken, at(c)+", after a reply that came back "+lateReply.Sub(deadline).String()+" after it")
		case c.kind == kindOther && c.sent.After(deadline):
			broken = append(broken, at(c))
		}
	}
	return broken
}

// deadlineSetup starts a redis-server with the library's scripts loaded and
// returns it with a client to it, every connection of which is open, and a
// function that sets a key to another token.
func deadlineSetup(t *testing.T) (*redistest.Server, rueidis.Client, func(t *testing.T, key string)) {
	t.Helper()
	scripts, err := libraryScripts()
	require.NoError(t, err, "the library's scripts in lua/")
	srv := redistest.StartServer(t)
	client := srv.Client(t)
	benchWarmClient(t, client)
	// Loaded first: an EVALSHA answered NOSCRIPT is sent again by rueidis
	// as EVAL, the same attempt, which the recorder would count as two.
	for sha, s := range scripts {
		loaded, err := client.Do(t.Context(), client.B().ScriptLoad().Script(s.body).Build()).ToString()
		require.NoError(t, err)
		require.Equal(t, sha, loaded)
	}
	hold := func(t *testing.T, key string) {
		t.Helper()
		require.NoError(t, client.Do(t.Context(), client.B().Set().Key(key).Value(otherToken).Px(time.Minute).Build()).Error())
	}
	return srv, client, hold
}

// TestObtain_Deadline_timeout is bsm/redislock's flaky
// TestObtain_retry_context_deadline, 200 times: a real WithTimeout(20ms)
// ends while Obtain retries every 5ms, now and then during an attempt. No
// run breaks the deadline rule where the test can be sure of it (see
// brokenRule); attempts sent after the deadline with no late reply before
// them (decided before it, sent after it) are counted and logged.
func TestObtain_Deadline_timeout(t *testing.T) {
	srv, client, hold := deadlineSetup(t)

	// A random token: the library knows that nobody else can hold it, so
	// even an attempt in flight at the deadline reads as not obtained.
	t.Run("token=random", func(t *testing.T) {
		key := "deadline:timeout:random"
		hold(t, key)
		opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(deadlineBackoff)}
		failures := map[string]int{}
		bad, late := 0, 0
		var rule deadlineRule
		for runs := 0; runs < deadlineRuns; {
			run := deadlineObtain(client, key, opt, 20*time.Millisecond)
			require.Nil(t, run.lock)
			if run.notAttempted() {
				late++
				require.Less(t, late, deadlineRuns/10, "Obtain began after its deadline too often")
				continue
			}
			runs++
			if !errors.Is(run.err, redislock.ErrNotObtained) || !errors.Is(run.err, context.DeadlineExceeded) {
				bad++
				failures[fmt.Sprint(run.err)]++
			}
			rule.check(run)
		}
		t.Logf("%d runs more, where the deadline passed before Obtain began", late)
		assert.Zero(t, bad, "%d of %d runs did not return ErrNotObtained joined with DeadlineExceeded: %v",
			bad, deadlineRuns, failures)
		rule.report(t)
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
		var rule deadlineRule
		for range deadlineRuns {
			run := deadlineObtain(client, key, opt, 20*time.Millisecond)
			require.Nil(t, run.lock)
			require.Error(t, run.err)
			if errors.Is(run.err, redislock.ErrNotObtained) {
				require.ErrorIs(t, run.err, context.DeadlineExceeded)
				outcomes["not obtained"]++
			} else {
				outcomes["unknown: "+run.err.Error()]++
			}
			rule.check(run)
		}
		t.Logf("outcomes of %d runs: %v", deadlineRuns, outcomes)
		rule.report(t)
		assertHeldByOther(t, srv, key)
	})
}

// deadlineRule gathers what the runs of TestObtain_Deadline_timeout sent
// after their deadlines.
type deadlineRule struct {
	runs, lateSends int
	broken          []string
}

// check judges what run sent until its deadline had passed.
func (r *deadlineRule) check(run deadlineRun) {
	r.runs++
	time.Sleep(time.Until(run.deadline))
	cmds := run.rec.sent()
	for _, b := range brokenRule(cmds, run.deadline) {
		r.broken = append(r.broken, fmt.Sprintf("run %d: %s", r.runs, b))
	}
	for _, c := range attempts(cmds) {
		if c.sent.After(run.deadline) {
			r.lateSends++
		}
	}
}

func (r *deadlineRule) report(t *testing.T) {
	t.Helper()
	t.Logf("%d of %d runs sent an attempt just after the deadline, decided before it", r.lateSends, r.runs)
	assert.Empty(t, r.broken, "the deadline rule broken")
}

// deadlineRun is one Obtain of TestObtain_Deadline_timeout.
type deadlineRun struct {
	lock     *redislock.Lock
	err      error
	rec      *recorder
	deadline time.Time
}

// notAttempted tells whether the run's deadline passed before Obtain began,
// on a loaded machine: then it sends nothing and returns the ctx error, not
// ErrNotObtained, and the run says nothing of a deadline that passes while
// Obtain waits.
func (r deadlineRun) notAttempted() bool {
	return len(r.rec.sent()) == 0 && errors.Is(r.err, context.DeadlineExceeded) && !errors.Is(r.err, redislock.ErrNotObtained)
}

// deadlineObtain obtains key with a ctx that times out after timeout, through
// a lock Client over a recorder of client of its own.
func deadlineObtain(client rueidis.Client, key string, opt *redislock.Options, timeout time.Duration) deadlineRun {
	rec := &recorder{Client: client}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	l, err := redislock.New(rec).Obtain(ctx, key, time.Minute, opt)
	return deadlineRun{lock: l, err: err, rec: rec, deadline: deadline}
}

// assertHeldByOther checks that key still holds the other token's value.
func assertHeldByOther(t *testing.T, srv *redistest.Server, key string) {
	t.Helper()
	got, err := srv.Do(t, "GET", key)
	require.NoError(t, err)
	assert.Equal(t, otherToken, got, "the other token lost its lock")
}

// TestObtain_Deadline_lagging gives Obtain a ctx whose Done channel closes,
// and whose Err turns DeadlineExceeded, only 200ms after its deadline: what
// happens when the runtime has not yet run the ctx's own timer. The
// deadline passes 20ms after the call, before the first retry (40ms), in one
// of two places:
//   - during the first attempt: the recorder keeps its reply back until the
//     deadline has passed, so whatever the library sends next it decided
//     after the deadline: no attempt may follow;
//   - during the first wait, which no reply ends (nobody releases the key):
//     there is no retry, the first wait's backoff ending after the deadline.
//     The attempts before the wait (the first, and the one that queues the
//     waiter in Redis) must have come back before the deadline for the run
//     to test the wait; else it is run again.
//
// In both, Obtain returns ErrNotObtained joined with DeadlineExceeded, with
// a random token and with a custom one alike (the first attempt's reply,
// that another token holds the key, is known), and nothing sent after the
// deadline breaks the rule (brokenRule). A MONITOR on a connection of its
// own checks that the server ran no attempt the recorder did not see.
func TestObtain_Deadline_lagging(t *testing.T) {
	const (
		before  = 20 * time.Millisecond  // from the call to the deadline
		backoff = 2 * before             // the first retry would come after the deadline
		lag     = 200 * time.Millisecond // from the deadline to Done and Err
	)
	srv, client, hold := deadlineSetup(t)
	for _, during := range []string{"attempt", "wait"} {
		for _, tc := range []struct {
			name string
			opt  *redislock.Options
		}{
			{"token=random", &redislock.Options{RetryStrategy: redislock.LinearBackoff(backoff)}},
			{"token=custom", &redislock.Options{RetryStrategy: redislock.LinearBackoff(backoff), Token: "my-own-token"}},
		} {
			t.Run("during="+during+"/"+tc.name, func(t *testing.T) {
				key := "deadline:lagging:" + during + ":" + tc.name
				hold(t, key)
				// Load the scripts and take any first-call cost out of the way.
				_, err := redislock.New(client).Obtain(t.Context(), key, time.Minute, &redislock.Options{Token: tc.opt.Token})
				require.ErrorIs(t, err, redislock.ErrNotObtained)

				// The first attempt must be sent before the deadline (and,
				// during=wait, the attempts before the wait come back before
				// it) for the run to say anything; on a loaded machine they
				// may not: try again.
				for try := 1; ; try++ {
					mon := startMonitor(t, srv)
					rec := &recorder{Client: client}
					start := time.Now()
					deadline := start.Add(before)
					if during == "attempt" {
						var first atomic.Bool
						rec.hold = func(c sentCmd) {
							if c.kind == kindAttempt && first.CompareAndSwap(false, true) {
								for !time.Now().After(deadline) {
									time.Sleep(time.Until(deadline) + 50*time.Microsecond)
								}
							}
						}
					}
					ctx := newLaggingCtx(deadline, lag)
					_, err := redislock.New(rec).Obtain(ctx, key, time.Minute, tc.opt)
					returned := time.Since(deadline)
					<-ctx.Done()
					time.Sleep(20 * time.Millisecond) // for a command the lagging ctx let through, or a cleanup
					ran := mon.stop(t, key)
					cmds := rec.sent()
					tried := attempts(cmds)

					require.NotEmpty(t, tried, "no attempt was sent")
					if tried[0].sent.After(deadline) {
						require.Less(t, try, 5, "the first attempt was never sent before the deadline")
						t.Logf("try %d: the first attempt was sent after the deadline, trying again", try)
						continue
					}
					var log []string
					for _, c := range cmds {
						log = append(log, fmt.Sprintf("%+v %s", c.sent.Sub(deadline).Round(time.Microsecond), c.name))
					}
					t.Logf("Obtain returned %v after the deadline; sent (time from the deadline): %v; err: %v",
						returned.Round(time.Microsecond), log, err)
					require.Empty(t, brokenRule(cmds, deadline), "the deadline rule broken")
					switch during {
					case "attempt":
						require.Len(t, tried, 1, "attempts sent after a reply that came back after the deadline")
					case "wait":
						require.LessOrEqual(t, len(tried), 1+queueRoundTrip,
							"a retry after a wait whose backoff ended after the deadline")
						if tried[len(tried)-1].replied.After(deadline) {
							require.Less(t, try, 5, "the attempts before the wait never came back before the deadline")
							t.Logf("try %d: the deadline passed during an attempt, not the wait: trying again", try)
							continue
						}
					}
					serverRan := 0
					for _, c := range ran {
						if kind, _ := classify(c.args); kind == kindAttempt && !c.inScript() {
							serverRan++
						}
					}
					require.LessOrEqual(t, serverRan, len(tried), "the server ran attempts that the recorder did not see")
					assert.ErrorIs(t, err, redislock.ErrNotObtained)
					assert.ErrorIs(t, err, context.DeadlineExceeded)
					assertHeldByOther(t, srv, key)
					return
				}
			})
		}
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
	at     time.Time
	client string   // "0 127.0.0.1:40000", or "0 lua" inside a script
	args   []string // the command's name and arguments
}

// inScript tells whether a script ran the command.
func (m monitored) inScript() bool { return strings.HasSuffix(m.client, " lua") }

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
			client, quoted, _ := strings.Cut(strings.TrimPrefix(rest, "["), "] ")
			args, err3 := monitorArgs(quoted)
			if err1 != nil || err2 != nil || err3 != nil || len(args) == 0 {
				continue
			}
			m.mu.Lock()
			m.cmds = append(m.cmds, monitored{at: time.Unix(s, us*1000), client: client, args: args})
			m.mu.Unlock()
		}
	}()
	return m
}

// monitorArgs splits the quoted arguments of a MONITOR line ("SET" "k"
// "v\x00m"); its escapes are those of a Go string literal.
func monitorArgs(s string) ([]string, error) {
	var args []string
	for s != "" {
		if s[0] != '"' {
			return nil, fmt.Errorf("no quote at %q", s)
		}
		end := 1
		for end < len(s) && s[end] != '"' {
			if s[end] == '\\' {
				end++
			}
			end++
		}
		if end >= len(s) {
			return nil, fmt.Errorf("no closing quote in %q", s)
		}
		arg, err := strconv.Unquote(s[:end+1])
		if err != nil {
			return nil, err
		}
		args = append(args, arg)
		s = strings.TrimPrefix(s[end+1:], " ")
	}
	return args, nil
}

// stop waits until the monitor has seen everything the server ran before
// this call (an ECHO of a marker), closes it and returns the commands that
// name key, in order.
func (m *monitor) stop(t *testing.T, key string) []monitored {
	t.Helper()
	marker := "monitor-end-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	_, err := m.srv.Do(t, "ECHO", marker)
	require.NoError(t, err)
	seen := 0
	require.Eventually(t, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		for ; seen < len(m.cmds); seen++ { // other commands may follow it
			if strings.Join(m.cmds[seen].args, " ") == "ECHO "+marker {
				return true
			}
		}
		return false
	}, 5*time.Second, time.Millisecond, "MONITOR never reported the marker")
	_ = m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	var keyed []monitored
	for _, c := range m.cmds {
		if strings.Contains(strings.Join(c.args, " "), key) {
			keyed = append(keyed, c)
		}
	}
	return keyed
}
