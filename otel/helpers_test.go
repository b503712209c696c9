package redislockotel_test

import (
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"

	"github.com/seed-223c80a0/redislock/internal/redistest"
)

// startRedis starts a redis-server of its own on a free loopback port and
// returns its address; see internal/redistest in the root module.
func startRedis(tb testing.TB) string {
	tb.Helper()
	return redistest.StartServer(tb).Addr
}

// newClient returns a rueidis client to addr, closed when tb ends.
func newClient(tb testing.TB, addr string, mini bool) rueidis.Client {
	tb.Helper()
	client, err := rueidis.NewClient(rueidis.ClientOption{
		InitAddress:       []string{addr},
		DisableCache:      true,
		ForceSingleClient: mini, // miniredis speaks neither CLIENT TRACKING nor cluster
	})
	if err != nil {
		tb.Fatalf("rueidis.NewClient(%s): %v", addr, err)
	}
	tb.Cleanup(client.Close)
	return client
}

// backend is a Redis server the tests run against.
type backend struct {
	name string
	// start returns a client and, for miniredis, the server (to move its
	// clock).
	start func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis)
}

var backends = []backend{
	{"miniredis", func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis) {
		mr := miniredis.RunT(tb)
		return newClient(tb, mr.Addr(), true), mr
	}},
	{"redis-server", func(tb testing.TB) (rueidis.Client, *miniredis.Miniredis) {
		return newClient(tb, startRedis(tb), false), nil
	}},
}
