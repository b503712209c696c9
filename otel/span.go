package redislockotel

import (
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-223c80a0/redislock"
)

// Span attribute keys of this package; the semantic conventions give
// db.system.name, db.operation.name and error.type.
const (
	AttrKeyCount  = attribute.Key("redislock.key_count") // int: the number of keys
	AttrAttempts  = attribute.Key("redislock.attempts")  // int: the Redis round trips made
	AttrContended = attribute.Key("redislock.contended") // int: obtain round trips that found the lock held
	// How the waits of an obtain ended (set when it waited): woken by a
	// release, by the holder's expiry, by the backoff.
	AttrWokenByRelease = attribute.Key("redislock.woken.release") // int
	AttrWokenByExpiry  = attribute.Key("redislock.woken.expiry")  // int
	AttrWokenByBackoff = attribute.Key("redislock.woken.backoff") // int
	AttrTTL            = attribute.Key("redislock.ttl")           // float64: the TTL asked for, in seconds
	AttrHeld           = attribute.Key("redislock.held")          // float64: on Release, seconds since the obtain
	AttrOutcome        = attribute.Key("redislock.outcome")       // string: one of the Outcome values
	AttrKeys           = attribute.Key("redislock.keys")          // []string: the lock keys, WithKeys only
	// How many nodes of a quorum Client granted (held, deleted), refused
	// and failed in the operation's last round; set for a quorum only.
	AttrNodesGranted = attribute.Key("redislock.nodes.granted") // int
	AttrNodesRefused = attribute.Key("redislock.nodes.refused") // int
	AttrNodesFailed  = attribute.Key("redislock.nodes.failed")  // int
)

// The values of the AttrOutcome attribute.
const (
	OutcomeObtained    = "obtained"     // Obtain, ObtainMulti: the lock was taken
	OutcomeNotObtained = "not_obtained" // Obtain, ObtainMulti: held by another token until the retries ran out
	OutcomeOK          = "ok"           // Refresh, Release, TTL: done
	OutcomeLost        = "lost"         // Refresh, Release: the lock was no longer held by its token
	OutcomeError       = "error"        // any operation: an error (see error.type)
)

// opInfo holds what is fixed for one operation, made at construction.
type opInfo struct {
	spanName string
	start    []trace.SpanStartOption
	obtain   bool                            // Obtain or ObtainMulti
	outcome  [numOutcomes]attribute.KeyValue // the Outcome attribute, by redislock.Outcome
	errType  [numErrTypes]attribute.KeyValue // the error.type attribute, by errType
	add      [numOutcomes][]metric.AddOption
	record   [numOutcomes][]metric.RecordOption
	errAdd   [numErrTypes][]metric.AddOption
}

func newOpInfo(op redislock.Op, extra []attribute.KeyValue) opInfo {
	base := []attribute.KeyValue{semconv.DBSystemNameRedis, semconv.DBOperationName(op.String())}
	base = append(base, extra...)
	info := opInfo{
		spanName: "redislock." + op.String(),
		start: []trace.SpanStartOption{
			trace.WithSpanKind(trace.SpanKindInternal),
			trace.WithAttributes(base...),
		},
		obtain: op.IsObtain(),
	}
	for out := range numOutcomes {
		kv := AttrOutcome.String(outcomeName(op, redislock.Outcome(out)))
		info.outcome[out] = kv
		set := attribute.NewSet(append(base[:len(base):len(base)], kv)...)
		info.add[out] = []metric.AddOption{metric.WithAttributeSet(set)}
		info.record[out] = []metric.RecordOption{metric.WithAttributeSet(set)}
	}
	for et := range numErrTypes {
		kv := semconv.ErrorTypeKey.String(errTypeNames[et])
		info.errType[et] = kv
		set := attribute.NewSet(append(base[:len(base):len(base)], kv)...)
		info.errAdd[et] = []metric.AddOption{metric.WithAttributeSet(set)}
	}
	return info
}

// outcomeName is the value of the Outcome attribute.
func outcomeName(op redislock.Op, out redislock.Outcome) string {
	obtain := op.IsObtain()
	switch out {
	case redislock.OutcomeOK:
		if obtain {
			return OutcomeObtained
		}
		return OutcomeOK
	case redislock.OutcomeNotObtained:
		return OutcomeNotObtained
	case redislock.OutcomeLost:
		return OutcomeLost
	default:
		return OutcomeError
	}
}

// attrBuf holds the attributes that End sets on a span: at most 13.
type attrBuf [13]attribute.KeyValue

// attrBufs recycles the attrBufs of annotate: a span's SetAttributes copies
// what it keeps (the SDK's does), as a function given a variadic argument
// does, so the buffer is free again once it returns.
var attrBufs = sync.Pool{New: func() any { return new(attrBuf) }}

// annotate sets the attributes, and the status, of a recording span.
func (o *Observer) annotate(span trace.Span, info *opInfo, ev *redislock.Event, out redislock.Outcome, et errType) {
	buf := attrBufs.Get().(*attrBuf)
	defer func() {
		clear(buf[:])
		attrBufs.Put(buf)
	}()
	attrs := append(buf[:0],
		AttrKeyCount.Int(len(ev.Keys)),
		AttrAttempts.Int(ev.Attempts),
	)
	if info.obtain {
		attrs = append(attrs, AttrContended.Int(ev.Contended))
		if waits := ev.WokenByRelease + ev.WokenByExpiry + ev.WokenByBackoff; waits > 0 {
			attrs = append(attrs,
				AttrWokenByRelease.Int(ev.WokenByRelease),
				AttrWokenByExpiry.Int(ev.WokenByExpiry),
				AttrWokenByBackoff.Int(ev.WokenByBackoff))
		}
	}
	if ev.NodesGranted+ev.NodesRefused+ev.NodesFailed > 0 {
		attrs = append(attrs,
			AttrNodesGranted.Int(ev.NodesGranted),
			AttrNodesRefused.Int(ev.NodesRefused),
			AttrNodesFailed.Int(ev.NodesFailed))
	}
	if ev.TTL > 0 {
		attrs = append(attrs, AttrTTL.Float64(ev.TTL.Seconds()))
	}
	if ev.Held > 0 {
		attrs = append(attrs, AttrHeld.Float64(ev.Held.Seconds()))
	}
	attrs = append(attrs, info.outcome[out])
	if out == redislock.OutcomeError {
		attrs = append(attrs, info.errType[et])
	}
	if o.withKeys {
		attrs = append(attrs, AttrKeys.StringSlice(ev.Keys))
	}
	span.SetAttributes(attrs...)
	if out == redislock.OutcomeError {
		// The error message names a key: it is recorded only WithKeys.
		desc := errTypeNames[et]
		if o.withKeys && ev.Err != nil {
			desc = ev.Err.Error()
		}
		span.SetStatus(codes.Error, desc)
	}
}
