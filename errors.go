package redislock

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
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

	// ErrInvalidLimit is wrapped by the error of ObtainSemaphore for a limit
	// under 1. Nothing is sent to Redis.
	ErrInvalidLimit = errors.New("redislock: invalid limit")
)

// classify is the one error policy of the library: obtain, refresh,
// release, the cleanup and the watchdog all ask it what a failed command
// means. ctx is the ctx of the call that sent the command.
//
// ErrNotReplicated is terminal and known (what the obtain wrote is
// released). A reply of Redis is terminal (a script error, WRONGTYPE,
// NOPERM will not clear by waiting), except TRYAGAIN, LOADING, CLUSTERDOWN,
// READONLY (a master demoted by a failover, until rueidis follows it), and
// MOVED and ASK (which rueidis follows, but not on the dedicated connection
// of WithReplicas), which a resharding, a restart or a failover clear; a
// reply means the command ran, or was refused (a replica refuses the first
// write of a script), so its outcome is known. A closed client is terminal,
// and so is the end of the call's own ctx. A command that was never sent
// (notSent: a failed dial, or one that another call's cancellation failed)
// is retryable, and known. Anything else is a transport error, retryable
// within the call's deadline, and ambiguous, since the command may have
// been applied.
func classify(ctx context.Context, err error) (retryable, ambiguous bool) {
	if qe, ok := errors.AsType[*QuorumError](err); ok {
		return qe.retryable, qe.ambiguous // each node's error, classified (quorum.go)
	}
	if errors.Is(err, ErrNotReplicated) {
		return false, false // known, and what it wrote is released
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) && !re.IsNil() {
		_, moved := re.IsMoved()
		_, ask := re.IsAsk()
		readOnly := strings.HasPrefix(re.Error(), "READONLY") // a demoted master, before the client follows the failover
		return re.IsTryAgain() || re.IsLoading() || re.IsClusterDown() || moved || ask || readOnly, false
	}
	if errors.Is(err, rueidis.ErrClosing) {
		return false, true
	}
	if isCtxErr(err) && ownCtxEnded(ctx) {
		return false, true
	}
	if notSent(ctx, err) {
		return true, false
	}
	return true, true
}

// ownCtxEnded reports whether the call's own ctx has ended, by its Err or
// by the clock: a dial bounded by the ctx deadline may fail an instant
// before the ctx's own timer fires.
func ownCtxEnded(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	deadline, ok := ctx.Deadline()
	return ok && !time.Now().Before(deadline)
}

// isCtxErr reports whether err is, or wraps, a ctx error (a net timeout
// bounded by a ctx deadline is one).
func isCtxErr(err error) bool {
	if _, ok := errors.AsType[*QuorumError](err); ok {
		return false // a quorum's nodes' errors, not the call's ctx
	}
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// notObtained is the error of an obtain that gave up: lastErr is the last
// attempt's error (nil when it found the lock held), ctxErr the ctx error
// when the ctx ended while waiting. An attempt of a random token that was
// in flight when the ctx ended is "not obtained" (the cleanup settles it).
func notObtained(l *Lock, random bool, lastErr, ctxErr error) error {
	if random && lastErr != nil && isCtxErr(lastErr) {
		if ctxErr == nil {
			ctxErr = lastErr
		}
		return fmt.Errorf("%w: %w", ErrNotObtained, ctxErr)
	}
	switch {
	case lastErr == nil && ctxErr == nil:
		return ErrNotObtained
	case lastErr == nil:
		return fmt.Errorf("%w: %w", ErrNotObtained, ctxErr)
	case ctxErr == nil:
		return fmt.Errorf("redislock: obtain %q: %w", l.keys[0], lastErr)
	default:
		return fmt.Errorf("redislock: obtain %q: %w: %w", l.keys[0], lastErr, ctxErr)
	}
}

// asCtxErr returns err wrapped with context.DeadlineExceeded when it is a
// network timeout (os.ErrDeadlineExceeded) and the call's own deadline has
// passed: a dial bounded by the ctx deadline fails with the poller's "i/o
// timeout" when the poller's timer fires before the ctx's own, and the
// caller must still learn that its deadline ended the call.
func asCtxErr(ctx context.Context, err error) error {
	if err != nil && !isCtxErr(err) && errors.Is(err, os.ErrDeadlineExceeded) && ownCtxEnded(ctx) {
		return fmt.Errorf("%w: %w", err, context.DeadlineExceeded)
	}
	return err
}

// notSent reports whether err is that of a command that never left the
// client: a failed dial, or a ctx error while the call's own ctx is live
// (rueidis dials a missing connection with the ctx of the command that
// needs it, and fails the commands queued behind it with that ctx's error
// when it ends).
func notSent(ctx context.Context, err error) bool {
	if err == nil {
		return false
	}
	if isCtxErr(err) {
		return !ownCtxEnded(ctx)
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// errNotSent returns an error for a command that another call's
// cancellation failed that does not read as this call's ctx ending.
func errNotSent(err error) error {
	if !isCtxErr(err) {
		return err
	}
	return fmt.Errorf("redislock: no connection: the call that was dialling it ended (%v)", err)
}
