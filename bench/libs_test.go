package bench

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
	"unsafe"

	bsmredislock "github.com/bsm/redislock"
	"github.com/go-redsync/redsync/v4"
	redsyncredis "github.com/go-redsync/redsync/v4/redis"
	redsyncgoredis "github.com/go-redsync/redsync/v4/redis/goredis/v9"
	redsyncrueidis "github.com/go-redsync/redsync/v4/redis/rueidis"
	goredis "github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"
	"github.com/redis/rueidis/rueidiscompat"
	"github.com/redis/rueidis/rueidislock"

	"github.com/seed-223c80a0/redislock"
)

const (
	// ttl is the TTL (validity) of every lock, in every library.
	ttl = 10 * time.Second

	// pollInterval is the wait between attempts of the libraries that wait
	// by polling (this library, bsm/redislock, redsync, the floor) in the
	// contended scenario. rueidislock waits for an invalidation instead.
	pollInterval = time.Millisecond
)

var (
	// errBusy is what every adapter returns when another holder has the lock.
	errBusy = errors.New("bench: lock held by another")
	// errNotHeld is what every adapter returns when a release or a refresh
	// finds the lock gone.
	errNotHeld = errors.New("bench: lock not held")
	// errUnsupported is returned by an operation a library does not have.
	errUnsupported = errors.New("bench: not supported by this library")
)

// held is an obtained lock, whatever the library. Each implementation is a
// pointer, a one-pointer struct or a func, which an interface holds without
// allocating: the harness adds no allocation to a library's own.
type held interface {
	Release(ctx context.Context) error
	Refresh(ctx context.Context) error // errUnsupported when the library has none
}

// lib is one lock implementation under comparison, with each library's
// default client settings.
type lib struct {
	name string
	// obtain makes a single attempt on key (errBusy when it is held).
	obtain func(ctx context.Context, key string) (held, error)
	// multi takes every key, all or nothing (errBusy when any is held); nil
	// when the library has no multi-key lock.
	multi func(ctx context.Context, keys []string) (held, error)
	// wait obtains key with the library's own waiting, until ctx ends.
	wait func(ctx context.Context, key string) (held, error)
	// vanish takes key for expiryTTL as a holder that then vanishes: it
	// neither extends nor releases the lock, which only expires. stop frees
	// what the library keeps on the client side (rueidislock's goroutines)
	// once the key has been taken by another; nil when unsupported.
	vanish func(ctx context.Context, key string) (stop func(), err error)
	// refresh reports whether held.Refresh is supported.
	refresh bool
	close   func()
}

// newLibs returns the libraries in the order of the benchmark tables: this
// library first, so that benchstat -col /lib compares each peer with it.
func newLibs(addr string) ([]*lib, error) {
	makers := []func(string) (*lib, error){
		func(addr string) (*lib, error) { return newRedislock(addr, "redislock", pollInterval) },
		newFloor,
		func(addr string) (*lib, error) { return newBSM(addr, "bsm", pollInterval) },
		newRedsyncGoredis, newRedsyncRueidis,
		func(addr string) (*lib, error) { return newRueidislock(addr, "rueidislock-km1", 1, false) },
		func(addr string) (*lib, error) { return newRueidislock(addr, "rueidislock", 0, false) },
	}
	var libs []*lib
	for _, mk := range makers {
		l, err := mk(addr)
		if err != nil {
			for _, l := range libs {
				l.close()
			}
			return nil, err
		}
		libs = append(libs, l)
	}
	return libs, nil
}

func newRueidisClient(addr string) (rueidis.Client, error) {
	return rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
}

// ---- this library ----

type ourLock struct{ *redislock.Lock }

func (l ourLock) Release(ctx context.Context) error {
	if err := l.Lock.Release(ctx); err != nil {
		if errors.Is(err, redislock.ErrLockNotHeld) {
			return errNotHeld
		}
		return err
	}
	return nil
}

func (l ourLock) Refresh(ctx context.Context) error {
	if err := l.Lock.Refresh(ctx, ttl, nil); err != nil {
		if errors.Is(err, redislock.ErrNotObtained) {
			return errNotHeld
		}
		return err
	}
	return nil
}

func ourObtained(l *redislock.Lock, err error) (held, error) {
	if err != nil {
		if errors.Is(err, redislock.ErrNotObtained) {
			return nil, errBusy
		}
		return nil, err
	}
	return ourLock{l}, nil
}

// newRedislock makes this library's Client on a rueidis client of its own;
// its wait retries with LinearBackoff(backoff).
func newRedislock(addr, name string, backoff time.Duration) (*lib, error) {
	client, err := newRueidisClient(addr)
	if err != nil {
		return nil, err
	}
	return redislockLib(name, redislock.New(client), backoff, client.Close), nil
}

// redislockLib is a lib of locker, whose wait retries with
// LinearBackoff(backoff); closeFn closes its clients.
func redislockLib(name string, locker *redislock.Client, backoff time.Duration, closeFn func()) *lib {
	waitOpt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(backoff)}
	return &lib{
		name: name,
		obtain: func(ctx context.Context, key string) (held, error) {
			return ourObtained(locker.Obtain(ctx, key, ttl, nil))
		},
		multi: func(ctx context.Context, keys []string) (held, error) {
			return ourObtained(locker.ObtainMulti(ctx, keys, ttl, nil))
		},
		wait: func(ctx context.Context, key string) (held, error) {
			return ourObtained(locker.Obtain(ctx, key, ttl, waitOpt))
		},
		vanish: func(ctx context.Context, key string) (func(), error) {
			_, err := ourObtained(locker.Obtain(ctx, key, expiryTTL, nil))
			return func() {}, err
		},
		refresh: true,
		close:   closeFn,
	}
}

// ---- bsm/redislock on go-redis v9 ----

type bsmLock struct{ *bsmredislock.Lock }

func (l bsmLock) Release(ctx context.Context) error {
	if err := l.Lock.Release(ctx); err != nil {
		if errors.Is(err, bsmredislock.ErrLockNotHeld) {
			return errNotHeld
		}
		return err
	}
	return nil
}

func (l bsmLock) Refresh(ctx context.Context) error {
	if err := l.Lock.Refresh(ctx, ttl, nil); err != nil {
		if errors.Is(err, bsmredislock.ErrNotObtained) {
			return errNotHeld
		}
		return err
	}
	return nil
}

func bsmObtained(l *bsmredislock.Lock, err error) (held, error) {
	if err != nil {
		if errors.Is(err, bsmredislock.ErrNotObtained) {
			return nil, errBusy
		}
		return nil, err
	}
	return bsmLock{l}, nil
}

// newBSM makes a bsm/redislock Client on a go-redis client of its own; its
// wait retries with LinearBackoff(backoff).
func newBSM(addr, name string, backoff time.Duration) (*lib, error) {
	client := goredis.NewClient(&goredis.Options{Addr: addr})
	locker := bsmredislock.New(client)
	// LinearBackoff is stateless in bsm/redislock: one Options may be shared.
	waitOpt := &bsmredislock.Options{RetryStrategy: bsmredislock.LinearBackoff(backoff)}
	return &lib{
		name: name,
		obtain: func(ctx context.Context, key string) (held, error) {
			return bsmObtained(locker.Obtain(ctx, key, ttl, nil))
		},
		multi: func(ctx context.Context, keys []string) (held, error) {
			return bsmObtained(locker.ObtainMulti(ctx, keys, ttl, nil))
		},
		wait: func(ctx context.Context, key string) (held, error) {
			return bsmObtained(locker.Obtain(ctx, key, ttl, waitOpt))
		},
		vanish: func(ctx context.Context, key string) (func(), error) {
			_, err := bsmObtained(locker.Obtain(ctx, key, expiryTTL, nil))
			return func() {}, err
		},
		refresh: true,
		close:   func() { _ = client.Close() },
	}, nil
}

// ---- go-redsync/redsync, one pool (a single server: quorum 1) ----

type redsyncLock struct{ *redsync.Mutex }

func (l redsyncLock) Release(ctx context.Context) error {
	ok, err := l.UnlockContext(ctx)
	switch {
	case errors.Is(err, redsync.ErrLockAlreadyExpired):
		return errNotHeld
	case err != nil:
		return err
	case !ok:
		return errNotHeld
	}
	return nil
}

func (l redsyncLock) Refresh(ctx context.Context) error {
	ok, err := l.ExtendContext(ctx)
	switch {
	case err != nil:
		return err
	case !ok:
		return errNotHeld
	}
	return nil
}

func redsyncObtained(m *redsync.Mutex, err error) (held, error) {
	if err != nil {
		var taken *redsync.ErrTaken
		if errors.As(err, &taken) || errors.Is(err, redsync.ErrFailed) {
			return nil, errBusy
		}
		return nil, err
	}
	return redsyncLock{m}, nil
}

// newRedsync makes a redsync lib over pools: one for a single server, one a
// node for a quorum (redsync's Redlock).
func newRedsync(name string, closeFn func(), pools ...redsyncredis.Pool) *lib {
	rs := redsync.New(pools...)
	// Options are built once: each is a closure, and a caller that cares
	// keeps them rather than making them on every lock.
	tryOpts := []redsync.Option{redsync.WithExpiry(ttl), redsync.WithTries(1)}
	vanishOpts := []redsync.Option{redsync.WithExpiry(expiryTTL), redsync.WithTries(1)}
	waitOpts := []redsync.Option{
		redsync.WithExpiry(ttl),
		redsync.WithTries(math.MaxInt32), // the ctx bounds the wait
		redsync.WithRetryDelay(pollInterval),
	}
	return &lib{
		name: name,
		obtain: func(ctx context.Context, key string) (held, error) {
			m := rs.NewMutex(key, tryOpts...)
			return redsyncObtained(m, m.TryLockContext(ctx))
		},
		wait: func(ctx context.Context, key string) (held, error) {
			m := rs.NewMutex(key, waitOpts...)
			return redsyncObtained(m, m.LockContext(ctx))
		},
		vanish: func(ctx context.Context, key string) (func(), error) {
			m := rs.NewMutex(key, vanishOpts...)
			_, err := redsyncObtained(m, m.TryLockContext(ctx))
			return func() {}, err
		},
		refresh: true,
		close:   closeFn,
	}
}

func newRedsyncGoredis(addr string) (*lib, error) {
	client := goredis.NewClient(&goredis.Options{Addr: addr})
	return newRedsync("redsync-goredis", func() { _ = client.Close() }, redsyncgoredis.NewPool(client)), nil
}

func newRedsyncRueidis(addr string) (*lib, error) {
	client, err := newRueidisClient(addr)
	if err != nil {
		return nil, err
	}
	return newRedsync("redsync-rueidis", client.Close, redsyncrueidis.NewPool(rueidiscompat.NewAdapter(client))), nil
}

// ---- rueidislock ----

// rueidisLock is the CancelFunc rueidislock returns: calling it releases the
// lock (deletes its keys) and returns once they are deleted.
type rueidisLock context.CancelFunc

func (l rueidisLock) Release(context.Context) error {
	l()
	return nil
}

// Refresh is unsupported: rueidislock extends its locks itself, in the
// background, every KeyValidity/2.
func (rueidisLock) Refresh(context.Context) error { return errUnsupported }

func rueidislockObtained(_ context.Context, cancel context.CancelFunc, err error) (held, error) {
	if err != nil {
		if errors.Is(err, rueidislock.ErrNotLocked) {
			return nil, errBusy
		}
		return nil, err
	}
	return rueidisLock(cancel), nil
}

// newRueidislock makes a rueidislock Locker with KeyValidity ttl; majority 0
// keeps its default KeyMajority (2: three keys, two of which must be taken).
// With withVanish, a second Locker (a client of its own) serves vanish:
// KeyValidity expiryTTL and an ExtendInterval of an hour, so that it never
// extends its lock; it drops the lock, without deleting it, when the
// invalidation of the expired key tells it the key is gone.
func newRueidislock(addr, name string, majority int32, withVanish bool) (*lib, error) {
	locker, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption: rueidis.ClientOption{InitAddress: []string{addr}},
		KeyMajority:  majority,
		KeyValidity:  ttl,
	})
	if err != nil {
		return nil, err
	}
	l := &lib{
		name: name,
		obtain: func(ctx context.Context, key string) (held, error) {
			return rueidislockObtained(locker.TryWithContext(ctx, key))
		},
		wait: func(ctx context.Context, key string) (held, error) {
			return rueidislockObtained(locker.WithContext(ctx, key))
		},
		close: locker.Close,
	}
	if !withVanish {
		return l, nil
	}
	holder, err := rueidislock.NewLocker(rueidislock.LockerOption{
		ClientOption:   rueidis.ClientOption{InitAddress: []string{addr}},
		KeyMajority:    majority,
		KeyValidity:    expiryTTL,
		ExtendInterval: time.Hour,
	})
	if err != nil {
		locker.Close()
		return nil, err
	}
	l.vanish = func(ctx context.Context, key string) (func(), error) {
		h, err := rueidislockObtained(holder.TryWithContext(ctx, key))
		if err != nil {
			return nil, err
		}
		// Its delete compares tokens: it cannot remove the next holder's key.
		return func() { _ = h.Release(context.Background()) }, nil
	}
	l.close = func() {
		holder.Close()
		locker.Close()
	}
	return l, nil
}

// ---- the floor: raw rueidis ----

var (
	floorRelease = rueidis.NewLuaScript(`
for i = 1, #KEYS do
	if redis.call("get", KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call("del", KEYS[i]) end
return 1`)
	floorRefresh = rueidis.NewLuaScript(`
for i = 1, #KEYS do
	if redis.call("get", KEYS[i]) ~= ARGV[1] then return 0 end
end
for i = 1, #KEYS do redis.call("pexpire", KEYS[i], ARGV[2]) end
return 1`)
	floorObtainMulti = rueidis.NewLuaScript(`
for i = 1, #KEYS do
	if redis.call("exists", KEYS[i]) == 1 then return 0 end
end
for i = 1, #KEYS do redis.call("set", KEYS[i], ARGV[1], "px", ARGV[2]) end
return 1`)
)

// floor is the least a safe lock does: a random token, SET key token NX PX
// ttl, and an EVALSHA compare-and-delete; for several keys an EVALSHA
// all-or-nothing obtain. It validates nothing and has no retry loop beyond
// the contended scenario's polling.
type floor struct {
	client rueidis.Client
	ttl    string // the TTL in milliseconds, formatted once
}

// floorLock is one lock of the floor, in a single allocation.
type floorLock struct {
	f     *floor
	keys  []string
	one   [1]string
	token string
	raw   [16]byte
	text  [22]byte
}

func (f *floor) newLock() *floorLock {
	l := &floorLock{f: f}
	_, _ = rand.Read(l.raw[:])
	base64.RawURLEncoding.Encode(l.text[:], l.raw[:])
	// text is written once, above, and never again.
	l.token = unsafe.String(&l.text[0], len(l.text))
	return l
}

func (f *floor) obtain(ctx context.Context, key string) (held, error) {
	l := f.newLock()
	l.one[0] = key
	l.keys = l.one[:]
	err := f.client.Do(ctx, f.client.B().Arbitrary("SET").Keys(key).Args(l.token, "NX", "PX", f.ttl).Build()).Error()
	if rueidis.IsRedisNil(err) {
		return nil, errBusy
	}
	if err != nil {
		return nil, err
	}
	return l, nil
}

func (f *floor) multi(ctx context.Context, keys []string) (held, error) {
	l := f.newLock()
	l.keys = keys
	ok, err := floorObtainMulti.Exec(ctx, f.client, keys, []string{l.token, f.ttl}).AsInt64()
	if err != nil {
		return nil, err
	}
	if ok == 0 {
		return nil, errBusy
	}
	return l, nil
}

// wait polls every pollInterval until ctx ends.
func (f *floor) wait(ctx context.Context, key string) (held, error) {
	var timer *time.Timer
	for {
		h, err := f.obtain(ctx, key)
		if !errors.Is(err, errBusy) {
			return h, err
		}
		if timer == nil {
			timer = time.NewTimer(pollInterval)
			defer timer.Stop()
		} else {
			timer.Reset(pollInterval)
		}
		select {
		case <-ctx.Done():
			return nil, errors.Join(errBusy, ctx.Err())
		case <-timer.C:
		}
	}
}

func (l *floorLock) Release(ctx context.Context) error {
	return l.f.result(floorRelease.Exec(ctx, l.f.client, l.keys, []string{l.token}).AsInt64())
}

func (l *floorLock) Refresh(ctx context.Context) error {
	return l.f.result(floorRefresh.Exec(ctx, l.f.client, l.keys, []string{l.token, l.f.ttl}).AsInt64())
}

func (*floor) result(ok int64, err error) error {
	if err != nil {
		return err
	}
	if ok == 0 {
		return errNotHeld
	}
	return nil
}

func newFloor(addr string) (*lib, error) {
	client, err := newRueidisClient(addr)
	if err != nil {
		return nil, err
	}
	f := &floor{client: client, ttl: strconv.FormatInt(ttl.Milliseconds(), 10)}
	return &lib{
		name:    "floor",
		obtain:  f.obtain,
		multi:   f.multi,
		wait:    f.wait,
		refresh: true,
		close:   client.Close,
	}, nil
}

func (l *lib) String() string { return fmt.Sprintf("lib=%s", l.name) }
