package safety

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/seed-223c80a0/redislock"
)

// Kind is what an operation of the history did.
type Kind uint8

// The kinds of operations.
const (
	// Obtain is Client.Obtain.
	Obtain Kind = iota + 1
	// Refresh is Lock.Refresh.
	Refresh
	// Release is Lock.Release (or, in a negative control, the broken
	// release under test).
	Release
	// Cleanup is the release that the library starts by itself after an
	// obtain with an unknown outcome; the history adds it, with an unknown
	// outcome, beside that obtain.
	Cleanup
)

var kindNames = [...]string{"?", "obtain", "refresh", "release", "cleanup"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return kindNames[0]
}

// Outcome is how an operation ended, as far as its caller can tell.
type Outcome uint8

// The outcomes.
const (
	// OK: obtained, refreshed, released.
	OK Outcome = iota + 1
	// Refused: the server answered no: ErrNotObtained from Obtain (held by
	// another token) or Refresh (lost), ErrLockNotHeld from Release.
	Refused
	// Unknown: the operation may have taken effect, at any time after its
	// call, or never (a transport error, a ctx that ended in flight).
	Unknown
	// NoEffect: the operation surely did not reach the server (its ctx was
	// done before it started, or no connection could be made). The checkers
	// ignore it.
	NoEffect
)

var outcomeNames = [...]string{"?", "ok", "refused", "unknown", "no-effect"}

func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return outcomeNames[0]
}

// Pending is the Return of an operation whose outcome is unknown: it may
// take effect at any time after its call.
const Pending = time.Duration(math.MaxInt64 / 4)

// Op is one operation of the history. Times are since the Recorder started,
// on the monotonic clock.
type Op struct {
	Client  int
	Key     string
	Kind    Kind
	Mode    Mode   // an obtain's: exclusive, shared or semaphore
	Limit   int    // with Semaphore: the obtain's limit
	Token   string // the lock's token; for a failed obtain a unique stand-in
	TTL     time.Duration
	Call    time.Duration
	Return  time.Duration // Pending for an Unknown outcome
	Ended   time.Duration // when the call returned, even for Unknown
	Outcome Outcome
	Fence   int64 // the fence token an OK obtain returned (0: no fence key)
	// Deadline is the call's ctx deadline (0: none), to check that no call
	// outlives it.
	Deadline time.Duration
	Err      error
}

func (o Op) String() string {
	ret := "pending"
	if o.Return != Pending {
		ret = o.Return.String()
	}
	return fmt.Sprintf("client %d %s %q token %.6s ttl %v [%v, %v] %s fence %d",
		o.Client, o.Kind, o.Key, o.Token, o.TTL, o.Call, ret, o.Outcome, o.Fence)
}

// Recorder collects the history of several clients. It is safe for
// concurrent use.
type Recorder struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
	anon  int
}

// NewRecorder returns an empty Recorder whose clock starts now.
func NewRecorder() *Recorder {
	return &Recorder{start: time.Now()}
}

// Now returns the time since the Recorder started.
func (r *Recorder) Now() time.Duration {
	return time.Since(r.start)
}

// Since returns the Recorder's time of t.
func (r *Recorder) Since(t time.Time) time.Duration {
	return t.Sub(r.start)
}

// Add records an operation. An Unknown outcome gets Return Pending.
func (r *Recorder) Add(op Op) {
	op.Ended = op.Return
	if op.Outcome == Unknown {
		op.Return = Pending
	}
	r.mu.Lock()
	r.ops = append(r.ops, op)
	r.mu.Unlock()
}

// standIn returns a token that nobody else holds, for an obtain whose token
// the caller never learnt.
func (r *Recorder) standIn() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.anon++
	return fmt.Sprintf("unseen-%d", r.anon)
}

// Ops returns a copy of the history, ordered by call time.
func (r *Recorder) Ops() []Op {
	r.mu.Lock()
	ops := append([]Op(nil), r.ops...)
	r.mu.Unlock()
	sort.SliceStable(ops, func(i, j int) bool { return ops[i].Call < ops[j].Call })
	return ops
}

// Stats sums up a history.
type Stats struct {
	Ops          int
	Acquisitions int // OK obtains
	Refused      int
	Unknown      int
	NoEffect     int
	ByKind       map[Kind]int
}

func (s Stats) String() string {
	return fmt.Sprintf("%d ops: %d acquisitions, %d refused, %d unknown, %d no-effect (%d refreshes, %d releases, %d cleanups)",
		s.Ops, s.Acquisitions, s.Refused, s.Unknown, s.NoEffect, s.ByKind[Refresh], s.ByKind[Release], s.ByKind[Cleanup])
}

// Summarize counts the operations of a history by outcome and kind.
func Summarize(ops []Op) Stats {
	s := Stats{Ops: len(ops), ByKind: map[Kind]int{}}
	for _, op := range ops {
		s.ByKind[op.Kind]++
		switch op.Outcome {
		case OK:
			if op.Kind == Obtain {
				s.Acquisitions++
			}
		case Refused:
			s.Refused++
		case Unknown:
			s.Unknown++
		case NoEffect:
			s.NoEffect++
		}
	}
	return s
}

// LateCalls returns the operations that returned more than margin after
// their ctx deadline.
func LateCalls(ops []Op, margin time.Duration) []Op {
	var late []Op
	for _, op := range ops {
		if op.Deadline > 0 && op.Ended > op.Deadline+margin {
			late = append(late, op)
		}
	}
	return late
}

// Overlaps counts the pairs of holds of one key by two tokens that each
// surely held the key at the same instant: a hold is sure from the return
// of its OK obtain until the earliest of its first release call and the
// start of its last OK obtain or refresh plus the TTL (less slack). An
// overlap is a violation whatever happened to any other operation.
func Overlaps(ops []Op, slack time.Duration) int {
	type hold struct {
		from, to time.Duration
		token    string
	}
	type state struct {
		from, until, released time.Duration
	}
	open := map[string]*state{} // key NUL token
	var order []string
	for _, op := range ops {
		id := op.Key + "\x00" + op.Token
		switch {
		case op.Kind == Obtain && op.Outcome == OK:
			st := open[id]
			if st == nil {
				st = &state{from: op.Return, released: Pending}
				open[id] = st
				order = append(order, id)
			}
			st.until = max(st.until, op.Call+op.TTL-slack)
		case op.Kind == Refresh && op.Outcome == OK:
			if st := open[id]; st != nil {
				st.until = max(st.until, op.Call+op.TTL-slack)
			}
		case op.Kind == Release || op.Kind == Cleanup || op.Kind == Refresh && op.Outcome == Refused:
			// A release ends the sure hold at its call, and so does a
			// refresh that found the lock gone.
			if op.Outcome == NoEffect {
				continue
			}
			if st := open[id]; st != nil {
				st.released = min(st.released, op.Call)
			}
		}
	}
	byKey := map[string][]hold{}
	for _, id := range order {
		st := open[id]
		key, token, _ := strings.Cut(id, "\x00")
		to := min(st.until, st.released)
		if to > st.from {
			byKey[key] = append(byKey[key], hold{from: st.from, to: to, token: token})
		}
	}
	n := 0
	for _, holds := range byKey {
		sort.Slice(holds, func(i, j int) bool { return holds[i].from < holds[j].from })
		for i := range holds {
			for j := i + 1; j < len(holds) && holds[j].from < holds[i].to; j++ {
				if holds[j].token != holds[i].token {
					n++
				}
			}
		}
	}
	return n
}

// outcomeOf maps the error of a library call to the outcome the history
// records. notTaken is the sentinel that means the server said no
// (ErrNotObtained or ErrLockNotHeld); single says the call made one attempt
// at most, so that a failed connection proves that nothing was sent.
func outcomeOf(err, notTaken error, single bool) Outcome {
	switch {
	case err == nil:
		return OK
	case errors.Is(err, notTaken):
		return Refused
	case errors.Is(err, redislock.ErrInvalidTTL), errors.Is(err, redislock.ErrInvalidKey),
		errors.Is(err, redislock.ErrInvalidToken), errors.Is(err, redislock.ErrInvalidMetadata),
		errors.Is(err, redislock.ErrInvalidLimit):
		return NoEffect
	case single && notSent(err):
		return NoEffect
	default:
		return Unknown
	}
}

// notSent reports whether err proves that the command never left the
// client: no connection could be made. For a quorum's error, it must prove
// that of every node: one node's failed dial says nothing of the others,
// and a node that granted (deleted, refreshed) the lock applied the call.
func notSent(err error) bool {
	if qe, ok := errors.AsType[*redislock.QuorumError](err); ok {
		if qe.Granted > 0 {
			return false
		}
		for _, err := range qe.Errs {
			if !dialFailed(err) {
				return false
			}
		}
		return true
	}
	return dialFailed(err)
}

// dialFailed reports whether err is a failed dial.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// ctxDeadline returns the Recorder's time of ctx's deadline, or 0.
func (r *Recorder) ctxDeadline(ctx context.Context) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		return r.Since(dl)
	}
	return 0
}
