package redislockotel

import (
	"fmt"
	"testing"

	"github.com/seed-223c80a0/redislock"
)

// Each sentinel of the library, wrapped as the library wraps it, has its
// own error.type.
func TestClassifyError_sentinels(t *testing.T) {
	for _, s := range sentinels {
		got := classifyError(fmt.Errorf("redislock: obtain %q: %w", "k", s.err))
		if got != s.typ {
			t.Errorf("%v: error.type %q, want %q", s.err, errTypeNames[got], errTypeNames[s.typ])
		}
	}
	if got := errTypeNames[classifyError(fmt.Errorf("%w: 0 of 1", redislock.ErrNotReplicated))]; got != "not_replicated" {
		t.Errorf("ErrNotReplicated: error.type %q", got)
	}
}
