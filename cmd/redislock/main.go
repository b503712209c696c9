// Command redislock runs a command under a distributed lock in Redis, tells
// who holds a lock, and demonstrates package redislock (distributed locks
// over Redis, on rueidis) under contention.
//
//	go install github.com/seed-223c80a0/redislock/cmd/redislock@latest
//	redislock run [flags] KEY [--] COMMAND [ARG...]   # run.go
//	redislock status [flags] KEY                      # status.go
//	redislock bench [flags]                           # bench.go
//
// run obtains the lock KEY, runs the command while it keeps the lock with
// Lock.Watch, releases it when the command exits, and exits with the
// command's status: a job in the crontab of every replica runs on one at a
// time. status reads a lock (held, by what metadata, for how long still, its
// fence token, its waiters) without its token. "redislock run --help" and
// "redislock status --help" are their manuals.
//
// bench starts -workers goroutines that, until -duration has passed, each
// pick one of -keys keys at random, Obtain its lock (waiting with
// LinearBackoff(-retry), giving up after one -ttl), hold it for -hold and
// Release it. It prints its progress every -interval and a summary at the
// end: acquisitions per second, the time to acquire (mean, p50, p99, max),
// the contention (the share of attempts that found the lock held, counted
// exactly by a redislock.Observer), the attempts per acquisition, what ended
// the waits (a release, the holder's expiry, the backoff), the Obtain calls
// that gave up (not obtained within one TTL), the errors.
//
//	go run ./cmd/redislock bench                        # on an embedded Redis (miniredis)
//	go run ./cmd/redislock bench -addr 127.0.0.1:6379   # on a real server
//	go run ./cmd/redislock bench -cluster -addr 127.0.0.1:7000,127.0.0.1:7001
//	go run ./cmd/redislock bench -h                     # the flags
//
// bench also checks what the locks promise. Each key has an in-process
// counter of the workers holding it: if it ever exceeds one, two workers
// held the same lock at once, a violation. With -fence every lock is
// obtained with a fence key that shares its hash slot ("redislock:demo:{0}"
// is fenced by "redislock:demo:{0}:fence"), and the fence tokens that
// successive holders of one key see must strictly increase. Ctrl-C ends the
// run early and still prints the summary. The exit status of bench is 0 when
// the run obtained locks without errors, violations or fence failures; 1
// when it did not; 2 for bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `redislock: run commands under distributed locks in Redis, and the demo of
github.com/seed-223c80a0/redislock, distributed locks over Redis on rueidis.

usage:
  redislock run [flags] KEY [--] COMMAND [ARG...]
                            obtains the lock KEY, runs the command while it
                            keeps the lock, releases it, exits with the
                            command's status
  redislock status [flags] KEY
                            whether KEY is held, by whom, for how long
  redislock bench [flags]   workers contend for a few locks; prints the
                            acquisitions/s, time to acquire and contention

"redislock run --help" and "redislock status --help" are their manuals;
"redislock bench -h" lists the flags of bench.
`

// run is the whole command: main calls it with os.Args[1:]. It returns the
// exit status: that of the subcommand, and 2 for bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	env := environment{stdout: stdout, stderr: stderr, getenv: os.Getenv}
	switch args[0] {
	case "run":
		return lockRun(ctx, args[1:], env)
	case "status":
		return status(ctx, args[1:], env)
	case "bench":
		cfg, ok := parseBench(args[1:], stderr)
		if !ok {
			return exitUsage
		}
		// Ctrl-C or SIGTERM ends the run early, with its summary; a
		// second one kills the process as usual.
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		go func() { <-ctx.Done(); stop() }()
		return bench(ctx, cfg, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return exitUsage
	default:
		fmt.Fprintf(stderr, "redislock: unknown command %q\n\n%s", args[0], usage)
		return exitUsage
	}
}

// environment is what a subcommand writes to and reads its environment
// variables from.
type environment struct {
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usage handles an error of parsing the arguments of the subcommand sub:
// the manual on stdout for --help (status 0), else the error and the
// synopsis on stderr (status 2).
func (e environment) usage(err error, sub, synopsis string, manual func(io.Writer)) int {
	if errors.Is(err, flag.ErrHelp) {
		manual(e.stdout)
		return 0
	}
	fmt.Fprintf(e.stderr, "redislock %s: %v\n\n%s\n\"redislock %s --help\" shows every flag, the exit statuses and examples.\n",
		sub, err, synopsis, sub)
	return exitUsage
}

// fail reports an error of the subcommand sub: bad usage (status 2) or a
// failure (status 125).
func (e environment) fail(sub string, err error, synopsis string) int {
	if errors.As(err, new(usageError)) {
		return e.usage(err, sub, synopsis, nil)
	}
	fmt.Fprintf(e.stderr, "redislock %s: %v\n", sub, err)
	return exitError
}

// newFlagSet returns an empty flag set for the subcommand sub that prints
// nothing itself: its errors are reported with the synopsis, and --help
// prints the manual.
func newFlagSet(sub string) *flag.FlagSet {
	fs := flag.NewFlagSet("redislock "+sub, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// flagError wraps an error of flag.FlagSet.Parse as bad usage, except
// flag.ErrHelp.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err}
}

// usageError is an error in the command line: exit status 2, with usage.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

// printFlags writes every flag of fs with its default, as a manual's
// OPTIONS: the name and value, then the usage indented. shown overrides the
// default shown for a flag whose default is computed.
func printFlags(w io.Writer, fs *flag.FlagSet, shown map[string]string) {
	fs.VisitAll(func(f *flag.Flag) {
		name, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if name != "" {
			line += " " + name
		}
		fmt.Fprintln(w, line)
		def, ok := shown[f.Name]
		switch {
		case ok:
		case strings.Contains(usage, "(default"):
			def = ""
		case f.DefValue == "":
			def = "none"
		default:
			def = f.DefValue
		}
		if def != "" {
			usage += " (default: " + def + ")"
		}
		for l := range strings.SplitSeq(usage, "\n") {
			fmt.Fprintln(w, "        "+l)
		}
	})
}
