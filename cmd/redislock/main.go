// Command redislock is the runnable demo of package redislock: distributed
// locks over Redis, on rueidis.
//
//	go run ./cmd/redislock bench                        # on an embedded Redis (miniredis)
//	go run ./cmd/redislock bench -addr 127.0.0.1:6379   # on a real server
//	go run ./cmd/redislock bench -cluster -addr 127.0.0.1:7000,127.0.0.1:7001
//	go run ./cmd/redislock bench -h                     # the flags
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
// It also checks what the locks promise. Each key has an in-process counter
// of the workers holding it: if it ever exceeds one, two workers held the
// same lock at once, a violation. With -fence every lock is obtained with a
// fence key that shares its hash slot ("redislock:demo:{0}" is fenced by
// "redislock:demo:{0}:fence"), and the fence tokens that successive holders
// of one key see must strictly increase. Ctrl-C ends the run early and still
// prints the summary. The exit status is 0 when the run obtained locks
// without errors, violations or fence failures; 1 when it did not; 2 for bad
// usage.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	// Ctrl-C or SIGTERM ends the run early, with its summary; a second one
	// kills the process as usual.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() { <-ctx.Done(); stop() }()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `redislock: the demo of github.com/seed-223c80a0/redislock, distributed locks
over Redis on rueidis.

usage:
  redislock bench [flags]   workers contend for a few locks; prints the
                            acquisitions/s, time to acquire and contention

"redislock bench -h" lists the flags of bench.
`

// run is the whole command: main calls it with os.Args[1:]. It returns the
// exit status: 0 success, 1 a failed run, 2 bad usage.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "bench":
		cfg, ok := parseBench(args[1:], stderr)
		if !ok {
			return 2
		}
		return bench(ctx, cfg, stdout, stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stderr, usage)
		return 2
	default:
		fmt.Fprintf(stderr, "redislock: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
}
