package redislock

// The counting of a quorum: what each node answered, how the answers add
// up, and the error when they reach no majority.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoQuorum is wrapped by the error (a *QuorumError) of an operation of a
// quorum Client (NewQuorum) when no majority of its nodes answered either
// way because nodes failed: neither a majority that granted (or held) the
// lock nor a majority that refused it. It is not ErrNotObtained.
var ErrNoQuorum = errors.New("redislock: no quorum")

// QuorumError is the error of an operation of a quorum Client that did not
// reach a majority. It wraps ErrNoQuorum and the error of each node that
// failed (errors.Is and errors.As find them), and says how many nodes
// granted (held, deleted), refused (held by another token, or not held) and
// failed. Expired reports an obtain or refresh that a majority granted too
// late: its validity had run out, and what it was granted was given back.
type QuorumError struct {
	Op                       Op
	Nodes                    int
	Granted, Refused, Failed int
	Expired                  bool
	Errs                     []error // one a failed node, naming it

	retryable, ambiguous bool
}

// Error returns a message with the counts and the nodes' errors.
func (e *QuorumError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "redislock: no quorum: %s: %d of %d nodes granted, %d refused, %d failed",
		e.Op, e.Granted, e.Nodes, e.Refused, e.Failed)
	if e.Expired {
		b.WriteString("; the validity ran out before a majority granted")
	}
	for _, err := range e.Errs {
		b.WriteString("; ")
		b.WriteString(err.Error())
	}
	return b.String()
}

// Unwrap returns ErrNoQuorum and the nodes' errors.
func (e *QuorumError) Unwrap() []error {
	return append([]error{ErrNoQuorum}, e.Errs...)
}

// nodeReply is one node's answer to a call of a quorum: granted (err nil
// and not refused), refused (another token holds the lock, or the token
// does not), or failed (err).
type nodeReply struct {
	// unanswered: a release returned before this node answered (settle);
	// it is not counted.
	unanswered bool
	refused    bool
	n          int64         // the fence token, or a TTL in milliseconds
	left       time.Duration // with refused: the holder's remaining TTL, when told
	err        error
}

// tally counts the replies of one call, and what its failures mean.
type tally struct {
	granted, refused, failed int
	errs                     []error // nil unless a node failed
	retryable, ambiguous     bool
}

// count tallies reps; ctx is the caller's (a node whose call its bound
// ended, the caller's ctx live, failed: retryable, and ambiguous).
func count(ctx context.Context, reps []nodeReply) tally {
	var t tally
	for i, rep := range reps {
		switch {
		case rep.unanswered:
		case rep.err != nil:
			t.failed++
			t.errs = append(t.errs, fmt.Errorf("node %d: %w", i+1, rep.err))
			retryable, ambiguous := true, true
			if !isCtxErr(rep.err) || ctx.Err() != nil {
				retryable, ambiguous = classify(ctx, rep.err)
			}
			t.retryable = t.retryable || retryable
			t.ambiguous = t.ambiguous || ambiguous
		case rep.refused:
			t.refused++
		default:
			t.granted++
		}
	}
	return t
}

// error returns t as the error of op.
func (t *tally) error(op Op, nodes int, expired bool) error {
	return &QuorumError{
		Op: op, Nodes: nodes, Granted: t.granted, Refused: t.refused, Failed: t.failed,
		Expired: expired, Errs: t.errs, retryable: t.retryable || expired, ambiguous: t.ambiguous,
	}
}

// report copies t's counts into ev (nil: unobserved).
func (t *tally) report(ev *Event) {
	if ev != nil {
		ev.NodesGranted, ev.NodesRefused, ev.NodesFailed = t.granted, t.refused, t.failed
	}
}
