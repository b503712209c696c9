package redislock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/redis/rueidis"
)

// mWaiter is the model's view of one waiter.
type mWaiter struct {
	w        *waiter
	key      string
	inQueue  bool
	returned bool // its Obtain returned
	obtained bool // with the lock
	mayHold  bool // Redis may have queued or granted it: exposed, offered or granted
	sent     bool // an attempt carried its entry
	granted  bool
	inflight int // its exposes (attempts, offers) not yet settled
	gaveBack int // give-backs the queue asked for
	// gaveBackEarly is set when a give-back was asked while a command that
	// may queue or grant it was still in flight.
	gaveBackEarly bool

	// A semaphore waiter's (semModel).
	woken         bool // its signal was seen: it goes on
	attempting    bool // its attempt is in flight
	offersN       int  // offers in flight
	offeredExpose bool
}

// queueModel drives localQueues with random sequences of join, leave,
// expose, settle, offer, grant and give-up, and checks them against a plain
// model: FIFO queues, a first waiter that is woken when it becomes first,
// and a give-back for every waiter that returned without the lock and may
// hold something in Redis, never while a command that may queue or grant
// it is in flight.
type queueModel struct {
	t       *testing.T
	rng     *rand.Rand
	qs      localQueues
	all     []*mWaiter
	queues  map[string][]*mWaiter
	local   map[string]bool // the lock is held by a waiter of this Client
	offers  []*mWaiter      // offers in flight
	exposes []*mWaiter      // attempts in flight
	// give-backs asked and not done
	pendingGiveBacks []*mWaiter
	log              []string
}

func (m *queueModel) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("%s\nafter:\n%s", fmt.Sprintf(format, args...), joinLines(m.log))
}

func joinLines(lines []string) string {
	out := ""
	for _, l := range lines[max(0, len(lines)-40):] {
		out += "  " + l + "\n"
	}
	return out
}

func (m *queueModel) drain(mw *mWaiter) bool {
	select {
	case <-mw.w.signal:
		return true
	default:
		return false
	}
}

func (m *queueModel) giveBack(mw *mWaiter, asked bool) {
	if !asked {
		return
	}
	mw.gaveBack++
	m.pendingGiveBacks = append(m.pendingGiveBacks, mw)
	if mw.inflight > 0 {
		mw.gaveBackEarly = true
	}
}

// newcomer: an Obtain that finds the lock held; behind others of its
// Client it joins them, else it joins after its own attempt.
func (m *queueModel) newcomer(key string) {
	l := &Lock{kind: exclusive, keys: []string{key}, token: fmt.Sprintf("t%d", len(m.all))}
	mw := &mWaiter{w: newWaiter(l, "100", nil, "", "redislock:model"), key: key}
	m.all = append(m.all, mw)
	joined := m.qs.join(mw.w, true)
	m.log = append(m.log, fmt.Sprintf("newcomer %s on %q: behind=%v", l.token, key, joined))
	if want := len(m.queues[key]) > 0; joined != want {
		m.fail("join behind on %q with %d waiters queued: joined=%v", key, len(m.queues[key]), joined)
	}
	if !joined {
		m.qs.join(mw.w, false)
	}
	mw.inQueue = true
	m.queues[key] = append(m.queues[key], mw)
}

func (m *queueModel) expose(mw *mWaiter) {
	q := m.queues[mw.key]
	again, ok := m.qs.expose(mw.w)
	m.log = append(m.log, fmt.Sprintf("expose %s: ok=%v", mw.w.l.token, ok))
	if want := len(q) > 0 && q[0] == mw && !m.local[mw.key]; ok != want {
		m.fail("expose %s: ok=%v, want %v", mw.w.l.token, ok, want)
	}
	if ok {
		if again != mw.sent {
			m.fail("expose %s: again=%v, but an earlier attempt carried its entry=%v", mw.w.l.token, again, mw.sent)
		}
		mw.mayHold, mw.sent = true, true
		mw.inflight++
		m.exposes = append(m.exposes, mw)
	}
}

func (m *queueModel) settle(i int) {
	mw := m.exposes[i]
	m.exposes = slices.Delete(m.exposes, i, i+1)
	mw.inflight--
	asked := m.qs.settle(mw.w)
	m.log = append(m.log, fmt.Sprintf("settle %s: give back=%v", mw.w.l.token, asked))
	m.giveBack(mw, asked)
	if want := mw.returned && !mw.obtained && mw.inflight == 0; asked != want {
		m.fail("settle %s: give back=%v, want %v", mw.w.l.token, asked, want)
	}
}

func (m *queueModel) offer(key string) {
	w := m.qs.offer(key)
	q := m.queues[key]
	var want *mWaiter
	if len(q) > 0 && !q[0].granted {
		want = q[0]
	}
	if (w == nil) != (want == nil) || (w != nil && w != want.w) {
		m.fail("offer on %q: got %v, want %v", key, w != nil, want != nil)
	}
	m.log = append(m.log, fmt.Sprintf("offer on %q: %v", key, w != nil))
	if want != nil {
		want.mayHold = true
		want.inflight++
		m.offers = append(m.offers, want)
	}
}

func (m *queueModel) settleOffer(i int) {
	mw := m.offers[i]
	m.offers = slices.Delete(m.offers, i, i+1)
	mw.inflight--
	var code int64
	var err error
	switch m.rng.IntN(5) {
	case 0:
		code = 1
	case 1:
		code = 2
	case 2:
		code = 3 + 7
	case 3:
		err = rueidis.Nil // the releasing token held nothing
	default:
		err = errors.New("transport")
	}
	m.drain(mw)
	holder := m.rng.IntN(2) == 0 // a Release, or a give-back or cleanup
	asked, granted := m.qs.settleOffer(mw.w, &Lock{kind: mw.w.l.kind, keys: mw.w.l.keys}, code, err, holder)
	m.log = append(m.log, fmt.Sprintf("settle offer %s: code=%d err=%v holder=%v give back=%v", mw.w.l.token, code, err, holder, asked))
	m.giveBack(mw, asked)
	if granted != (err == nil && code >= 3) {
		m.fail("settle offer %s: granted=%v", mw.w.l.token, granted)
	}
	if granted {
		if !mw.returned {
			mw.granted = true
		}
	} else if err == nil || (holder && rueidis.IsRedisNil(err)) {
		// Freed, passed to a waiter in Redis, or, for a Release, found
		// expired: this Client no longer holds the lock.
		m.local[mw.key] = false
	}
	if want := mw.returned && !mw.obtained && mw.inflight == 0; asked != want {
		m.fail("settle offer %s: give back=%v, want %v", mw.w.l.token, asked, want)
	}
	if rueidis.IsRedisNil(err) && !holder {
		// A give-back or a cleanup that held nothing changed nothing
		// for the queue; the offered waiter, which skipped its attempt
		// for the offer, goes on.
		if !mw.returned && !mw.granted && !m.offered(mw) && !m.drain(mw) {
			m.fail("settle offer %s: a nil reply, and it was not woken", mw.w.l.token)
		}
		return
	}
	// Unless it has the lock, the offered waiter goes on; when it has
	// returned, the first waiter of the queue does, unless the lock is still
	// this Client's.
	if granted || mw.obtained {
		return
	}
	if !mw.returned {
		if !m.drain(mw) {
			m.fail("settle offer %s (code %d): not woken", mw.w.l.token, code)
		}
		return
	}
	if q := m.queues[mw.key]; len(q) > 0 && !m.local[mw.key] && !m.drain(q[0]) {
		m.fail("settle offer %s (code %d): it returned, and the first waiter %s was not woken", mw.w.l.token, code, q[0].w.l.token)
	}
}

// offered tells whether an offer to mw is in flight.
func (m *queueModel) offered(mw *mWaiter) bool {
	return slices.Contains(m.offers, mw)
}

func (m *queueModel) grant(mw *mWaiter) {
	m.drain(mw)
	asked := m.qs.grant(mw.w, 7)
	m.log = append(m.log, fmt.Sprintf("grant %s: give back=%v", mw.w.l.token, asked))
	m.giveBack(mw, asked)
	if !mw.returned {
		mw.granted = true
		if !m.drain(mw) {
			m.fail("grant %s: not woken", mw.w.l.token)
		}
		if g, fence := m.qs.granted(mw.w); !g || fence != 7 {
			m.fail("grant %s: granted=%v fence=%d", mw.w.l.token, g, fence)
		}
	}
	if want := mw.returned && !mw.obtained && mw.inflight == 0; asked != want {
		m.fail("grant %s after it returned: give back=%v, want %v", mw.w.l.token, asked, want)
	}
}

func (m *queueModel) leave(mw *mWaiter, obtained bool) {
	q := m.queues[mw.key]
	wasFirst := q[0] == mw
	asked, done := m.qs.leave(mw.w, obtained)
	m.log = append(m.log, fmt.Sprintf("leave %s: obtained=%v give back=%v", mw.w.l.token, obtained, asked))
	m.giveBack(mw, asked)
	mw.inQueue, mw.returned, mw.obtained = false, true, obtained
	m.queues[mw.key] = slices.DeleteFunc(q, func(x *mWaiter) bool { return x == mw })
	if obtained {
		m.local[mw.key] = true
	}
	if len(m.queues[mw.key]) == 0 {
		m.local[mw.key] = false // the queue is dropped, and with it what it knew
	}
	want := !obtained && mw.mayHold && mw.inflight == 0
	if asked != want {
		m.fail("leave %s: give back=%v, want %v", mw.w.l.token, asked, want)
	}
	if done != (obtained || (!mw.mayHold)) {
		m.fail("leave %s: done=%v", mw.w.l.token, done)
	}
	if next := m.queues[mw.key]; wasFirst && len(next) > 0 && !m.local[mw.key] && !m.drain(next[0]) {
		m.fail("leave %s: the next first waiter %s was not woken", mw.w.l.token, next[0].w.l.token)
	}
}

func (m *queueModel) check() {
	n := 0
	for key, q := range m.queues {
		n += len(q)
		lq := m.qs.keys[key]
		if len(q) == 0 {
			if lq != nil && len(lq.waiters) > 0 {
				m.fail("queue %q should be empty", key)
			}
			continue
		}
		for i, mw := range q {
			if lq == nil || i >= len(lq.waiters) || lq.waiters[i] != mw.w {
				m.fail("queue %q out of order at %d", key, i)
			}
		}
	}
	if got := m.qs.n.Load(); got != int64(n) {
		m.fail("n=%d, want %d", got, n)
	}
}

func (m *queueModel) step() {
	keys := []string{"a", "b"}
	var queued []*mWaiter
	for _, k := range keys {
		queued = append(queued, m.queues[k]...)
	}
	switch r := m.rng.IntN(10); {
	case r == 0 || len(queued) == 0:
		m.newcomer(keys[m.rng.IntN(len(keys))])
	case r == 1:
		m.expose(queued[m.rng.IntN(len(queued))])
	case r == 2 && len(m.exposes) > 0:
		m.settle(m.rng.IntN(len(m.exposes)))
	case r == 3:
		m.offer(keys[m.rng.IntN(len(keys))])
	case r == 4 && len(m.offers) > 0:
		m.settleOffer(m.rng.IntN(len(m.offers)))
	case r == 5:
		// A grant through the channel reaches a waiter that may be
		// queued in Redis, maybe after it returned.
		var exposed []*mWaiter
		for _, mw := range m.all {
			if mw.mayHold && !mw.obtained {
				exposed = append(exposed, mw)
			}
		}
		if len(exposed) > 0 {
			m.grant(exposed[m.rng.IntN(len(exposed))])
		}
	case r == 6 || r == 7:
		// An Obtain returns: with the lock when it was granted one, or
		// when, first, its own attempt took it.
		mw := queued[m.rng.IntN(len(queued))]
		m.leave(mw, mw.granted || (m.queues[mw.key][0] == mw && m.rng.IntN(2) == 0))
	default:
		mw := queued[m.rng.IntN(len(queued))]
		m.leave(mw, mw.granted)
	}
	m.check()
}

// finish settles what is in flight, then checks that every waiter that
// returned without the lock and may hold something was given back, once,
// and never before its commands settled.
func (m *queueModel) finish() {
	for len(m.exposes) > 0 {
		m.settle(0)
	}
	for len(m.offers) > 0 {
		m.settleOffer(0)
	}
	// An Obtain with a waiter's token waits while a give-back of it is
	// pending: each give-back asked counts once, until it is done.
	for _, mw := range m.pendingGiveBacks {
		if m.qs.nSettling.Load() == 0 {
			m.fail("a give-back of %s is pending, but no token is settling", mw.w.l.token)
		}
		m.qs.gaveBack(mw.w)
	}
	if n := m.qs.nSettling.Load(); n != 0 || len(m.qs.settling) != 0 {
		m.fail("every give-back is done, yet %d tokens are settling", n)
	}
	for _, mw := range m.all {
		if !mw.returned || mw.obtained {
			if mw.gaveBack > 0 {
				m.fail("%s gave back what it holds", mw.w.l.token)
			}
			continue
		}
		if mw.mayHold && mw.gaveBack == 0 {
			m.fail("%s returned without the lock and may hold something, never given back", mw.w.l.token)
		}
		if mw.gaveBackEarly {
			m.fail("%s given back while a command that may queue or grant it was in flight", mw.w.l.token)
		}
	}
}

func TestLocalQueues_model(t *testing.T) {
	for seed := range uint64(2000) {
		m := &queueModel{
			t:      t,
			rng:    rand.New(rand.NewPCG(seed, 42)),
			queues: make(map[string][]*mWaiter),
			local:  make(map[string]bool),
		}
		for range 60 {
			m.step()
		}
		m.finish()
	}
}
