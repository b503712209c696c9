package redislock_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/seed-223c80a0/redislock"
	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// forever is a backoff no test waits out: a wait that ends did so by news.
var forever = redislock.LinearBackoff(time.Hour)

// obtainAsync runs an Obtain in the background; its result arrives on the
// returned channel.
func obtainAsync(ctx context.Context, c *redislock.Client, keys []string, opt *redislock.Options) <-chan result {
	ch := make(chan result, 1)
	go func() {
		var l *redislock.Lock
		var err error
		if len(keys) == 1 {
			l, err = c.Obtain(ctx, keys[0], time.Minute, opt)
		} else {
			l, err = c.ObtainMulti(ctx, keys, time.Minute, opt)
		}
		ch <- result{l, err}
	}()
	return ch
}

type result struct {
	lock *redislock.Lock
	err  error
}

// eventually awaits cond, polling every millisecond, for up to 30s: a
// waiter may take seconds to queue on a machine loaded far beyond its cores
// (5s was too short once, under a load of 17 on 2 CPUs).
func eventually(t *testing.T, cond func() bool, what string) {
	t.Helper()
	require.Eventually(t, cond, 30*time.Second, time.Millisecond, what)
}

// queueLen is the length of key's wait queue in Redis (a standalone server).
func queueLen(t *testing.T, b backend, key string) int {
	n, err := strconv.Atoi(b.mustDo(t, "LLEN", key+":redislock-waiters"))
	require.NoError(t, err)
	return n
}

// A waiter on another Client is woken by the release, whatever its backoff:
// the lock passes to it in the release's script.
func TestWait_wokenByRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
		require.NoError(t, err)

		obs := &counter{}
		waiter := redislock.New(b.client, redislock.WithObserver(obs))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		got := obtainAsync(ctx, waiter, []string{"lock"}, &redislock.Options{RetryStrategy: forever, Metadata: "next"})
		eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "the waiter queues in Redis")

		require.NoError(t, holder.Release(t.Context()))
		r := <-got
		require.NoError(t, r.err)
		ev := obs.last.Load()
		assert.Equal(t, 1, ev.WokenByRelease)
		assert.Equal(t, 0, ev.WokenByBackoff)
		assert.Equal(t, 2, ev.Attempts, "the first attempt and the one that queued it; the grant needs none")
		assert.Equal(t, "next", r.lock.Metadata())
		assertTTL(t, r.lock, time.Minute)
		assert.Equal(t, 0, queueLen(t, b, "lock"))
		require.NoError(t, r.lock.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t), "nothing is left behind")
	})
}

// Waiters of different Clients are served in arrival order, and a newcomer
// does not overtake them.
func TestWait_fifo(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		opt := &redislock.Options{RetryStrategy: forever}
		var results []<-chan result
		for i := range 3 {
			results = append(results, obtainAsync(ctx, redislock.New(b.client), []string{"lock"}, opt))
			eventually(t, func() bool { return queueLen(t, b, "lock") == i+1 }, "waiter queues")
		}
		// A newcomer finds the lock passed on, never free.
		for i, ch := range results {
			require.NoError(t, holder.Release(t.Context()))
			_, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
			require.ErrorIs(t, err, redislock.ErrNotObtained, "a newcomer barges in before waiter %d", i)
			r := <-ch
			require.NoError(t, r.err, "waiter %d", i)
			for _, later := range results[i+1:] {
				assert.Empty(t, later, "a later waiter overtook waiter %d", i)
			}
			holder = r.lock
		}
		require.NoError(t, holder.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// A holder that vanishes: its waiter takes the lock once it expires, never
// before, woken by the TTL its failed attempt returned.
//
// On a machine loaded far beyond its cores the lease may end before the
// waiter's first attempt (a 100ms lease did, under a load of 16): that
// attempt then finds the lock free, and the try is made again on a new
// key, up to three times.
func TestWait_expiry(t *testing.T) {
	b := realBackend(t)
	const lease = 300 * time.Millisecond
	for try := 1; ; try++ {
		key := "lock:" + strconv.Itoa(try)
		start := time.Now()
		_, err := redislock.Obtain(t.Context(), b.client, key, lease, nil)
		require.NoError(t, err)
		obs := &counter{}
		lock, err := redislock.New(b.client, redislock.WithObserver(obs)).Obtain(t.Context(), key, time.Minute, &redislock.Options{RetryStrategy: forever})
		require.NoError(t, err)
		assert.GreaterOrEqual(t, time.Since(start), lease, "taken before the holder's TTL ended")
		ev := obs.last.Load() // the Obtain's
		require.NoError(t, lock.Release(t.Context()))
		if ev.Contended == 0 {
			require.Less(t, try, 3, "the lease ended before the waiter's first attempt in each try")
			t.Logf("try %d: the lease ended before the waiter's first attempt", try)
			continue
		}
		assert.GreaterOrEqual(t, ev.WokenByExpiry, 1)
		assert.Equal(t, 0, ev.WokenByBackoff)
		return
	}
}

// The goroutines of one Client take turns in arrival order: each release
// passes the lock to the next one in its own round trip, and only the first
// of them talks to Redis.
func TestWait_localHandoff(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		client := redislock.New(b.client)
		holder, err := client.Obtain(t.Context(), "lock", time.Minute, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		opt := &redislock.Options{RetryStrategy: forever, FenceKey: "fence"}
		var results []<-chan result
		for i := range 4 {
			results = append(results, obtainAsync(ctx, client, []string{"lock"}, opt))
			awaitBlocked(t, i+1) // arrival order
		}
		eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "one waiter of the Client queues in Redis")
		var fence int64
		for i, ch := range results {
			require.NoError(t, holder.Release(t.Context()))
			r := <-ch
			require.NoError(t, r.err, "waiter %d", i)
			assert.Greater(t, r.lock.FenceToken(), fence, "fence tokens increase")
			fence = r.lock.FenceToken()
			for _, later := range results[i+1:] {
				assert.Empty(t, later, "a later waiter overtook waiter %d", i)
			}
			holder = r.lock
		}
		require.NoError(t, holder.Release(t.Context()))
		assert.Equal(t, 0, queueLen(t, b, "lock"))
		assert.Equal(t, "(nil)", b.mustDo(t, "GET", "lock"))
	})
}

// A waiter that gives up is harmless: the release that follows does not
// pass the lock to it, and nothing stays held.
func TestWait_gaveUp(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
		require.NoError(t, err)
		ctx, cancel := context.WithCancel(t.Context())
		got := obtainAsync(ctx, redislock.New(b.client), []string{"lock"}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "the waiter queues")
		cancel()
		r := <-got
		require.ErrorIs(t, r.err, redislock.ErrNotObtained)
		require.ErrorIs(t, r.err, context.Canceled)
		eventually(t, func() bool { return queueLen(t, b, "lock") == 0 }, "the waiter leaves the queue")
		require.NoError(t, holder.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t))
	})
}

// Waiters that give up while releases pass the lock on, over and over: no
// lock is ever left held by a waiter that returned without it.
func TestWait_gaveUpRacingRelease(t *testing.T) {
	b := realBackend(t)
	// Every connection open: rueidis dials a missing one with the ctx of
	// the command that needs it, and a cancelled waiter's ctx would fail
	// the commands queued behind it (a Release among them).
	benchWarmClient(t, b.client)
	obs := &counter{}
	clients := []*redislock.Client{redislock.New(b.client, redislock.WithObserver(obs)), redislock.New(b.client)}
	held, longest := 0, time.Duration(0)
	for i := range 200 {
		// An attempt of a waiter that gave up may land after the waiter
		// returned; the library releases what it took in the background,
		// within its release timeout. The lock is free by then, and held
		// by nobody for its TTL (a minute) when it is not.
		free, stop := context.WithTimeout(t.Context(), redislock.DefaultReleaseTimeout+time.Second)
		began := time.Now()
		holder, err := clients[0].Obtain(free, "lock", time.Minute, &redislock.Options{RetryStrategy: redislock.LinearBackoff(10 * time.Millisecond)})
		stop()
		require.NoError(t, err, "round %d: the lock is held by nobody", i)
		if obs.last.Load().Contended > 0 {
			held, longest = held+1, max(longest, time.Since(began))
		}
		ctx, cancel := context.WithCancel(t.Context())
		var got []<-chan result
		for _, c := range clients {
			got = append(got, obtainAsync(ctx, c, []string{"lock"}, &redislock.Options{RetryStrategy: forever}))
		}
		time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
		go cancel()
		time.Sleep(time.Duration(i%7) * 50 * time.Microsecond)
		require.NoError(t, holder.Release(t.Context()))
		for _, ch := range got {
			if r := <-ch; r.err == nil {
				require.NoError(t, r.lock.Release(t.Context()))
			} else {
				// Not obtained, or not attempted: cancelled first.
				require.ErrorIs(t, r.err, context.Canceled)
			}
		}
		cancel()
		if !assert.Eventually(t, func() bool { return b.dbsize(t) == 0 }, 5*time.Second, time.Millisecond) {
			t.Fatalf("round %d: a lock or a queue is left behind: %s", i, describeKeys(t, b))
		}
	}
	t.Logf("%d rounds found the lock held by nobody when they began, the longest for %v", held, longest.Round(time.Millisecond))
}

// describeKeys lists the keys of b with their type and remaining TTL (their
// values hold tokens, which stay out of the test's output).
func describeKeys(t *testing.T, b backend) string {
	t.Helper()
	keys, err := b.client.Do(context.Background(), b.client.B().Keys().Pattern("*").Build()).AsStrSlice()
	require.NoError(t, err)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s (%s, PTTL %s)", k, b.mustDo(t, "TYPE", k), b.mustDo(t, "PTTL", k)))
	}
	return strings.Join(out, ", ")
}

// An ObtainMulti waiter is woken when one of its keys is released, and a
// wake-up that loses the race (another key still held) uses up a retry.
func TestWait_multiWakeUsesARetry(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		h1, err := redislock.Obtain(t.Context(), b.client, "{m}1", time.Minute, nil)
		require.NoError(t, err)
		h2, err := redislock.Obtain(t.Context(), b.client, "{m}2", time.Minute, nil)
		require.NoError(t, err)
		obs := &counter{}
		c := redislock.New(b.client, redislock.WithObserver(obs))
		got := obtainAsync(t.Context(), c, []string{"{m}1", "{m}2"}, &redislock.Options{RetryStrategy: redislock.LimitRetry(forever, 1)})
		eventually(t, func() bool { return queueLen(t, b, "{m}1") == 1 }, "the waiter queues")
		require.NoError(t, h1.Release(t.Context()))
		r := <-got
		require.ErrorIs(t, r.err, redislock.ErrNotObtained)
		ev := obs.last.Load()
		assert.Equal(t, 1, ev.WokenByRelease)
		assert.Equal(t, 1+queueRoundTrip+1, ev.Attempts)
		require.NoError(t, h2.Release(t.Context()))
	})
}

// Where pub/sub is not to be had, waiting falls back to the backoff: no
// error, no busy loop, the holder's TTL still heeded.
func TestWait_noChannelPermission(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServerConfig(t, redistest.Config{
		File: "user default on nopass ~* &* +@all\n" +
			"user locker on >pw resetchannels ~lock* -@all +set +get +del +pexpire +pttl +incr +eval +evalsha +eval_ro +evalsha_ro +ping +client|tracking\n",
	})
	client := srv.Client(t, func(o *rueidis.ClientOption) { o.Username, o.Password = "locker", "pw" })
	admin := srv.Client(t)
	holder, err := redislock.Obtain(t.Context(), client, "lock", time.Minute, nil)
	require.NoError(t, err)
	obs := &counter{}
	waiter := redislock.New(client, redislock.WithObserver(obs))
	got := obtainAsync(t.Context(), waiter, []string{"lock"}, &redislock.Options{RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond)})
	time.Sleep(120 * time.Millisecond)
	before := totalCalls(t, admin)
	time.Sleep(200 * time.Millisecond)
	// 200ms of waiting by a 50ms backoff: about 4 attempts of 3 commands
	// (EVALSHA, GET, PTTL), never a busy loop.
	assert.LessOrEqual(t, totalCalls(t, admin)-before, 30)
	require.NoError(t, holder.Release(t.Context()), "a release whose PUBLISH and queue are denied still releases")
	r := <-got
	require.NoError(t, r.err)
	assert.GreaterOrEqual(t, obs.last.Load().WokenByBackoff, 1)
	require.NoError(t, r.lock.Release(t.Context()))
}

// totalCalls is the sum of calls= in INFO commandstats, INFO left out.
func totalCalls(t *testing.T, c rueidis.Client) int {
	t.Helper()
	info, err := c.Do(context.Background(), c.B().Info().Section("commandstats").Build()).ToString()
	require.NoError(t, err)
	n, err := redistest.CommandCalls(info)
	require.NoError(t, err)
	return int(n)
}

// A killed subscription connection: waiters try again at once (finding
// what they were granted), and the next wait subscribes again.
func TestWait_subscriptionKilled(t *testing.T) {
	b := realBackend(t)
	holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
	require.NoError(t, err)
	obs := &counter{}
	c := redislock.New(b.client, redislock.WithObserver(obs))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := obtainAsync(ctx, c, []string{"lock"}, &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Second)})
	eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "the waiter queues")
	b.mustDo(t, "CLIENT", "KILL", "TYPE", "pubsub")
	require.NoError(t, holder.Release(t.Context()))
	r := <-got
	require.NoError(t, r.err)
	require.NoError(t, r.lock.Release(t.Context()))

	// The next wait subscribes again and is woken by the release.
	holder, err = redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
	require.NoError(t, err)
	got = obtainAsync(ctx, c, []string{"lock"}, &redislock.Options{RetryStrategy: forever})
	eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "the waiter queues again")
	require.NoError(t, holder.Release(t.Context()))
	r = <-got
	require.NoError(t, r.err)
	assert.Equal(t, 1, obs.last.Load().WokenByRelease)
	require.NoError(t, r.lock.Release(t.Context()))
}

// A SUBSCRIBE whose connection is lost, not refused by the server, is made
// again by the Client's next attempt: its waiters are not left to the
// backoff for resubscribeAfter (10s), in which a waiting writer of a shared
// lock is overtaken by readers at each of its tries.
func TestWait_lostSubscribeMadeAgain(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServer(t)
	admin := srv.Client(t)
	p := startSubscribeCutter(t, srv.Addr)
	c := redislock.New(redistest.NewClient(t, p.addr()))
	holder, err := redislock.Obtain(t.Context(), admin, "lock", time.Minute, nil)
	require.NoError(t, err)

	// Its first SUBSCRIBE is cut: this waiter waits by the backoff, and
	// its next attempt subscribes again.
	_, err = c.Obtain(t.Context(), "lock", time.Minute, &redislock.Options{RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(10*time.Millisecond), 3)})
	require.ErrorIs(t, err, redislock.ErrNotObtained)
	require.Equal(t, 1, p.cut(), "the SUBSCRIBE connection was not cut")
	require.GreaterOrEqual(t, p.subscribes(), 2, "no SUBSCRIBE after the one whose connection was lost")

	// Once that waiter has left the queue, the next one is queued, and is
	// woken by the release: its backoff (a minute) outlasts its ctx.
	b := backend{do: doWith(admin)}
	eventually(t, func() bool { return queueLen(t, b, "lock") == 0 }, "the waiter that gave up leaves the queue")
	obs := &counter{}
	c = redislock.New(redistest.NewClient(t, p.addr()), redislock.WithObserver(obs))
	ctx, cancel := context.WithTimeout(t.Context(), 45*time.Second)
	defer cancel()
	got := obtainAsync(ctx, c, []string{"lock"}, &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Minute)})
	eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "the waiter queues")
	require.NoError(t, holder.Release(t.Context()))
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, 1, obs.last.Load().WokenByRelease)
	require.NoError(t, r.lock.Release(t.Context()))
}

// subscribeCutter forwards connections to a server, and closes the first
// one that sends a SUBSCRIBE, before the server sees it; it counts the
// SUBSCRIBEs it sees.
type subscribeCutter struct {
	ln          net.Listener
	mu          sync.Mutex
	nCut, nSeen int
}

func startSubscribeCutter(t *testing.T, upstream string) *subscribeCutter {
	t.Helper()
	p := &subscribeCutter{}
	p.ln = proxyConns(t, upstream, func(down, up net.Conn) {
		context.AfterFunc(t.Context(), func() { down.Close(); up.Close() })
		go func() { _, _ = io.Copy(down, up); down.Close() }()
		go p.forward(down, up)
	})
	t.Cleanup(func() { p.ln.Close() })
	return p
}

func (p *subscribeCutter) forward(down, up net.Conn) {
	defer up.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := down.Read(buf)
		if err != nil {
			return
		}
		if subs := strings.Count(string(buf[:n]), "SUBSCRIBE"); subs > 0 {
			p.mu.Lock()
			p.nSeen += subs
			cut := p.nCut == 0
			if cut {
				p.nCut++
			}
			p.mu.Unlock()
			if cut {
				down.Close()
				return
			}
		}
		if _, err := up.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *subscribeCutter) addr() string { return p.ln.Addr().String() }

func (p *subscribeCutter) cut() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nCut
}

func (p *subscribeCutter) subscribes() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.nSeen
}

// The package-level Obtain waits as a long-lived Client does: its calls
// share one Client, one channel and one place in Redis' queue.
func TestWait_packageLevelShares(t *testing.T) {
	b := realBackend(t)
	holder, err := redislock.Obtain(t.Context(), b.client, "lock", time.Minute, nil)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			l, err := redislock.Obtain(ctx, b.client, "lock", time.Minute, &redislock.Options{RetryStrategy: forever})
			if err == nil {
				err = l.Release(ctx)
			}
			errs <- err
		})
	}
	eventually(t, func() bool { return queueLen(t, b, "lock") == 1 }, "one entry for the four")
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, 1, queueLen(t, b, "lock"))
	assert.Len(t, channels(t, b), 1, "one channel for the four")
	require.NoError(t, holder.Release(t.Context()))
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
}

// Redis Cluster: waiters are woken across Clients, for keys with and
// without a hash tag; ObtainMulti waits too.
func TestWait_cluster(t *testing.T) {
	redistest.Require(t)
	cl := redistest.StartCluster(t, 3, 0)
	rc := cl.Client(t)
	for _, keys := range [][]string{{"alpha"}, {"beta"}, {"{order:7}:lock"}, {"{order:8}:a", "{order:8}:b"}} {
		t.Run(strings.Join(keys, ","), func(t *testing.T) {
			holders := redislock.New(rc)
			holder, err := holders.ObtainMulti(t.Context(), keys, time.Minute, nil)
			require.NoError(t, err)
			obs := &counter{}
			waiter := redislock.New(rc, redislock.WithObserver(obs))
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			got := obtainAsync(ctx, waiter, keys, &redislock.Options{RetryStrategy: forever})
			// The waiter queues beside the first of its keys, in that
			// key's hash slot (its hash tag, or the key made one).
			queue := keys[0] + ":redislock-waiters"
			if !strings.Contains(keys[0], "{") {
				queue = "{" + keys[0] + "}:redislock-waiters"
			}
			eventually(t, func() bool {
				n, err := rc.Do(t.Context(), rc.B().Llen().Key(queue).Build()).AsInt64()
				return err == nil && n == 1
			}, "the waiter queues")
			require.NoError(t, holder.Release(t.Context()))
			r := <-got
			require.NoError(t, r.err)
			assert.Equal(t, 1, obs.last.Load().WokenByRelease)
			require.NoError(t, r.lock.Release(t.Context()))
		})
	}
}

// 10,000 waits on distinct keys leave nothing behind: no queue, no channel,
// no extra connection once the waits are over.
func TestWait_manyKeysLeaveNothing(t *testing.T) {
	b := realBackend(t)
	leaks := goleak.IgnoreCurrent()
	const n = 10000
	client := redislock.New(b.client)
	holders := make([]*redislock.Lock, n)
	for i := range holders {
		var err error
		holders[i], err = client.Obtain(t.Context(), "k"+strconv.Itoa(i), time.Minute, nil)
		require.NoError(t, err)
	}
	clientsBefore := strings.Count(clientList(t, b), "\n")
	waiter := redislock.New(b.client)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			l, err := waiter.Obtain(ctx, "k"+strconv.Itoa(i), time.Minute, &redislock.Options{RetryStrategy: forever})
			if err == nil {
				err = l.Release(context.Background())
			}
			if err != nil {
				errs <- err
			}
		})
	}
	eventually(t, func() bool { return b.dbsize(t) == 2*n }, "every waiter queues")
	for _, h := range holders {
		require.NoError(t, h.Release(t.Context()))
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 0, b.dbsize(t), "no lock and no queue is left")
	eventually(t, func() bool { return len(channels(t, b)) == 0 }, "the channel is dropped")
	eventually(t, func() bool { return clientList(t, b, "TYPE", "pubsub") == "" }, "the subscription's connection is closed")
	// rueidis keeps the dedicated connection the subscription used in its
	// pool, for the next one: one connection more at most.
	assert.LessOrEqual(t, strings.Count(clientList(t, b), "\n"), clientsBefore+1, "connections left behind")
	// The connections' own goroutines are rueidis'; none of the library's
	// may remain.
	goleak.VerifyNone(t, leaks, goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*pipe)._background"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*pipe)._backgroundWrite"))
}

// clientList is CLIENT LIST with args, without RESP3's "txt:" prefix.
func clientList(t *testing.T, b backend, args ...string) string {
	t.Helper()
	return strings.TrimPrefix(b.mustDo(t, append([]string{"CLIENT", "LIST"}, args...)...), "txt:")
}

// channels lists the library's pub/sub channels on the server.
func channels(t *testing.T, b backend) []string {
	t.Helper()
	chs, err := b.client.Do(context.Background(), b.client.B().PubsubChannels().Pattern("redislock:*").Build()).AsStrSlice()
	require.NoError(t, err)
	return chs
}

// An ObtainMulti waiter queues beside the key it found held, whichever of
// its keys that is, and leaves every queue once it has the lock.
func TestWait_multiSecondKey(t *testing.T) {
	forEachBackend(t, func(t *testing.T, b backend) {
		holder, err := redislock.ObtainMulti(t.Context(), b.client, []string{"{m}2", "{m}3"}, time.Minute, nil)
		require.NoError(t, err)
		obs := &counter{}
		c := redislock.New(b.client, redislock.WithObserver(obs))
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		got := obtainAsync(ctx, c, []string{"{m}1", "{m}2", "{m}3"}, &redislock.Options{RetryStrategy: forever})
		eventually(t, func() bool { return queueLen(t, b, "{m}2") == 1 }, "the waiter queues beside {m}2")
		require.NoError(t, holder.Release(t.Context()))
		r := <-got
		require.NoError(t, r.err)
		assert.Equal(t, 1, obs.last.Load().WokenByRelease)
		require.NoError(t, r.lock.Release(t.Context()))
		assert.Equal(t, 0, b.dbsize(t), "no lock and no queue is left")
	})
}

// The ACL of the README for woken waiting: waiters are woken by releases.
func TestWait_fullACL(t *testing.T) {
	redistest.Require(t)
	srv := redistest.StartServerConfig(t, redistest.Config{
		File: "user default on nopass ~* &* +@all\n" +
			"user locker on >pw resetchannels ~lock* -@all +set +get +del +pexpire +pttl +incr +eval +evalsha +eval_ro +evalsha_ro +ping +client|tracking" +
			" +lpop +rpush +lrem +lpos +publish +subscribe &redislock:*\n",
	})
	client := srv.Client(t, func(o *rueidis.ClientOption) { o.Username, o.Password = "locker", "pw" })
	holder, err := redislock.Obtain(t.Context(), client, "lock", time.Minute, nil)
	require.NoError(t, err)
	obs := &counter{}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	got := obtainAsync(ctx, redislock.New(client, redislock.WithObserver(obs)), []string{"lock"}, &redislock.Options{RetryStrategy: forever, FenceKey: "lock:fence"})
	admin := backend{client: srv.Client(t), do: doWith(srv.Client(t))}
	eventually(t, func() bool { return queueLen(t, admin, "lock") == 1 }, "the waiter queues")
	require.NoError(t, holder.Release(t.Context()))
	r := <-got
	require.NoError(t, r.err)
	assert.Equal(t, 1, obs.last.Load().WokenByRelease)
	assert.Equal(t, int64(1), r.lock.FenceToken())
	require.NoError(t, r.lock.Release(t.Context()))
}
