package safety

import (
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock"
)

// outcomeOf on the errors of one server and of a quorum: a failed dial
// proves nothing was sent only when every node's call failed to dial.
func TestOutcomeOf_dial(t *testing.T) {
	dial := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	read := &net.OpError{Op: "read", Net: "tcp", Err: errors.New("connection reset by peer")}
	for _, tc := range []struct {
		name string
		err  error
		want Outcome
	}{
		{"one server, dial", dial, NoEffect},
		{"one server, read", read, Unknown},
		{"quorum, one node deleted, one dial failed", &redislock.QuorumError{
			Op: redislock.OpRelease, Nodes: 3, Granted: 1, Refused: 1, Failed: 1, Errs: []error{dial},
		}, Unknown},
		{"quorum, one dial and one read failed", &redislock.QuorumError{
			Op: redislock.OpRelease, Nodes: 3, Refused: 1, Failed: 2, Errs: []error{dial, read},
		}, Unknown},
		{"quorum, every failed node's dial", &redislock.QuorumError{
			Op: redislock.OpRelease, Nodes: 3, Refused: 1, Failed: 2, Errs: []error{dial, dial},
		}, NoEffect},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.Equal(t, tc.want, outcomeOf(tc.err, redislock.ErrLockNotHeld, true))
		})
	}
}
