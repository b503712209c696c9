package redislock_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
)

// Stress: several Clients, each with several goroutines, ObtainSemaphore
// with random ctx timeouts (give-ups while offers, grants and attempts are
// in flight), checks: never more than limit holders at once; then, once
// all returned and a moment passed, every permit is free (nothing leaked)
// and a final round of obtains completes promptly (no stuck waiter).
func TestObtainSemaphore_stress(t *testing.T) {
	for _, cf := range []struct{ limit, maxWait, maxHold int }{{2, 20, 2}, {1, 50, 5}, {3, 10, 1}, {1, 5, 0}} {
		t.Run("", func(t *testing.T) { semStress(t, cf.limit, cf.maxWait, cf.maxHold) })
	}
}

func semStress(t *testing.T, limit, maxWait, maxHold int) {
	b := realBackend(t)
	const (
		nClients = 3
		perC     = 5
		rounds   = 40
	)
	var clients []*redislock.Client
	for range nClients {
		clients = append(clients, redislock.New(b.client))
	}
	b.mustDo(t, "PING")
	var inside, maxInside atomic.Int64
	var wg sync.WaitGroup
	ctx := t.Context()
	opt := &redislock.Options{RetryStrategy: forever}
	var errs atomic.Int64
	for ci := range nClients {
		for range perC {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := clients[ci]
				for range rounds {
					d := time.Duration(1+rand.IntN(maxWait)) * time.Millisecond
					octx, cancel := context.WithTimeout(ctx, d)
					l, err := c.ObtainSemaphore(octx, "sem", limit, 10*time.Second, opt)
					cancel()
					if err != nil {
						if !errors.Is(err, redislock.ErrNotObtained) && !errors.Is(err, context.DeadlineExceeded) {
							errs.Add(1)
							t.Log("obtain:", err)
						}
						continue
					}
					n := inside.Add(1)
					for {
						m := maxInside.Load()
						if n <= m || maxInside.CompareAndSwap(m, n) {
							break
						}
					}
					time.Sleep(time.Duration(rand.IntN(maxHold*1000+1)) * time.Microsecond)
					inside.Add(-1)
					if err := l.Release(ctx); err != nil {
						errs.Add(1)
						t.Log("release:", err)
					}
				}
			}()
		}
	}
	wg.Wait()
	require.LessOrEqual(t, maxInside.Load(), int64(limit), "more than limit holders at once")
	require.Zero(t, errs.Load())
	// Give-backs run in the background: give them a moment.
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, 0, holderCount(t, b, "sem"), "permits held by nobody")

	// Final round: every Client obtains limit permits one after the other,
	// with a 3s ctx: a leaked count or a lost wake-up shows as a timeout.
	for ci, c := range clients {
		var ls []*redislock.Lock
		for range limit {
			octx, cancel := context.WithTimeout(ctx, 3*time.Second)
			l, err := c.ObtainSemaphore(octx, "sem", limit, 10*time.Second, opt)
			cancel()
			require.NoError(t, err, "client %d", ci)
			ls = append(ls, l)
		}
		for _, l := range ls {
			require.NoError(t, l.Release(ctx))
		}
	}
}

// Mixed kinds on one key: exclusive, shared and semaphore obtains from
// several Clients with give-ups. Exclusive alone; semaphore holders at
// most limit and never beside shared or exclusive ones.
func TestObtainKinds_mixedStress(t *testing.T) {
	b := realBackend(t)
	b.mustDo(t, "PING")
	const limit = 2
	var mu sync.Mutex
	var nx, nr, ns int
	var violations []string
	check := func() {
		if nx > 1 || (nx == 1 && (nr > 0 || ns > 0)) || ns > limit || (ns > 0 && nr > 0) {
			violations = append(violations, "x="+itoa(nx)+" r="+itoa(nr)+" s="+itoa(ns))
		}
	}
	ctx := t.Context()
	opt := &redislock.Options{RetryStrategy: forever}
	var wg sync.WaitGroup
	for ci := range 3 {
		c := redislock.New(b.client)
		for gi := range 5 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 30 {
					kind := (ci + gi) % 3
					if rand.IntN(4) == 0 {
						kind = rand.IntN(3)
					}
					octx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(30))*time.Millisecond)
					var l *redislock.Lock
					var err error
					switch kind {
					case 0:
						l, err = c.Obtain(octx, "mix", 10*time.Second, opt)
					case 1:
						l, err = c.ObtainShared(octx, "mix", 10*time.Second, opt)
					default:
						l, err = c.ObtainSemaphore(octx, "mix", limit, 10*time.Second, opt)
					}
					cancel()
					if err != nil {
						continue
					}
					mu.Lock()
					p := []*int{&nx, &nr, &ns}[kind]
					*p++
					check()
					mu.Unlock()
					time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
					mu.Lock()
					*p--
					mu.Unlock()
					if err := l.Release(ctx); err != nil {
						t.Log("release:", err)
					}
				}
			}()
		}
	}
	wg.Wait()
	require.Empty(t, violations)
	time.Sleep(500 * time.Millisecond)
	require.Equal(t, "0", b.mustDo(t, "EXISTS", "mix"), "nothing held once all left")
}

func itoa(n int) string { return strconv.Itoa(n) }

// A semaphore re-obtained with the same token (one permit in Redis) is
// counted once by its Client, and not at all once a Lock of the token
// releases it: counted twice, with limit 1 its next waiter would stay out
// of Redis' queue for good, and a permit freed by another Client never
// reach it (it would sleep to its backoff, here the ctx).
func TestObtainSemaphore_sameTokenCountedOnce(t *testing.T) {
	b := realBackend(t)
	ctx := t.Context()
	a := redislock.New(b.client)
	topt := &redislock.Options{Token: "tok-a"}
	l1, err := a.ObtainSemaphore(ctx, "sem", 1, time.Minute, topt)
	require.NoError(t, err)
	l2, err := a.ObtainSemaphore(ctx, "sem", 1, time.Minute, topt) // refresh by re-obtain
	require.NoError(t, err)
	require.Equal(t, 1, holderCount(t, b, "sem"))
	require.NoError(t, l2.Release(ctx))
	_ = l1 // the same permit, gone with l2's Release
	require.Equal(t, 0, holderCount(t, b, "sem"))

	other := redislock.New(b.client)
	hb, err := other.ObtainSemaphore(ctx, "sem", 1, time.Minute, nil)
	require.NoError(t, err)

	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	w := obtainKindAsync(wctx, a, "sem", 1, &redislock.Options{RetryStrategy: forever})
	time.Sleep(300 * time.Millisecond) // it made its attempt, and waits
	require.NoError(t, hb.Release(ctx))
	r := <-w
	require.NoError(t, r.err, "the permit is free: the waiter should have it")
	require.NoError(t, r.lock.Release(ctx))
}

// Lock.TTL of semaphore holders with different leases, as the key's keep
// moves up and back.
func TestObtainSemaphore_ttlWithKeep(t *testing.T) {
	b := realBackend(t)
	ctx := t.Context()
	c := redislock.New(b.client)
	short, err := c.ObtainSemaphore(ctx, "sem", 3, 5*time.Second, nil)
	require.NoError(t, err)
	long, err := c.ObtainSemaphore(ctx, "sem", 3, time.Minute, nil)
	require.NoError(t, err)
	assertTTL(t, short, 5*time.Second)
	assertTTL(t, long, time.Minute)
	require.NoError(t, short.Refresh(ctx, 2*time.Minute, nil))
	assertTTL(t, short, 2*time.Minute)
	assertTTL(t, long, time.Minute)
	require.NoError(t, short.Release(ctx))
	assertTTL(t, long, time.Minute)
	require.NoError(t, long.Refresh(ctx, 3*time.Second, nil))
	assertTTL(t, long, 3*time.Second)
	pttl, _ := strconv.Atoi(b.mustDo(t, "PTTL", "sem"))
	require.LessOrEqual(t, pttl, 4000, "key kept at most a second past its last lease")
	require.NoError(t, long.Release(ctx))
	require.Equal(t, 0, b.dbsize(t))
}

// A waiter granted a permit through the channel while a Release of its
// Client offers it one waits for that Release's answer only up to the
// release timeout (take, obtain.go). When the Release's script runs later,
// after the caller released the Lock it returned, the script grants the
// waiter's token again: that permit is nobody's, and is given back at once
// (settleOffer), not left held until its lease ends nor counted by the
// Client for good (held).
func takeTimeoutSetup(t *testing.T) (backend, *redislock.Client) {
	b := realBackend(t)
	ctx := t.Context()
	const limit = 2
	g := newGate(func([]string) bool { return true }) // the first EVALSHA
	a := redislock.New(&gates{Client: b.client, gs: []*gate2{g}}, redislock.WithReleaseTimeout(100*time.Millisecond))
	other := redislock.New(b.client)
	la, err := a.ObtainSemaphore(ctx, "sem", limit, time.Minute, nil)
	require.NoError(t, err)
	lb, err := other.ObtainSemaphore(ctx, "sem", limit, time.Minute, nil)
	require.NoError(t, err)

	w := obtainKindAsync(ctx, a, "sem", limit, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, "sem") == 1 }, "the waiter queues in Redis")
	time.Sleep(50 * time.Millisecond) // its attempt has returned

	g.armed.Store(true)
	relA := make(chan error, 1)
	go func() { relA <- la.Release(context.Background()) }()
	<-g.held // la's Release offered its permit to the waiter; its script is held

	require.NoError(t, lb.Release(ctx)) // grants the waiter through the channel
	r := <-w
	require.NoError(t, r.err)
	require.NoError(t, r.lock.Release(ctx), "the caller is done with its permit")

	close(g.open)
	require.NoError(t, <-relA)
	time.Sleep(100 * time.Millisecond)
	return b, a
}

func TestObtainSemaphore_offerLandsAfterTake(t *testing.T) {
	b, _ := takeTimeoutSetup(t)
	eventually(t, func() bool { return holderCount(t, b, "sem") == 0 }, "every Lock released: nobody holds a permit")
}

// The same, then the key is deleted (as if a late grant's lease ended):
// the Client counts only the permits its Locks hold, so with one of its
// own (limit 2) its next waiter queues in Redis, and a permit freed by
// another Client reaches it. Counting the released Lock, it would believe
// it holds both and keep the waiter out of Redis' queue for good.
func TestObtainSemaphore_offerLandsAfterTake_countLeak(t *testing.T) {
	b, a := takeTimeoutSetup(t)
	ctx := t.Context()
	b.mustDo(t, "DEL", "sem") // the phantom lease ends
	other := redislock.New(b.client)
	lc, err := other.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	require.NoError(t, err)
	la, err := a.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	require.NoError(t, err)
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	w := obtainKindAsync(wctx, a, "sem", 2, &redislock.Options{RetryStrategy: forever})
	time.Sleep(300 * time.Millisecond)
	require.NoError(t, lc.Release(ctx))
	r := <-w
	require.NoError(t, r.err, "lc's permit is free")
	require.NoError(t, r.lock.Release(ctx))
	require.NoError(t, la.Release(ctx))
}

// Short leases that end while held (dirty paths, keep moving both ways):
// the server never has more than limit live holders.
func TestObtainSemaphore_shortLeases(t *testing.T) {
	b := realBackend(t)
	b.mustDo(t, "PING")
	const limit = 2
	live := `local t = redis.call("time") local now = tonumber(t[1])*1000 + math.floor(tonumber(t[2])/1000)
local n = 0 local h = redis.call("hgetall", KEYS[1])
for i = 1, #h, 2 do if h[i] ~= "" then local e = tonumber(string.match(h[i+1], "^%d+") or "0") if e > now then n = n + 1 end end end
return n`
	ctx := t.Context()
	stop := make(chan struct{})
	var maxLive atomic.Int64
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			n, err := b.client.Do(ctx, b.client.B().Eval().Script(live).Numkeys(1).Key("sem").Build()).AsInt64()
			if err == nil && n > maxLive.Load() {
				maxLive.Store(n)
			}
		}
	}()
	var wg sync.WaitGroup
	for range 3 {
		c := redislock.New(b.client)
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 40 {
					octx, cancel := context.WithTimeout(ctx, time.Duration(1+rand.IntN(40))*time.Millisecond)
					l, err := c.ObtainSemaphore(octx, "sem", limit, time.Duration(5+rand.IntN(40))*time.Millisecond, &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Hour)})
					cancel()
					if err != nil {
						continue
					}
					time.Sleep(time.Duration(rand.IntN(30)) * time.Millisecond)
					_ = l.Release(ctx)
				}
			}()
		}
	}
	wg.Wait()
	close(stop)
	require.LessOrEqual(t, maxLive.Load(), int64(limit))
	time.Sleep(1200 * time.Millisecond)
	require.Equal(t, 0, b.dbsize(t), "keys left behind")
}

// gate2 holds the first EVALSHA that match accepts (once armed) until open:
// before it is sent, or with post after its reply came.
type gate2 struct {
	held, open chan struct{}
	match      func(args []string) bool
	post       bool
	once       sync.Once
	armed      atomic.Bool
}

type gates struct {
	rueidis.Client
	gs []*gate2
}

func (g *gates) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	// rueidis may reuse the arguments once Do returns: a copy.
	args := slices.Clone(cmd.Commands())
	script := strings.EqualFold(args[0], "EVALSHA")
	if script {
		g.hold(args, false)
	}
	res := g.Client.Do(ctx, cmd)
	if re, ok := rueidis.IsRedisErr(res.Error()); script && !(ok && re.IsNoScript()) {
		g.hold(args, true)
	}
	return res
}

// hold holds the first armed gate of the kind (post) that matches args, the
// first time it does.
func (g *gates) hold(args []string, post bool) {
	for _, x := range g.gs {
		if x.post == post && x.armed.Load() && x.match(args) {
			first := false
			x.once.Do(func() { first = true })
			if first {
				close(x.held)
				<-x.open
			}
			break
		}
	}
}

func newGate(match func([]string) bool) *gate2 {
	return &gate2{held: make(chan struct{}), open: make(chan struct{}), match: match}
}

func newPostGate(match func([]string) bool) *gate2 {
	g := newGate(match)
	g.post = true
	return g
}

// A Release's offer to a waiter with a custom token whose script lands
// after the waiter's Obtain returned (granted through the channel by
// another Client's release) and after that Lock's Release: the token holds
// a permit again. Its caller obtains again with the same token, and that
// obtain's script runs before the late offer's answer is read. The late
// permit is then that obtain's: it must not be given back, or the Lock
// returned as held holds nothing and another Client takes the limit.
func TestObtainSemaphore_lateOfferKeepsCustomTokensPermit(t *testing.T) {
	b := realBackend(t)
	ctx := t.Context()
	var laTok atomic.Value
	laTok.Store("\xff")
	ofLa := func(a []string) bool { return slices.Contains(a, laTok.Load().(string)) }
	ofTok := func(a []string) bool { return slices.Contains(a, "tok") && !ofLa(a) }
	offer, offerDone, again := newGate(ofLa), newPostGate(ofLa), newPostGate(ofTok)
	a := redislock.New(&gates{Client: b.client, gs: []*gate2{offer, offerDone, again}}, redislock.WithReleaseTimeout(100*time.Millisecond))
	other := redislock.New(b.client)
	for range 2 { // the scripts loaded: the gates see EVALSHA
		wl, err := a.ObtainSemaphore(ctx, "warm", 2, time.Minute, nil)
		require.NoError(t, err)
		require.NoError(t, wl.Release(ctx))
	}
	la, err := a.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	require.NoError(t, err)
	laTok.Store(la.Token())
	lb, err := other.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	require.NoError(t, err)
	w := obtainKindAsync(ctx, a, "sem", 2, &redislock.Options{Token: "tok", RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, "sem") == 1 }, "the waiter queues in Redis")

	// la's Release offers its permit to the waiter; its script is held.
	offer.armed.Store(true)
	relA := make(chan error, 1)
	go func() { relA <- la.Release(context.Background()) }()
	<-offer.held
	require.NoError(t, lb.Release(ctx)) // grants the waiter through the channel
	r := <-w
	require.NoError(t, r.err)
	require.NoError(t, r.lock.Release(ctx))

	// The offer's script runs now: tok holds a permit again; its answer
	// is held.
	offerDone.armed.Store(true)
	close(offer.open)
	<-offerDone.held
	// The caller obtains again with tok; its script finds the permit its
	// own, and its answer is held while the offer's is read.
	again.armed.Store(true)
	r2 := make(chan result, 1)
	go func() {
		l, err := a.ObtainSemaphore(context.Background(), "sem", 2, time.Minute, &redislock.Options{Token: "tok"})
		r2 <- result{l, err}
	}()
	<-again.held
	close(offerDone.open)
	require.NoError(t, <-relA)
	close(again.open)
	r = <-r2
	require.NoError(t, r.err)

	// Nothing took tok's permit: another Client gets one permit, not two.
	o1, err1 := other.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	o2, err2 := other.ObtainSemaphore(ctx, "sem", 2, time.Minute, nil)
	assert.False(t, err1 == nil && err2 == nil, "3 holders of a semaphore of 2")
	for _, o := range []*redislock.Lock{o1, o2} {
		if o != nil {
			require.NoError(t, o.Release(ctx))
		}
	}
	require.Equal(t, 1, holderCount(t, b, "sem"), "the Lock returned as held holds its permit")
	require.NoError(t, r.lock.Release(ctx))
}

// A waiter woken while a Release of its Client offers it a permit skips its
// attempt (beginAttempt), and its wait for that Release's answer is no retry
// of its strategy: counted as one, with LimitRetry it would give up, not
// obtained, while that Release passed the permit to it (then given back).
func TestObtainSemaphore_offeredWaiterKeepsRetry(t *testing.T) {
	b := realBackend(t)
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	const limit = 2
	var laToken atomic.Value
	laToken.Store("\xff")
	g1 := newGate(func(a []string) bool {
		return slices.Contains(a, "sem") && !slices.Contains(a, laToken.Load().(string))
	})
	g2 := newGate(func(a []string) bool { return slices.Contains(a, laToken.Load().(string)) })
	a := redislock.New(&gates{Client: b.client, gs: []*gate2{g2, g1}})
	other := redislock.New(b.client)

	// The channel of a is up: a waiter of a on another key.
	hold, err := other.Obtain(ctx, "other", time.Minute, nil)
	require.NoError(t, err)
	keep := obtainAsync(ctx, a, []string{"other"}, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, "other") == 1 }, "the channel is up")

	la, err := a.ObtainSemaphore(ctx, "sem", limit, time.Minute, nil)
	require.NoError(t, err)
	laToken.Store(la.Token())
	lb, err := other.ObtainSemaphore(ctx, "sem", limit, time.Minute, nil)
	require.NoError(t, err)

	g1.armed.Store(true)
	w1 := obtainKindAsync(ctx, a, "sem", limit, &redislock.Options{RetryStrategy: forever})
	<-g1.held // w1's first attempt, in flight
	w2 := obtainKindAsync(ctx, a, "sem", limit, &redislock.Options{RetryStrategy: redislock.LimitRetry(forever, 1)})
	time.Sleep(200 * time.Millisecond) // w2 waits behind w1

	require.NoError(t, lb.Release(ctx)) // a permit free
	g2.armed.Store(true)
	relA := make(chan error, 1)
	go func() { relA <- la.Release(context.Background()) }()
	<-g2.held // la's Release offers its permit to w2 (w1's attempt is in flight)
	close(g1.open)
	r1 := <-w1
	require.NoError(t, r1.err)
	time.Sleep(200 * time.Millisecond) // w2 woken by w1's leave
	var r2 result
	select {
	case r2 = <-w2:
		t.Logf("w2 returned while la's offer to it was in flight: %v", r2.err)
		close(g2.open)
		require.NoError(t, <-relA)
	default:
		close(g2.open)
		require.NoError(t, <-relA)
		r2 = <-w2
	}
	require.NoError(t, r2.err, "la's permit was offered to w2")
	require.NoError(t, r2.lock.Release(ctx))
	require.NoError(t, r1.lock.Release(ctx))
	require.NoError(t, hold.Release(ctx))
	rk := <-keep
	require.NoError(t, rk.err)
	require.NoError(t, rk.lock.Release(ctx))
}

// A semaphore attempt that finds a queued exclusive waiter first (writer
// preference) leaves its entry, and the queue's TTL, as they were: the
// waiter's later attempts find its entry (LPOS) and never lengthen the TTL
// again, so a holder that refreshes (Watch) would otherwise outlive the
// queue, its Release tell nobody, and the waiter sleep to the holder's
// lease with the key free.
func TestObtainSemaphore_putBackKeepsQueueTTL(t *testing.T) {
	b := realBackend(t)
	ctx := t.Context()
	s1, err := redislock.New(b.client).ObtainSemaphore(ctx, "k", 3, 2*time.Second, nil)
	require.NoError(t, err)
	ectx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	e := obtainAsync(ectx, redislock.New(b.client), []string{"k"}, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, "k") == 1 }, "the exclusive waiter queues")
	t.Log("queue PTTL before:", b.mustDo(t, "PTTL", "k:redislock-waiters"))
	_, err = redislock.New(b.client).ObtainSemaphore(ctx, "k", 3, time.Second, nil) // NoRetry: writer preference
	require.ErrorIs(t, err, redislock.ErrNotObtained)
	t.Log("queue PTTL after a semaphore attempt:", b.mustDo(t, "PTTL", "k:redislock-waiters"))
	require.NoError(t, s1.Refresh(ctx, 10*time.Second, nil)) // as Watch would
	time.Sleep(4 * time.Second)
	t.Log("queue length at 4s:", queueLen(t, b, "k"))
	released := time.Now()
	require.NoError(t, s1.Release(ctx))
	r := <-e
	require.NoError(t, r.err)
	require.Less(t, time.Since(released), time.Second, "the waiter was not told of the release")
	require.NoError(t, r.lock.Release(ctx))
}
