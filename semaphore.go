package redislock

import (
	"context"
	"time"
)

// ObtainSemaphore takes one of limit permits of key: at most limit holders
// at once, the limit being the one this call gives.
//
// Each holder has its own token and its own lease of ttl, kept by the
// server's clock, as with ObtainShared: the Lock's Refresh, Release, TTL and
// Watch act on its own, and a holder that vanishes frees its permit when
// its lease ends, with no call from anyone. A Release passes its permit to
// the first waiter in its own script, so that nobody takes it in between:
// one queued in Redis, else a goroutine of the same Client waiting for the
// key (the goroutines of one Client queue behind one another, and only the
// first is queued in Redis); waiters have permits in arrival order, but
// that a Release passes over a waiter whose own attempt is in flight (that
// attempt may take a permit). While
// its Client holds as many permits as its limit, the first waits for that
// Client's Releases alone, out of Redis' queue (a Lock counts as held until
// its Release, even once its lease ended unseen: one never released keeps
// the Client's waiters to their retry strategy and the holders' leases).
//
// The limit is the caller's, and is not stored: a call with limit n takes a
// permit while fewer than n tokens hold the key, and a queued waiter has one
// when a place frees under its own limit. Callers that give different limits
// on one key each get their own: a deployment that raises its limit from 4
// to 8 admits up to 8 at once as soon as its new callers run; one that
// lowers it from 8 to 4 admits nobody new until fewer than 4 hold the key,
// and holders of the old limit keep their permits until they leave; while
// both are in use, a waiter of the higher limit queued behind one of the
// lower may have its permit only at the next release. A key
// held by a shared lock (ObtainShared) or an exclusive one (Obtain) is held
// for ObtainSemaphore too, until its holders leave; an exclusive Obtain of
// a key held by a semaphore finds it held.
//
// A limit under 1 returns an error wrapping ErrInvalidLimit, and nothing is
// sent to Redis. Waiting, the retry strategies, the deadline rule, the
// cleanup of unknown outcomes, Options.Token (no reentrancy: a holder's
// token takes its own permit again, idempotent), Options.FenceKey (a fresh
// fence token for each holder), Options.Metadata, the Observer
// (OpObtainSemaphore) and the errors are as for Obtain. On a Redis Cluster
// the key is one slot; a FenceKey must share it (a hash tag).
// A quorum Client (NewQuorum) takes exclusive locks only: there it
// returns an error wrapping errors.ErrUnsupported, and sends nothing.
func (c *Client) ObtainSemaphore(ctx context.Context, key string, limit int, ttl time.Duration, opt *Options) (*Lock, error) {
	return c.obtain(ctx, OpObtainSemaphore, c.newLock(c.semaphores, key), ttl, opt, limit)
}

// newSemaphores returns the kind of semaphores: the scripts of shared locks
// (holders), whose Release offers its permit to a waiter of its Client.
func newSemaphores(holders *kind) *kind {
	k := *holders
	k.semaphore = true
	return &k
}
