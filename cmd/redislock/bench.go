package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
	"github.com/seed-223c80a0/redislock"
)

const benchUsage = `usage: redislock bench [flags]

Workers contend for a few locks until -duration has passed: each picks a key
at random, obtains its lock (waiting for its release, -retry at most
without news, for up to one -ttl),
holds it for -hold and releases it. Progress every -interval, then a summary.
Mutual exclusion is checked in-process, and with -fence the fence tokens too.
Without -addr it runs on an embedded Redis (miniredis).

flags:
`

// config is what the flags of bench set.
type config struct {
	addrs    []string // empty: an embedded miniredis
	cluster  bool
	workers  int
	keys     int
	duration time.Duration
	ttl      time.Duration
	hold     time.Duration
	retry    time.Duration
	interval time.Duration
	fence    bool
}

// parseBench parses and checks the flags of bench. On bad usage it prints
// the problem and the flags to stderr and returns false.
func parseBench(args []string, stderr io.Writer) (config, bool) {
	var cfg config
	var addr string
	fs := flag.NewFlagSet("redislock bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), benchUsage)
		fs.PrintDefaults()
	}
	fs.StringVar(&addr, "addr", "", "Redis `host:port`; empty: start an embedded miniredis")
	fs.BoolVar(&cfg.cluster, "cluster", false, "treat -addr as the seed of a Redis Cluster (comma-separated addresses allowed)")
	fs.IntVar(&cfg.workers, "workers", 8, "number of concurrent workers")
	fs.IntVar(&cfg.keys, "keys", 2, "number of lock keys the workers contend for")
	fs.DurationVar(&cfg.duration, "duration", 3*time.Second, "how long the run lasts")
	fs.DurationVar(&cfg.ttl, "ttl", time.Second, "TTL of each lock, and how long an Obtain may wait for it")
	fs.DurationVar(&cfg.hold, "hold", time.Millisecond, "how long a worker holds a lock it obtained (under -ttl)")
	fs.DurationVar(&cfg.retry, "retry", 100*time.Millisecond, "the backoff of an Obtain (LinearBackoff): the longest wait without news of a release")
	fs.DurationVar(&cfg.interval, "interval", 500*time.Millisecond, "how often progress is printed")
	fs.BoolVar(&cfg.fence, "fence", false, "obtain with a fence key per lock key and check that fence tokens strictly increase per key")
	if err := fs.Parse(args); err != nil {
		return cfg, false // the flag package printed the error and the usage
	}

	var problem string
	switch {
	case fs.NArg() > 0:
		problem = fmt.Sprintf("unexpected argument %q", fs.Arg(0))
	case cfg.workers < 1 || cfg.workers > 10_000:
		problem = fmt.Sprintf("-workers must be between 1 and 10000, got %d", cfg.workers)
	case cfg.keys < 1 || cfg.keys > 1_000_000:
		problem = fmt.Sprintf("-keys must be between 1 and 1000000, got %d", cfg.keys)
	case cfg.duration <= 0:
		problem = fmt.Sprintf("-duration must be positive, got %v", cfg.duration)
	case cfg.ttl < time.Millisecond || cfg.ttl > 24*time.Hour:
		problem = fmt.Sprintf("-ttl must be between 1ms and 24h, got %v", cfg.ttl)
	case cfg.hold < 0:
		problem = fmt.Sprintf("-hold must not be negative, got %v", cfg.hold)
	case cfg.hold >= cfg.ttl:
		problem = fmt.Sprintf("-hold (%v) must be shorter than -ttl (%v): a lock held past its TTL expires and another worker may take it", cfg.hold, cfg.ttl)
	case cfg.retry <= 0:
		problem = fmt.Sprintf("-retry must be positive, got %v", cfg.retry)
	case cfg.interval <= 0:
		problem = fmt.Sprintf("-interval must be positive, got %v", cfg.interval)
	case cfg.cluster && addr == "":
		problem = "-cluster needs -addr, the address of a cluster node"
	}
	if problem == "" && addr != "" {
		for a := range strings.SplitSeq(addr, ",") {
			if a = strings.TrimSpace(a); a == "" || !strings.Contains(a, ":") {
				problem = fmt.Sprintf("-addr: %q is not a host:port", a)
				break
			}
			cfg.addrs = append(cfg.addrs, a)
		}
		if problem == "" && len(cfg.addrs) > 1 && !cfg.cluster {
			problem = "-addr: several addresses need -cluster"
		}
	}
	if problem != "" {
		fmt.Fprintf(stderr, "redislock bench: %s\n\n", problem)
		fs.Usage()
		return cfg, false
	}
	return cfg, true
}

// connect returns a rueidis client for cfg, starting the embedded miniredis
// when there is no address, and a function that closes both.
func connect(cfg config) (rueidis.Client, string, func(), error) {
	if len(cfg.addrs) == 0 {
		m, err := miniredis.Run()
		if err != nil {
			return nil, "", nil, fmt.Errorf("start miniredis: %w", err)
		}
		// rueidis needs both options against miniredis: it has neither
		// client-side caching nor the CLUSTER commands.
		client, err := rueidis.NewClient(rueidis.ClientOption{
			InitAddress:       []string{m.Addr()},
			DisableCache:      true,
			ForceSingleClient: true,
		})
		if err != nil {
			m.Close()
			return nil, "", nil, fmt.Errorf("connect to miniredis: %w", err)
		}
		return client, "embedded miniredis at " + m.Addr(), func() { client.Close(); m.Close() }, nil
	}
	// With -cluster rueidis finds the cluster's nodes from the seeds. The
	// demo reads nothing through the client-side cache: without it, a
	// server with no RESP3 (Redis 5, some proxies) works too.
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       cfg.addrs,
		DisableCache:      true,
		ForceSingleClient: !cfg.cluster,
	})
	if err != nil {
		return nil, "", nil, fmt.Errorf("connect to %s: %w", strings.Join(cfg.addrs, ","), err)
	}
	if cfg.cluster && client.Mode() != rueidis.ClientModeCluster {
		client.Close()
		return nil, "", nil, fmt.Errorf("-cluster: %s is not a Redis Cluster (%s); drop -cluster", strings.Join(cfg.addrs, ","), client.Mode())
	}
	return client, fmt.Sprintf("Redis %s at %s", client.Mode(), strings.Join(cfg.addrs, ",")), client.Close, nil
}

// lockKey is one of the keys the workers contend for.
type lockKey struct {
	name      string
	opt       *redislock.Options // shared by every worker: its strategy is a template
	holders   atomic.Int32       // workers holding the lock now, by this process's count
	lastFence atomic.Int64       // the fence token of the latest holder
}

// stats are the counters the workers share; the progress printer reads them.
type stats struct {
	acquired    atomic.Int64 // successful Obtain calls
	calls       atomic.Int64 // Obtain calls that the end of the run did not cut short
	notObtained atomic.Int64 // of those, the ones that found the lock held for a whole TTL
	errors      atomic.Int64 // any other failure of Obtain or Release
	violations  atomic.Int64 // a lock found held by two workers at once
	fenceBad    atomic.Int64 // a fence token not above the previous one for its key

	// attempts and contended are counted by the observer: Redis round trips
	// of Obtain, and those that found the lock held by another token.
	attempts, contended atomic.Int64
	// byRelease, byExpiry and byBackoff count what ended the waits.
	byRelease, byExpiry, byBackoff atomic.Int64

	mu       sync.Mutex
	firstErr error
	waits    *hdrhistogram.Histogram // the time to acquire of each lock, in ns
}

// Waits are recorded in ns from 1ns to maxWait (longer ones count as
// maxWait; an Obtain waits one -ttl at most, 24h), to 3 significant digits.
const maxWait = 48 * time.Hour

func newStats() *stats {
	return &stats{waits: hdrhistogram.New(1, int64(maxWait), 3)}
}

// record adds the time to acquire of one lock. One histogram serves every
// worker: the lock is taken after the wait was measured, never during it.
func (s *stats) record(d time.Duration) {
	s.mu.Lock()
	// Within range by the clamp: RecordValue cannot fail.
	_ = s.waits.RecordValue(int64(min(max(d, 1), maxWait)))
	s.mu.Unlock()
}

var _ redislock.Observer = (*stats)(nil)

// fail counts an error and keeps the first one for the summary.
func (s *stats) fail(err error) {
	s.errors.Add(1)
	s.mu.Lock()
	if s.firstErr == nil {
		s.firstErr = err
	}
	s.mu.Unlock()
}

// Begin and End make stats a redislock.Observer, which sees the attempts
// inside each Obtain that a caller cannot. Begin does nothing.
func (s *stats) Begin(ctx context.Context, _ *redislock.Event) context.Context { return ctx }

// End adds the attempts of an Obtain, and those that found the lock held,
// to the counts.
func (s *stats) End(_ context.Context, ev *redislock.Event) {
	if ev.Op == redislock.OpObtain {
		s.attempts.Add(int64(ev.Attempts))
		s.contended.Add(int64(ev.Contended))
		s.byRelease.Add(int64(ev.WokenByRelease))
		s.byExpiry.Add(int64(ev.WokenByExpiry))
		s.byBackoff.Add(int64(ev.WokenByBackoff))
	}
}

// bench runs the benchmark described by cfg and prints its progress and
// summary to stdout.
func bench(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	client, where, closeClient, err := connect(cfg)
	if err != nil {
		fmt.Fprintf(stderr, "redislock bench: %v\n", err)
		return 1
	}
	defer closeClient()

	st := newStats()
	locker := redislock.New(client, redislock.WithObserver(st))
	keys := make([]*lockKey, cfg.keys)
	for i := range keys {
		// The hash tag keeps a key and its fence key in one cluster slot.
		k := &lockKey{name: "redislock:demo:{" + strconv.Itoa(i) + "}"}
		k.opt = &redislock.Options{RetryStrategy: redislock.LinearBackoff(cfg.retry)}
		if cfg.fence {
			k.opt.FenceKey = k.name + ":fence"
		}
		keys[i] = k
	}

	fence := "off"
	if cfg.fence {
		fence = "on"
	}
	fmt.Fprintf(stdout, "redislock bench on %s\n", where)
	fmt.Fprintf(stdout, "%d workers, %d keys, %v; ttl %v, hold %v, backoff %v, fence %s\n\n",
		cfg.workers, cfg.keys, cfg.duration, cfg.ttl, cfg.hold, cfg.retry, fence)

	runCtx, cancel := context.WithTimeout(ctx, cfg.duration)
	defer cancel()
	start := time.Now()

	var wg sync.WaitGroup
	for range cfg.workers {
		wg.Go(func() { worker(runCtx, cfg, locker, keys, st) })
	}
	progressDone := make(chan struct{})
	go func() {
		defer close(progressDone)
		progress(runCtx, cfg.interval, start, st, stdout)
	}()
	wg.Wait()
	elapsed := time.Since(start)
	cancel()
	<-progressDone
	return summary(stdout, cfg, elapsed, ctx.Err() != nil, st)
}

// worker obtains, holds and releases random locks until ctx ends, recording
// the time to acquire of each lock in st.
func worker(ctx context.Context, cfg config, locker *redislock.Client, keys []*lockKey, st *stats) {
	// The run has ended once its deadline has passed by the clock: an
	// Obtain says so before the ctx's own timer has fired.
	end, _ := ctx.Deadline()
	ended := func() bool { return ctx.Err() != nil || !time.Now().Before(end) }
	for !ended() {
		k := keys[rand.IntN(len(keys))]
		// An Obtain waits for at most one TTL: by then a holder that
		// crashed has lost its lock anyway.
		obtainCtx, cancel := context.WithTimeout(ctx, cfg.ttl)
		begin := time.Now()
		lock, err := locker.Obtain(obtainCtx, k.name, cfg.ttl, k.opt)
		wait := time.Since(begin)
		cancel()
		if err != nil {
			switch {
			case ended() || !begin.Add(cfg.ttl).Before(end):
				// The run ended during the call, or its deadline (the
				// run's end) cut the wait short: not counted.
			case errors.Is(err, redislock.ErrNotObtained), errors.Is(err, context.DeadlineExceeded):
				// Held by others for a whole TTL (the deadline may also
				// hit while a command is in flight: the same give-up).
				st.calls.Add(1)
				st.notObtained.Add(1)
			default:
				st.calls.Add(1)
				st.fail(fmt.Errorf("obtain %s: %w", k.name, err))
			}
			continue
		}
		st.calls.Add(1)
		st.acquired.Add(1)
		st.record(wait)

		if k.holders.Add(1) > 1 {
			st.violations.Add(1)
		}
		if cfg.fence {
			// Under the lock, so in the order of the holders.
			if tok := lock.FenceToken(); tok <= k.lastFence.Swap(tok) {
				st.fenceBad.Add(1)
			}
		}
		if cfg.hold > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(cfg.hold):
			}
		}
		k.holders.Add(-1) // before Release: the next holder may come in at once

		// Released even when the run has just ended.
		relCtx, relCancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		if err := lock.Release(relCtx); err != nil {
			st.fail(fmt.Errorf("release %s: %w", k.name, err))
		}
		relCancel()
	}
}

// progress prints a line every interval until ctx ends.
func progress(ctx context.Context, interval time.Duration, start time.Time, st *stats, w io.Writer) {
	fmt.Fprintf(w, "%8s %12s %12s %8s\n", "elapsed", "acquired", "per second", "errors")
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	last, lastAt := int64(0), start
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-ticker.C:
			n := st.acquired.Load()
			rate := float64(n-last) / now.Sub(lastAt).Seconds()
			fmt.Fprintf(w, "%7.1fs %12d %12.0f %8d\n", now.Sub(start).Seconds(), n, rate, st.errors.Load())
			last, lastAt = n, now
		}
	}
}

// summary prints the results of the run and returns the exit status.
func summary(w io.Writer, cfg config, elapsed time.Duration, interrupted bool, st *stats) int {
	acquired, calls, notObtained := st.acquired.Load(), st.calls.Load(), st.notObtained.Load()
	attempts, contended := st.attempts.Load(), st.contended.Load()
	errs, violations, fenceBad := st.errors.Load(), st.violations.Load(), st.fenceBad.Load()

	fmt.Fprintln(w)
	if interrupted {
		fmt.Fprintf(w, "interrupted after %v\n", elapsed.Round(time.Millisecond))
	}
	fmt.Fprintln(w, "summary")
	fmt.Fprintf(w, "  acquisitions     %d in %.2fs: %.0f/s\n", acquired, elapsed.Seconds(), float64(acquired)/elapsed.Seconds())
	if h := st.waits; h.TotalCount() > 0 {
		fmt.Fprintf(w, "  time to acquire  mean %v, p50 %v, p99 %v, max %v\n",
			round(time.Duration(h.Mean())), round(time.Duration(h.ValueAtQuantile(50))),
			round(time.Duration(h.ValueAtQuantile(99))), round(time.Duration(h.Max())))
	}
	fmt.Fprintf(w, "  contention       %.3f (%d of %d attempts found the lock held)\n",
		ratio(contended, attempts), contended, attempts)
	fmt.Fprintf(w, "  attempts         %.2f per acquisition\n", ratio(attempts, acquired))
	fmt.Fprintf(w, "  waits ended by   a release %d, the holder's expiry %d, the backoff %d\n",
		st.byRelease.Load(), st.byExpiry.Load(), st.byBackoff.Load())
	fmt.Fprintf(w, "  not obtained     %d of %d Obtain calls (the lock stayed held for a whole TTL)\n", notObtained, calls)
	fmt.Fprintf(w, "  errors           %d\n", errs)
	if st.firstErr != nil {
		fmt.Fprintf(w, "                   first: %v\n", st.firstErr)
	}
	fmt.Fprintf(w, "  violations       %d (times a lock was held by two workers at once)\n", violations)
	if cfg.fence {
		if fenceBad == 0 {
			fmt.Fprintf(w, "  fence            ok: %d fence tokens, strictly increasing per key\n", acquired)
		} else {
			fmt.Fprintf(w, "  fence            FAILED: %d of %d fence tokens were not above the previous one of their key\n", fenceBad, acquired)
		}
	}

	var failed []string
	if acquired == 0 {
		failed = append(failed, "no lock was obtained")
	}
	if errs > 0 {
		failed = append(failed, fmt.Sprintf("%d errors", errs))
	}
	if violations > 0 {
		failed = append(failed, fmt.Sprintf("%d mutual exclusion violations", violations))
	}
	if fenceBad > 0 {
		failed = append(failed, fmt.Sprintf("%d fence tokens out of order", fenceBad))
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "FAIL: %s\n", strings.Join(failed, ", "))
		return 1
	}
	fmt.Fprintln(w, "ok")
	return 0
}

// ratio returns part/whole, or 0 when whole is 0.
func ratio(part, whole int64) float64 {
	if whole == 0 {
		return 0
	}
	return float64(part) / float64(whole)
}

// round rounds d for printing: to 10µs from 1ms up, to 0.1µs below.
func round(d time.Duration) time.Duration {
	if d >= time.Millisecond {
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond / 10)
}
