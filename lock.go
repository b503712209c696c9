package redislock

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// Options describe how a lock is obtained or refreshed. A nil *Options is
// valid and means the zero value: no retry, no metadata, a random token, no
// fencing. An Options value is safe to share across calls and goroutines
// when its RetryStrategy is one of this package's.
type Options struct {
	// RetryStrategy decides the waits between attempts. Default (nil):
	// NoRetry, a single attempt.
	RetryStrategy RetryStrategy

	// Metadata is stored beside the token and returned by Lock.Metadata. At
	// most MaxMetadataLen (4096) bytes. Default: none.
	Metadata string

	// Token identifies the holder. Default (""): 16 random bytes from
	// crypto/rand, as 22 characters of base64url. A custom token is at most
	// MaxTokenLen (256) bytes without NUL; obtaining again with the token
	// that holds the lock succeeds (idempotent), keeps its fence token and
	// replaces its metadata.
	Token string

	// FenceKey names a counter that a fresh obtain INCRs in the same script;
	// Lock.FenceToken returns its value, strictly increasing per FenceKey.
	// Default (""): no fencing. On a cluster it must share the hash slot of
	// the lock keys.
	FenceKey string
}

func (o *Options) retryStrategy() RetryStrategy {
	if o == nil {
		return nil
	}
	return o.RetryStrategy
}

func (o *Options) fenceKey() string {
	if o == nil {
		return ""
	}
	return o.FenceKey
}

// Lock is an obtained lock. Its methods are safe for concurrent use; those
// that talk to Redis return ErrNotObtained or ErrLockNotHeld on a nil *Lock
// instead of panicking.
type Lock struct {
	client   *Client
	kind     *kind
	keys     []string
	one      [1]string // backs keys for a single-key lock: no second allocation
	token    string
	metadata string
	fence    int64
	obtained time.Duration  // since clockBase, when the client has an observer
	counted  bool           // its token's semaphore permit counted in its Client's localQueues.held (countPermit); guarded by their mutex
	tokenBuf [tokenLen]byte // backs a random token: no second allocation
}

// Key returns the lock's key; the first one of an ObtainMulti lock, and ""
// for a nil *Lock.
func (l *Lock) Key() string {
	if l == nil {
		return ""
	}
	return l.keys[0]
}

// Keys returns a copy of the lock's keys (nil for a nil *Lock).
func (l *Lock) Keys() []string {
	if l == nil {
		return nil
	}
	return append([]string(nil), l.keys...)
}

// Token returns the lock's token, read locally ("" for a nil *Lock).
func (l *Lock) Token() string {
	if l == nil {
		return ""
	}
	return l.token
}

// Metadata returns the metadata the lock was obtained with, read locally (""
// for a nil *Lock).
func (l *Lock) Metadata() string {
	if l == nil {
		return ""
	}
	return l.metadata
}

// FenceToken returns the fence token: the value of Options.FenceKey's counter
// when the lock was obtained, strictly increasing per FenceKey. It is 0 when
// the lock was obtained without a FenceKey, and for a nil *Lock. Pass it to
// the resource the lock protects, and have that reject any write with a fence
// token lower than one it has seen: that is what keeps a holder that paused
// past its TTL from doing harm.
func (l *Lock) FenceToken() int64 {
	if l == nil {
		return 0
	}
	return l.fence
}

// TTL returns the remaining time to live: the least among the lock's keys.
// It returns (0, nil) when the lock is no longer held by its token, and
// ErrLockNotHeld for a nil *Lock. It is read-only (EVALSHA_RO), so it also
// answers on a replica-served read or a write-paused server.
func (l *Lock) TTL(ctx context.Context) (time.Duration, error) {
	if l == nil {
		return 0, ErrLockNotHeld
	}
	c := l.client
	ctx, ev := c.begin(ctx, OpTTL, l.keys, 0)
	if ev != nil {
		ev.Attempts = 1
	}
	var ttl time.Duration
	var err error
	if c.q != nil {
		ttl, err = c.q.ttl(ctx, c, l, ev)
		if err != nil {
			err = fmt.Errorf("redislock: ttl %q: %w", l.keys[0], err)
		}
		c.end(ctx, ev, err)
		return ttl, err
	}
	ms, err := l.kind.pttl.Exec(ctx, c.client, l.keys, []string{l.token}).AsInt64()
	switch {
	case rueidis.IsRedisNil(err):
		err = nil
	case err != nil:
		err = fmt.Errorf("redislock: ttl %q: %w", l.keys[0], err)
	default:
		ttl = time.Duration(ms) * time.Millisecond
	}
	c.end(ctx, ev, err)
	return ttl, err
}

// Refresh gives the lock a new TTL, retrying transport errors as
// opt.RetryStrategy allows (only the RetryStrategy of opt is used).
//
// Errors: ErrNotObtained when the lock is no longer held by its token (at
// once: a lost lock cannot come back by waiting) and for a nil *Lock; an
// error wrapping ErrInvalidTTL, before any I/O, for a TTL under 1ms or over
// MaxTTL (never a PEXPIRE that would delete the lock); the transport error
// (joined with the ctx error when the ctx ended while waiting) otherwise.
func (l *Lock) Refresh(ctx context.Context, ttl time.Duration, opt *Options) error {
	if l == nil {
		return ErrNotObtained
	}
	c := l.client
	ctx, ev := c.begin(ctx, OpRefresh, l.keys, ttl)
	attempts, err := l.refresh(ctx, ttl, opt, ev)
	if ev != nil {
		ev.Attempts = attempts
	}
	c.end(ctx, ev, err)
	return err
}

// refresh is Refresh's retry loop, on the retrier of every call: it makes
// the first attempt at once; after a transport error (classify) it waits
// the strategy's next backoff, and stops when the strategy says so, when
// the ctx ends while waiting, or, for a ctx without deadline, when the next
// attempt would start more than one TTL after the first wait. A lost lock
// ends it at once.
func (l *Lock) refresh(ctx context.Context, ttl time.Duration, o *Options, ev *Event) (attempts int, err error) {
	if err := validateTTL(ttl); err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("redislock: refresh %q: %w", l.keys[0], err)
	}
	c := l.client
	r := retrier{template: o.retryStrategy(), ttl: ttl}
	defer r.stop()
	args := []string{l.token, formatMs(ttl.Milliseconds())}
	for {
		attempts++
		var acked int64
		if c.q != nil {
			err, acked = c.q.refresh(ctx, l, ttl, args, ev), c.replicas // each node counts its replicas
		} else {
			_, acked, err = c.exec(ctx, &l.kind.refresh, l.keys, args)
		}
		switch {
		case err == nil && acked < c.replicas:
			return attempts, c.notReplicated("refresh", l, acked)
		case err == nil:
			return attempts, nil
		case rueidis.IsRedisNil(err):
			return attempts, ErrNotObtained // a lost lock cannot come back by waiting
		}
		if retryable, _ := classify(ctx, err); !retryable {
			return attempts, fmt.Errorf("redislock: refresh %q: %w", l.keys[0], err)
		}
		backoff := r.next(ctx)
		if backoff == 0 || (!r.deadline && time.Now().Add(backoff).After(r.limit)) {
			return attempts, fmt.Errorf("redislock: refresh %q: %w", l.keys[0], err)
		}
		if r.sleep(ctx, backoff, nil) == wokeByCtx {
			return attempts, fmt.Errorf("redislock: refresh %q: %w: %w", l.keys[0], err, ctx.Err())
		}
	}
}

// Release deletes the lock if its token still holds every key, and passes
// it to the first waiter: one queued in Redis (of any client), else a
// goroutine of this Client waiting for the same keys, in the same round
// trip. A release that nobody waits for costs no more round trips.
//
// Errors: ErrLockNotHeld when it does not (expired, or taken by another
// token) and for a nil *Lock; the transport error otherwise. A ctx that has
// already ended does not stop the release: it runs detached from the
// cancellation, bounded by the client's release timeout
// (DefaultReleaseTimeout, 2s, unless WithReleaseTimeout), so a cancelled
// request does not leave its lock held until the TTL.
func (l *Lock) Release(ctx context.Context) error {
	if l == nil {
		return ErrLockNotHeld
	}
	c := l.client
	ctx, ev := c.begin(ctx, OpRelease, l.keys, 0)
	if ev != nil {
		if l.obtained > 0 {
			ev.Held = ev.Start.Sub(clockBase) - l.obtained
		}
	}
	if ctx.Err() != nil {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(context.WithoutCancel(ctx), c.releaseTimeout)
		defer cancel()
	}
	var tries int
	var err error
	if c.q != nil {
		// A quorum's release is one try of every node, each bounded by
		// the release timeout (quorum.go).
		tries, err = 1, c.q.release(ctx, c, l, byHolder, ev)
	} else {
		tries, err = c.release(ctx, l, byHolder, "")
	}
	if ev != nil {
		ev.Attempts = tries
	}
	switch {
	case rueidis.IsRedisNil(err):
		err = ErrLockNotHeld
	case err != nil:
		err = fmt.Errorf("redislock: release %q: %w", l.keys[0], err)
	}
	c.end(ctx, ev, err)
	return err
}
