package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

const statusSynopsis = `usage: redislock status [flags] KEY`

const statusManual = `NAME
  redislock status - tell whether a lock is held, by whom, and for how long

SYNOPSIS
  redislock status [flags] KEY

DESCRIPTION
  Reads the lock KEY of github.com/seed-223c80a0/redislock (as "redislock run"
  takes it) and prints whether it is held, the metadata its holder stored
  ("redislock run" stores HOST:PID), how long it is held still unless
  refreshed, its fence token, and how many waiters are queued for it. It
  reads and writes nothing else, and never prints the holder's token.

  It sends read-only commands: GET KEY and PTTL KEY (the value is
  TOKEN NUL FENCE NUL METADATA, or the token alone), LLEN of the waiters'
  queue KEY:redislock-waiters (on a cluster, for a KEY without a hash tag,
  {KEY}:redislock-waiters), and GET of --fence-key. An ACL user needs
  +get +pttl +llen on those keys.

FLAGS
`

const statusTail = `
EXIT STATUS
  0    the lock is held
  1    the lock is free
  2    bad usage (an unknown flag, no KEY, a bad URL)
  125  Redis could not be reached, or answered with an error

ENVIRONMENT
  REDISLOCK_URL   the Redis server when --url is not given

EXAMPLES
  redislock status nightly-report
  redislock status --json --fence-key nightly-report:fence nightly-report
`

// statusConfig is what the flags and arguments of status set.
type statusConfig struct {
	conn     connFlags
	key      string
	fenceKey string
	json     bool
}

// parseStatus parses the arguments of status. It returns usageError for bad
// usage, and flag.ErrHelp for --help.
func parseStatus(args []string) (statusConfig, error) {
	var cfg statusConfig
	fs := statusFlags(&cfg)
	if err := fs.Parse(args); err != nil {
		return cfg, flagError(err)
	}
	switch fs.NArg() {
	case 0:
		return cfg, usageError{errors.New("no KEY given")}
	case 1:
		cfg.key = fs.Arg(0)
	default:
		return cfg, usageError{fmt.Errorf("unexpected argument %q after KEY (flags go before KEY)", fs.Arg(1))}
	}
	if cfg.key == "" {
		return cfg, usageError{errors.New("KEY is empty")}
	}
	return cfg, nil
}

// statusFlags returns the flags of status, which set cfg.
func statusFlags(cfg *statusConfig) *flag.FlagSet {
	fs := newFlagSet("status")
	cfg.conn.register(fs)
	fs.StringVar(&cfg.fenceKey, "fence-key", "", "also read the fence counter `KEY`: the last fence token given out")
	fs.BoolVar(&cfg.json, "json", false, "print one JSON object instead of text")
	return fs
}

// statusHelp writes the manual of status.
func statusHelp(w io.Writer) {
	fmt.Fprint(w, statusManual)
	printFlags(w, statusFlags(new(statusConfig)), nil)
	fmt.Fprint(w, statusTail)
}

// lockStatus is what status prints; its JSON form is the output of --json.
type lockStatus struct {
	Key          string `json:"key"`
	Held         bool   `json:"held"`
	Metadata     string `json:"metadata,omitempty"`
	TTLMillis    int64  `json:"ttl_ms,omitempty"` // -1: held without expiry
	FenceToken   int64  `json:"fence_token,omitempty"`
	Waiters      int64  `json:"waiters"`
	FenceKey     string `json:"fence_key,omitempty"`
	FenceCounter *int64 `json:"fence_counter,omitempty"`
}

// readStatus reads the lock key (and fenceKey, unless "") in one round trip
// of read-only commands.
func readStatus(ctx context.Context, client rueidis.Client, key, fenceKey string) (lockStatus, error) {
	st := lockStatus{Key: key, FenceKey: fenceKey}
	cmds := rueidis.Commands{
		client.B().Get().Key(key).Build(),
		client.B().Pttl().Key(key).Build(),
	}
	queue := waitersKey(key, client.Mode() == rueidis.ClientModeCluster)
	if queue != "" {
		cmds = append(cmds, client.B().Llen().Key(queue).Build())
	}
	if fenceKey != "" {
		cmds = append(cmds, client.B().Get().Key(fenceKey).Build())
	}
	res := client.DoMulti(ctx, cmds...)
	value, err := res[0].ToString()
	switch {
	case rueidis.IsRedisNil(err):
	case err != nil:
		return st, fmt.Errorf("GET %q: %w", key, err)
	default:
		st.Held = true
		if _, rest, ok := strings.Cut(value, "\x00"); ok { // the token is never kept
			fence, meta, _ := strings.Cut(rest, "\x00")
			st.FenceToken, _ = strconv.ParseInt(fence, 10, 64)
			st.Metadata = meta
		}
	}
	ms, err := res[1].AsInt64()
	if err != nil {
		return st, fmt.Errorf("PTTL %q: %w", key, err)
	}
	if st.Held {
		st.TTLMillis = ms // -2 (gone since the GET) reads as held for 0s
		if ms == -2 {
			st.TTLMillis = 0
		}
	}
	i := 2
	if queue != "" {
		if st.Waiters, err = res[i].AsInt64(); err != nil {
			return st, fmt.Errorf("LLEN of the waiters of %q: %w", key, err)
		}
		i++
	}
	if fenceKey != "" {
		n, err := res[i].AsInt64()
		switch {
		case rueidis.IsRedisNil(err):
			n = 0
		case err != nil:
			return st, fmt.Errorf("GET %q: %w", fenceKey, err)
		}
		st.FenceCounter = &n
	}
	return st, nil
}

// waitersKey returns the queue of the waiters of key, as lua/queue.lua
// names it: "" for a cluster key that cannot carry a hash tag.
func waitersKey(key string, cluster bool) string {
	const suffix = ":redislock-waiters"
	if !cluster {
		return key + suffix
	}
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			return key + suffix
		}
	}
	if strings.Contains(key, "}") {
		return ""
	}
	return "{" + key + "}" + suffix
}

// left says how long the lock is held still, unless refreshed.
func (st lockStatus) left() string {
	if st.TTLMillis < 0 {
		return "no expiry"
	}
	return (time.Duration(st.TTLMillis) * time.Millisecond).String()
}

// print writes st as text.
func (st lockStatus) print(w io.Writer) {
	fmt.Fprintf(w, "key       %s\n", st.Key)
	if !st.Held {
		fmt.Fprintln(w, "held      no")
	} else {
		fmt.Fprintln(w, "held      yes")
		fmt.Fprintf(w, "metadata  %s\n", st.Metadata)
		fmt.Fprintf(w, "ttl       %s\n", st.left())
		if st.FenceToken > 0 {
			fmt.Fprintf(w, "fence     %d\n", st.FenceToken)
		}
	}
	fmt.Fprintf(w, "waiters   %d\n", st.Waiters)
	if st.FenceCounter != nil {
		fmt.Fprintf(w, "counter   %d (%s, the last fence token given out)\n", *st.FenceCounter, st.FenceKey)
	}
}

// status runs the status subcommand.
func status(ctx context.Context, args []string, env environment) int {
	cfg, err := parseStatus(args)
	if err != nil {
		return env.usage(err, "status", statusSynopsis, statusHelp)
	}
	client, _, err := cfg.conn.connect(env.getenv)
	if err != nil {
		return env.fail("status", err, statusSynopsis)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := readStatus(ctx, client, cfg.key, cfg.fenceKey)
	if err != nil {
		return env.fail("status", err, statusSynopsis)
	}
	if cfg.json {
		b, _ := json.Marshal(st) // plain fields: cannot fail
		fmt.Fprintf(env.stdout, "%s\n", b)
	} else {
		st.print(env.stdout)
	}
	if !st.Held {
		return 1
	}
	return 0
}
