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

	// Each script runs as EVALSHA (EVALSHA_RO for pttl); rueidis falls back
	// to EVAL on NOSCRIPT, after a SCRIPT FLUSH, a restart or a failover.
	scriptObtain  = rueidis.NewLuaScript(luaOwned + luaObtain)
	scriptRefresh = rueidis.NewLuaScript(luaOwned + luaRefresh)
	scriptRelease = rueidis.NewLuaScript(luaOwned + luaRelease)
	scriptPTTL    = rueidis.NewLuaScriptReadOnly(luaOwned + luaPTTL)
)

// Client obtains locks through a rueidis.Client. It is safe for concurrent
// use; nothing in it serialises callers.
type Client struct {
	client         rueidis.Client
	cluster        bool
	observer       Observer
	releaseTimeout time.Duration
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
		releaseTimeout: DefaultReleaseTimeout,
	}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

// Obtain is a shortcut for New(client).Obtain(ctx, key, ttl, opt).
func Obtain(ctx context.Context, client rueidis.Client, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	return New(client).Obtain(ctx, key, ttl, opt)
}

// ObtainMulti is a shortcut for New(client).ObtainMulti(ctx, keys, ttl, opt).
func ObtainMulti(ctx context.Context, client rueidis.Client, keys []string, ttl time.Duration, opt *Options) (*Lock, error) {
	return New(client).ObtainMulti(ctx, keys, ttl, opt)
}

// Obtain takes the lock on key for ttl, retrying as opt.RetryStrategy allows
// while another token holds it. The TTL is truncated to whole milliseconds.
//
// Errors: ErrNotObtained when the lock stays held by another token; joined
// with the ctx error when the ctx ended while waiting, and alone when the ctx
// has no deadline and one TTL has passed. A transport error, or a ctx that
// ended while a command was in flight, is returned as such (never as
// ErrNotObtained, since the outcome is unknown). With a random token the
// library then releases, in the background and within the release timeout,
// whatever the server may have granted; with a custom token that is the
// caller's to settle: obtain again with the token (idempotent), then
// Release. Bad input: see the package documentation. A ctx that is already
// done returns an error wrapping the ctx error (not ErrNotObtained) at once,
// and sends nothing.
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
		_, _, err := c.obtain(ctx, l, ttl, o)
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	ev := newEvent(op, l.keys, ttl)
	defer putEvent(ev)
	ctx = c.observer.Begin(ctx, ev)
	var err error
	ev.Attempts, ev.Contended, err = c.obtain(ctx, l, ttl, o)
	ev.finish(err)
	if err != nil {
		c.observer.End(ctx, ev)
		return nil, err
	}
	l.obtained = ev.Start.Sub(clockBase)
	c.observer.End(ctx, ev)
	return l, nil
}

// obtain validates, then runs the attempts of an Obtain or ObtainMulti. It
// returns the number of attempts and of attempts that found the lock held.
func (c *Client) obtain(ctx context.Context, l *Lock, ttl time.Duration, o *Options) (attempts, contended int, err error) {
	if err := c.validate(l.keys, ttl, o); err != nil {
		return 0, 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, 0, fmt.Errorf("redislock: obtain %q: not attempted: %w", l.keys[0], err)
	}
	if o != nil && o.Token != "" {
		l.token = o.Token
	} else {
		l.setRandomToken()
	}
	if o != nil {
		l.metadata = o.Metadata
	}
	attempts, contended, err = c.retry(ctx, opObtain, l, ttl, o)
	return attempts, contended, err
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

// op is what one attempt of the retry loop does.
type op uint8

const (
	opObtain op = iota
	opRefresh
)

// retry is the retry loop of Obtain, ObtainMulti and Refresh. It makes the
// first attempt at once; after that it asks a fresh copy of the strategy for
// each wait, and stops when the strategy says so, when the ctx ends while
// waiting, or, for a ctx without deadline, when the next attempt would start
// more than one TTL after the first. Whether an attempt may be retried is
// decided by classify alone.
func (c *Client) retry(ctx context.Context, what op, l *Lock, ttl time.Duration, o *Options) (attempts, contended int, err error) {
	var (
		strategy  RetryStrategy
		deadline  time.Time
		timer     *time.Timer
		unknown   bool // an attempt may have been applied without our knowing
		lastErr   error
		ms        = ttl.Milliseconds()
		firstTime time.Time
	)
	for {
		attempts++
		held, err := c.attempt(ctx, what, l, ms, o, unknown)
		switch {
		case err == nil && !held:
			return attempts, contended, nil
		case err == nil:
			contended++
			lastErr = nil
		default:
			retryable, ambiguous := classify(err)
			unknown = unknown || ambiguous
			lastErr = err
			if !retryable {
				return attempts, contended, c.fail(what, l, o, unknown, lastErr, nil)
			}
		}
		if what == opRefresh && lastErr == nil {
			// A lost lock cannot come back by waiting.
			return attempts, contended, ErrNotObtained
		}

		if strategy == nil {
			strategy = freshStrategy(o.retryStrategy())
			if _, ok := ctx.Deadline(); !ok {
				firstTime = time.Now()
				deadline = firstTime.Add(ttl)
			}
		}
		backoff := strategy.NextBackoff()
		if backoff < 1 || (!deadline.IsZero() && time.Now().Add(backoff).After(deadline)) {
			return attempts, contended, c.fail(what, l, o, unknown, lastErr, nil)
		}
		if timer == nil {
			timer = time.NewTimer(backoff)
			defer timer.Stop()
		} else {
			timer.Reset(backoff)
		}
		select {
		case <-ctx.Done():
			return attempts, contended, c.fail(what, l, o, unknown, lastErr, ctx.Err())
		case <-timer.C:
			if err := ctx.Err(); err != nil {
				return attempts, contended, c.fail(what, l, o, unknown, lastErr, err)
			}
		}
	}
}

// attempt makes one attempt: held reports that another token holds the lock
// (for Refresh: that the lock is lost). A first obtain with a random token,
// one key and no fence key is a plain SET NX PX, since nobody else can hold
// that token; once an attempt may have been applied unseen, attempts go
// through obtain.lua, which takes again a lock its token already holds.
func (c *Client) attempt(ctx context.Context, what op, l *Lock, ms int64, o *Options, unknown bool) (held bool, err error) {
	ttl := formatMs(ms)
	if what == opRefresh {
		err = scriptRefresh.Exec(ctx, c.client, l.keys, []string{l.token, ttl}).Error()
		if rueidis.IsRedisNil(err) {
			return true, nil
		}
		return false, err
	}
	fenceKey := o.fenceKey()
	if !unknown && fenceKey == "" && len(l.keys) == 1 && (o == nil || o.Token == "") {
		// Arbitrary rather than Set()...PxMilliseconds, which formats the
		// TTL anew on every call.
		cmd := c.client.B().Arbitrary("SET").Keys(l.keys[0]).Args(lockValue(l.token, 0, l.metadata), "NX", "PX", ttl).Build()
		err = c.client.Do(ctx, cmd).Error()
		if rueidis.IsRedisNil(err) {
			return true, nil
		}
		return false, err
	}
	keys, fenced := l.keys, "0"
	if fenceKey != "" {
		keys, fenced = make([]string, len(l.keys)+1), "1"
		keys[copy(keys, l.keys)] = fenceKey
	}
	fence, err := scriptObtain.Exec(ctx, c.client, keys, []string{l.token, ttl, l.metadata, fenced}).AsInt64()
	if rueidis.IsRedisNil(err) {
		return true, nil
	}
	l.fence = fence
	return false, err
}

// classify is the one place that decides what a failed attempt means.
//
// A reply of Redis is terminal (a script error, WRONGTYPE, NOPERM will not
// clear by waiting), except TRYAGAIN, LOADING and CLUSTERDOWN, which a
// resharding, a restart or a failover clear; a reply means the command ran,
// or was refused, so its outcome is known. A ctx error or a closed client is
// terminal. Anything else is a transport error: retryable within the caller's
// deadline, and ambiguous, since the command may have been applied.
func classify(err error) (retryable, ambiguous bool) {
	if re, ok := rueidis.IsRedisErr(err); ok {
		return re.IsTryAgain() || re.IsLoading() || re.IsClusterDown(), false
	}
	if errors.Is(err, rueidis.ErrClosing) {
		return false, true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false, true
	}
	return true, true
}

// fail builds the error of a retry loop that gave up. For an obtain whose
// outcome is unknown and whose token is random, it starts the cleanup: only
// this call knows that token, so nothing the caller does later can hold it.
// A custom token is left alone: its caller may obtain again with it (which
// is idempotent), and a cleanup could delete what that retry was granted.
// lastErr is nil when the last attempt found the lock held; ctxErr is set
// when the ctx ended while waiting.
func (c *Client) fail(what op, l *Lock, o *Options, unknown bool, lastErr, ctxErr error) error {
	if what == opObtain && unknown && (o == nil || o.Token == "") {
		go c.cleanup(l)
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
// with release.lua and the obtain's random token, within the release timeout
// and for 250ms at most an attempt. It tries again after a transport error
// (the connection may heal) and after "not held" (the lost command may still
// be on its way: rueidis may send the cleanup on another connection, ahead of
// it), waiting 25ms, then twice as long each time up to 500ms. It stops once
// the keys are deleted, on an error reply of Redis, or when the client is
// closed. A lost command that lands after the release timeout is not undone:
// that lock lives out its TTL.
func (c *Client) cleanup(l *Lock) {
	deadline := time.Now().Add(c.releaseTimeout)
	wait := 25 * time.Millisecond
	for {
		// One attempt may not use the whole budget: a reply lost on a
		// broken connection would.
		until := time.Now().Add(250 * time.Millisecond)
		if until.After(deadline) {
			until = deadline
		}
		ctx, cancel := context.WithDeadline(context.Background(), until)
		err := scriptRelease.Exec(ctx, c.client, l.keys, []string{l.token}).Error()
		cancel()
		if err == nil || errors.Is(err, rueidis.ErrClosing) {
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
