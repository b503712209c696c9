package redislock

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

const (
	// MaxTTL is the longest TTL a lock may have: 365 days.
	MaxTTL = 365 * 24 * time.Hour

	// MaxTokenLen is the longest custom token, in bytes: 256.
	MaxTokenLen = 256

	// MaxMetadataLen is the longest metadata, in bytes: 4096.
	MaxMetadataLen = 4096

	// DefaultReleaseTimeout bounds a Release called with a ctx that has
	// already ended, and the cleanup of an obtain whose outcome is unknown:
	// 2s.
	DefaultReleaseTimeout = 2 * time.Second
)

var (
	//go:embed lua/owned.lua
	luaOwned string
	//go:embed lua/obtain.lua
	luaObtain string
	//go:embed lua/refresh.lua
	luaRefresh string
	//go:embed lua/release.lua
	luaRelease string
	//go:embed lua/pttl.lua
	luaPTTL string

	//go:embed lua/queue.lua
	luaQueue string
	//go:embed lua/holders.lua
	luaHolders string

	// Each script runs as EVALSHA (EVALSHA_RO for pttl); rueidis falls back
	// to EVAL on NOSCRIPT, after a SCRIPT FLUSH, a restart or a failover.
	scriptRefresh = newLuaScript(luaOwned + luaRefresh)
	scriptPTTL    = rueidis.NewLuaScriptReadOnly(luaOwned + luaPTTL)

	// Each kind comes in two builds: a cluster names each wait queue in its
	// key's hash slot.
	exclusive         = newExclusive(false)
	exclusiveCluster  = newExclusive(true)
	holders           = newHolders(false) // shared.go
	holdersCluster    = newHolders(true)
	semaphores        = newSemaphores(holders) // semaphore.go
	semaphoresCluster = newSemaphores(holdersCluster)
)

type luaScript struct {
	lua  *rueidis.Lua
	body script
}

func newLuaScript(body string) luaScript {
	return luaScript{lua: rueidis.NewLuaScript(body), body: newScript(body)}
}

// kind is a kind of lock: its scripts. obtain and release take obtain.lua's
// and release.lua's KEYS and ARGV and answer in their terms; refresh and
// pttl those of refresh.lua and pttl.lua. An exclusive kind's first attempt
// may be a plain SET NX. The Release of an exclusive lock or a semaphore's
// permit offers it to a waiter of its Client; shared waiters each queue in
// Redis (waitqueue.go).
type kind struct {
	obtain, release, refresh luaScript
	pttl                     *rueidis.Lua
	exclusive                bool
	semaphore                bool
}

// scriptHead is what every script of a kind starts with: owned.lua, whether
// the server is a cluster, and the wait queue (queue.lua).
func scriptHead(cluster bool) string {
	return luaOwned + "local cluster = " + strconv.FormatBool(cluster) + "\n" + luaQueue
}

func newExclusive(cluster bool) *kind {
	head := scriptHead(cluster)
	return &kind{
		obtain:    newLuaScript(head + luaHolders + luaObtain),
		release:   newLuaScript(head + luaHolders + luaRelease),
		refresh:   scriptRefresh,
		pttl:      scriptPTTL,
		exclusive: true,
	}
}

type Client struct {
	client         rueidis.Client
	cluster        bool
	kind           *kind // exclusive or exclusiveCluster
	holders        *kind // holders or holdersCluster
	semaphores     *kind // semaphores or semaphoresCluster
	observer       Observer
	releaseTimeout time.Duration
	replicas       int64 // WithReplicas
	replicaTimeout time.Duration
	queues         localQueues  // its goroutines that wait (waitqueue.go)
	sub            subscription // its pub/sub channel (subscription.go)
	q              *quorum      // NewQuorum's nodes (quorum.go); nil: client is the one server
}

type ClientOption func(*Client)

func WithReleaseTimeout(d time.Duration) ClientOption {
	return func(c *Client) {
		if d >= time.Millisecond {
			c.releaseTimeout = d
		}
	}
}

func New(client rueidis.Client, opts ...ClientOption) *Client {
	c := &Client{
		client:         client,
		cluster:        client.Mode() == rueidis.ClientModeCluster,
		kind:           exclusive,
		holders:        holders,
		semaphores:     semaphores,
		releaseTimeout: DefaultReleaseTimeout,
	}
	if c.cluster {
		c.kind, c.holders, c.semaphores = exclusiveCluster, holdersCluster, semaphoresCluster
	}
	c.sub.init(c)
	for _, opt := range opts {
		opt(c)
	}
	return c
}

var shared sync.Map // rueidis.Client -> *Client

func sharedClient(client rueidis.Client) *Client {
	if c, ok := shared.Load(client); ok {
		return c.(*Client)
	}
	c, _ := shared.LoadOrStore(client, New(client))
	return c.(*Client)
}

func Obtain(ctx context.Context, client rueidis.Client, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	l, err := sharedClient(client).Obtain(ctx, key, ttl, opt)
	if errors.Is(err, rueidis.ErrClosing) {
		shared.Delete(client)
	}
	return l, err
}

func ObtainMulti(ctx context.Context, client rueidis.Client, keys []string, ttl time.Duration, opt *Options) (*Lock, error) {
	l, err := sharedClient(client).ObtainMulti(ctx, keys, ttl, opt)
	if errors.Is(err, rueidis.ErrClosing) {
		shared.Delete(client)
	}
	return l, err
}

func (c *Client) Obtain(ctx context.Context, key string, ttl time.Duration, opt *Options) (*Lock, error) {
	return c.obtain(ctx, OpObtain, c.newLock(c.kind, key), ttl, opt, 0)
}

func (c *Client) ObtainMulti(ctx context.Context, keys []string, ttl time.Duration, opt *Options) (*Lock, error) {
	l := &Lock{client: c, kind: c.kind, keys: append([]string(nil), keys...)}
	return c.obtain(ctx, OpObtainMulti, l, ttl, opt, 0)
}

// newLock returns a Lock of k on one key, to be obtained.
func (c *Client) newLock(k *kind, key string) *Lock {
	l := &Lock{client: c, kind: k}
	l.one[0] = key
	l.keys = l.one[:]
	return l
}

func (c *Client) validate(keys []string, ttl time.Duration, o *Options) error {
	if err := validateTTL(ttl); err != nil {
		return err
	}
	if len(keys) == 0 {
		return fmt.Errorf("%w: no keys", ErrInvalidKey)
	}
	for i, key := range keys {
		if key == "" {
			return fmt.Errorf("%w: key %d of %d is empty", ErrInvalidKey, i+1, len(keys))
		}
		for _, prev := range keys[:i] {
			if prev == key {
				return fmt.Errorf("%w: key %q given twice", ErrInvalidKey, key)
			}
		}
	}
	if o == nil {
		return c.validateSlots(keys, "")
	}
	if len(o.Token) > MaxTokenLen {
		return fmt.Errorf("%w: token is %d bytes, over MaxTokenLen (%d)", ErrInvalidToken, len(o.Token), MaxTokenLen)
	}
	for i := 0; i < len(o.Token); i++ {
		if o.Token[i] == 0 {
			return fmt.Errorf("%w: token holds a NUL byte at %d", ErrInvalidToken, i)
		}
	}
	if len(o.Metadata) > MaxMetadataLen {
		return fmt.Errorf("%w: metadata is %d bytes, over MaxMetadataLen (%d)", ErrInvalidMetadata, len(o.Metadata), MaxMetadataLen)
	}
	for _, key := range keys {
		if key == o.FenceKey {
			return fmt.Errorf("%w: fence key %q is also a lock key", ErrInvalidKey, key)
		}
	}
	return c.validateSlots(keys, o.FenceKey)
}

func (c *Client) validateSlots(keys []string, fenceKey string) error {
	if !c.cluster || (len(keys) == 1 && fenceKey == "") {
		return nil
	}
	slot := hashSlot(keys[0])
	for _, key := range keys[1:] {
		if s := hashSlot(key); s != slot {
			return fmt.Errorf("%w: %q is in slot %d, %q in slot %d; give them one hash tag, such as {%s}",
				ErrCrossSlot, keys[0], slot, key, s, keys[0])
		}
	}
	if fenceKey != "" {
		if s := hashSlot(fenceKey); s != slot {
			return fmt.Errorf("%w: fence key %q is in slot %d, lock key %q in slot %d; give them one hash tag, such as {%s}",
				ErrCrossSlot, fenceKey, s, keys[0], slot, keys[0])
		}
	}
	return nil
}

func validateTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("%w: %v is under 1ms", ErrInvalidTTL, ttl)
	}
	if ttl > MaxTTL {
		return fmt.Errorf("%w: %v is over MaxTTL (%v)", ErrInvalidTTL, ttl, MaxTTL)
	}
	return nil
}
