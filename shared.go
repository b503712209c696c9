package redislock

// Shared locks and semaphores: keys that several tokens hold at once, each
// with a lease of its own (lua/holders.lua). They are kinds of lock of the
// one engine (obtain.go): their own scripts, whose replies read as the
// exclusive lock's, and a release that may grant several waiters at once,
// each told on its Client's channel.

import (
	"context"
	_ "embed"
	"time"

	"github.com/redis/rueidis"
)

var (
	//go:embed lua/holders_obtain.lua
	luaHoldersObtain string
	//go:embed lua/holders_release.lua
	luaHoldersRelease string
	//go:embed lua/holders_refresh.lua
	luaHoldersRefresh string
	//go:embed lua/holders_pttl.lua
	luaHoldersPTTL string
)

// newHolders returns the kind of shared locks and semaphores: one set of
// scripts serves both, the obtain told which by its last argument.
func newHolders(cluster bool) *kind {
	head := scriptHead(cluster) + luaHolders
	return &kind{
		obtain:  newLuaScript(head + luaHoldersObtain),
		release: newLuaScript(head + luaHoldersRelease),
		refresh: newLuaScript(head + luaHoldersRefresh),
		pttl:    rueidis.NewLuaScriptReadOnly(head + luaHoldersPTTL),
	}
}

// ObtainShared takes a shared hold on key: any number of shared holders at
// once, none while an exclusive lock (Obtain, ObtainMulti) holds it.
//
// Each holder has its own token and its own lease of ttl, kept by the
// server's clock: the Lock's Refresh extends its own, Release gives back
// its own (ErrLockNotHeld once its lease has ended), TTL returns its own,
// Watch keeps its own; a holder that vanishes frees its place when its
// lease ends, with no call from anyone.
//
// Writers are not starved: while an exclusive Obtain waits for a key held
// shared, a new ObtainShared waits behind it (with NoRetry it returns
// ErrNotObtained), and the writer has the key once the current holders
// leave. A release hands the key on in arrival order: to the next
// exclusive waiter, or to every shared waiter queued before the next
// exclusive one, at once. A key held by a semaphore (ObtainSemaphore) is
// held for ObtainShared too, until its last holder leaves.
//
// There is no reentrancy and no upgrade: a token that holds a key shared and
// calls ObtainShared again with Options.Token takes its own place again
// (idempotent: its fence token kept, its lease and metadata replaced), and
// an exclusive Obtain of a key held shared finds it held, whatever its token.
//
// Waiting, the retry strategies, the deadline rule, the cleanup of unknown
// outcomes, Options.FenceKey (a fresh fence token for each holder),
// Options.Metadata and the Observer (OpObtainShared) are as for Obtain; so
// are the errors (ErrNotObtained, and those of bad input). On a Redis
// Cluster the key is one slot; a FenceKey must share it (a hash tag).
// A quorum Client (NewQuorum) takes exclusive locks only: there it
// returns an error wrapping errors.ErrUnsupported, and sends nothing.
func (c *Client) ObtainShared(ctx context.Context, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	return c.obtain(ctx, OpObtainShared, c.newLock(c.holders, key), ttl, opt, 0)
}
