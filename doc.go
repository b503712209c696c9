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

// How an obtain runs: one engine, kinds of lock beside it.
//
// The engine is written once (obtain.go, its attempt step in attempt.go):
// an obtainCall holds the state of one Obtain, and its steps are methods
// called in one order by obtainCall.run: join (behind the Client's
// goroutines that wait for the same keys), attempt (which, for the
// Client's first waiter, also queues it in Redis), backoff (retrier, retry.go, shared with Refresh), wait, take a
// grant, give up. What a failed command means is decided by classify alone
// (errors.go), for obtain, refresh, release and the watchdog. Every script
// that writes runs through Client.exec (replicas.go), which hides
// WithReplicas; every operation is observed through Client.begin and
// Client.end (observer.go).
//
// A waiter is woken by the release itself, not by polling:
//
//   - In Redis, the waiters of a lock queue in a list beside the key they
//     found held (lua/queue.lua), one entry a waiting Client. release.lua
//     passes the lock to the first entry in the same script, so nobody can
//     take it in between (no barging, no herd: one waiter is told, by a
//     PUBLISH on its Client's channel, subscription.go), and the waiter has
//     it without another round trip.
//   - In the process, the goroutines of one Client that wait for the same
//     keys queue behind one another (waitqueue.go; a waiter's states in
//     waiter.go), and only the first one
//     talks to Redis. A Release by that Client offers the lock to its first
//     local waiter in the release's own round trip, unless a waiter of
//     another Client is queued in Redis: that one is first.
//   - A failed attempt returns the holder's remaining TTL: the first waiter
//     tries again just after it, so a lock whose holder vanished is taken
//     within a few milliseconds of its expiry.
//   - The backoff of the RetryStrategy bounds how long a waiter sleeps
//     without news. Where pub/sub is not to be had, waiters are not queued
//     in Redis and fall back to the backoff, with the holder's TTL heeded.
//
// A waiter's lifecycle is one state (waiterState), its transitions in one
// function (waiter.step). The rule that keeps a give-up harmless: a waiter
// whose Obtain returns without the lock gives back what it may hold in
// Redis (its queue entry, a lock passed to it) once no command that may
// queue or grant it is in flight; an attempt that queues runs detached from
// the caller's cancellation, so that the give-back follows it in Redis.
//
// The seam for a kind of lock is the kind type (locker.go): the script that
// takes the lock or queues a waiter, and the script that gives it back and
// passes it to the first waiter. They take obtain.lua's and release.lua's
// KEYS and ARGV and answer in their terms (an obtain: a fence token >= 0
// when granted, -1-ttl when held; a release: nil when not held, 1 freed, 2
// passed to a queued waiter, 3+fence passed to the offered local waiter),
// and share the wait queue of queue.lua. A kind whose release may grant
// several waiters at once publishes a grant to each; the engine reads a
// grant per waiter, so it needs no change for that. Shared locks and
// semaphores are such a kind (holders.lua, shared.go, semaphore.go): a
// Lock knows its kind (for Refresh, TTL and Release), a waiter's entry
// carries it. Shared waiters queue in Redis one goroutine each, since a
// release may grant several at once; semaphore waiters queue locally as
// the exclusive kind's do, and a Release of a permit offers it to a local
// waiter (one that no other Release in flight offers one to, and whose own
// attempt is not in flight). The exclusive kind alone starts with a plain
// SET NX; the others, on a Client whose channel is up, queue the waiter
// with their first attempt.
//
// A kind over several deployments (a quorum, quorum.go) is a Client whose
// q field holds its nodes, each a single-server Client. The engine's calls
// that talk to Redis ask c.q first: the attempt (obtainCall.send, to
// sendQuorum), the release (Client.releaseOnce in release.go, and Release), the
// refresh and the TTL (lock.go) fan out to every node and count a majority;
// joining, the retrier, the wait, the give-up and the cleanup stay the
// engine's. A quorum waiter is never queued in Redis (obtainCall.queue):
// it waits by the backoff and the holders' TTL, or a Release of its Client.
