package redislock

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/rueidis"
)

// ErrNotReplicated is wrapped by the error of an Obtain, ObtainMulti or
// Refresh of a Client made WithReplicas when fewer replicas than asked
// acknowledged its write within the timeout. An Obtain then releases what it
// wrote; a Refresh keeps the lock (it is held, on the master).
var ErrNotReplicated = errors.New("redislock: not replicated")

// WithReplicas makes every obtain and refresh of the Client wait, after its
// write, until n replicas acknowledged it or timeout passed (Redis' WAIT),
// so that a lock it reports survives the failover of its master to one of
// those replicas. When fewer acknowledge, Obtain and ObtainMulti return an
// error wrapping ErrNotReplicated (not ErrNotObtained) and release what
// they wrote, in the background within the release timeout; Refresh returns it and keeps the lock. A lock passed to a
// waiter by a release is confirmed likewise, with a refresh to its own TTL.
//
// WAIT counts the writes of its own connection, so each write runs with its
// WAIT on a dedicated connection of the rueidis client (one round trip for
// both), not pipelined: expect each obtain and refresh to cost a connection
// from rueidis' pool and up to timeout more. The ctx of the call should
// leave room for timeout.
//
// It cannot promise what WAIT cannot: a replica that acknowledged may not
// be the one promoted (Sentinel and Cluster promote the most up to date one,
// which helps); a write acknowledged by replicas is not on their disks
// (WAITAOF, Redis 7.2+, is not used); and the master may still serve writes
// that no replica will see (min-replicas-to-write bounds that on the
// server). n == 0 turns it off (the default). WithReplicas panics for n < 0,
// and for n > 0 with a timeout under 1ms.
func WithReplicas(n int, timeout time.Duration) ClientOption {
	if n < 0 {
		panic(fmt.Sprintf("redislock: WithReplicas(%d, %v): n must be 0 or more", n, timeout))
	}
	if n > 0 && timeout < time.Millisecond {
		panic(fmt.Sprintf("redislock: WithReplicas(%d, %v): the timeout must be 1ms or more", n, timeout))
	}
	return func(c *Client) {
		c.replicas, c.replicaTimeout = int64(n), timeout
	}
}

// script is a Lua script's body and SHA-1, for a dedicated connection, where
// rueidis.Lua does not run.
type script struct{ body, sha string }

func newScript(body string) script {
	sum := sha1.Sum([]byte(body))
	return script{body: body, sha: hex.EncodeToString(sum[:])}
}

// exec is the one way a script that writes runs: through rueidis (EVALSHA,
// EVAL after NOSCRIPT), or, on a Client made WithReplicas, with WAIT on a
// dedicated connection. It returns the script's integer reply (a nil reply
// is an error: rueidis.IsRedisNil) and how many replicas acknowledged the
// write (0 without WithReplicas, which asks for none).
func (c *Client) exec(ctx context.Context, s *luaScript, keys, args []string) (n, acked int64, err error) {
	if c.replicas == 0 {
		n, err = s.lua.Exec(ctx, c.client, keys, args).AsInt64()
		return n, 0, err
	}
	var res rueidis.RedisResult
	if res, acked, err = c.execReplicated(ctx, s.body, keys, args); err == nil {
		n, err = res.AsInt64()
	}
	return n, acked, err
}

// execReplicated runs s and WAIT on one dedicated connection (EVAL after a
// NOSCRIPT), and returns the script's reply and how many replicas
// acknowledged the write. A dedicated connection does not follow MOVED:
// after a failover or a resharding, a read through the client lets rueidis
// learn the slot's new node, and the script runs once more.
func (c *Client) execReplicated(ctx context.Context, s script, keys, args []string) (res rueidis.RedisResult, acked int64, err error) {
	res, acked, err = c.execDedicated(ctx, s, keys, args)
	if re, ok := rueidis.IsRedisErr(res.Error()); ok && err == nil {
		if _, moved := re.IsMoved(); moved {
			_ = c.client.Do(ctx, c.client.B().Exists().Key(keys[0]).Build()).Error()
			res, acked, err = c.execDedicated(ctx, s, keys, args)
		}
	}
	return res, acked, err
}

func (c *Client) execDedicated(ctx context.Context, s script, keys, args []string) (res rueidis.RedisResult, acked int64, err error) {
	dc, release, err := c.dedicate(ctx)
	if err != nil {
		return res, 0, err
	}
	defer release()
	wait := func() rueidis.Completed {
		return dc.B().Wait().Numreplicas(c.replicas).Timeout(c.replicaTimeout.Milliseconds()).Build()
	}
	rs := dc.DoMulti(ctx, dc.B().Evalsha().Sha1(s.sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(), wait())
	if re, ok := rueidis.IsRedisErr(rs[0].Error()); ok && re.IsNoScript() {
		rs = dc.DoMulti(ctx, dc.B().Eval().Script(s.body).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build(), wait())
	}
	// A WAIT that fails (a transport error, or a demoted master:
	// "WAIT cannot be used with replica instances") confirms no replica:
	// acked stays 0, and a write is then not replicated.
	acked, _ = rs[1].AsInt64()
	return rs[0], acked, nil
}

// dedicate returns a dedicated connection of the rueidis client, and the
// function that hands it back, by the end of ctx. rueidis takes the
// connection from its pool with context.Background(): a new one is dialled
// and greeted (HELLO) under its dial and write timeouts (5s and 10s by
// default), not under the caller's deadline, so a master that stopped
// answering in a failover would hold the call that long. When ctx ends
// first, dedicate returns its error, and the connection is handed back
// when it comes; nothing was sent.
func (c *Client) dedicate(ctx context.Context) (rueidis.DedicatedClient, func(), error) {
	if ctx.Done() == nil {
		dc, release := c.client.Dedicate()
		return dc, release, nil
	}
	type conn struct {
		dc      rueidis.DedicatedClient
		release func()
	}
	got := make(chan conn, 1)
	go func() {
		dc, release := c.client.Dedicate()
		got <- conn{dc, release}
	}()
	select {
	case g := <-got:
		return g.dc, g.release, nil
	case <-ctx.Done():
		go func() { (<-got).release() }()
		return nil, nil, ctx.Err()
	}
}

// notReplicated is the error for a write that fewer than c.replicas
// replicas acknowledged.
func (c *Client) notReplicated(what string, l *Lock, acked int64) error {
	return fmt.Errorf("%w: %s %q: %d of %d replicas acknowledged within %v",
		ErrNotReplicated, what, l.keys[0], acked, c.replicas, c.replicaTimeout)
}

// unwrite releases what an obtain that was not replicated wrote, in the
// background and within the release timeout (trying again after a
// transport error, as a give-back does), so that the obtain returns by its
// ctx deadline.
func (c *Client) unwrite(ctx context.Context, l *Lock) {
	ctx = context.WithoutCancel(ctx)
	go func() {
		ctx, cancel := context.WithTimeout(ctx, c.releaseTimeout)
		defer cancel()
		_, _ = c.release(ctx, l, byGiveBack, "")
	}()
}

// confirm makes sure that a lock passed to a waiter of a Client made
// WithReplicas is replicated: a refresh to its TTL, with WAIT, whose
// acknowledgement covers the grant before it. When it is not, the lock is
// released.
func (c *Client) confirm(ctx context.Context, l *Lock, ttl string) error {
	_, acked, err := c.exec(ctx, &l.kind.refresh, l.keys, []string{l.token, ttl})
	switch {
	case rueidis.IsRedisNil(err):
		return ErrNotObtained // lost at once: expired meanwhile
	case err != nil:
		c.unwrite(ctx, l)
		return fmt.Errorf("redislock: obtain %q: confirm: %w", l.keys[0], err)
	case acked < c.replicas:
		c.unwrite(ctx, l)
		return c.notReplicated("obtain", l, acked)
	}
	return nil
}
