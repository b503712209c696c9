package redislock_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock"
)

func Example() {
	// Connect to Redis.
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()

	// Create a new lock client.
	locker := redislock.New(client)

	ctx := context.Background()

	// Try to obtain lock.
	lock, err := locker.Obtain(ctx, "my-key", 100*time.Millisecond, nil)
	if errors.Is(err, redislock.ErrNotObtained) {
		fmt.Println("Could not obtain lock!")
		return
	} else if err != nil {
		log.Fatalln(err)
	}

	// Don't forget to defer Release.
	defer lock.Release(ctx)
	fmt.Println("I have a lock!")

	// Sleep and check the remaining TTL.
	time.Sleep(50 * time.Millisecond)
	if ttl, err := lock.TTL(ctx); err != nil {
		log.Fatalln(err)
	} else if ttl > 0 {
		fmt.Println("Yay, I still have my lock!")
	}

	// Extend my lock.
	if err := lock.Refresh(ctx, 100*time.Millisecond, nil); err != nil {
		log.Fatalln(err)
	}

	// Sleep a little longer, then check.
	time.Sleep(100 * time.Millisecond)
	if ttl, err := lock.TTL(ctx); err != nil {
		log.Fatalln(err)
	} else if ttl == 0 {
		fmt.Println("Now, my lock has expired!")
	}
}

func ExampleClient_Obtain_retry() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()
	locker := redislock.New(client)

	// Retry every 100ms, for up to 3s: the ctx deadline bounds the wait.
	// One Options value may be shared by every call and goroutine.
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(100 * time.Millisecond)}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()

	lock, err := locker.Obtain(ctx, "my-key", time.Second, opt)
	if errors.Is(err, redislock.ErrNotObtained) {
		fmt.Println("Still held by another after 3s")
		return
	} else if err != nil {
		log.Fatalln(err)
	}
	defer lock.Release(context.Background())
	fmt.Println("I have a lock!")
}

// A refresh watchdog: refresh at a third of the TTL, and stop working as soon
// as a refresh fails, since the lock may then be lost.
func ExampleLock_Refresh_watchdog() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()

	const ttl = 3 * time.Second
	lock, err := redislock.Obtain(context.Background(), client, "my-key", ttl, nil)
	if err != nil {
		log.Fatalln(err)
	}
	defer lock.Release(context.Background())

	work, stop := context.WithCancelCause(context.Background())
	defer stop(nil)
	go func() {
		ticker := time.NewTicker(ttl / 3)
		defer ticker.Stop()
		for {
			select {
			case <-work.Done():
				return
			case <-ticker.C:
				ctx, cancel := context.WithTimeout(work, ttl/3)
				err := lock.Refresh(ctx, ttl, nil)
				cancel()
				if err != nil {
					stop(err) // ErrNotObtained: lost; else: cannot tell
					return
				}
			}
		}
	}()

	// Do the work with the work ctx: it ends as soon as the lock may be lost.
	select {
	case <-work.Done():
		fmt.Println("lock lost:", context.Cause(work))
	case <-time.After(10 * time.Second):
		fmt.Println("work done")
	}
}

// Fencing: the resource accepts a write only with a fence token above the
// last one it accepted, so a holder that paused past its TTL cannot
// overwrite the work of the next one.
func ExampleLock_FenceToken() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()
	ctx := context.Background()

	// On a cluster, the lock key and the fence key share one hash tag.
	lock, err := redislock.Obtain(ctx, client, "{invoice:7}:lock", 10*time.Second, &redislock.Options{
		FenceKey: "{invoice:7}:fence",
	})
	if err != nil {
		log.Fatalln(err)
	}
	defer lock.Release(ctx)

	// The resource keeps the highest fence token it has accepted, and
	// refuses anything lower, atomically (here: a Lua compare-and-set).
	write := rueidis.NewLuaScript(`
		local last = tonumber(redis.call("hget", KEYS[1], "fence") or "0")
		if tonumber(ARGV[1]) < last then return redis.error_reply("stale fence token") end
		redis.call("hset", KEYS[1], "fence", ARGV[1], "total", ARGV[2])
		return 1`)
	fence := fmt.Sprint(lock.FenceToken())
	if err := write.Exec(ctx, client, []string{"{invoice:7}:data"}, []string{fence, "42.00"}).Error(); err != nil {
		log.Fatalln(err)
	}
	fmt.Println("written with fence token", fence)
}

func ExampleClient_ObtainShared() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()
	locker := redislock.New(client)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(100 * time.Millisecond)}

	// Readers hold the key together, each with its own lease.
	reader, err := locker.ObtainShared(ctx, "catalog", 10*time.Second, opt)
	if err != nil {
		log.Fatalln(err)
	}
	fmt.Println("reading the catalog")
	if err := reader.Release(ctx); err != nil {
		log.Fatalln(err)
	}

	// The writer has it alone, once every reader has left; readers that
	// come while it waits queue behind it.
	writer, err := locker.Obtain(ctx, "catalog", 10*time.Second, opt)
	if err != nil {
		log.Fatalln(err)
	}
	defer writer.Release(ctx)
	fmt.Println("rebuilding the catalog")
}

func ExampleClient_ObtainSemaphore() {
	client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{"127.0.0.1:6379"}})
	if err != nil {
		log.Fatalln(err)
	}
	defer client.Close()
	locker := redislock.New(client)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// At most 4 calls to the partner's API at once, over every process;
	// a permit whose holder crashed comes back when its lease ends.
	opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Second)}
	permit, err := locker.ObtainSemaphore(ctx, "partner-api", 4, time.Minute, opt)
	if errors.Is(err, redislock.ErrNotObtained) {
		fmt.Println("no permit within 30s")
		return
	} else if err != nil {
		log.Fatalln(err)
	}
	defer permit.Release(context.Background())

	work, stop := permit.Watch(ctx, time.Minute) // keeps this permit's lease
	defer stop()
	callPartner(work)
}

func callPartner(context.Context) {}

func ExampleNewQuorum() {
	// Three independent Redis deployments (no replication between them).
	var clients []rueidis.Client
	for _, addr := range []string{"127.0.0.1:6379", "127.0.0.1:6380", "127.0.0.1:6381"} {
		client, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}})
		if err != nil {
			log.Fatalln(err)
		}
		defer client.Close()
		clients = append(clients, client)
	}

	// A lock is held once a majority (2 of 3) granted it.
	locker := redislock.NewQuorum(clients)

	ctx := context.Background()
	lock, err := locker.Obtain(ctx, "my-key", 10*time.Second, &redislock.Options{
		RetryStrategy: redislock.LinearBackoff(50 * time.Millisecond),
		FenceKey:      "my-key:fence",
	})
	switch {
	case errors.Is(err, redislock.ErrNotObtained):
		fmt.Println("Another holder has a majority")
		return
	case errors.Is(err, redislock.ErrNoQuorum):
		var qe *redislock.QuorumError
		errors.As(err, &qe)
		fmt.Printf("No majority either way: %d granted, %d refused, %d failed\n", qe.Granted, qe.Refused, qe.Failed)
		return
	case err != nil:
		log.Fatalln(err)
	}
	defer lock.Release(ctx)

	// Hand the fence token to the resource the lock protects: it strictly
	// increases whichever majority granted the lock.
	fmt.Println("I have a lock, fence token", lock.FenceToken())
}
