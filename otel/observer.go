// Package redislockotel records OpenTelemetry spans and metrics for the
// operations of a redislock.Client. It is a module of its own
// (github.com/seed-223c80a0/redislock/otel), so that the redislock module
// never imports OpenTelemetry. Enabling it is one option at construction:
//
//	locker := redislock.New(client, redislockotel.Instrument())
//
// By default the global TracerProvider and MeterProvider are used, and they
// may be set after the Client is made. While they are unset, or are the
// noop providers, no span is started and nothing is allocated for it.
//
// Spans: one for each Obtain, ObtainMulti, ObtainShared, ObtainSemaphore,
// Refresh, Release and TTL, named redislock.obtain, redislock.obtain_multi,
// redislock.obtain_shared, redislock.obtain_semaphore, redislock.refresh,
// redislock.release and redislock.ttl, of kind Internal, a child of the span
// in the caller's ctx. The operation's Redis commands run in its ctx, so
// that the spans of a rueidisotel client underneath are its children. Each
// has db.system.name "redis" and db.operation.name (semantic conventions
// v1.43.0), and redislock.key_count, redislock.attempts, redislock.outcome;
// redislock.contended for obtains, and for an obtain that waited
// redislock.woken.release, redislock.woken.expiry and
// redislock.woken.backoff (how its waits ended); redislock.ttl (seconds) for obtains and
// Refresh, redislock.held (seconds) for Release. A lock not obtained or
// lost is an outcome, not an error; an error sets the span status to Error
// and error.type to a fixed value (invalid_ttl, canceled, transport,
// WRONGTYPE, ...). Lock keys (redislock.keys) and error messages, which
// name a key, are recorded only WithKeys; tokens and metadata never are.
//
// Metrics: the counters redislock.obtains (by outcome),
// redislock.contentions, redislock.lost and redislock.errors (by
// error.type), and the histograms redislock.obtain.duration and
// redislock.hold.duration, in seconds. Their attribute sets are made once,
// with the Observer.
package redislockotel

import (
	"context"
	"reflect"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-223c80a0/redislock"
)

const (
	numOps      = int(redislock.OpObtainSemaphore) + 1 // Op 0 is "unknown"
	numOutcomes = int(redislock.OutcomeError) + 1
)

// Observer is a redislock.Observer that records spans and metrics. Make one
// with NewObserver and hand it to redislock.WithObserver, or use
// Instrument. One Observer may serve many Clients. It is safe for concurrent
// use. The zero value is not usable.
type Observer struct {
	tracer   trace.Tracer
	mode     traceMode
	global   atomic.Uint32 // for traceGlobal: globalUnset, globalOn or globalNoop
	globalT  reflect.Type  // for traceGlobal: the type of the unset global TracerProvider
	withKeys bool

	ops     [numOps]opInfo
	metrics instruments
}

var _ redislock.Observer = (*Observer)(nil)

// traceMode says when Begin starts a span.
type traceMode uint8

const (
	// traceOn: always.
	traceOn traceMode = iota
	// traceOff: never; the TracerProvider is a noop one.
	traceOff
	// traceGlobal: the global TracerProvider, which was unset when the
	// Observer was made: never while it stays unset, always once it is set
	// (unless it is set to a noop one). Spans are marked in the ctx, so
	// that End finds only those that Begin started.
	traceGlobal
)

// The states of Observer.global.
const (
	globalUnset uint32 = iota
	globalOn
	globalNoop
)

// spanKey marks, under traceGlobal, a span started by Begin.
type spanKey struct{}

// NewObserver returns an Observer with opts. It makes the tracer, the meter
// and every instrument now, and every attribute set that a measurement
// uses, so that recording allocates nothing. Errors of the MeterProvider
// go to otel.Handle.
func NewObserver(opts ...Option) *Observer {
	var cfg config
	for _, opt := range opts {
		opt.apply(&cfg)
	}
	o := &Observer{withKeys: cfg.withKeys}

	tp := cfg.tracerProvider
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	switch {
	case isNoop(tp):
		o.mode = traceOff
	case isUnsetGlobal(tp):
		o.mode = traceGlobal
		o.globalT = reflect.TypeOf(tp)
	}
	o.tracer = tp.Tracer(ScopeName,
		trace.WithInstrumentationVersion(Version),
		trace.WithSchemaURL(semconv.SchemaURL))

	mp := cfg.meterProvider
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	o.metrics = newInstruments(mp.Meter(ScopeName,
		metric.WithInstrumentationVersion(Version),
		metric.WithSchemaURL(semconv.SchemaURL)))

	for op := range numOps {
		o.ops[op] = newOpInfo(redislock.Op(op), cfg.attrs)
	}
	return o
}

// Instrument returns a redislock.ClientOption that reports every operation
// of the Client to NewObserver(opts...):
//
//	locker := redislock.New(client, redislockotel.Instrument())
//
// It composes with the other ClientOptions, and one returned option may be
// given to several Clients, which then share one Observer.
func Instrument(opts ...Option) redislock.ClientOption {
	return redislock.WithObserver(NewObserver(opts...))
}

// isNoop reports whether tp is the noop TracerProvider, whose spans are
// neither recorded nor given IDs: starting one would only cost an
// allocation.
func isNoop(tp trace.TracerProvider) bool {
	switch tp.(type) {
	case tracenoop.TracerProvider, *tracenoop.TracerProvider:
		return true
	}
	return false
}

// isUnsetGlobal reports whether tp is the global TracerProvider as it is
// before otel.SetTracerProvider: a stand-in whose tracers delegate to the
// provider set later, and until then make non-recording spans without IDs.
func isUnsetGlobal(tp trace.TracerProvider) bool {
	t := reflect.TypeOf(tp)
	return t.Kind() == reflect.Pointer &&
		t.Elem().PkgPath() == "go.opentelemetry.io/otel/internal/global" &&
		t.Elem().Name() == "tracerProvider"
}

// globalSet reports, under traceGlobal, whether Begin starts spans: once
// the global TracerProvider is set, to anything but a noop one.
func (o *Observer) globalSet() bool {
	switch o.global.Load() {
	case globalOn:
		return true
	case globalNoop:
		return false
	}
	tp := otel.GetTracerProvider()
	if reflect.TypeOf(tp) == o.globalT {
		return false
	}
	state := globalOn
	if isNoop(tp) {
		state = globalNoop
	}
	o.global.CompareAndSwap(globalUnset, state)
	return o.global.Load() == globalOn
}

// Begin starts the operation's span, a child of the span in ctx, and
// returns the ctx that holds it; with a noop TracerProvider it returns ctx
// as it is.
func (o *Observer) Begin(ctx context.Context, ev *redislock.Event) context.Context {
	switch o.mode {
	case traceOff:
		return ctx
	case traceGlobal:
		if !o.globalSet() {
			return ctx
		}
		info := o.op(ev.Op)
		ctx, span := o.tracer.Start(ctx, info.spanName, info.start...)
		return context.WithValue(ctx, spanKey{}, span)
	}
	info := o.op(ev.Op)
	ctx, _ = o.tracer.Start(ctx, info.spanName, info.start...)
	return ctx
}

// End ends the span that Begin started, with the operation's attributes
// and, for an error, its status, and records the metrics.
func (o *Observer) End(ctx context.Context, ev *redislock.Event) {
	info := o.op(ev.Op)
	out := ev.Outcome
	if int(out) >= numOutcomes {
		out = redislock.OutcomeError
	}

	var span trace.Span
	switch o.mode {
	case traceOn:
		span = trace.SpanFromContext(ctx)
	case traceGlobal:
		// The state only goes from unset to set: if it is unset now, it
		// was at Begin, and no span was started.
		if o.global.Load() == globalOn {
			span, _ = ctx.Value(spanKey{}).(trace.Span)
		}
	}
	recording := span != nil && span.IsRecording()
	et := errOther
	if out == redislock.OutcomeError && (recording || o.metrics.errors.Enabled(ctx)) {
		et = classifyError(ev.Err)
	}
	if recording {
		o.annotate(span, info, ev, out, et)
	}
	if span != nil {
		span.End()
	}

	o.metrics.record(ctx, info, ev, out, et)
}

func (o *Observer) op(op redislock.Op) *opInfo {
	if int(op) >= numOps {
		op = 0
	}
	return &o.ops[op]
}
