package redislock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/redis/rueidis"
)

// semWaiter returns a waiter of a semaphore of limit 2 on "jobs".
func semWaiter(token string) *waiter {
	l := &Lock{kind: semaphores, keys: []string{"jobs"}, token: token}
	w := newWaiter(l, "60000", nil, "2", "redislock:model")
	w.limit = 2
	return w
}

// woken drains w's signal, and tells whether there was one.
func woken(w *waiter) bool {
	select {
	case <-w.signal:
		return true
	default:
		return false
	}
}

// A waiter offered a permit by the give-back of a waiter that gave up
// skips its attempt for the offer; when the give-back's token held nothing
// (a nil reply), it is woken to make that attempt.
func TestLocalQueues_giveBackOfferWakes(t *testing.T) {
	var qs localQueues
	w1, w2 := semWaiter("t1"), semWaiter("t2")
	qs.join(w1, false)
	qs.join(w2, false)
	if _, ok := qs.expose(w1); !ok {
		t.Fatal("w1, first, is queued in Redis by its attempt")
	}
	qs.settle(w1)
	if giveBack, _ := qs.leave(w1, false); !giveBack {
		t.Fatal("w1 gives back its entry")
	}
	if !woken(w2) {
		t.Fatal("w2 is woken as the new first")
	}
	// The give-back (release.go: byGiveBack) offers w2 a permit.
	if o := qs.offer(lockQueueName(w1.l)); o != w2 {
		t.Fatalf("offer: %v", o)
	}
	if qs.beginAttempt(w2) {
		t.Fatal("w2's attempt goes while it is offered a permit")
	}
	qs.settleOffer(w2, w1.l, 0, rueidis.Nil, false) // w1's token held no permit
	if !woken(w2) {
		t.Fatal("w2 skipped its attempt for the offer, and sleeps until its backoff")
	}
}

// A Client that holds fewer permits than a waiter's limit lets its first
// waiter queue in Redis, so that a Release of another Client reaches it:
// after its own holder obtained and left, and after a Release of that
// holder that found the next waiter's attempt in flight.
func TestLocalQueues_semaphoreQueuesWhileOthersHold(t *testing.T) {
	var qs localQueues
	h, w2, w3 := semWaiter("h"), semWaiter("t2"), semWaiter("t3")
	qs.join(h, false)
	qs.join(w2, false)
	qs.join(w3, false)
	qs.leave(h, true) // h obtained by its own attempt: w2 is woken to try
	if !woken(w2) || !qs.mayQueue(w2) {
		t.Fatal("w2, first, tries and may be queued in Redis: the Client holds 1 permit of 2")
	}
	if !qs.beginAttempt(w2) {
		t.Fatal("beginAttempt")
	}
	// h's Release while w2's attempt is in flight offers w3 its permit,
	// which another Client's attempt took first: the permit is gone.
	if o := qs.offer(lockQueueName(h.l)); o != w3 {
		t.Fatalf("offer: %v", o)
	}
	qs.settleOffer(w3, h.l, 2, nil, true)
	qs.endAttempt(w2) // the key was full (another Client's holders)
	if !qs.mayQueue(w2) {
		t.Fatal("the Client holds no permit, and w2 may not be queued in Redis")
	}
	// Once the Client holds every permit, its waiters wait for its own
	// Releases, out of Redis' queue.
	a, b := semWaiter("a").l, semWaiter("b").l
	qs.holdPermit(a)
	qs.holdPermit(b)
	if qs.mayQueue(w2) {
		t.Fatal("w2 is queued in Redis while the Client holds every permit")
	}
	qs.releasedPermit(a, nil)
	qs.releasedPermit(a, nil) // counted once
	if !qs.mayQueue(w2) || qs.held["jobs"] != 1 {
		t.Fatalf("held: %d", qs.held["jobs"])
	}
}

// A Release offers its permit to w1 while a Release of another Client
// grants w1 one through the channel; w1 returns with that one, and the
// offered permit is freed: w2, now first, is woken to take it.
func TestLocalQueues_offeredWaiterGrantedByChannel(t *testing.T) {
	var qs localQueues
	rel := semWaiter("rel").l // a holder of this Client
	qs.holdPermit(rel)
	w1, w2 := semWaiter("t1"), semWaiter("t2")
	qs.join(w1, false)
	qs.join(w2, false)
	if _, ok := qs.expose(w1); !ok {
		t.Fatal("w1 is queued in Redis: the Client holds 1 permit of 2")
	}
	qs.settle(w1)
	if o := qs.offer(lockQueueName(w1.l)); o != w1 {
		t.Fatalf("offer: %v", o)
	}
	qs.grant(w1, 0) // by the channel
	if !woken(w1) {
		t.Fatal("w1 is woken by its grant")
	}
	qs.leave(w1, true)
	// rel's script found w1 holding already: the permit is freed (1).
	if _, granted := qs.settleOffer(w1, rel, 1, nil, true); granted {
		t.Fatal("granted")
	}
	if !woken(w2) {
		t.Fatal("a permit is free, and w2, first, sleeps")
	}
	if qs.held["jobs"] != 1 {
		t.Fatalf("held: %d, want 1 (w1's)", qs.held["jobs"])
	}
}

// semModel drives the local queue of a semaphore (limit 2, key "jobs")
// with random sequences of newcomers, attempts (begun and ended apart),
// Releases by the Client's holders that offer their permit or find nobody
// to offer it to, give-backs that offer one, grants through the channel
// and returns, and checks them against a plain model: permits offered in
// arrival order, passing over those whose attempt is in flight; the Client's count
// of its permits (held), moved from holder to waiter by a local grant; a
// waiter woken when it may go on; and, after every step, no first waiter
// stuck: one that waits with nothing to come is queued in Redis, or its
// Client holds every permit (whose Releases offer them), or it is woken,
// or an offer or an attempt of its own is in flight.
type semModel struct {
	t       *testing.T
	rng     *rand.Rand
	qs      localQueues
	all     []*mWaiter
	queue   []*mWaiter     // the local queue, in order
	holders []*Lock        // the Client's Locks that hold a permit, not yet released
	counted map[*Lock]bool // the Locks its Client counts (held): holders, those releasing, waiters a permit was passed to
	offers  []semOffer     // Releases in flight that offered a permit
	attempt []*mWaiter     // attempts in flight
	gaveUp  []*mWaiter     // returned without a permit
	log     []string
}

type semOffer struct {
	rel    *Lock
	to     *mWaiter
	holder bool // a Release; else a give-back
}

const semLimit = 2

func (m *semModel) fail(format string, args ...any) {
	m.t.Helper()
	m.t.Fatalf("%s\nafter:\n%s", fmt.Sprintf(format, args...), joinLines(m.log))
}

func (m *semModel) logf(format string, args ...any) {
	m.log = append(m.log, fmt.Sprintf(format, args...))
}

// woke drains mw's signal into mw.woken: the waiter will go on.
func (m *semModel) woke(mw *mWaiter) bool {
	select {
	case <-mw.w.signal:
		mw.woken = true
	default:
	}
	return mw.woken
}

func (m *semModel) waiting(mw *mWaiter) bool { return mw.inQueue && !mw.granted }

func (m *semModel) newcomer() {
	mw := &mWaiter{w: semWaiter(fmt.Sprintf("t%d", len(m.all)))}
	m.all = append(m.all, mw)
	if !m.qs.join(mw.w, true) {
		m.qs.join(mw.w, false)
		mw.woken = true // it goes on with its first attempt
	}
	mw.inQueue = true
	m.queue = append(m.queue, mw)
	m.logf("newcomer %s", mw.w.l.token)
}

// beginAttempt: a waiter that goes on sends an attempt, unless a Release
// offers it a permit; the first may queue it in Redis.
func (m *semModel) beginAttempt(mw *mWaiter) {
	mw.woken = false
	ok := m.qs.beginAttempt(mw.w)
	m.logf("begin attempt %s: %v", mw.w.l.token, ok)
	if want := mw.offersN == 0; ok != want {
		m.fail("beginAttempt %s: %v, want %v", mw.w.l.token, ok, want)
	}
	if !ok {
		return
	}
	mw.attempting = true
	m.attempt = append(m.attempt, mw)
	first := m.queue[0] == mw
	if first && m.qs.mayQueue(mw.w) {
		if _, exposed := m.qs.expose(mw.w); exposed {
			mw.mayHold, mw.sent = true, true
			mw.inflight++
		}
	}
	if want := first && len(m.counted) < semLimit; mw.inflight > 0 != want {
		m.fail("attempt %s: queued in Redis=%v, want %v (the Client holds %d)", mw.w.l.token, mw.inflight > 0, want, len(m.counted))
	}
}

// endAttempt: the attempt took a permit, or found none.
func (m *semModel) endAttempt(i int) {
	mw := m.attempt[i]
	m.attempt = slices.Delete(m.attempt, i, i+1)
	mw.attempting = false
	if mw.inflight > 0 && !mw.offeredExpose {
		mw.inflight--
		if m.qs.settle(mw.w) {
			mw.gaveBack++
		}
	}
	if mw.returned {
		return // it gave up meanwhile
	}
	took := !mw.granted && m.rng.IntN(3) == 0
	m.logf("end attempt %s: took=%v", mw.w.l.token, took)
	if took || mw.granted {
		m.leave(mw, true)
		return
	}
	m.qs.endAttempt(mw.w)
}

func (m *semModel) leave(mw *mWaiter, obtained bool) {
	wasFirst := m.queue[0] == mw
	freePermit := obtained && !mw.granted
	if giveBack, _ := m.qs.leave(mw.w, obtained); giveBack {
		mw.gaveBack++
	}
	m.logf("leave %s: obtained=%v", mw.w.l.token, obtained)
	mw.inQueue, mw.returned, mw.obtained = false, true, obtained
	mw.woken = false
	m.queue = slices.DeleteFunc(m.queue, func(x *mWaiter) bool { return x == mw })
	if obtained {
		m.holders = append(m.holders, mw.w.l)
		m.counted[mw.w.l] = true
	} else {
		m.gaveUp = append(m.gaveUp, mw)
	}
	if len(m.queue) > 0 && ((wasFirst && len(m.counted) < semLimit) || freePermit) && !m.woke(m.queue[0]) {
		m.fail("leave %s: the first waiter %s was not woken", mw.w.l.token, m.queue[0].w.l.token)
	}
}

// offer: a Release of a holder, or a give-back of a waiter that gave up,
// offers a permit to the first waiter that no Release in flight offers one
// to and whose attempt is not in flight.
func (m *semModel) offer(holder bool) {
	var rel *Lock
	switch {
	case holder && len(m.holders) > 0:
		i := m.rng.IntN(len(m.holders))
		rel = m.holders[i]
		m.holders = slices.Delete(m.holders, i, i+1)
	case !holder && len(m.gaveUp) > 0:
		rel = m.gaveUp[m.rng.IntN(len(m.gaveUp))].w.l
	default:
		return
	}
	var want *mWaiter
	for _, x := range m.queue {
		if x.offersN == 0 && !x.granted && !x.attempting {
			want = x
			break
		}
	}
	w := m.qs.offer(lockQueueName(rel))
	m.logf("offer by %s (holder %v): %v", rel.token, holder, w != nil)
	if (w == nil) != (want == nil) || (w != nil && w != want.w) {
		m.fail("offer by %s: got %v, want %v", rel.token, w != nil, want != nil)
	}
	if want == nil {
		if holder {
			m.qs.releasedPermit(rel, nil)
			delete(m.counted, rel)
			m.logf("released %s, offered to nobody", rel.token)
			// The first waiter that nobody offers a permit to goes on.
			for _, x := range m.queue {
				if x.offersN == 0 && !x.granted {
					if !m.woke(x) {
						m.fail("release by %s: %s not woken", rel.token, x.w.l.token)
					}
					break
				}
			}
		}
		return
	}
	want.offersN++
	want.mayHold = true
	want.inflight++
	m.offers = append(m.offers, semOffer{rel: rel, to: want, holder: holder})
}

func (m *semModel) settleOffer(i int) {
	o := m.offers[i]
	m.offers = slices.Delete(m.offers, i, i+1)
	mw := o.to
	mw.offersN--
	mw.inflight--
	var code int64
	var err error
	switch r := m.rng.IntN(5); {
	case r == 0:
		code = 1
	case r == 1:
		code = 2
	case r == 2 && o.holder && !mw.granted:
		// (A token that holds a permit is granted none: holders.lua.)
		code = 3 + 7
	case r == 3 || !o.holder:
		err = rueidis.Nil // the releasing token held nothing
	default:
		err = errors.New("transport")
	}
	giveBack, granted := m.qs.settleOffer(mw.w, o.rel, code, err, o.holder)
	delete(m.counted, o.rel)
	if granted {
		m.counted[mw.w.l] = true
	}
	m.logf("settle offer %s by %s: code=%d err=%v granted=%v", mw.w.l.token, o.rel.token, code, err, granted)
	if giveBack {
		mw.gaveBack++
	}
	if granted {
		if mw.returned {
			if mw.obtained {
				m.fail("granted %s, which returned with a permit", mw.w.l.token)
			}
			return // given back
		}
		mw.granted = true
		if !m.woke(mw) {
			m.fail("settle offer %s: granted, not woken", mw.w.l.token)
		}
		return
	}
	if !o.holder && rueidis.IsRedisNil(err) {
		if m.waiting(mw) && mw.offersN == 0 && !m.woke(mw) {
			m.fail("settle offer %s: nothing was given, and it was not woken", mw.w.l.token)
		}
		return
	}
	switch {
	case m.waiting(mw):
		if !m.woke(mw) {
			m.fail("settle offer %s (code %d): not woken", mw.w.l.token, code)
		}
	case len(m.queue) > 0 && len(m.counted) < semLimit && !mw.granted:
		if !m.woke(m.queue[0]) {
			m.fail("settle offer %s (code %d): it returned, and the first waiter %s was not woken", mw.w.l.token, code, m.queue[0].w.l.token)
		}
	}
}

// grant: a Release of another Client grants a waiter queued in Redis a
// permit through the channel.
func (m *semModel) grant(mw *mWaiter) {
	giveBack := m.qs.grant(mw.w, 7)
	m.logf("grant %s by the channel", mw.w.l.token)
	if giveBack {
		mw.gaveBack++
	}
	if !mw.returned {
		mw.granted = true
		if !m.woke(mw) {
			m.fail("grant %s: not woken", mw.w.l.token)
		}
	}
}

// check: the queue's order and the count of permits; no first waiter is
// stuck.
func (m *semModel) check() {
	lq := m.qs.keys[lockQueueName(semWaiter("").l)]
	for i, mw := range m.queue {
		if lq == nil || i >= len(lq.waiters) || lq.waiters[i] != mw.w {
			m.fail("queue out of order at %d", i)
		}
	}
	if got := m.qs.held["jobs"]; got != len(m.counted) {
		m.fail("held: %d, want %d", got, len(m.counted))
	}
	if len(m.queue) == 0 {
		return
	}
	f := m.queue[0]
	if f.granted || f.sent || len(m.counted) >= semLimit || f.offersN > 0 || f.attempting || m.woke(f) {
		return
	}
	m.fail("first waiter %s is stuck: not queued in Redis, the Client holds %d of %d permits, nothing in flight, not woken", f.w.l.token, len(m.counted), semLimit)
}

func (m *semModel) step() {
	var goers []*mWaiter // woken waiters, and the granted
	for _, mw := range m.queue {
		if m.woke(mw) || mw.granted {
			goers = append(goers, mw)
		}
	}
	switch r := m.rng.IntN(12); {
	case r == 0 || len(m.queue)+len(m.holders) == 0:
		m.newcomer()
	case r <= 2 && len(goers) > 0:
		mw := goers[m.rng.IntN(len(goers))]
		if mw.granted {
			// Its Obtain returns once no Release offers it a permit
			// (obtainCall.take).
			if mw.offersN == 0 {
				m.leave(mw, true)
			}
		} else if !mw.attempting {
			m.beginAttempt(mw)
		}
	case r == 3 && len(m.attempt) > 0:
		m.endAttempt(m.rng.IntN(len(m.attempt)))
	case r == 4 || r == 5:
		m.offer(true)
	case r == 6:
		m.offer(false)
	case r == 7 && len(m.offers) > 0:
		m.settleOffer(m.rng.IntN(len(m.offers)))
	case r == 8:
		var queued []*mWaiter
		for _, mw := range m.all {
			if mw.sent && !mw.obtained && !mw.granted {
				queued = append(queued, mw)
			}
		}
		if len(queued) > 0 {
			m.grant(queued[m.rng.IntN(len(queued))])
		}
	case r == 9 && len(m.queue) > 0:
		// An Obtain gives up (its ctx ended).
		mw := m.queue[m.rng.IntN(len(m.queue))]
		if !mw.granted && !mw.attempting {
			m.leave(mw, false)
		}
	}
	m.check()
}

// TestLocalQueues_semaphoreModel: see semModel.
func TestLocalQueues_semaphoreModel(t *testing.T) {
	for seed := range uint64(3000) {
		m := &semModel{t: t, rng: rand.New(rand.NewPCG(seed, 7)), counted: make(map[*Lock]bool)}
		for range 80 {
			m.step()
		}
	}
}
