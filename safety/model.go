package safety

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/anishathalye/porcupine"
)

// CheckOptions configure Linearizable.
type CheckOptions struct {
	// Slack is how far the server's expiry may lie from the client's view of
	// call time + TTL: clock granularity (Redis truncates to milliseconds)
	// and scheduling. Default 5ms.
	Slack time.Duration
	// Fence, when set, also checks that a fresh obtain's fence token is
	// above every one handed out before it on its key, and that obtaining
	// again with the holder's token keeps it.
	Fence bool
	// MaxDelay bounds how long after its call returned an operation with an
	// unknown outcome may still take effect (a command stuck in a socket
	// buffer, on a stalled server). Default 5s.
	MaxDelay time.Duration
	// ReleaseTimeout is the library's release timeout: a cleanup may start
	// that long after its obtain returned. Default 2s
	// (redislock.DefaultReleaseTimeout).
	ReleaseTimeout time.Duration
	// Timeout bounds the search. Default 60s; a search that times out gives
	// porcupine.Unknown.
	Timeout time.Duration
	// VisualizeDir, when not empty, receives an HTML visualization of an
	// illegal history (porcupine's).
	VisualizeDir string
}

// Verdict is the result of Linearizable.
type Verdict struct {
	Result   porcupine.CheckResult
	Ops      int // the operations checked (NoEffect ones are left out)
	Keys     int
	Duration time.Duration
	// File is the visualization written for an illegal history, if any.
	File string
}

func (v Verdict) String() string {
	s := fmt.Sprintf("%s: %d ops on %d keys checked in %v", resultName(v.Result), v.Ops, v.Keys, v.Duration.Round(time.Millisecond))
	if v.File != "" {
		s += "; visualization: " + v.File
	}
	return s
}

func resultName(r porcupine.CheckResult) string {
	switch r {
	case porcupine.Ok:
		return "linearizable"
	case porcupine.Illegal:
		return "NOT linearizable"
	default:
		return "unknown (timed out)"
	}
}

// Linearizable checks a history against a TTL-aware mutex model, one
// partition a key, with porcupine.
//
// The model's state is the holder's token, its fence token, the highest
// fence token handed out, and the window in which the holder's lock
// expires: no earlier than the start of its last obtain or refresh plus the
// TTL, no later than that call's return plus the TTL. A step carries its
// call and return times: it applies at some instant between them, no
// earlier than the step before it, so a lock may pass from its holder to
// another token only at an instant when its TTL may have passed.
//
// An operation with an unknown outcome is linearized within its call, as a
// pending effect: before any later step, it may take effect (at an instant
// after its call and no later than MaxDelay after its return), or it may
// never. The state is the set of every state the history allows so far, so
// no search over where such an operation goes is needed.
func Linearizable(ops []Op, opt CheckOptions) Verdict {
	opt = opt.defaults()
	return check(mutexModel(opt), ops, opt)
}

// check runs porcupine with model m on the history ops (NoEffect ones left
// out).
func check(m porcupine.Model, ops []Op, opt CheckOptions) Verdict {
	var history []porcupine.Operation
	keys := map[string]bool{}
	for i := range ops {
		op := &ops[i]
		if op.Outcome == NoEffect {
			continue
		}
		keys[op.Key] = true
		in := &modelOp{Op: op, id: int32(i)}
		ret := op.Return
		if op.Outcome == Unknown {
			ret = max(op.Ended, op.Call)
			in.until = int64(ret + opt.MaxDelay)
			if op.Kind == Cleanup {
				in.until += int64(opt.ReleaseTimeout)
			}
		}
		history = append(history, porcupine.Operation{
			ClientId: op.Client,
			Input:    in,
			Call:     int64(op.Call),
			Output:   op,
			Return:   int64(ret),
		})
	}
	start := time.Now()
	var v Verdict
	if opt.VisualizeDir == "" {
		v.Result = porcupine.CheckOperationsTimeout(m, history, opt.Timeout)
	} else {
		var info porcupine.LinearizationInfo
		v.Result, info = porcupine.CheckOperationsVerbose(m, history, opt.Timeout)
		if v.Result == porcupine.Illegal {
			v.File = visualize(m, info, opt.VisualizeDir)
		}
	}
	v.Duration = time.Since(start)
	v.Ops, v.Keys = len(history), len(keys)
	return v
}

// defaults fills in the options' defaults (see CheckOptions).
func (opt CheckOptions) defaults() CheckOptions {
	if opt.Slack == 0 {
		opt.Slack = 5 * time.Millisecond
	}
	if opt.MaxDelay == 0 {
		opt.MaxDelay = 5 * time.Second
	}
	if opt.ReleaseTimeout == 0 {
		opt.ReleaseTimeout = 2 * time.Second
	}
	if opt.Timeout == 0 {
		opt.Timeout = 60 * time.Second
	}
	return opt
}

func visualize(m porcupine.Model, info porcupine.LinearizationInfo, dir string) string {
	f, err := os.CreateTemp(dir, "history-*.html")
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := porcupine.Visualize(m, info, f); err != nil {
		return ""
	}
	return filepath.Clean(f.Name())
}

// modelOp is an operation as the model sees it.
type modelOp struct {
	*Op
	id    int32 // its index in the history: the order of pending effects
	until int64 // for an unknown outcome: the last instant it may apply at
}

// never is a time after every other: the end of a window that has none.
const never = int64(math.MaxInt64)

// unknownFence is the fence token of a lock taken by an obtain with an
// unknown outcome: some value above every one handed out before.
const unknownFence = -1

// effect is an operation with an unknown outcome that has not taken effect
// (yet).
type effect struct {
	id          int32
	kind        Kind
	token       string
	ttl         int64
	call, until int64
}

// lockState is one possible state of a key. Free when holder is "".
type lockState struct {
	holder    string
	fence     int64
	lastFence int64
	earliest  int64 // the holder's lock cannot have expired before
	latest    int64 // the holder's lock has surely expired after
	now       int64 // no later step applies before this instant
	pending   []effect
}

func (s lockState) sameCore(s2 lockState) bool {
	return s.holder == s2.holder && s.fence == s2.fence && s.lastFence == s2.lastFence
}

func (s lockState) equal(s2 lockState) bool {
	if !s.sameCore(s2) || s.earliest != s2.earliest || s.latest != s2.latest || s.now != s2.now || len(s.pending) != len(s2.pending) {
		return false
	}
	for i := range s.pending {
		if s.pending[i].id != s2.pending[i].id {
			return false
		}
	}
	return true
}

// dominates reports whether every history that s2 accepts, s accepts too:
// the same holder and fences, an earlier now, a wider expiry window, and
// every effect s2 may still apply.
func (s lockState) dominates(s2 lockState) bool {
	if !s.sameCore(s2) || s.now > s2.now || s.earliest > s2.earliest || s.latest < s2.latest || len(s.pending) < len(s2.pending) {
		return false
	}
	i := 0
	for _, e := range s2.pending {
		for i < len(s.pending) && s.pending[i].id < e.id {
			i++
		}
		if i == len(s.pending) || s.pending[i].id != e.id {
			return false
		}
	}
	return true
}

func (s lockState) hash() uint64 {
	h := newFNV()
	h.str(s.holder)
	for _, v := range [...]int64{s.fence, s.lastFence, s.earliest, s.latest, s.now} {
		h.int(uint64(v))
	}
	for _, e := range s.pending {
		h.int(uint64(e.id))
	}
	return uint64(h)
}

// fnv is an FNV-1a hash, by hand: no allocation.
type fnv uint64

func newFNV() fnv { return 14695981039346656037 }

// str mixes in the bytes of s.
func (h *fnv) str(s string) {
	for i := 0; i < len(s); i++ {
		*h ^= fnv(s[i])
		*h *= 1099511628211
	}
}

// int mixes in the 8 bytes of v.
func (h *fnv) int(v uint64) {
	for range 8 {
		*h ^= fnv(v & 0xff)
		*h *= 1099511628211
		v >>= 8
	}
}

func (s lockState) String() string {
	if s.holder == "" {
		return fmt.Sprintf("free (last fence %d, %d pending)", s.lastFence, len(s.pending))
	}
	latest := "never"
	if s.latest != never {
		latest = time.Duration(s.latest).String()
	}
	return fmt.Sprintf("%.6s fence %d expires in [%v, %s], %d pending", s.holder, s.fence, time.Duration(s.earliest), latest, len(s.pending))
}

// without returns s's pending effects less the one at i, in a new slice.
func (s lockState) without(i int) []effect {
	out := make([]effect, 0, len(s.pending)-1)
	out = append(out, s.pending[:i]...)
	return append(out, s.pending[i+1:]...)
}

// states is a set of possible states, none dominating another.
type states []lockState

func (ss states) add(s lockState) states { return addState(ss, s) }

func mutexModel(opt CheckOptions) porcupine.Model {
	m := &model{slack: int64(opt.Slack), fenced: opt.Fence}
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			byKey := map[string][]porcupine.Operation{}
			var order []string
			for _, op := range history {
				key := op.Input.(*modelOp).Key
				if _, ok := byKey[key]; !ok {
					order = append(order, key)
				}
				byKey[key] = append(byKey[key], op)
			}
			out := make([][]porcupine.Operation, 0, len(order))
			for _, key := range order {
				out = append(out, byKey[key])
			}
			return out
		},
		Init: func() any { return states{{}} },
		Step: func(state, input, _ any) (bool, any) {
			op := input.(*modelOp)
			var next states
			for _, s := range m.closure(state.(states)) {
				for _, n := range m.step(s, op) {
					next = next.add(m.prune(n))
				}
			}
			sortSet(next)
			return len(next) > 0, next
		},
		Equal: func(a, b any) bool { return equalSets(a.(states), b.(states)) },
		Hash:  func(state any) uint64 { return hashSet(state.(states)) },
		DescribeOperation: func(input, _ any) string {
			return input.(*modelOp).String()
		},
		DescribeState: func(state any) string {
			return fmt.Sprint([]lockState(state.(states)))
		},
	}
}

type model struct {
	slack  int64
	fenced bool
}

// closure returns ss with every state that pending effects may lead to.
func (m *model) closure(ss states) states {
	out := append(states(nil), ss...)
	for i := 0; i < len(out) && i < 4096; i++ {
		s := out[i]
		for j, e := range s.pending {
			if n, ok := m.apply(s, j, e); ok {
				out = out.add(m.prune(n))
			}
		}
	}
	return out
}

// prune drops the pending effects that can no longer apply: too late, or a
// release or refresh of a token that does not hold the lock and cannot come
// to hold it.
func (m *model) prune(s lockState) lockState {
	drop := 0
	for _, e := range s.pending {
		if !m.alive(s, e) {
			drop++
		}
	}
	if drop == 0 {
		return s
	}
	kept := make([]effect, 0, len(s.pending)-drop)
	for _, e := range s.pending {
		if m.alive(s, e) {
			kept = append(kept, e)
		}
	}
	s.pending = kept
	return s
}

func (m *model) alive(s lockState, e effect) bool {
	if e.until < s.now {
		return false
	}
	if e.kind == Obtain || s.holder == e.token {
		return true
	}
	for _, o := range s.pending {
		if o.kind == Obtain && o.token == e.token {
			return true
		}
	}
	return false
}

// apply applies the pending effect e (at index j of s.pending), if it can
// change s.
func (m *model) apply(s lockState, j int, e effect) (lockState, bool) {
	p := max(e.call, s.now)
	if p > e.until {
		return s, false
	}
	mine := s.holder == e.token
	held := s.holder != "" && p <= s.latest
	n := s
	n.pending = s.without(j)
	switch e.kind {
	case Obtain:
		fence := int64(0)
		if m.fenced {
			fence = unknownFence
		}
		switch {
		case s.holder == "":
		case mine && held:
			fence = s.fence
		default:
			if p = max(p, s.earliest); p > e.until {
				return s, false
			}
		}
		n.holder, n.fence, n.now = e.token, fence, p
		n.earliest, n.latest = p+e.ttl-m.slack, e.until+e.ttl+m.slack
	case Refresh:
		if !mine || !held {
			return s, false
		}
		n.earliest, n.latest, n.now = p+e.ttl-m.slack, e.until+e.ttl+m.slack, p
	default: // Release, Cleanup
		if !mine || !held {
			return s, false
		}
		n = lockState{lastFence: s.lastFence, now: p, pending: n.pending}
	}
	return n, true
}

// step returns the states that s may move to by op.
func (m *model) step(s lockState, op *modelOp) []lockState {
	if op.Outcome == Unknown {
		e := effect{id: op.id, kind: op.Kind, token: op.Token, ttl: int64(op.TTL), call: int64(op.Call), until: op.until}
		n := s
		n.pending = make([]effect, 0, len(s.pending)+1)
		i := sort.Search(len(s.pending), func(i int) bool { return s.pending[i].id > e.id })
		n.pending = append(append(append(n.pending, s.pending[:i]...), e), s.pending[i:]...)
		return []lockState{n}
	}
	call, ret, ttl, slack := int64(op.Call), int64(op.Return), int64(op.TTL), m.slack
	p := max(call, s.now) // the earliest instant op may apply at
	if p > ret {
		return nil
	}
	// expiry is the earliest instant, from p on, at which the holder's
	// lock may have expired, or -1 when that is past ret.
	expiry := max(p, s.earliest)
	if expiry > ret {
		expiry = -1
	}
	held := s.holder != "" && p <= s.latest // the holder may still hold at p
	mine := s.holder == op.Token
	var out []lockState
	take := func(at int64, fence int64) {
		n := lockState{holder: op.Token, fence: fence, lastFence: s.lastFence,
			earliest: at + ttl - slack, latest: ret + ttl + slack, now: at, pending: s.pending}
		if fence > 0 {
			n.lastFence = max(n.lastFence, fence)
		}
		out = append(out, n)
	}
	free := func(at int64) {
		out = append(out, lockState{lastFence: s.lastFence, now: at, pending: s.pending})
	}
	same := func(at int64) {
		n := s
		n.now = at
		out = append(out, n)
	}
	fenceOK := func(f int64) bool { // for a fresh obtain
		return f == 0 || f > s.lastFence
	}

	switch op.Kind {
	case Obtain:
		f := op.Fence
		if !m.fenced {
			f = 0
		}
		if op.Outcome == Refused {
			if s.holder != "" && !mine && held {
				same(p)
			}
			return out
		}
		if mine && held { // taken again by its token: the fence token is kept
			switch {
			case f == s.fence:
				take(p, s.fence)
			case s.fence == unknownFence && fenceOK(f):
				take(p, f)
			}
		}
		switch {
		case s.holder == "":
			if fenceOK(f) {
				take(p, f)
			}
		case expiry >= 0: // the holder's lock may have expired: a fresh obtain
			if fenceOK(f) {
				take(expiry, f)
			}
		}
	case Refresh:
		switch op.Outcome {
		case OK:
			if mine && held {
				n := s
				n.earliest, n.latest, n.now = p+ttl-slack, ret+ttl+slack, p
				out = append(out, n)
			}
		case Refused:
			if !mine {
				same(p)
			} else if expiry >= 0 {
				free(expiry)
			}
		}
	case Release, Cleanup:
		switch op.Outcome {
		case OK:
			if mine && held {
				free(p)
			}
		case Refused:
			if !mine {
				same(p)
			} else if expiry >= 0 {
				free(expiry)
			}
		}
	}
	return out
}
