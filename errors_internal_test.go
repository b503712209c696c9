package redislock

import (
	"context"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// A dial bounded by the ctx deadline may fail with the poller's "i/o
// timeout" an instant before the ctx's own timer fires (seen under load in
// safety's TestServerStall): the Obtain must still say that its deadline
// ended it, as "not obtained" for a random token.
func TestAsCtxErr_dialTimeoutAtTheDeadline(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	ended, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Millisecond))
	defer cancel()
	live, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	err := asCtxErr(ended, dial)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("asCtxErr(ended ctx) = %v: want both the dial error and context.DeadlineExceeded", err)
	}
	if retryable, _ := classify(ended, err); retryable {
		t.Errorf("classify: a dial that the call's own deadline ended is retryable")
	}
	l := &Lock{keys: []string{"k"}}
	if got := notObtained(l, true, err, nil); !errors.Is(got, ErrNotObtained) || !errors.Is(got, context.DeadlineExceeded) {
		t.Errorf("notObtained = %v: want ErrNotObtained and context.DeadlineExceeded", got)
	}

	// A dial timeout while the ctx is live (the dialer's own timeout) is
	// a transport error, as before.
	if err := asCtxErr(live, dial); err != dial {
		t.Errorf("asCtxErr(live ctx) = %v, want the dial error unchanged", err)
	}
	if retryable, ambiguous := classify(live, dial); !retryable || ambiguous {
		t.Errorf("classify(live ctx, dial timeout) = %v, %v: want retryable, not ambiguous (nothing was sent)", retryable, ambiguous)
	}
	if err := asCtxErr(ended, errors.New("other")); errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("asCtxErr wrapped an error that is no timeout: %v", err)
	}
}
