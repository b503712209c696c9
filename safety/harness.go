package safety

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
)

// Client is one client of the history: a redislock.Client whose calls are
// recorded. It is safe for concurrent use.
type Client struct {
	ID     int
	Locker *redislock.Client
	Rec    *Recorder
	// Release, when set, replaces Lock.Release: a negative control plugs a
	// broken release in here. It returns nil when it released,
	// redislock.ErrLockNotHeld when the lock was not held.
	Release func(ctx context.Context, l *redislock.Lock) error
}

// Held is a lock that a Client obtained, with what the client knows of it.
type Held struct {
	c    *Client
	Lock *redislock.Lock
	Key  string
	Mode Mode
	TTL  time.Duration
	// ValidUntil is the Recorder's time until which the lock is known to be
	// valid: the start of its last OK obtain or refresh plus the TTL.
	ValidUntil time.Duration
}

// Obtain runs Client.Obtain and records it. For an obtain with an unknown
// outcome it also records the library's cleanup, as a release with an
// unknown outcome.
func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opt *redislock.Options) (*Held, error) {
	return c.ObtainKind(ctx, key, Exclusive, 0, ttl, opt)
}

// ObtainKind is Obtain for a lock of any mode: Client.Obtain,
// Client.ObtainShared, or Client.ObtainSemaphore with limit.
func (c *Client) ObtainKind(ctx context.Context, key string, mode Mode, limit int, ttl time.Duration, opt *redislock.Options) (*Held, error) {
	done := ctx.Err() != nil
	call := c.Rec.Now()
	var lock *redislock.Lock
	var err error
	switch mode {
	case Shared:
		lock, err = c.Locker.ObtainShared(ctx, key, ttl, opt)
	case Semaphore:
		lock, err = c.Locker.ObtainSemaphore(ctx, key, limit, ttl, opt)
	default:
		lock, err = c.Locker.Obtain(ctx, key, ttl, opt)
	}
	ret := c.Rec.Now()
	op := Op{Client: c.ID, Key: key, Kind: Obtain, Mode: mode, Limit: limit, TTL: ttl, Call: call, Return: ret,
		Deadline: c.Rec.ctxDeadline(ctx), Err: err, Outcome: outcomeOf(err, redislock.ErrNotObtained, false)}
	if op.Outcome == Refused && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		// Not obtained when the ctx ended: with a random token an attempt
		// in flight then is the library's to settle, so it may have been
		// granted (and its cleanup release it): an unknown outcome.
		op.Outcome = Unknown
	}
	if done && op.Outcome == Unknown {
		op.Outcome = NoEffect // not attempted: the ctx was done
	}
	switch {
	case lock != nil:
		op.Token, op.Fence = lock.Token(), lock.FenceToken()
	case opt != nil && opt.Token != "":
		op.Token = opt.Token
	default:
		op.Token = c.Rec.standIn()
	}
	c.Rec.Add(op)
	if op.Outcome == Unknown {
		c.Rec.Add(Op{Client: c.ID, Key: key, Kind: Cleanup, Token: op.Token, Call: call, Return: ret, Outcome: Unknown})
	}
	if err != nil {
		return nil, err
	}
	return &Held{c: c, Lock: lock, Key: key, Mode: mode, TTL: ttl, ValidUntil: call + ttl}, nil
}

// Valid reports whether the lock is still known to be valid.
func (h *Held) Valid() bool {
	return h.c.Rec.Now() < h.ValidUntil
}

// Refresh runs Lock.Refresh (with the Held's TTL and no retry) and records
// it.
func (h *Held) Refresh(ctx context.Context) error {
	done := ctx.Err() != nil
	call := h.c.Rec.Now()
	err := h.Lock.Refresh(ctx, h.TTL, nil)
	op := Op{Client: h.c.ID, Key: h.Key, Kind: Refresh, Token: h.Lock.Token(), TTL: h.TTL,
		Call: call, Return: h.c.Rec.Now(), Deadline: h.c.Rec.ctxDeadline(ctx), Err: err,
		Outcome: outcomeOf(err, redislock.ErrNotObtained, true)}
	if done && op.Outcome == Unknown {
		op.Outcome = NoEffect
	}
	h.c.Rec.Add(op)
	if err == nil {
		h.ValidUntil = call + h.TTL
	}
	return err
}

// ReleaseOnce runs one release and records it.
func (h *Held) ReleaseOnce(ctx context.Context) (Outcome, error) {
	release := h.c.Release
	if release == nil {
		release = func(ctx context.Context, l *redislock.Lock) error { return l.Release(ctx) }
	}
	call := h.c.Rec.Now()
	err := release(ctx, h.Lock)
	op := Op{Client: h.c.ID, Key: h.Key, Kind: Release, Token: h.Lock.Token(),
		Call: call, Return: h.c.Rec.Now(), Deadline: h.c.Rec.ctxDeadline(ctx), Err: err,
		Outcome: outcomeOf(err, redislock.ErrLockNotHeld, true)}
	if _, ok := ctx.Deadline(); ok && ctx.Err() != nil {
		op.Deadline = 0 // a release with an ended ctx runs detached, by design
	}
	h.c.Rec.Add(op)
	return op.Outcome, err
}

// Release releases the lock, trying again while the outcome is unknown or
// the command could not be sent, until a definite answer or the end of ctx.
// Every attempt is recorded.
func (h *Held) Release(ctx context.Context) error {
	for {
		outcome, err := h.ReleaseOnce(ctx)
		if outcome == OK || outcome == Refused || ctx.Err() != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Write writes to the resource with the lock's fence token, noting whether
// the lock was still known to be valid, and reports whether it was
// accepted.
func (h *Held) Write(r *FencedResource) bool {
	now := h.c.Rec.Now()
	return r.Write(h.c.ID, h.Key, h.Lock.FenceToken(), now, now < h.ValidUntil)
}

// RawDelRelease is the broken release of a negative control: DEL the key
// whoever holds it.
func RawDelRelease(client rueidis.Client) func(ctx context.Context, l *redislock.Lock) error {
	return func(ctx context.Context, l *redislock.Lock) error {
		n, err := client.Do(ctx, client.B().Del().Key(l.Key()).Build()).AsInt64()
		if err == nil && n == 0 {
			return redislock.ErrLockNotHeld
		}
		return err
	}
}

// Workload is the loop each client of a contention test runs: obtain one of
// Keys (with a fence key of its own) and retries until CallTimeout, hold it
// for a while, now and then refresh it, write to the fenced resource,
// release it.
type Workload struct {
	Clients      []*Client
	Keys         []string
	Acquisitions int // total OK obtains to reach, over every client
	TTL          time.Duration
	// Hold draws how long a holder works before it writes and releases.
	// Default: nothing.
	Hold func(r *rand.Rand) time.Duration
	// RefreshOneIn refreshes on one acquisition in that many (0: never).
	RefreshOneIn int
	// CallTimeout is the ctx deadline of each call. Default 2s.
	CallTimeout time.Duration
	// Retry is the obtain's retry strategy. Default LinearBackoff(1ms).
	Retry redislock.RetryStrategy
	// MaxDuration stops the workload early. Default 2 minutes.
	MaxDuration time.Duration
	Resource    *FencedResource
	// OnAcquire, when set, is called after every OK obtain with the
	// running total (to inject faults at given points).
	OnAcquire func(n int)
	// Kind draws the mode of each obtain, and a semaphore's limit. Default
	// (nil): Exclusive. Only exclusive holders write to the Resource.
	Kind func(r *rand.Rand) (Mode, int)
}

// FenceKey returns the fence counter's key for a lock key.
func FenceKey(key string) string { return key + ":fence" }

// Run runs the workload until Acquisitions OK obtains, MaxDuration, or the
// end of ctx, and returns the number of OK obtains.
func (w *Workload) Run(ctx context.Context) int {
	if w.CallTimeout == 0 {
		w.CallTimeout = 2 * time.Second
	}
	if w.Retry == nil {
		w.Retry = redislock.LinearBackoff(time.Millisecond)
	}
	if w.MaxDuration == 0 {
		w.MaxDuration = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, w.MaxDuration)
	defer cancel()
	var total atomic.Int64
	var wg sync.WaitGroup
	for i, c := range w.Clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for ctx.Err() == nil && total.Load() < int64(w.Acquisitions) {
				key := w.Keys[rng.IntN(len(w.Keys))]
				if w.cycle(ctx, c, rng, key) {
					n := total.Add(1)
					if w.OnAcquire != nil {
						w.OnAcquire(int(n))
					}
				}
			}
		})
	}
	wg.Wait()
	return int(total.Load())
}

// cycle makes one obtain, and when it succeeds the rest of the cycle; it
// reports whether the obtain succeeded.
func (w *Workload) cycle(ctx context.Context, c *Client, rng *rand.Rand, key string) bool {
	mode, limit := Exclusive, 0
	if w.Kind != nil {
		mode, limit = w.Kind(rng)
	}
	octx, cancel := context.WithTimeout(ctx, w.CallTimeout)
	h, err := c.ObtainKind(octx, key, mode, limit, w.TTL, &redislock.Options{RetryStrategy: w.Retry, FenceKey: FenceKey(key)})
	cancel()
	if err != nil {
		if !errors.Is(err, redislock.ErrNotObtained) {
			// An outage: do not spin on it.
			sleep(ctx, time.Millisecond)
		}
		return false
	}
	if w.Hold != nil {
		sleep(ctx, w.Hold(rng))
	}
	if w.RefreshOneIn > 0 && rng.IntN(w.RefreshOneIn) == 0 {
		rctx, cancel := context.WithTimeout(ctx, w.CallTimeout)
		_ = h.Refresh(rctx)
		cancel()
	}
	if w.Resource != nil && mode == Exclusive {
		h.Write(w.Resource)
	}
	// Releasing is worth trying while the lock may be held; past that, one
	// attempt says what became of it.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), w.CallTimeout)
	_ = h.Release(rctx)
	cancel()
	return true
}

func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
