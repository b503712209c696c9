package safety_test

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/seed-223c80a0/redislock/internal/redistest"
	"go.uber.org/goleak"
)

// TestMain fails the package when a goroutine outlives the tests: the
// library's cleanups, rueidis clients, toxiproxy links, watchdogs.
//
// One rueidis goroutine is let go: when rueidis.NewClient fails (a wrong
// password, a server without TLS), the cluster client it tried first has
// scheduled a topology refresh that sleeps up to about a second before it
// runs and ends; NewClient returns no client to close, so nothing can stop
// it sooner.
func TestMain(m *testing.M) {
	procPauses = redistest.StartPauseWatch()
	code := m.Run()
	procPauses.Close()
	if code == 0 {
		if err := findLeaks(goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*call).DelayDo.func1")); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// findLeaks waits up to 5s for goroutines to end, then reports those left:
// the cleanup of an obtain with an unknown outcome lives for the release
// timeout (2s) at most, sleeping up to 500ms between its attempts, which is
// longer than goleak waits by itself.
func findLeaks(opts ...goleak.Option) error {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := goleak.Find(opts...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
