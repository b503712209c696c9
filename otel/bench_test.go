package redislockotel_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-223c80a0/redislock"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

// discard is a span exporter that drops what it is given: the benchmarks
// measure recording and batching, not an exporter's I/O.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// benchCases are the observers compared, the baseline first:
//
//   - none: no observer;
//   - unset: NewObserver(), as Instrument() makes it, with the global
//     providers unset: what a program that never configures OpenTelemetry
//     gets;
//   - metrics: the SDK's MeterProvider, noop tracing;
//   - traces: the SDK's TracerProvider, noop metrics;
//   - sdk: both, recording every span (always sampled, batched to an
//     exporter that drops them) and every measurement (exemplars included);
//   - sdk-1%: sdk with sdktrace.TraceIDRatioBased(0.01), one trace in a
//     hundred recorded, every measurement.
func benchCases(b *testing.B) []benchCase {
	tp, mp := sdkProviders(b, sdktrace.AlwaysSample())
	tp1, mp1 := sdkProviders(b, sdktrace.TraceIDRatioBased(0.01))
	return []benchCase{
		{"otel=none", nil},
		{"otel=unset", redislockotel.NewObserver()},
		{"otel=metrics", redislockotel.NewObserver(redislockotel.WithTracerProvider(tracenoop.NewTracerProvider()), redislockotel.WithMeterProvider(mp))},
		{"otel=traces", redislockotel.NewObserver(redislockotel.WithTracerProvider(tp), redislockotel.WithMeterProvider(metricnoop.NewMeterProvider()))},
		{"otel=sdk", redislockotel.NewObserver(redislockotel.WithTracerProvider(tp), redislockotel.WithMeterProvider(mp))},
		{"otel=sdk-1%", redislockotel.NewObserver(redislockotel.WithTracerProvider(tp1), redislockotel.WithMeterProvider(mp1))},
	}
}

// sdkProviders returns the SDK's providers, shut down when b ends: spans
// sampled by sampler and batched to an exporter that drops them, and
// metrics kept for a manual reader.
func sdkProviders(b *testing.B, sampler sdktrace.Sampler) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithBatcher(discard{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	return tp, mp
}

// benchCase is one observer of benchCases; obs is nil for none.
type benchCase struct {
	name string
	obs  *redislockotel.Observer
}

// opts are the ClientOptions that install the case's observer.
func (bc benchCase) opts() []redislock.ClientOption {
	if bc.obs == nil {
		return nil
	}
	return []redislock.ClientOption{redislock.WithObserver(bc.obs)}
}

// BenchmarkObtainRelease measures one Obtain+Release at a time against a
// real redis-server, with and without the Observer.
func BenchmarkObtainRelease(b *testing.B) {
	client := newClient(b, startRedis(b), false)
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			locker := redislock.New(client, bc.opts()...)
			ctx := context.Background()
			key := "bench:serial:" + bc.name
			b.ReportAllocs()
			for b.Loop() {
				lock, err := locker.Obtain(ctx, key, time.Minute, nil)
				if err != nil {
					b.Fatal(err)
				}
				if err := lock.Release(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkObtainRelease_parallel measures Obtain+Release from 32
// goroutines per CPU, each on a key of its own, against a real
// redis-server, with and without the Observer: the case the issue bounds
// (otel=sdk within 20% of otel=none).
func BenchmarkObtainRelease_parallel(b *testing.B) {
	client := newClient(b, startRedis(b), false)
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			benchParallel(b, redislock.New(client, bc.opts()...), bc.name)
		})
	}
}

func benchParallel(b *testing.B, locker *redislock.Client, name string) {
	var n atomic.Int64
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		key := "bench:parallel:" + name + ":" + strconv.FormatInt(n.Add(1), 10)
		for pb.Next() {
			lock, err := locker.Obtain(ctx, key, time.Minute, nil)
			if err != nil {
				b.Errorf("Obtain: %v", err)
				return
			}
			if err := lock.Release(ctx); err != nil {
				b.Errorf("Release: %v", err)
				return
			}
		}
	})
}

// BenchmarkObserver measures what the Observer adds to one Obtain+Release
// with no Redis at all: Begin and End of an obtain and of a release, two
// spans and their measurements, from 32 goroutines per CPU as in
// BenchmarkObtainRelease_parallel. Next to it, sdk-only makes the same two
// spans (same names, kind and attributes) and the same three measurements
// (obtains, obtain and hold durations) straight through the SDK, without the Observer: the least that recording
// them costs, whoever records them.
func BenchmarkObserver(b *testing.B) {
	for _, bc := range benchCases(b) {
		if bc.obs == nil {
			continue
		}
		b.Run(bc.name, func(b *testing.B) { benchObserver(b, bc.obs) })
	}
	b.Run("otel=sdk-only", func(b *testing.B) {
		tp, mp := sdkProviders(b, sdktrace.AlwaysSample())
		tracer := tp.Tracer("bench")
		meter := mp.Meter("bench")
		obtains, _ := meter.Int64Counter("obtains")
		obtainTime, _ := meter.Float64Histogram("obtain.duration")
		holdTime, _ := meter.Float64Histogram("hold.duration")
		obtain, release := newSDKOp("obtain", "obtained"), newSDKOp("release", "ok")
		b.ReportAllocs()
		b.SetParallelism(32)
		b.RunParallel(func(pb *testing.PB) {
			ctx := context.Background()
			for pb.Next() {
				t0 := time.Now()
				_, span := tracer.Start(ctx, "redislock.obtain", obtain.start...)
				span.SetAttributes(redislockotel.AttrKeyCount.Int(1), redislockotel.AttrAttempts.Int(1),
					redislockotel.AttrContended.Int(0), redislockotel.AttrTTL.Float64(60), obtain.outcome)
				span.End()
				obtains.Add(ctx, 1, obtain.add...)
				obtainTime.Record(ctx, time.Since(t0).Seconds(), obtain.record...)
				_, span = tracer.Start(ctx, "redislock.release", release.start...)
				span.SetAttributes(redislockotel.AttrKeyCount.Int(1), redislockotel.AttrAttempts.Int(1),
					redislockotel.AttrHeld.Float64(time.Since(t0).Seconds()), release.outcome)
				span.End()
				holdTime.Record(ctx, time.Since(t0).Seconds(), release.record...)
			}
		})
	})
}

// sdkOp is what otel=sdk-only makes once for an operation, as the
// Observer does: its span start options, its outcome attribute, and the
// attribute set of its measurements.
type sdkOp struct {
	start   []trace.SpanStartOption
	outcome attribute.KeyValue
	add     []metric.AddOption
	record  []metric.RecordOption
}

func newSDKOp(op, outcome string) sdkOp {
	base := []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBOperationName(op)}
	kv := redislockotel.AttrOutcome.String(outcome)
	set := attribute.NewSet(append(base[:len(base):len(base)], kv)...)
	return sdkOp{
		start:   []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindInternal), trace.WithAttributes(base...)},
		outcome: kv,
		add:     []metric.AddOption{metric.WithAttributeSet(set)},
		record:  []metric.RecordOption{metric.WithAttributeSet(set)},
	}
}

// benchObserver runs, from 32 goroutines per CPU, what obs sees of one
// Obtain+Release: Begin and End of an obtain, then of a release.
func benchObserver(b *testing.B, obs *redislockotel.Observer) {
	keys := []string{"bench:observer"}
	b.ReportAllocs()
	b.SetParallelism(32)
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		var ob, rel redislock.Event // the library pools its Events
		for pb.Next() {
			ob = redislock.Event{Op: redislock.OpObtain, Keys: keys, TTL: time.Minute, Start: time.Now()}
			octx := obs.Begin(ctx, &ob)
			ob.Attempts, ob.Outcome = 1, redislock.OutcomeOK
			obs.End(octx, &ob)
			rel = redislock.Event{Op: redislock.OpRelease, Keys: keys, Start: time.Now(), Held: time.Since(ob.Start)}
			rctx := obs.Begin(ctx, &rel)
			rel.Attempts, rel.Outcome = 1, redislock.OutcomeOK
			obs.End(rctx, &rel)
		}
	})
}
