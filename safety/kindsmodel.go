package safety

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/anishathalye/porcupine"
)

// KindsLinearizable checks a history of locks of every mode (Obtain,
// ObtainShared, ObtainSemaphore: Op.Mode) against a TTL-aware model of
// holders, one partition a key, with porcupine: never an exclusive holder
// with anyone, never a shared holder with a semaphore holder, never more
// semaphore holders than the limit of the obtain that joins them.
//
// The model's state is the set of holders, each with its mode and the
// window in which its hold ends (no earlier than the instant its last
// obtain or refresh applied at plus the TTL, less Slack; no later than
// that call's return plus the TTL, plus Slack), and the instant of the
// last step with a known outcome: as in the exclusive model
// (Linearizable), such a step applies at an instant of its call no earlier
// than that. An OK obtain
// applies at an instant at which every holder it cannot join may have lost
// its hold; those are taken out (for a semaphore, the fewest that leave a
// place, every choice of them kept as a possible state), the others stay.
// A refused obtain promises nothing (a waiter queued behind others is
// refused while the key has room): it changes nothing. A release or
// refresh that was refused took out a holder whose hold may have ended,
// at the earliest at the end of its hold.
//
// An operation with an unknown outcome may take effect at any instant of
// its call from the last step's on (up to MaxDelay after its return,
// ReleaseTimeout more for a cleanup) or never: an obtain adds a holder
// that may lose its hold at any instant (it may never have held), a
// refresh moves the holder's latest end, a release or cleanup lets its
// holder lose its hold from then on; none changes the last step's instant.
// Fence tokens are not checked (the fenced resource checks them).
func KindsLinearizable(ops []Op, opt CheckOptions) Verdict {
	opt = opt.defaults()
	return check(kindsModel(int64(opt.Slack)), ops, opt)
}

// kindHolder is a holder of a key in the kinds model.
type kindHolder struct {
	token    string
	mode     Mode
	earliest int64 // its hold cannot have ended before
	latest   int64 // its hold has surely ended after
}

// kindState is one possible state of a key: its holders, by token, and,
// as in the exclusive model, the instant of the last step with a known
// outcome: no later step applies before it. Without it, a step placed later
// in the linearization could apply at an earlier instant, before a holder
// that an earlier step took out (at the end of its hold) had lost its hold.
type kindState struct {
	holders []kindHolder
	now     int64 // no later step applies before this instant
}

func (s kindState) find(token string) int {
	for i, h := range s.holders {
		if h.token == token {
			return i
		}
	}
	return -1
}

// with returns the state of holders hs (sorted by token) at instant now.
func with(hs []kindHolder, now int64) kindState {
	sort.Slice(hs, func(i, j int) bool { return hs[i].token < hs[j].token })
	return kindState{holders: hs, now: now}
}

// dominates reports whether every history that s2 accepts, s accepts too:
// an instant no later, the same holders, each with a window as wide.
func (s kindState) dominates(s2 kindState) bool {
	if s.now > s2.now || len(s.holders) != len(s2.holders) {
		return false
	}
	for i, h := range s.holders {
		o := s2.holders[i]
		if h.token != o.token || h.mode != o.mode || h.earliest > o.earliest || h.latest < o.latest {
			return false
		}
	}
	return true
}

func (s kindState) equal(s2 kindState) bool { return s.dominates(s2) && s2.dominates(s) }

func (s kindState) hash() uint64 {
	h := newFNV()
	h.int(uint64(s.now))
	for _, x := range s.holders {
		h.str(x.token)
		h.int(uint64(x.mode))
		h.int(uint64(x.earliest))
		h.int(uint64(x.latest))
	}
	return uint64(h)
}

func (s kindState) String() string {
	parts := make([]string, 0, len(s.holders))
	for _, h := range s.holders {
		parts = append(parts, fmt.Sprintf("%s %.6s ends in [%v, %v]", h.mode, h.token, time.Duration(h.earliest), time.Duration(h.latest)))
	}
	return "{" + strings.Join(parts, "; ") + "} from " + time.Duration(s.now).String()
}

// kindStates is a set of possible states, none dominating another.
type kindStates []kindState

func (ss kindStates) add(s kindState) kindStates { return addState(ss, s) }

// kindsModel is the porcupine model of KindsLinearizable. Its Equal is
// not equality but coverage, and it has no Hash: porcupine calls
// Equal(new, cached) only to skip a state of its search that it has met
// with the same operations linearized, whose search (not an ancestor of
// the current one: it had fewer operations) has failed. A new set of
// states each dominated by one of the cached set (an instant no later,
// windows as wide) fails too, so it is skipped as well. The instant makes
// the states reached by different orders of the same operations differ
// (a holder's window starts at the instant it joined at): with equality
// alone, a read-write history of 1,923 operations with waiters giving up
// took 40s (over porcupine's 60s under -race and load); with coverage,
// 70ms. Hash is left out because covered states hash differently.
func kindsModel(slack int64) porcupine.Model {
	byKey := mutexModel(CheckOptions{}).Partition
	return porcupine.Model{
		Partition: byKey,
		Init:      func() any { return kindStates{{}} },
		Step: func(state, input, _ any) (bool, any) {
			op := input.(*modelOp)
			var next kindStates
			for _, s := range state.(kindStates) {
				for _, n := range kindStep(s, op, slack) {
					next = next.add(n)
				}
			}
			sortSet(next)
			return len(next) > 0, next
		},
		Equal: func(a, b any) bool { return coveredBy(a.(kindStates), b.(kindStates)) },
		DescribeOperation: func(input, _ any) string {
			op := input.(*modelOp)
			return fmt.Sprintf("%s %s %v", op.Kind, op.Mode, op.Op)
		},
		DescribeState: func(state any) string { return fmt.Sprint([]kindState(state.(kindStates))) },
	}
}

// coveredBy reports whether every state of a is dominated by one of b:
// every history that a accepts, b accepts too.
func coveredBy(a, b kindStates) bool {
	for _, s := range a {
		found := false
		for _, o := range b {
			if o.dominates(s) {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// conflicts tells whether a holder of mode h stops an obtain of mode m.
func conflicts(m, h Mode) bool {
	return m == Exclusive || h == Exclusive || m != h
}

// kindStep returns the states that s may move to by op.
func kindStep(s kindState, op *modelOp, slack int64) []kindState {
	call, ret, ttl := int64(op.Call), int64(op.Return), int64(op.TTL)
	p := max(call, s.now) // the earliest instant op may apply at
	i := s.find(op.Token)
	if op.Outcome == Unknown {
		// Its effect, if any, is at an instant in [p, until]; none is
		// left when that is empty. The effect is folded into the holders'
		// windows, so the instant stays (the step may never have applied).
		if p > op.until {
			return []kindState{s}
		}
		hs := append([]kindHolder(nil), s.holders...)
		switch {
		case op.Kind == Obtain && i < 0:
			hs = append(hs, kindHolder{token: op.Token, mode: op.Mode, earliest: p, latest: op.until + ttl + slack})
		case op.Kind == Obtain || op.Kind == Refresh:
			if i >= 0 {
				hs[i].latest = max(hs[i].latest, op.until+ttl+slack)
			}
		default: // Release, Cleanup
			if i >= 0 {
				hs[i].earliest = min(hs[i].earliest, p)
			}
		}
		return []kindState{with(hs, s.now)}
	}
	if p > ret {
		return nil
	}
	// The holders that have surely lost their hold by p are gone.
	live := alive(s.holders, p)
	i = kindState{holders: live}.find(op.Token)
	same := func() []kindState { return []kindState{with(live, p)} }
	// without takes holder j out at instant at (from p on): the holders
	// that have surely lost their hold by then are gone too.
	without := func(j int, at int64) []kindState {
		hs := append(append([]kindHolder(nil), live[:j]...), live[j+1:]...)
		return []kindState{with(alive(hs, at), at)}
	}
	switch op.Kind {
	case Obtain:
		switch {
		case op.Outcome == Refused:
			return same()
		case i >= 0: // taken again by its token
			// As a fresh obtain, its old hold left out: the holder may
			// have come from an obtain of unknown outcome that never
			// held, so the others it cannot join must have lost their
			// hold as for any obtain.
			if live[i].mode != op.Mode {
				return nil
			}
			others := append(append([]kindHolder(nil), live[:i]...), live[i+1:]...)
			return join(others, op, p, ret, slack)
		}
		return join(live, op, p, ret, slack)
	case Refresh:
		switch {
		case op.Outcome == OK && i >= 0:
			hs := append([]kindHolder(nil), live...)
			hs[i].earliest, hs[i].latest = p+ttl-slack, ret+ttl+slack
			return []kindState{with(hs, p)}
		case op.Outcome == OK:
			return nil
		}
	case Release, Cleanup:
		switch {
		case op.Outcome == OK && i >= 0:
			return without(i, p)
		case op.Outcome == OK:
			return nil
		}
	}
	// A refused refresh or release: its token held nothing, or its hold
	// ended within the call, at the earliest at the holder's earliest end:
	// the step applies then, and no later step before.
	switch {
	case i < 0:
		return same()
	case live[i].earliest <= ret:
		return without(i, max(p, live[i].earliest))
	}
	return nil
}

// alive returns the holders of hs that may still hold at instant t, in a
// new slice.
func alive(hs []kindHolder, t int64) []kindHolder {
	out := make([]kindHolder, 0, len(hs))
	for _, h := range hs {
		if h.latest >= t {
			out = append(out, h)
		}
	}
	return out
}

// join returns the states in which op's token joins the holders live of
// s: at an instant from p on at which the holders that stop it may all
// have lost their hold (p, or a holder's earliest end up to ret), with
// those taken out; each state's instant is the one it joined at.
func join(live []kindHolder, op *modelOp, p, ret, slack int64) []kindState {
	ttl := int64(op.TTL)
	at := []int64{p}
	for _, h := range live {
		if h.earliest > p && h.earliest <= ret {
			at = append(at, h.earliest)
		}
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	var out []kindState
	for _, t := range at {
		var keep, sems, maybe []kindHolder
		ok := true
		for _, h := range live {
			if h.latest < t {
				continue // surely gone by t
			}
			switch {
			case conflicts(op.Mode, h.mode) && h.earliest > t:
				ok = false // surely holds at t
			case conflicts(op.Mode, h.mode):
				// may have lost its hold by t: taken out
			case op.Mode == Semaphore && h.earliest <= t:
				maybe = append(maybe, h)
			case op.Mode == Semaphore:
				sems = append(sems, h)
			default:
				keep = append(keep, h)
			}
		}
		if !ok {
			continue
		}
		me := kindHolder{token: op.Token, mode: op.Mode, earliest: t + ttl - slack, latest: ret + ttl + slack}
		if op.Mode != Semaphore {
			out = append(out, with(append(keep, me), t))
			continue
		}
		// At most limit-1 others stay: the sure ones, and as many of
		// those that may have lost their hold as room is left, every
		// choice of them.
		room := op.Limit - 1 - len(sems)
		if room < 0 {
			continue
		}
		for _, pick := range choose(maybe, min(room, len(maybe))) {
			hs := append(append(append([]kindHolder(nil), sems...), pick...), me)
			out = append(out, with(hs, t))
		}
	}
	return out
}

// choose returns every subset of hs of n elements.
func choose(hs []kindHolder, n int) [][]kindHolder {
	if n == 0 {
		return [][]kindHolder{nil}
	}
	if len(hs) < n {
		return nil
	}
	var out [][]kindHolder
	for _, rest := range choose(hs[1:], n-1) {
		out = append(out, append([]kindHolder{hs[0]}, rest...))
	}
	return append(out, choose(hs[1:], n)...)
}

// possible is a state of a model that keeps sets of possible states.
type possible[S any] interface {
	equal(S) bool
	dominates(S) bool
	hash() uint64
}

// addState adds s to the set ss unless a state of ss dominates it, and
// drops those it dominates.
func addState[S possible[S]](ss []S, s S) []S {
	for i, o := range ss {
		if o.dominates(s) {
			return ss
		}
		if s.dominates(o) {
			ss[i] = s
			out := ss[:i+1]
			for _, r := range ss[i+1:] {
				if !s.dominates(r) {
					out = append(out, r)
				}
			}
			return out
		}
	}
	return append(ss, s)
}

// equalSets tells whether two sets of possible states (each sorted by
// sortSet) are equal.
func equalSets[S possible[S]](a, b []S) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !a[i].equal(b[i]) {
			return false
		}
	}
	return true
}

// hashSet hashes a set of possible states, in any order.
func hashSet[S possible[S]](ss []S) uint64 {
	var h uint64
	for _, s := range ss {
		h ^= s.hash()
	}
	return h
}

// sortSet orders a set of possible states by hash, for equalSets.
func sortSet[S possible[S]](ss []S) {
	sort.Slice(ss, func(i, j int) bool { return ss[i].hash() < ss[j].hash() })
}
