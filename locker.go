// Package redislock provides distributed locks over Redis, on rueidis.
//
// Its API is that of github.com/bsm/redislock v0.10, except that it takes a
// rueidis.Client: a user migrates by changing the import path and the client.
// Where the two differ, this package is stricter (see the README):
//
//   - bad input (a TTL under 1ms or over MaxTTL, an empty or repeated key, no
//     keys, a token or metadata over its limit, keys in different hash slots
//     on a cluster) returns an error that wraps ErrInvalidTTL, ErrInvalidKey,
//     ErrInvalidToken, ErrInvalidMetadata or ErrCrossSlot, and nothing is
//     written to Redis;
//   - a lock belongs to its whole token: a custom token that is a prefix of
//     another holder's token does not take over that holder's lock;
//   - the retry strategies of this package give every call a fresh budget;
//   - an obtain whose outcome is unknown (a transport error or a ctx that
//     ended while a command was in flight) is not reported as ErrNotObtained,
//     and the library releases what the server may have granted.
package redislock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

var (
	// ErrNotObtained is returned when a lock cannot be obtained because
	// another token holds it (after the retries the strategy allows), or
	// when a Refresh finds the lock lost.
	ErrNotObtained = errors.New("redislock: not obtained")

	// ErrLockNotHeld is returned by Release (and by TTL on a nil *Lock) when
	// the lock is no longer held by its token.
	ErrLockNotHeld = errors.New("redislock: lock not held")

	// ErrInvalidTTL is wrapped by the error for a TTL under 1ms or over
	// MaxTTL. Nothing is sent to Redis.
	ErrInvalidTTL = errors.New("redislock: invalid ttl")

	// ErrInvalidKey is wrapped by the error for an empty key, no keys, a key
	// given twice, or a FenceKey that is also a lock key. Nothing is sent to
	// Redis.
	ErrInvalidKey = errors.New("redislock: invalid key")

	// ErrInvalidToken is wrapped by the error for a custom token longer than
	// MaxTokenLen or holding a NUL byte. Nothing is sent to Redis, and the
	// error never contains the token.
	ErrInvalidToken = errors.New("redislock: invalid token")

	// ErrInvalidMetadata is wrapped by the error for metadata longer than
	// MaxMetadataLen. Nothing is sent to Redis.
	ErrInvalidMetadata = errors.New("redislock: invalid metadata")

	// ErrCrossSlot is wrapped by the error for keys (lock keys and FenceKey)
	// that hash to different slots on a Redis Cluster client. Give them a
	// common hash tag, such as "{order:42}:lock" and "{order:42}:fence".
	// Nothing is sent to Redis.
	ErrCrossSlot = errors.New("redislock: keys in different hash slots")
)

const (
	// MaxTTL is the longest TTL a lock may have: 365 days.
	MaxTTL = 365 * 24 * time.Hour

	// MaxTokenLen is the longest custom token, in bytes: 256.
	MaxTokenLen = 256

	// MaxMetadataLen is the longest metadata, in bytes: 4096.
	MaxMetadataLen = 4096

	// DefaultReleaseTimeout bounds a Release called with a ctx that has
	// already ended, and the cleanup of an obtain whose outcome is unknown:
	// 2s.
	DefaultReleaseTimeout = 2 * time.Second
)

var (
	//go:embed lua/owned.lua
	luaOwned string
	//go:embed lua/obtain.lua
	luaObtain string
	//go:embed lua/refresh.lua
	luaRefresh string
	//go:embed lua/release.lua
	luaRelease string
	//go:embed lua/pttl.lua
	luaPTTL string

	//go:embed lua/queue.lua
	luaQueue string

	// Each script runs as EVALSHA (EVALSHA_RO for pttl); rueidis falls back
	// to EVAL on NOSCRIPT, after a SCRIPT FLUSH, a restart or a failover.
	scriptRefresh = rueidis.NewLuaScript(luaOwned + luaRefresh)
	scriptPTTL    = rueidis.NewLuaScriptReadOnly(luaOwned + luaPTTL)

	// The scripts that use the wait queue come in two builds: a cluster
	// names each queue in its key's hash slot.
	standaloneScripts = newQueueScripts(false)
	clusterScripts    = newQueueScripts(true)
)

// queueScripts are the scripts that use the wait queue (lua/queue.lua).
type queueScripts struct {
	obtain, release *rueidis.Lua
	obtainBody      script // obtain, for a dedicated connection (WithReplicas)
}

func newQueueScripts(cluster bool) *queueScripts {
	head := luaOwned + "local cluster = " + strconv.FormatBool(cluster) + "\n" + luaQueue
	return &queueScripts{
		obtain:     rueidis.NewLuaScript(head + luaObtain),
		release:    rueidis.NewLuaScript(head + luaRelease),
		obtainBody: newScript(head + luaObtain),
	}
}

// Client obtains locks through a rueidis.Client. It is safe for concurrent
// use; nothing in it serialises callers.
type Client struct {
	client         rueidis.Client
	cluster        bool
	scripts        *queueScripts
	observer       Observer
	releaseTimeout time.Duration
	replicas       int64 // WithReplicas
	replicaTimeout time.Duration
	waits          waits
}

// ClientOption configures a Client made by New.
type ClientOption func(*Client)

// WithReleaseTimeout sets how long a Release called with an ended ctx, and
// the cleanup of an obtain whose outcome is unknown, may take. Default
// DefaultReleaseTimeout (2s); a value under 1ms keeps the default.
func WithReleaseTimeout(d time.Duration) ClientOption {
	return func(c *Client) {
		if d >= time.Millisecond {
			c.releaseTimeout = d
		}
	}
}

// New returns a Client over client, which may be a standalone, sentinel or
// cluster rueidis client.
func New(client rueidis.Client, opts ...ClientOption) *Client {
	c := &Client{
		client:         client,
		cluster:        client.Mode() == rueidis.ClientModeCluster,
		scripts:        standaloneScripts,
		releaseTimeout: DefaultReleaseTimeout,
	}
	if c.cluster {
		c.scripts = clusterScripts
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// shared holds the Client that the package-level Obtain and ObtainMulti use
// for each rueidis.Client, so that their waiters queue and are woken as a
// long-lived Client's are. An entry is a few words while nothing waits; it
// is dropped once the rueidis.Client is seen closed.
var shared sync.Map // rueidis.Client -> *Client

func sharedClient(client rueidis.Client) *Client {
	if c, ok := shared.Load(client); ok {
		return c.(*Client)
	}
	c, _ := shared.LoadOrStore(client, New(client))
	return c.(*Client)
}

// Obtain is a shortcut for New(client).Obtain(ctx, key, ttl, opt), except
// that calls with the same client share one Client: they wait for one
// another as the goroutines of one Client do.
func Obtain(ctx context.Context, client rueidis.Client, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	l, err := sharedClient(client).Obtain(ctx, key, ttl, opt)
	if errors.Is(err, rueidis.ErrClosing) {
		shared.Delete(client)
	}
	return l, err
}

// ObtainMulti is a shortcut for New(client).ObtainMulti(ctx, keys, ttl,
// opt), except that calls with the same client share one Client, as Obtain.
func ObtainMulti(ctx context.Context, client rueidis.Client, keys []string, ttl time.Duration, opt *Options) (*Lock, error) {
	l, err := sharedClient(client).ObtainMulti(ctx, keys, ttl, opt)
	if errors.Is(err, rueidis.ErrClosing) {
		shared.Delete(client)
	}
	return l, err
}

// Obtain takes the lock on key for ttl, waiting as opt.RetryStrategy allows
// while another token holds it. The TTL is truncated to whole milliseconds.
//
// While it waits, it is woken by the release of the lock (by any client of
// the same Redis) and tries again then; just after the holder's TTL ends
// when the holder vanished; and at the latest after each backoff of the
// strategy. Waiters are served in arrival order: a Release passes the lock
// to the first waiter in its own script. See RetryStrategy for what counts
// as a retry.
//
// Errors: ErrNotObtained when the lock stays held by another token; joined
// with the ctx error when the ctx ends while waiting (an attempt is not sent
// once less than max(1ms, twice the last round trip) remains before the ctx
// deadline), and alone when the ctx has no deadline and one TTL has passed.
// With a random token, an attempt in flight when the ctx ends is reported
// as ErrNotObtained joined with the ctx error too: the library releases, in
// the background and within the release timeout, whatever the server may
// have granted. A transport error is returned as such (never as
// ErrNotObtained, since the outcome is unknown), and the same cleanup runs
// for a random token; with a custom token, a transport error or a ctx that
// ended while a command was in flight is the caller's to settle: obtain
// again with the token (idempotent), then Release. Bad input: see the
// package documentation. A ctx that is already done returns an error
// wrapping the ctx error (not ErrNotObtained) at once, and sends nothing.
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	l := &Lock{client: c}
	l.one[0] = key
	l.keys = l.one[:]
	return c.observeObtain(ctx, OpObtain, l, ttl, opt)
}

// ObtainMulti takes the locks on every key for ttl, all or nothing: when any
// key is held by another token, none is taken. Otherwise as Obtain. On a
// Redis Cluster client the keys (and opt.FenceKey) must share a hash slot,
// or it returns an error wrapping ErrCrossSlot before any I/O. The Lock keeps
// its own copy of keys.
func (c *Client) ObtainMulti(ctx context.Context, keys []string, ttl time.Duration, opt *Options) (*Lock, error) {
	l := &Lock{client: c, keys: append([]string(nil), keys...)}
	return c.observeObtain(ctx, OpObtainMulti, l, ttl, opt)
}

// observeObtain runs obtain, reporting it to the observer when there is one.
func (c *Client) observeObtain(ctx context.Context, op Op, l *Lock, ttl time.Duration, o *Options) (*Lock, error) {
	if c.observer == nil {
		var st waitStats
		if err := c.obtain(ctx, l, ttl, o, &st); err != nil {
			return nil, err
		}
		return l, nil
	}
	ev := newEvent(op, l.keys, ttl)
	defer putEvent(ev)
	ctx = c.observer.Begin(ctx, ev)
	var st waitStats
	err := c.obtain(ctx, l, ttl, o, &st)
	ev.Attempts, ev.Contended = st.attempts, st.contended
	ev.WokenByRelease, ev.WokenByExpiry, ev.WokenByBackoff = st.byRelease, st.byExpiry, st.byBackoff
	ev.finish(err)
	if err != nil {
		c.observer.End(ctx, ev)
		return nil, err
	}
	l.obtained = ev.Start.Sub(clockBase)
	c.observer.End(ctx, ev)
	return l, nil
}

// obtain validates, then runs the attempts of an Obtain or ObtainMulti.
func (c *Client) obtain(ctx context.Context, l *Lock, ttl time.Duration, o *Options, st *waitStats) error {
	if err := c.validate(l.keys, ttl, o); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("redislock: obtain %q: not attempted: %w", l.keys[0], err)
	}
	if o != nil && o.Token != "" {
		l.token = o.Token
	} else {
		l.setRandomToken()
	}
	if o != nil {
		l.metadata = o.Metadata
	}
	return c.obtainRetry(ctx, l, ttl, o, st)
}

// obtainRetry is the retry loop of Obtain and ObtainMulti: an attempt, then,
// while the lock is held and the strategy allows, a wait (wait.go) and the
// next attempt. Each wait asks the strategy for one backoff, the longest it
// may last without news; the attempt after it is that wait's retry. The
// first wait of the first waiter of its Client starts with one more attempt,
// which queues it in Redis. A newcomer that finds goroutines of its Client
// waiting for its keys queues behind them without an attempt of its own,
// and a waiter behind others of its Client makes no attempt until it is
// the first (its backoffs still count, and bound its wait).
//
// The loop stops when the strategy says so, when the lock passed to it, when
// the ctx ends, when the ctx deadline is too close for another attempt to be
// answered (attemptMargin), or, for a ctx without deadline, one TTL after
// the first attempt (a wait sleeps no longer than that). Whether a failed
// attempt may be retried is decided by classify alone.
func (c *Client) obtainRetry(ctx context.Context, l *Lock, ttl time.Duration, o *Options, st *waitStats) error {
	var (
		strategy    RetryStrategy
		limit       time.Time // the ctx deadline, or one TTL after the first attempt
		ctxDeadline bool
		timer       *time.Timer
		w           *waiter
		unknown     bool // an attempt may have been applied without our knowing
		lastErr     error
		left        time.Duration // the holder's remaining TTL, when known
		rtt         time.Duration // the last attempt's round trip
		backoff     time.Duration // a wait's backoff, asked before the wait
		skip        bool          // no attempt before the first wait
		ms          = ttl.Milliseconds()
	)
	begin := func() {
		strategy = freshStrategy(o.retryStrategy())
		limit, ctxDeadline = ctx.Deadline()
		if !ctxDeadline {
			limit = time.Now().Add(ttl)
		}
	}
	haveBackoff := false // backoff was asked for the coming wait already
	if c.waits.n.Load() > 0 {
		begin()
		if backoff = strategy.NextBackoff(); backoff >= 1 {
			w = c.joinBehind(l, formatMs(ms), o)
			skip, haveBackoff = w != nil, w != nil
		}
	}
	entry, again := "", false // what the next attempt queues in Redis
	for {
		if !skip {
			if w != nil && entry == "" {
				entry, again = c.entryFor(ctx, w, limit)
			}
			if w != nil && ctxDeadline && time.Until(limit) < max(attemptMargin, 2*rtt) {
				return c.giveUp(w, l, o, unknown, lastErr, context.DeadlineExceeded)
			}
			t0 := time.Now()
			st.attempts++
			held, holderTTL, err := c.attempt(ctx, l, ms, o, unknown, w != nil, entry, again, limit)
			rtt = time.Since(t0)
			entry = ""
			switch {
			case err == nil && !held:
				if w != nil {
					c.leave(w, true)
				}
				return nil
			case err == nil:
				st.contended++
				lastErr, left = nil, holderTTL
			default:
				retryable, ambiguous := classify(err)
				unknown = unknown || ambiguous
				lastErr = err
				if !retryable {
					return c.giveUp(w, l, o, unknown, lastErr, nil)
				}
			}
		}
		skip = false

		if strategy == nil {
			begin()
		}
		if !haveBackoff {
			backoff = strategy.NextBackoff()
		}
		haveBackoff = false
		if backoff < 1 || (!ctxDeadline && !time.Now().Before(limit)) {
			return c.giveUp(w, l, o, unknown, lastErr, nil)
		}
		if w == nil {
			w = c.join(l, formatMs(ms), o)
			if lastErr == nil {
				if entry, again = c.entryFor(ctx, w, limit); entry != "" {
					// The first waiter of its Client queues in Redis
					// now, before this wait.
					haveBackoff = true
					continue
				}
			}
		}
		if !c.first(w) {
			left = 0 // the first waiter watches the holder's TTL
		}
		if timer == nil {
			timer = time.NewTimer(time.Hour)
			defer timer.Stop()
		}
		var ctxErr error
		if ctxDeadline {
			ctxErr = context.DeadlineExceeded
		}
		switch reason := c.sleep(ctx, w, timer, backoff, left, limit, max(attemptMargin, 2*rtt)); reason {
		case wokeByCtx:
			return c.giveUp(w, l, o, unknown, lastErr, ctx.Err())
		case wokeByDeadline:
			return c.giveUp(w, l, o, unknown, lastErr, ctxErr)
		case wokeByRelease:
			st.byRelease++
		case wokeByExpiry:
			st.byExpiry++
		default:
			st.byBackoff++
		}
		if granted, fence := c.granted(w); granted {
			l.fence = fence
			c.leave(w, true)
			if c.replicas > 0 {
				return c.confirm(ctx, l, ms)
			}
			return nil
		}
		left = 0
		// Behind the first waiter of its Client, a waiter sleeps on: it is
		// served through the first (its Client costs Redis one waiter).
		skip = !c.first(w)
	}
}

// giveUp ends an obtain that failed: it leaves the wait queue, then builds
// the error (fail).
func (c *Client) giveUp(w *waiter, l *Lock, o *Options, unknown bool, lastErr, ctxErr error) error {
	if w != nil {
		c.leave(w, false)
	}
	return c.fail(opObtain, l, o, unknown, lastErr, ctxErr)
}

// validate checks the input of an obtain; every error wraps a sentinel.
func (c *Client) validate(keys []string, ttl time.Duration, o *Options) error {
	if err := validateTTL(ttl); err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrInvalidKey)
	}
	for i, key := range keys {
		if key == "" {
			return fmt.Errorf("%w: key %d of %d is empty", ErrInvalidKey, i+1, len(keys))
		}
		for _, prev := range keys[:i] {
			if prev == key {
				return fmt.Errorf("%w: key %q given twice", ErrInvalidKey, key)
			}
		}
	}
	if o == nil {
		return c.validateSlots(keys, "")
	}
	if len(o.Token) > MaxTokenLen {
		return fmt.Errorf("%w: token is %d bytes, over MaxTokenLen (%d)", ErrInvalidToken, len(o.Token), MaxTokenLen)
	}
	for i := 0; i < len(o.Token); i++ {
		if o.Token[i] == 0 {
			return fmt.Errorf("%w: token holds a NUL byte at %d", ErrInvalidToken, i)
		}
	}
	if len(o.Metadata) > MaxMetadataLen {
		return fmt.Errorf("%w: metadata is %d bytes, over MaxMetadataLen (%d)", ErrInvalidMetadata, len(o.Metadata), MaxMetadataLen)
	}
	for _, key := range keys {
		if key == o.FenceKey {
			return fmt.Errorf("%w: fence key %q is also a lock key", ErrInvalidKey, key)
		}
	}
	return c.validateSlots(keys, o.FenceKey)
}

// validateSlots checks, on a cluster client only, that the keys and the
// fence key share a hash slot: rueidis refuses (panics on) a cross-slot
// script, and Redis Cluster could not run it.
func (c *Client) validateSlots(keys []string, fenceKey string) error {
	if !c.cluster || (len(keys) == 1 && fenceKey == "") {
		return nil
	}
	slot := hashSlot(keys[0])
	for _, key := range keys[1:] {
		if s := hashSlot(key); s != slot {
			return fmt.Errorf("%w: %q is in slot %d, %q in slot %d; give them one hash tag, such as {%s}",
				ErrCrossSlot, keys[0], slot, key, s, keys[0])
		}
	}
	if fenceKey != "" {
		if s := hashSlot(fenceKey); s != slot {
			return fmt.Errorf("%w: fence key %q is in slot %d, lock key %q in slot %d; give them one hash tag, such as {%s}",
				ErrCrossSlot, fenceKey, s, keys[0], slot, keys[0])
		}
	}
	return nil
}

// validateTTL checks that ttl is at least 1ms and at most MaxTTL.
func validateTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: %v is under 1ms", ErrInvalidTTL, ttl)
	}
	if ttl > MaxTTL {
		return fmt.Errorf("%w: %v is over MaxTTL (%v)", ErrInvalidTTL, ttl, MaxTTL)
	}
	return nil
}

// op is what a retry loop does.
type op uint8

const (
	opObtain op = iota
	opRefresh
)

// refreshRetry is the retry loop of Refresh: it makes the first attempt at
// once; after a transport error it asks a fresh copy of the strategy for
// each wait, and stops when the strategy says so, when the ctx ends while
// waiting, or, for a ctx without deadline, when the next attempt would start
// more than one TTL after the first. A lost lock ends it at once.
func (c *Client) refreshRetry(ctx context.Context, l *Lock, ttl time.Duration, o *Options) (attempts int, err error) {
	var (
		strategy RetryStrategy
		deadline time.Time
		timer    *time.Timer
		ms       = formatMs(ttl.Milliseconds())
	)
	for {
		attempts++
		var acked int64
		var err error
		if c.replicas == 0 {
			err = scriptRefresh.Exec(ctx, c.client, l.keys, []string{l.token, ms}).Error()
		} else {
			var res rueidis.RedisResult
			if res, acked, err = c.execReplicated(ctx, refreshScript, l.keys, []string{l.token, ms}); err == nil {
				err = res.Error()
			}
		}
		switch {
		case err == nil && acked < c.replicas:
			return attempts, c.notReplicated("refresh", l, acked)
		case err == nil:
			return attempts, nil
		case rueidis.IsRedisNil(err):
			// A lost lock cannot come back by waiting.
			return attempts, ErrNotObtained
		}
		if retryable, _ := classify(err); !retryable {
			return attempts, c.fail(opRefresh, l, o, false, err, nil)
		}
		if strategy == nil {
			strategy = freshStrategy(o.retryStrategy())
			if _, ok := ctx.Deadline(); !ok {
				deadline = time.Now().Add(ttl)
			}
		}
		backoff := strategy.NextBackoff()
		if backoff < 1 || (!deadline.IsZero() && time.Now().Add(backoff).After(deadline)) {
			return attempts, c.fail(opRefresh, l, o, false, err, nil)
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
			defer timer.Stop()
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return attempts, c.fail(opRefresh, l, o, false, err, ctx.Err())
		case <-timer.C:
		}
	}
}

// attempt makes one attempt to obtain: held reports that another token
// holds the lock, and left that key's remaining TTL when a script told it
// (0 otherwise). The first attempt of an obtain with a random token, one
// key and no fence key is a plain SET NX PX, since nobody else can hold that
// token; a waiter's attempts (wait), and every attempt once one may have
// been applied unseen, go through obtain.lua, which takes again a lock its
// token already holds and tells the holder's TTL. With an entry, a waiter
// that finds the lock held is queued in Redis (again: it may be already).
func (c *Client) attempt(ctx context.Context, l *Lock, ms int64, o *Options, unknown, wait bool, entry string, again bool, limit time.Time) (held bool, left time.Duration, err error) {
	ttl := formatMs(ms)
	fenceKey := o.fenceKey()
	if !unknown && !wait && c.replicas == 0 && fenceKey == "" && len(l.keys) == 1 && (o == nil || o.Token == "") {
		// Arbitrary rather than Set()...PxMilliseconds, which formats the
		// TTL anew on every call.
		cmd := c.client.B().Arbitrary("SET").Keys(l.keys[0]).Args(lockValue(l.token, 0, l.metadata), "NX", "PX", ttl).Build()
		err = c.client.Do(ctx, cmd).Error()
		if rueidis.IsRedisNil(err) {
			return true, 0, nil
		}
		return false, 0, err
	}
	keys, fenced := l.keys, "0"
	if fenceKey != "" {
		keys, fenced = make([]string, len(l.keys)+1), "1"
		keys[copy(keys, l.keys)] = fenceKey
	}
	args := []string{l.token, ttl, l.metadata, fenced}
	if entry != "" {
		// The queue is kept while this waiter may wait, and a second more.
		keep := time.Until(limit).Milliseconds() + 1000
		queued := "0"
		if again {
			queued = "1"
		}
		args = append(args, entry, strconv.FormatInt(max(keep, 1000), 10), queued)
	}
	var fence, acked int64
	if c.replicas == 0 {
		fence, err = c.scripts.obtain.Exec(ctx, c.client, keys, args).AsInt64()
	} else {
		var res rueidis.RedisResult
		if res, acked, err = c.execReplicated(ctx, c.scripts.obtainBody, keys, args); err == nil {
			fence, err = res.AsInt64()
		}
	}
	switch {
	case err != nil:
		return false, 0, err
	case fence < 0:
		return true, time.Duration(-1-fence) * time.Millisecond, nil
	}
	l.fence = fence
	if acked < c.replicas {
		c.unwrite(ctx, l)
		return false, 0, c.notReplicated("obtain", l, acked)
	}
	return false, 0, nil
}

// classify is the one place that decides what a failed attempt means.
//
// ErrNotReplicated is terminal and known (what the obtain wrote is
// released). A reply of Redis is terminal (a script error, WRONGTYPE,
// NOPERM will not clear by waiting), except TRYAGAIN, LOADING, CLUSTERDOWN,
// READONLY (a master demoted by a failover, until rueidis follows it), and
// MOVED and ASK (which rueidis follows, but not on the dedicated connection
// of WithReplicas), which a resharding, a restart or a failover clear; a
// reply means the command ran, or was refused (a replica refuses the first
// write of a script), so its outcome is known. A ctx error or a closed client is
// terminal. Anything else is a transport error: retryable within the caller's
// deadline, and ambiguous, since the command may have been applied.
func classify(err error) (retryable, ambiguous bool) {
	if errors.Is(err, ErrNotReplicated) {
		return false, false // known, and what it wrote is released
	}
	if re, ok := rueidis.IsRedisErr(err); ok {
		_, moved := re.IsMoved()
		_, ask := re.IsAsk()
		readOnly := strings.HasPrefix(re.Error(), "READONLY") // a demoted master, before the client follows the failover
		return re.IsTryAgain() || re.IsLoading() || re.IsClusterDown() || moved || ask || readOnly, false
	}
	if errors.Is(err, rueidis.ErrClosing) {
		return false, true
	}
	if isCtxErr(err) {
		return false, true
	}
	return true, true
}

func isCtxErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// fail builds the error of a retry loop that gave up. For an obtain whose
// outcome is unknown and whose token is random, it starts the cleanup: only
// this call knows that token, so nothing the caller does later can hold it.
// A custom token is left alone: its caller may obtain again with it (which
// is idempotent), and a cleanup could delete what that retry was granted.
// lastErr is nil when the last attempt found the lock held; ctxErr is set
// when the ctx ended while waiting.
func (c *Client) fail(what op, l *Lock, o *Options, unknown bool, lastErr, ctxErr error) error {
	random := what == opObtain && (o == nil || o.Token == "")
	if random && unknown {
		go c.cleanup(l, true, l.token)
	}
	if random && lastErr != nil && isCtxErr(lastErr) {
		// In flight when the ctx ended: the cleanup settles it, and the
		// caller's answer is "not obtained".
		if ctxErr == nil {
			ctxErr = lastErr
		}
		return fmt.Errorf("%w: %w", ErrNotObtained, ctxErr)
	}
	name := "obtain"
	if what == opRefresh {
		name = "refresh"
	}
	switch {
	case lastErr == nil && ctxErr == nil:
		return ErrNotObtained
	case lastErr == nil:
		return fmt.Errorf("%w: %w", ErrNotObtained, ctxErr)
	case ctxErr == nil:
		return fmt.Errorf("redislock: %s %q: %w", name, l.keys[0], lastErr)
	default:
		return fmt.Errorf("redislock: %s %q: %w: %w", name, l.keys[0], lastErr, ctxErr)
	}
}

// cleanup releases what an obtain with an unknown outcome may have taken,
// with release.lua and the obtain's random token (giveBack: what a waiter
// that returned was granted), within the release timeout. Each attempt may
// use all of the time left: on a slow link a reconnect's handshake and the
// release need two round trips, and a shorter budget an attempt would never
// see its reply (a broken connection fails its commands at once, so a retry
// still gets its chance). It tries again after a transport error (the
// connection may heal) and, with lost set, after "not held" (the lost
// command may still be on its way: rueidis may send the cleanup on another
// connection, ahead of it), waiting 25ms, then twice as long each time up to
// 500ms. It stops once the keys are deleted, on an error reply of Redis, or
// when the client is closed. A lost command that lands after the release
// timeout is not undone: that lock lives out its TTL. args are release.lua's
// ARGV.
func (c *Client) cleanup(l *Lock, lost bool, args ...string) {
	deadline := time.Now().Add(c.releaseTimeout)
	wait := 25 * time.Millisecond
	for {
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		err := c.scripts.release.Exec(ctx, c.client, l.keys, args).Error()
		cancel()
		if err == nil || errors.Is(err, rueidis.ErrClosing) || (!lost && rueidis.IsRedisNil(err)) {
			return
		}
		if _, reply := rueidis.IsRedisErr(err); reply && !rueidis.IsRedisNil(err) {
			return
		}
		if time.Now().Add(wait).After(deadline) {
			return
		}
		time.Sleep(wait)
		wait = min(2*wait, 500*time.Millisecond)
	}
}
