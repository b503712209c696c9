package safety

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Mode is the kind of lock an obtain takes.
type Mode uint8

// The modes.
const (
	// Exclusive is Client.Obtain: one holder.
	Exclusive Mode = iota
	// Shared is Client.ObtainShared: any number of shared holders, and no
	// exclusive one with them.
	Shared
	// Semaphore is Client.ObtainSemaphore: at most its limit of holders.
	Semaphore
)

var modeNames = [...]string{"exclusive", "shared", "semaphore"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return "?"
}

// Crowd is a violation that Crowding found: at the instant a hold surely
// began, the holds of its key that surely held then.
type Crowd struct {
	Key   string
	At    time.Duration
	Holds []string // "<mode> <token>"
}

func (c Crowd) String() string {
	return fmt.Sprintf("%q at %v: %s", c.Key, c.At, strings.Join(c.Holds, ", "))
}

// Crowding checks the read-write and semaphore rules on a history of
// locks of every mode: never an exclusive holder with anyone, never a
// shared holder with a semaphore holder, and never more semaphore holders
// than the limit of the one that came last. A hold is sure as for
// Overlaps: from the return of its OK obtain until the earliest of its
// first release call, a refresh that found it gone, and the start of its
// last OK obtain or refresh plus the TTL (less slack). The count of holders
// is highest at the instant one begins, so each such instant is checked.
// A history of exclusive locks alone is checked as Overlaps does.
func Crowding(ops []Op, slack time.Duration) []Crowd {
	type hold struct {
		from, until, released time.Duration
		mode                  Mode
		limit                 int
		key, token            string
	}
	open := map[string]*hold{} // key NUL token
	var order []*hold
	for _, op := range ops {
		id := op.Key + "\x00" + op.Token
		switch {
		case op.Kind == Obtain && op.Outcome == OK:
			h := open[id]
			if h == nil {
				h = &hold{from: op.Return, released: Pending, mode: op.Mode, limit: op.Limit, key: op.Key, token: op.Token}
				open[id] = h
				order = append(order, h)
			}
			h.until = max(h.until, op.Call+op.TTL-slack)
		case op.Kind == Refresh && op.Outcome == OK:
			if h := open[id]; h != nil {
				h.until = max(h.until, op.Call+op.TTL-slack)
			}
		case op.Kind == Release || op.Kind == Cleanup || op.Kind == Refresh && op.Outcome == Refused:
			if op.Outcome == NoEffect {
				continue
			}
			if h := open[id]; h != nil {
				h.released = min(h.released, op.Call)
			}
		}
	}
	byKey := map[string][]*hold{}
	for _, h := range order {
		if min(h.until, h.released) > h.from {
			byKey[h.key] = append(byKey[h.key], h)
		}
	}
	var out []Crowd
	for key, holds := range byKey {
		sort.Slice(holds, func(i, j int) bool { return holds[i].from < holds[j].from })
		for i, h := range holds {
			var with []*hold
			for _, o := range holds[:i+1] {
				if o.from <= h.from && h.from < min(o.until, o.released) {
					with = append(with, o)
				}
			}
			if !crowded(h.mode, h.limit, modesOf(with, func(o *hold) Mode { return o.mode })) {
				continue
			}
			c := Crowd{Key: key, At: h.from}
			for _, o := range with {
				c.Holds = append(c.Holds, fmt.Sprintf("%s %.6s", o.mode, o.token))
			}
			out = append(out, c)
		}
	}
	return out
}

// modesOf counts the holds of each mode.
func modesOf[T any](holds []T, mode func(T) Mode) [3]int {
	var n [3]int
	for _, h := range holds {
		if m := mode(h); int(m) < len(n) {
			n[m]++
		}
	}
	return n
}

// crowded tells whether holds of these counts by mode, at once, break the
// rules, the last to begin being of mode with limit.
func crowded(mode Mode, limit int, n [3]int) bool {
	total := n[Exclusive] + n[Shared] + n[Semaphore]
	switch {
	case total <= 1:
		return false
	case n[Exclusive] > 0:
		return true
	case n[Shared] > 0 && n[Semaphore] > 0:
		return true
	case mode == Semaphore:
		return total > limit
	}
	return false
}
