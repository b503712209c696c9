package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/rueidis"
	"github.com/seed-223c80a0/redislock"
)

// The exit statuses of run besides the command's own.
const (
	exitUsage       = 2   // bad usage
	exitNotObtained = 75  // the lock is held by another (EX_TEMPFAIL); --conflict-exit-code
	exitLost        = 76  // the lock was lost while the command ran
	exitError       = 125 // Redis could not be reached or answered with an error (as timeout(1), env(1))
	exitCannotRun   = 126 // the command was found but could not be started
	exitNotFound    = 127 // the command was not found
)

// fenceEnv is the environment variable that hands the fence token to the
// command.
const fenceEnv = "REDISLOCK_FENCE_TOKEN"

// waitPoll is the backoff of a waiting obtain: the longest it sleeps without
// news of a release (a release wakes it at once).
const waitPoll = 500 * time.Millisecond

const runSynopsis = `usage: redislock run [flags] KEY [--] COMMAND [ARG...]`

const runManual = `NAME
  redislock run - run a command under a distributed lock in Redis

SYNOPSIS
  redislock run [flags] KEY [--] COMMAND [ARG...]

DESCRIPTION
  Obtains the lock KEY, runs COMMAND with its arguments, keeps the lock
  while the command runs (refreshing it every third of --ttl), releases it
  when the command exits, and exits with the command's status: a job that
  runs on many hosts runs on one at a time, as flock(1) does on one host.

  Without --wait the lock is tried once: when another holds it, run exits
  at once with the --conflict-exit-code status (75) without running the
  command. With --wait it waits, in arrival order, up to that long.

  When the lock is lost while the command runs (its key deleted, or Redis
  gone or silent past the TTL), the command gets SIGTERM, SIGKILL
  --kill-after later if it is still running, and run exits 76. SIGINT,
  SIGTERM and SIGHUP sent to run are passed to the command; run releases
  the lock once the command has exited. The command runs in a process
  group of its own, which gets every signal (a shell script's children
  too); its stdin, stdout and stderr are run's. A command that reads from a
  terminal is stopped (SIGTTIN), as under timeout(1): give it its input
  from a file or a pipe. If run itself is killed (kill -9, the OOM killer),
  the lock expires --ttl after its last refresh; on Linux the command gets
  SIGKILL at once (its own children do not).

  The lock's key holds its token, fence token and --metadata; its token is
  never shown nor handed to the command. With --fence-key, the command gets
  its fence token, strictly increasing from one holder to the next, in
  $` + fenceEnv + `: pass it to what the lock protects, and have that refuse
  a lower one.

  Flags come before KEY; "--" after KEY is optional, and needed only when
  COMMAND starts with "-".

FLAGS
`

const runTail = `
EXIT STATUS
  N    the command's own status; 128+N when a signal N ended it
  2    bad usage: an unknown flag, a bad value (a bad URL, --ttl), no KEY
       or no COMMAND
  75   the lock is held by another (after --wait, if given): the command did
       not run; --conflict-exit-code sets another
  76   the lock was lost while the command ran: the command was stopped
  125  Redis could not be reached, or answered with an error: the command
       did not run
  126  the command could not be started (not executable)
  127  the command was not found

ENVIRONMENT
  REDISLOCK_URL           the Redis server when --url is not given
  REDISLOCK_FENCE_TOKEN   set for the command, with --fence-key

EXAMPLES
  A nightly report in the crontab of every replica, run by one of them
  (the others find the lock held and exit 0 without mail):

    0 3 * * * REDISLOCK_URL=redis://redis.internal:6379 $HOME/go/bin/redislock run --conflict-exit-code 0 nightly-report -- /usr/local/bin/report

  A migration in every pod's start script, one pod at a time:

    redislock run --wait 10m --ttl 1m --fence-key migrate:fence migrate -- ./migrate up
`

// runConfig is what the flags and arguments of run set.
type runConfig struct {
	conn      connFlags
	key       string
	argv      []string
	ttl       time.Duration
	wait      time.Duration
	conflict  int
	metadata  string
	fenceKey  string
	killAfter time.Duration
}

// runFlags returns the flags of run, which set cfg.
func runFlags(cfg *runConfig) *flag.FlagSet {
	fs := newFlagSet("run")
	cfg.conn.register(fs)
	fs.DurationVar(&cfg.ttl, "ttl", 30*time.Second, "the lock's time to live, `DURATION` (100ms to 8760h): it is refreshed\n"+
		"every third of it while the command runs; if run dies, another may\n"+
		"take the lock that long after the last refresh")
	fs.DurationVar(&cfg.wait, "wait", 0, "how long to wait for a lock held by another, `DURATION`; 0 tries once")
	fs.IntVar(&cfg.conflict, "conflict-exit-code", exitNotObtained, "the exit status, `N` (0 to 255), when the lock is held by another")
	fs.StringVar(&cfg.metadata, "metadata", "", "stored with the lock for \"redislock status\" to show, `TEXT` (4096 bytes\nat most)")
	fs.StringVar(&cfg.fenceKey, "fence-key", "", "the fence counter `KEY`: the command gets its fence token in\n$"+fenceEnv+" (on a cluster, share KEY's hash tag)")
	fs.DurationVar(&cfg.killAfter, "kill-after", 10*time.Second, "when the lock is lost, how long after SIGTERM the command gets\nSIGKILL, `DURATION`; 0 sends SIGKILL at once")
	return fs
}

// parseRun parses the arguments of run. It returns usageError for bad
// usage, and flag.ErrHelp for --help.
func parseRun(args []string) (runConfig, error) {
	var cfg runConfig
	fs := runFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, flagError(err)
	}
	metadataSet := false
	fs.Visit(func(f *flag.Flag) { metadataSet = metadataSet || f.Name == "metadata" })
	if !metadataSet {
		cfg.metadata = defaultMetadata()
	}
	rest := fs.Args()
	bad := func(format string, a ...any) (runConfig, error) {
		return cfg, usageError{fmt.Errorf(format, a...)}
	}
	if len(rest) == 0 {
		return bad("no KEY given")
	}
	cfg.key, rest = rest[0], rest[1:]
	switch {
	case len(rest) > 0 && rest[0] == "--":
		rest = rest[1:]
	case len(rest) > 0 && len(rest[0]) > 1 && rest[0][0] == '-':
		return bad("%q after KEY: flags go before KEY (a COMMAND that starts with \"-\" goes after \"--\")", rest[0])
	}
	cfg.argv = rest
	switch {
	case cfg.key == "":
		return bad("KEY is empty")
	case len(cfg.argv) == 0:
		return bad("no COMMAND given")
	case cfg.ttl < 100*time.Millisecond || cfg.ttl > redislock.MaxTTL:
		return bad("--ttl must be between 100ms and 8760h (365 days), got %v", cfg.ttl)
	case cfg.wait < 0:
		return bad("--wait must not be negative, got %v", cfg.wait)
	case cfg.conflict < 0 || cfg.conflict > 255:
		return bad("--conflict-exit-code must be between 0 and 255, got %d", cfg.conflict)
	case len(cfg.metadata) > redislock.MaxMetadataLen:
		return bad("--metadata is %d bytes, over %d", len(cfg.metadata), redislock.MaxMetadataLen)
	case cfg.killAfter < 0:
		return bad("--kill-after must not be negative, got %v", cfg.killAfter)
	case cfg.fenceKey == cfg.key:
		return bad("--fence-key must differ from KEY")
	}
	return cfg, nil
}

// defaultMetadata is HOST:PID.
func defaultMetadata() string {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	return host + ":" + strconv.Itoa(os.Getpid())
}

// runHelp writes the manual of run.
func runHelp(w io.Writer) {
	fmt.Fprint(w, runManual)
	printFlags(w, runFlags(new(runConfig)), map[string]string{"metadata": "HOST:PID, this host's name and run's process id"})
	fmt.Fprint(w, runTail)
}

// signalled is the cause of a wait cut short by a signal.
type signalled struct{ sig syscall.Signal }

func (s signalled) Error() string { return "interrupted by " + signalNames[s.sig] }

// signalNames names the signals that run passes on.
var signalNames = map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM", syscall.SIGHUP: "SIGHUP"}

// lockRun runs the run subcommand.
func lockRun(ctx context.Context, args []string, env environment) int {
	cfg, err := parseRun(args)
	if err != nil {
		return env.usage(err, "run", runSynopsis, runHelp)
	}
	fail := func(err error) int { return env.fail("run", err, runSynopsis) }

	// From here on, SIGINT, SIGTERM and SIGHUP stop a wait for the lock, or
	// go to the command.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	client, _, err := cfg.conn.connect(env.getenv)
	if err != nil {
		return fail(err)
	}
	defer client.Close()
	lock, code := obtain(ctx, cfg, client, sigs, env)
	if lock == nil {
		return code
	}
	code = supervise(ctx, cfg, lock, sigs, env)

	// Released in every case: a lock that is lost is not touched by it.
	if err := release(ctx, lock); err != nil && code != exitLost {
		if errors.Is(err, redislock.ErrLockNotHeld) {
			fmt.Fprintf(env.stderr, "redislock run: warning: lock %q was no longer held when the command exited (expired or taken)\n", cfg.key)
		} else {
			fmt.Fprintf(env.stderr, "redislock run: warning: release %q: %v (the lock expires within %v)\n", cfg.key, err, cfg.ttl)
		}
	}
	return code
}

// release releases lock, even once ctx has ended, within 5s.
func release(ctx context.Context, lock *redislock.Lock) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return lock.Release(ctx)
}

// obtain obtains the lock of cfg, or returns nil and the exit status.
func obtain(ctx context.Context, cfg runConfig, client rueidis.Client, sigs <-chan os.Signal, env environment) (*redislock.Lock, int) {
	opt := &redislock.Options{Metadata: cfg.metadata, FenceKey: cfg.fenceKey}
	limit := cfg.ttl // one attempt: no use after the TTL it asks for
	if cfg.wait > 0 {
		opt.RetryStrategy = redislock.LinearBackoff(waitPoll)
		limit = cfg.wait
	}
	obtainCtx, cancel := context.WithCancelCause(ctx)
	obtainCtx, cancelTimeout := context.WithTimeout(obtainCtx, limit)
	defer cancelTimeout()
	watched := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case s := <-sigs:
			cancel(signalled{s.(syscall.Signal)})
		case <-done:
		}
	}()
	lock, err := redislock.New(client).Obtain(obtainCtx, cfg.key, cfg.ttl, opt)
	close(done)
	<-watched
	if err != nil && cfg.wait > 0 {
		awaitDequeued(ctx, client, cfg)
	}
	var sig signalled
	if errors.As(context.Cause(obtainCtx), &sig) {
		// A signal came while obtaining: the command is not run.
		if lock != nil {
			_ = release(ctx, lock) // on error, it expires by its TTL
		}
		fmt.Fprintf(env.stderr, "redislock run: %v while obtaining %q: the command did not run\n", sig, cfg.key)
		return nil, 128 + int(sig.sig)
	}
	switch {
	case err == nil:
		return lock, 0
	case errors.Is(err, redislock.ErrNotObtained):
		msg := fmt.Sprintf("redislock run: lock %q is held by another", cfg.key)
		if cfg.wait > 0 {
			msg += fmt.Sprintf(" (waited %v)", cfg.wait)
		}
		readCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		if st, err := readStatus(readCtx, client, cfg.key, ""); err == nil && st.Held {
			msg += fmt.Sprintf(": %q, ttl %s", st.Metadata, st.left())
		}
		fmt.Fprintf(env.stderr, "%s; the command did not run\n", msg)
		return nil, cfg.conflict
	default:
		return nil, env.fail("run", fmt.Errorf("obtain %q: %w; the command did not run", cfg.key, err), runSynopsis)
	}
}

// awaitDequeued waits, for the library's release timeout at most, until the
// waiters' queue of cfg.key holds no entry of this process: a wait that gave
// up is taken out of the queue in the background, and an entry left behind
// by a process that exits would be granted the lock at the next release,
// which would then be held by nobody for its TTL. An entry is known by its
// last three fields (lua/queue.lua): its metadata, its kind ("" for an
// exclusive lock) and its key, unique with the default metadata, HOST:PID.
func awaitDequeued(ctx context.Context, client rueidis.Client, cfg runConfig) {
	queue := waitersKey(cfg.key, client.Mode() == rueidis.ClientModeCluster)
	if queue == "" {
		return
	}
	mine := field(cfg.metadata) + field("") + field(cfg.key)
	ctx, cancel := context.WithTimeout(ctx, redislock.DefaultReleaseTimeout)
	defer cancel()
	for {
		entries, err := client.Do(ctx, client.B().Lrange().Key(queue).Start(0).Stop(-1).Build()).AsStrSlice()
		if err != nil || !slices.ContainsFunc(entries, func(e string) bool { return strings.HasSuffix(e, mine) }) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// field is f as a field of a queue entry: its length, ":", itself.
func field(f string) string { return strconv.Itoa(len(f)) + ":" + f }

// supervise runs the command while the lock is watched, and returns the exit
// status of run.
func supervise(ctx context.Context, cfg runConfig, lock *redislock.Lock, sigs <-chan os.Signal, env environment) int {
	work, stopWatch := lock.Watch(ctx, cfg.ttl)
	defer stopWatch()
	if work.Err() != nil {
		fmt.Fprintf(env.stderr, "redislock run: lock %q lost before the command started: %v\n", cfg.key, lostCause(work))
		return exitLost
	}

	cmd := exec.Command(cfg.argv[0], cfg.argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.Env = os.Environ()
	if cfg.fenceKey != "" {
		cmd.Env = append(cmd.Env, fenceEnv+"="+strconv.FormatInt(lock.FenceToken(), 10))
	}
	isolate(cmd)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(env.stderr, "redislock run: %v\n", err)
		if errors.Is(err, exec.ErrNotFound) || errors.Is(err, os.ErrNotExist) {
			return exitNotFound
		}
		return exitCannotRun
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	lost, wasLost := work.Done(), false
	var kill <-chan time.Time
	for {
		select {
		case <-exited: // an *exec.ExitError or nil: ProcessState says which
			if wasLost {
				return exitLost
			}
			return exitStatus(cmd.ProcessState)
		case s := <-sigs:
			signalJob(cmd, s)
		case <-lost:
			lost, wasLost = nil, true
			fmt.Fprintf(env.stderr, "redislock run: lock %q lost: %v\n", cfg.key, lostCause(work))
			if cfg.killAfter == 0 {
				fmt.Fprintln(env.stderr, "redislock run: sending SIGKILL to the command")
				signalJob(cmd, syscall.SIGKILL)
				continue
			}
			fmt.Fprintf(env.stderr, "redislock run: sending SIGTERM to the command, SIGKILL in %v\n", cfg.killAfter)
			signalJob(cmd, syscall.SIGTERM)
			kill = time.After(cfg.killAfter)
		case <-kill:
			kill = nil
			fmt.Fprintln(env.stderr, "redislock run: sending SIGKILL to the command")
			signalJob(cmd, syscall.SIGKILL)
		}
	}
}

// lostCause says why the watched work ended: the lock was found gone, or
// could not be refreshed within its TTL.
func lostCause(work context.Context) string {
	cause := context.Cause(work)
	if errors.Is(cause, redislock.ErrLockNotHeld) {
		return "its key was deleted, expired, or taken by another token"
	}
	return cause.Error()
}

// exitStatus is the status of a command that has exited: its own, or 128+N
// for a signal N.
func exitStatus(ps *os.ProcessState) int {
	if ps == nil {
		return exitCannotRun // Wait failed without a process state: not expected
	}
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}
