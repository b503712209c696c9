package redislockotel_test

import (
	"context"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
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
//   - unset: Instrument() with the global providers unset, what a program
//     that never configures OpenTelemetry gets;
//   - metrics: the SDK's MeterProvider, noop tracing;
//   - traces: the SDK's TracerProvider, noop metrics;
//   - sdk: both, recording every span (always sampled, batched to an
//     exporter that drops them) and every measurement (exemplars included).
func benchCases(b *testing.B) []struct {
	name string
	opts []redislock.ClientOption
} {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithBatcher(discard{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		_ = tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	instrument := func(opts ...redislockotel.Option) []redislock.ClientOption {
		return []redislock.ClientOption{redislockotel.Instrument(opts...)}
	}
	return []struct {
		name string
		opts []redislock.ClientOption
	}{
		{"otel=none", nil},
		{"otel=unset", instrument()},
		{"otel=metrics", instrument(redislockotel.WithTracerProvider(tracenoop.NewTracerProvider()), redislockotel.WithMeterProvider(mp))},
		{"otel=traces", instrument(redislockotel.WithTracerProvider(tp), redislockotel.WithMeterProvider(metricnoop.NewMeterProvider()))},
		{"otel=sdk", instrument(redislockotel.WithTracerProvider(tp), redislockotel.WithMeterProvider(mp))},
	}
}

// BenchmarkObtainRelease measures one Obtain+Release at a time against a
// real redis-server, with and without the Observer.
func BenchmarkObtainRelease(b *testing.B) {
	client := newClient(b, startRedis(b), false)
	for _, bc := range benchCases(b) {
		b.Run(bc.name, func(b *testing.B) {
			locker := redislock.New(client, bc.opts...)
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
			benchParallel(b, redislock.New(client, bc.opts...), bc.name)
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
