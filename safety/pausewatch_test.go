package safety_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/seed-223c80a0/redislock/internal/redistest"
	"github.com/seed-223c80a0/redislock/safety"
)

// procPauses watches the whole test binary, from TestMain: a call's
// lateness past its deadline is judged without the spans in which the
// process itself did not run (redistest.PauseWatch).
var procPauses *redistest.PauseWatch

// requireReturnedBy fails t when a call that started at start and took took
// returned more than deadlineMargin after limit, not counting the process'
// pauses from limit-deadlineMargin on.
func requireReturnedBy(t require.TestingT, start time.Time, took, limit time.Duration, msgAndArgs ...any) {
	if h, ok := t.(interface{ Helper() }); ok {
		h.Helper()
	}
	paused := procPauses.Paused(start.Add(limit-deadlineMargin), start.Add(took))
	require.Less(t, took-paused, limit+deadlineMargin, msgAndArgs...)
}

// lateCalls returns the calls of ops (recorded by rec) that returned more
// than deadlineMargin after their deadline, not counting the process'
// procPauses, and logs every call that returned late only by such a pause.
func lateCalls(t *testing.T, rec *safety.Recorder, ops []safety.Op) []safety.Op {
	t.Helper()
	origin := time.Now().Add(-rec.Now())
	var late []safety.Op
	for _, op := range safety.LateCalls(ops, deadlineMargin) {
		by, paused := op.Ended-op.Deadline, procPauses.Paused(origin.Add(op.Deadline-deadlineMargin), origin.Add(op.Ended))
		if by-paused > deadlineMargin {
			late = append(late, op)
			t.Logf("late: returned %v after its deadline, the process paused %v of it: %v: %v", by, paused, op, op.Err)
		} else {
			t.Logf("returned %v after its deadline while the process was paused %v: %v", by, paused, op)
		}
	}
	return late
}
