package redislockotel

import (
	"context"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"

	"github.com/seed-223c80a0/redislock"
)

// instruments are the metric instruments, made once by newInstruments.
type instruments struct {
	obtains     metric.Int64Counter
	contentions metric.Int64Counter
	obtainTime  metric.Float64Histogram
	holdTime    metric.Float64Histogram
	lost        metric.Int64Counter
	errors      metric.Int64Counter
}

// Metric names of this package. Every measurement has db.system.name,
// db.operation.name and the attributes of WithAttributes.
const (
	// MetricObtains counts Obtain and ObtainMulti calls, by
	// redislock.outcome (obtained, not_obtained, error). Unit {obtain}.
	MetricObtains = "redislock.obtains"
	// MetricContentions counts the obtain round trips that found the lock
	// held by another token, by the call's redislock.outcome. Unit
	// {attempt}.
	MetricContentions = "redislock.contentions"
	// MetricObtainDuration is the time an Obtain or ObtainMulti took, waits
	// between retries included, by redislock.outcome. Unit s.
	MetricObtainDuration = "redislock.obtain.duration"
	// MetricHoldDuration is the time from the obtain of a lock to its
	// Release, by the Release's redislock.outcome (ok, lost, error); only
	// for locks obtained through an instrumented Client. Unit s.
	MetricHoldDuration = "redislock.hold.duration"
	// MetricLost counts the locks that Refresh or Release found no longer
	// held by their token (redislock.outcome lost). Unit {lock}.
	MetricLost = "redislock.lost"
	// MetricErrors counts the operations that ended with an error, by
	// error.type. Unit {error}.
	MetricErrors = "redislock.errors"
)

// Bucket boundaries, in seconds: waits from a fraction of a millisecond
// (one round trip) to seconds of retrying; holds from milliseconds to an
// hour.
var (
	obtainBuckets = []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}
	holdBuckets   = []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600}
)

func newInstruments(m metric.Meter) instruments {
	var (
		in  instruments
		err error
	)
	in.obtains, err = m.Int64Counter(MetricObtains,
		metric.WithUnit("{obtain}"),
		metric.WithDescription("Obtain and ObtainMulti calls, by outcome (obtained, not_obtained, error)."))
	handle(err)
	in.contentions, err = m.Int64Counter(MetricContentions,
		metric.WithUnit("{attempt}"),
		metric.WithDescription("Obtain and ObtainMulti round trips that found the lock held by another token."))
	handle(err)
	in.obtainTime, err = m.Float64Histogram(MetricObtainDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time an Obtain or ObtainMulti took, waits between retries included, by outcome."),
		metric.WithExplicitBucketBoundaries(obtainBuckets...))
	handle(err)
	in.holdTime, err = m.Float64Histogram(MetricHoldDuration,
		metric.WithUnit("s"),
		metric.WithDescription("Time from the obtain of a lock to its Release, by the Release's outcome (ok, lost, error)."),
		metric.WithExplicitBucketBoundaries(holdBuckets...))
	handle(err)
	in.lost, err = m.Int64Counter(MetricLost,
		metric.WithUnit("{lock}"),
		metric.WithDescription("Locks that Refresh or Release found no longer held by their token."))
	handle(err)
	in.errors, err = m.Int64Counter(MetricErrors,
		metric.WithUnit("{error}"),
		metric.WithDescription("Operations that failed with an error, by operation and error.type."))
	handle(err)
	return in
}

func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}

// record makes the measurements of one operation. Each instrument is asked
// whether it is Enabled first, so that nothing is computed for a noop one.
func (in *instruments) record(ctx context.Context, info *opInfo, ev *redislock.Event, out redislock.Outcome, et errType) {
	if info.obtain {
		if in.obtains.Enabled(ctx) {
			in.obtains.Add(ctx, 1, info.add[out]...)
		}
		if ev.Contended > 0 && in.contentions.Enabled(ctx) {
			in.contentions.Add(ctx, int64(ev.Contended), info.add[out]...)
		}
		if in.obtainTime.Enabled(ctx) {
			in.obtainTime.Record(ctx, time.Since(ev.Start).Seconds(), info.record[out]...)
		}
	}
	if ev.Op == redislock.OpRelease && ev.Held > 0 && in.holdTime.Enabled(ctx) {
		in.holdTime.Record(ctx, ev.Held.Seconds(), info.record[out]...)
	}
	if out == redislock.OutcomeLost && in.lost.Enabled(ctx) {
		in.lost.Add(ctx, 1, info.add[out]...)
	}
	if out == redislock.OutcomeError && in.errors.Enabled(ctx) {
		in.errors.Add(ctx, 1, info.errAdd[et]...)
	}
}
