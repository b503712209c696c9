package safety

import (
	"fmt"
	"sync"
	"time"
)

// FencedResource stands for what a lock protects, one register a key: it
// accepts a write only with a fence token strictly greater than the last
// one it accepted on that key. It is safe for concurrent use.
type FencedResource struct {
	mu     sync.Mutex
	last   map[string]int64
	writes []Write
}

// Write is one write attempt on a FencedResource.
type Write struct {
	Client   int
	Key      string
	Fence    int64
	At       time.Duration
	Valid    bool // the writer's lock was still known to be valid
	Accepted bool
}

func (w Write) String() string {
	return fmt.Sprintf("client %d wrote %q with fence %d at %v (lock valid: %t, accepted: %t)",
		w.Client, w.Key, w.Fence, w.At, w.Valid, w.Accepted)
}

// NewFencedResource returns a resource that has accepted nothing yet.
func NewFencedResource() *FencedResource {
	return &FencedResource{last: map[string]int64{}}
}

// Write attempts a write on key with fence and records it; valid says
// whether the writer's lock was still known to be valid. It reports whether
// the write was accepted.
func (r *FencedResource) Write(client int, key string, fence int64, at time.Duration, valid bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	ok := fence > r.last[key]
	if ok {
		r.last[key] = fence
	}
	r.writes = append(r.writes, Write{Client: client, Key: key, Fence: fence, At: at, Valid: valid, Accepted: ok})
	return ok
}

// Writes returns a copy of every write attempt, in order.
func (r *FencedResource) Writes() []Write {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Write(nil), r.writes...)
}

// FenceReport sums up the writes to a FencedResource.
type FenceReport struct {
	Writes, Accepted int
	// Stale counts the writes rejected after the writer's lock was no
	// longer known valid: fencing doing its job.
	Stale int
	// Violations are the writes rejected although the writer's lock was
	// still known valid: another token held the lock at the same time, or
	// the fence counter went back.
	Violations []Write
}

func (f FenceReport) String() string {
	return fmt.Sprintf("%d writes: %d accepted, %d stale rejected, %d violations", f.Writes, f.Accepted, f.Stale, len(f.Violations))
}

// Check judges the writes made so far.
func (r *FencedResource) Check() FenceReport {
	var rep FenceReport
	for _, w := range r.Writes() {
		rep.Writes++
		switch {
		case w.Accepted:
			rep.Accepted++
		case w.Valid:
			rep.Violations = append(rep.Violations, w)
		default:
			rep.Stale++
		}
	}
	return rep
}
