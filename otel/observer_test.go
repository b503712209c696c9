package redislockotel_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/seed-223c80a0/redislock"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

// telemetry is an SDK that records every span and every measurement.
type telemetry struct {
	spans  *tracetest.InMemoryExporter
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetry {
	t.Helper()
	tm := &telemetry{spans: tracetest.NewInMemoryExporter(), reader: sdkmetric.NewManualReader()}
	tm.tp = sdktrace.NewTracerProvider(sdktrace.WithSyncer(tm.spans), sdktrace.WithSampler(sdktrace.AlwaysSample()))
	tm.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(tm.reader))
	t.Cleanup(func() {
		assert.NoError(t, tm.tp.Shutdown(context.Background()))
		assert.NoError(t, tm.mp.Shutdown(context.Background()))
	})
	return tm
}

// options are the Options that send to tm, then extra.
func (tm *telemetry) options(extra ...redislockotel.Option) []redislockotel.Option {
	return append([]redislockotel.Option{
		redislockotel.WithTracerProvider(tm.tp),
		redislockotel.WithMeterProvider(tm.mp),
	}, extra...)
}

// lockSpans returns the ended spans of this package, in the order they ended.
func (tm *telemetry) lockSpans() []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range tm.spans.GetSpans() {
		if s.InstrumentationScope.Name == redislockotel.ScopeName {
			out = append(out, s)
		}
	}
	return out
}

// positive stands, in an expected attribute map, for any float64 over 0.
type positive struct{}

// wantSpan is a span that a scenario expects.
type wantSpan struct {
	name   string
	attrs  map[string]any // int, float64, string, []string, or positive{}
	status codes.Code
	desc   string
}

// attrsOf returns the attributes of a span as Go values, for comparing.
func attrsOf(kvs []attribute.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// base returns the attributes that every span of op has, with more.
func base(op string, more map[string]any) map[string]any {
	m := map[string]any{
		"db.system.name":    "redis",
		"db.operation.name": op,
	}
	for k, v := range more {
		m[k] = v
	}
	return m
}

func checkSpan(t *testing.T, got tracetest.SpanStub, want wantSpan, parent trace.SpanContext) {
	t.Helper()
	assert.Equal(t, want.name, got.Name)
	assert.Equal(t, trace.SpanKindInternal, got.SpanKind, "span kind of %s", got.Name)
	assert.Equal(t, parent.TraceID(), got.Parent.TraceID(), "trace of %s", got.Name)
	assert.Equal(t, parent.SpanID(), got.Parent.SpanID(), "%s is a child of the caller's span", got.Name)
	assert.Equal(t, redislockotel.ScopeName, got.InstrumentationScope.Name)
	assert.Equal(t, redislockotel.Version, got.InstrumentationScope.Version)
	assert.Equal(t, semconv.SchemaURL, got.InstrumentationScope.SchemaURL)
	assert.Equal(t, want.status, got.Status.Code, "status of %s", got.Name)
	assert.Equal(t, want.desc, got.Status.Description, "status description of %s", got.Name)

	gotAttrs := attrsOf(got.Attributes)
	for k, v := range want.attrs {
		if _, ok := v.(positive); ok {
			f, isFloat := gotAttrs[k].(float64)
			assert.True(t, isFloat && f > 0, "%s of %s: %v, want a positive float64", k, got.Name, gotAttrs[k])
			gotAttrs[k] = v
		}
	}
	assert.Equal(t, want.attrs, gotAttrs, "attributes of %s", got.Name)
}

// scenario is a sequence of operations and the spans it should make.
type scenario struct {
	name string
	// run does the operations with locker (instrumented) and plain (the same
	// server, not instrumented). Keys are prefixed with p.
	run  func(t *testing.T, ctx context.Context, env *env)
	want []wantSpan
	// wantMini, when set, replaces want against miniredis.
	wantMini []wantSpan
}

type env struct {
	locker, plain *redislock.Client
	client        rueidis.Client
	key           func(name string) string
}

func spanScenarios() []scenario {
	return []scenario{{
		name: "obtain and release",
		run: func(t *testing.T, ctx context.Context, e *env) {
			lock, err := e.locker.Obtain(ctx, e.key("a"), time.Second, nil)
			require.NoError(t, err)
			time.Sleep(time.Millisecond)
			require.NoError(t, lock.Release(ctx))
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "obtained",
			}),
		}, {
			name: "redislock.release",
			attrs: base("release", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1),
				"redislock.held": positive{}, "redislock.outcome": "ok",
			}),
		}},
	}, {
		name: "obtain multi",
		run: func(t *testing.T, ctx context.Context, e *env) {
			_, err := e.locker.ObtainMulti(ctx, []string{e.key("{m}1"), e.key("{m}2")}, 500*time.Millisecond, nil)
			require.NoError(t, err)
		},
		want: []wantSpan{{
			name: "redislock.obtain_multi",
			attrs: base("obtain_multi", map[string]any{
				"redislock.key_count": int64(2), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 0.5, "redislock.outcome": "obtained",
			}),
		}},
	}, {
		name: "obtain shared and semaphore",
		run: func(t *testing.T, ctx context.Context, e *env) {
			_, err := e.locker.ObtainShared(ctx, e.key("s"), time.Second, nil)
			require.NoError(t, err)
			_, err = e.locker.ObtainSemaphore(ctx, e.key("p"), 2, time.Second, nil)
			require.NoError(t, err)
		},
		want: []wantSpan{{
			name: "redislock.obtain_shared",
			attrs: base("obtain_shared", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "obtained",
			}),
		}, {
			name: "redislock.obtain_semaphore",
			attrs: base("obtain_semaphore", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "obtained",
			}),
		}},
	}, {
		name: "refresh and ttl",
		run: func(t *testing.T, ctx context.Context, e *env) {
			lock, err := e.locker.Obtain(ctx, e.key("a"), time.Second, nil)
			require.NoError(t, err)
			require.NoError(t, lock.Refresh(ctx, 2*time.Second, nil))
			ttl, err := lock.TTL(ctx)
			require.NoError(t, err)
			assert.Greater(t, ttl, time.Second)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "obtained",
			}),
		}, {
			name: "redislock.refresh",
			attrs: base("refresh", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1),
				"redislock.ttl": 2.0, "redislock.outcome": "ok",
			}),
		}, {
			name: "redislock.ttl",
			attrs: base("ttl", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.outcome": "ok",
			}),
		}},
	}, {
		name: "not obtained is an outcome",
		run: func(t *testing.T, ctx context.Context, e *env) {
			_, err := e.plain.Obtain(ctx, e.key("a"), time.Minute, nil)
			require.NoError(t, err)
			opt := &redislock.Options{RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 2)}
			_, err = e.locker.Obtain(ctx, e.key("a"), time.Minute, opt)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				// The first attempt, the one that queues it in Redis, and
				// one after each of its two waits (ended by the backoff).
				"redislock.key_count": int64(1), "redislock.attempts": int64(4), "redislock.contended": int64(4),
				"redislock.woken.release": int64(0), "redislock.woken.expiry": int64(0), "redislock.woken.backoff": int64(2),
				"redislock.ttl": 60.0, "redislock.outcome": "not_obtained",
			}),
		}},
	}, {
		name: "a wait woken by the release",
		run: func(t *testing.T, ctx context.Context, e *env) {
			holder, err := e.plain.Obtain(ctx, e.key("a"), time.Minute, nil)
			require.NoError(t, err)
			go func() {
				// Once the waiter has queued in Redis (beside the key).
				queue := e.key("a") + ":redislock-waiters"
				for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
					if n, err := e.client.Do(ctx, e.client.B().Llen().Key(queue).Build()).AsInt64(); err == nil && n > 0 {
						break
					}
				}
				assert.NoError(t, holder.Release(ctx))
			}()
			opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Minute)}
			_, err = e.locker.Obtain(ctx, e.key("a"), time.Minute, opt)
			require.NoError(t, err)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				// The first attempt and the one that queues it; the lock
				// passes to it with the release, without another.
				"redislock.key_count": int64(1), "redislock.attempts": int64(2), "redislock.contended": int64(2),
				"redislock.woken.release": int64(1), "redislock.woken.expiry": int64(0), "redislock.woken.backoff": int64(0),
				"redislock.ttl": 60.0, "redislock.outcome": "obtained",
			}),
		}},
	}, {
		name: "lost is an outcome",
		run: func(t *testing.T, ctx context.Context, e *env) {
			lock, err := e.locker.Obtain(ctx, e.key("a"), time.Minute, nil)
			require.NoError(t, err)
			require.NoError(t, e.client.Do(ctx, e.client.B().Del().Key(e.key("a")).Build()).Error())
			require.ErrorIs(t, lock.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
			require.ErrorIs(t, lock.Release(ctx), redislock.ErrLockNotHeld)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 60.0, "redislock.outcome": "obtained",
			}),
		}, {
			name: "redislock.refresh",
			attrs: base("refresh", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1),
				"redislock.ttl": 60.0, "redislock.outcome": "lost",
			}),
		}, {
			name: "redislock.release",
			attrs: base("release", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1),
				"redislock.held": positive{}, "redislock.outcome": "lost",
			}),
		}},
	}, {
		name: "ctx canceled is an error",
		run: func(t *testing.T, ctx context.Context, e *env) {
			ctx, cancel := context.WithCancel(ctx)
			cancel()
			_, err := e.locker.Obtain(ctx, e.key("a"), time.Second, nil)
			require.ErrorIs(t, err, context.Canceled)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "canceled",
			}),
			status: codes.Error, desc: "canceled",
		}},
	}, {
		name: "deadline while waiting is an error",
		run: func(t *testing.T, ctx context.Context, e *env) {
			_, err := e.plain.Obtain(ctx, e.key("a"), time.Minute, nil)
			require.NoError(t, err)
			// Time enough for both attempts on a loaded machine; the
			// backoff outlasts it.
			ctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
			defer cancel()
			opt := &redislock.Options{RetryStrategy: redislock.LinearBackoff(time.Minute)}
			_, err = e.locker.Obtain(ctx, e.key("a"), time.Minute, opt)
			require.ErrorIs(t, err, redislock.ErrNotObtained)
			require.ErrorIs(t, err, context.DeadlineExceeded)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				// The first attempt and the one that queues it; the wait
				// ends by the deadline, which is no wake-up.
				"redislock.key_count": int64(1), "redislock.attempts": int64(2), "redislock.contended": int64(2),
				"redislock.ttl": 60.0, "redislock.outcome": "error", "error.type": "deadline_exceeded",
			}),
			status: codes.Error, desc: "deadline_exceeded",
		}},
	}, {
		name: "bad input is an error",
		run: func(t *testing.T, ctx context.Context, e *env) {
			_, err := e.locker.Obtain(ctx, e.key("a"), 0, nil)
			require.ErrorIs(t, err, redislock.ErrInvalidTTL)
			_, err = e.locker.ObtainMulti(ctx, []string{e.key("a"), e.key("a")}, time.Second, nil)
			require.ErrorIs(t, err, redislock.ErrInvalidKey)
			_, err = e.locker.Obtain(ctx, e.key("a"), time.Second, &redislock.Options{Token: "t\x00"})
			require.ErrorIs(t, err, redislock.ErrInvalidToken)
			_, err = e.locker.Obtain(ctx, e.key("a"), time.Second, &redislock.Options{Metadata: strings.Repeat("m", redislock.MaxMetadataLen+1)})
			require.ErrorIs(t, err, redislock.ErrInvalidMetadata)
			_, err = e.locker.ObtainSemaphore(ctx, e.key("a"), 0, time.Second, nil)
			require.ErrorIs(t, err, redislock.ErrInvalidLimit)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.outcome": "error", "error.type": "invalid_ttl",
			}),
			status: codes.Error, desc: "invalid_ttl",
		}, {
			name: "redislock.obtain_multi",
			attrs: base("obtain_multi", map[string]any{
				"redislock.key_count": int64(2), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "invalid_key",
			}),
			status: codes.Error, desc: "invalid_key",
		}, {
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "invalid_token",
			}),
			status: codes.Error, desc: "invalid_token",
		}, {
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "invalid_metadata",
			}),
			status: codes.Error, desc: "invalid_metadata",
		}, {
			name: "redislock.obtain_semaphore",
			attrs: base("obtain_semaphore", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(0), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "invalid_limit",
			}),
			status: codes.Error, desc: "invalid_limit",
		}},
	}, {
		name: "a Redis error reply is an error by its prefix",
		run: func(t *testing.T, ctx context.Context, e *env) {
			require.NoError(t, e.client.Do(ctx, e.client.B().Lpush().Key(e.key("a")).Element("x").Build()).Error())
			_, err := e.locker.Obtain(ctx, e.key("a"), time.Second, &redislock.Options{Token: "mine"})
			_, isRedis := rueidis.IsRedisErr(errors.Unwrap(err))
			require.True(t, isRedis, "a Redis error reply: %v", err)
		},
		want: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "WRONGTYPE",
			}),
			status: codes.Error, desc: "WRONGTYPE",
		}},
		// miniredis words a script error "Error compiling script ...": a
		// prefix Redis does not have.
		wantMini: []wantSpan{{
			name: "redislock.obtain",
			attrs: base("obtain", map[string]any{
				"redislock.key_count": int64(1), "redislock.attempts": int64(1), "redislock.contended": int64(0),
				"redislock.ttl": 1.0, "redislock.outcome": "error", "error.type": "redis_error",
			}),
			status: codes.Error, desc: "redis_error",
		}},
	}}
}

// TestObserver_spans runs each scenario against miniredis and a real
// redis-server and checks every span: its name, kind, parent, scope,
// attributes and status.
func TestObserver_spans(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			client, mr := be.start(t)
			for i, sc := range spanScenarios() {
				t.Run(sc.name, func(t *testing.T) {
					tm := newTelemetry(t)
					prefix := fmt.Sprintf("spans:%d:", i)
					e := &env{
						locker: redislock.New(client, redislockotel.Instrument(tm.options()...)),
						plain:  redislock.New(client),
						client: client,
						key:    func(name string) string { return prefix + name },
					}
					ctx, parent := tm.tp.Tracer("test").Start(context.Background(), "caller")
					sc.run(t, ctx, e)
					parent.End()

					wants := sc.want
					if mr != nil && sc.wantMini != nil {
						wants = sc.wantMini
					}
					got := tm.lockSpans()
					require.Len(t, got, len(wants), "spans: %v", spanNames(got))
					for j, want := range wants {
						checkSpan(t, got[j], want, parent.SpanContext())
						checkNoSecrets(t, got[j], prefix)
					}
				})
			}
		})
	}
}

func spanNames(spans []tracetest.SpanStub) []string {
	names := make([]string, len(spans))
	for i, s := range spans {
		names[i] = s.Name
	}
	return names
}

// checkNoSecrets fails when a span holds a key (they all start with prefix)
// or a token anywhere: in an attribute, its status or an event.
func checkNoSecrets(t *testing.T, s tracetest.SpanStub, prefix string) {
	t.Helper()
	text := fmt.Sprint(s.Attributes, s.Status, s.Events, s.Links)
	assert.NotContains(t, text, prefix, "span %s records a key", s.Name)
	assert.NotContains(t, text, "mine", "span %s records a token", s.Name)
}

// TestObserver_withKeys checks that WithKeys records the keys, and the error
// message as the status description.
func TestObserver_withKeys(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			client, _ := be.start(t)
			tm := newTelemetry(t)
			locker := redislock.New(client, redislockotel.Instrument(tm.options(redislockotel.WithKeys())...))
			ctx := context.Background()

			lock, err := locker.ObtainMulti(ctx, []string{"{k}1", "{k}2"}, time.Second, &redislock.Options{Token: "secret-token", Metadata: "secret-meta"})
			require.NoError(t, err)
			require.NoError(t, lock.Release(ctx))
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			_, err = locker.Obtain(canceled, "{k}3", time.Second, nil)
			require.Error(t, err)

			got := tm.lockSpans()
			require.Len(t, got, 3)
			for i, keys := range [][]string{{"{k}1", "{k}2"}, {"{k}1", "{k}2"}, {"{k}3"}} {
				assert.Equal(t, keys, attrsOf(got[i].Attributes)["redislock.keys"], "keys of span %d", i)
				text := fmt.Sprint(got[i].Attributes, got[i].Status, got[i].Events)
				assert.NotContains(t, text, "secret", "span %s records a token or metadata", got[i].Name)
			}
			assert.Equal(t, codes.Error, got[2].Status.Code)
			assert.Equal(t, err.Error(), got[2].Status.Description)
			assert.Contains(t, got[2].Status.Description, "{k}3")
		})
	}
}

// TestObserver_withAttributes checks that WithAttributes reaches every span.
func TestObserver_withAttributes(t *testing.T) {
	client, _ := backends[0].start(t)
	tm := newTelemetry(t)
	extra := attribute.String("db.namespace", "0")
	locker := redislock.New(client, redislockotel.Instrument(tm.options(
		redislockotel.WithAttributes(extra),
		redislockotel.WithAttributes(attribute.String("pool", "orders")),
	)...))
	ctx := context.Background()
	lock, err := locker.Obtain(ctx, "k", time.Second, nil)
	require.NoError(t, err)
	require.NoError(t, lock.Release(ctx))

	for _, s := range tm.lockSpans() {
		attrs := attrsOf(s.Attributes)
		assert.Equal(t, "0", attrs["db.namespace"], s.Name)
		assert.Equal(t, "orders", attrs["pool"], s.Name)
	}
}

// TestObserver_nilProviders checks that nil providers are ignored.
func TestObserver_nilProviders(t *testing.T) {
	client, _ := backends[0].start(t)
	tm := newTelemetry(t)
	locker := redislock.New(client, redislockotel.Instrument(tm.options(
		redislockotel.WithTracerProvider(nil),
		redislockotel.WithMeterProvider(nil),
	)...))
	_, err := locker.Obtain(context.Background(), "k", time.Second, nil)
	require.NoError(t, err)
	assert.Len(t, tm.lockSpans(), 1)
	assert.NotEmpty(t, tm.collect(t), "measurements reach the MeterProvider set before the nil one")
}

// ctxClient records the span of the ctx of every command it is given.
type ctxClient struct {
	rueidis.Client
	spans chan trace.SpanContext
}

func (c *ctxClient) Do(ctx context.Context, cmd rueidis.Completed) rueidis.RedisResult {
	c.spans <- trace.SpanContextFromContext(ctx)
	return c.Client.Do(ctx, cmd)
}

// TestObserver_commandsNest checks that the Redis commands of an operation
// run with the operation's span in their ctx, so that a rueidisotel client
// underneath would make its spans children of it.
func TestObserver_commandsNest(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			client, _ := be.start(t)
			tm := newTelemetry(t)
			cc := &ctxClient{Client: client, spans: make(chan trace.SpanContext, 16)}
			locker := redislock.New(cc, redislockotel.Instrument(tm.options()...))
			ctx := context.Background()

			lock, err := locker.Obtain(ctx, "nest", time.Second, nil)
			require.NoError(t, err)
			require.NoError(t, lock.Refresh(ctx, time.Second, nil))
			_, err = lock.TTL(ctx)
			require.NoError(t, err)
			require.NoError(t, lock.Release(ctx))

			// Each operation sends one command or, the first time a script
			// runs, two (EVALSHA, then EVAL on NOSCRIPT): in order, each in
			// the span of its operation.
			got := tm.lockSpans()
			require.Len(t, got, 4)
			close(cc.spans)
			perSpan := make([]int, len(got))
			i, n := 0, 0
			for sc := range cc.spans {
				for i < len(got) && !sc.Equal(got[i].SpanContext) {
					i++
				}
				require.Less(t, i, len(got), "command %d runs in the span of its operation, in order", n)
				perSpan[i]++
				n++
			}
			for i, c := range perSpan {
				assert.True(t, c == 1 || c == 2, "%s sent %d commands in its span", got[i].Name, c)
			}
		})
	}
}

// TestObserver_clientClosed checks the error.type of a closed client.
func TestObserver_clientClosed(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			client, _ := be.start(t)
			tm := newTelemetry(t)
			locker := redislock.New(client, redislockotel.Instrument(tm.options()...))
			client.Close()
			_, err := locker.Obtain(context.Background(), "k", time.Second, nil)
			require.ErrorIs(t, err, rueidis.ErrClosing)

			got := tm.lockSpans()
			require.Len(t, got, 1)
			assert.Equal(t, "client_closed", attrsOf(got[0].Attributes)["error.type"])
			assert.Equal(t, codes.Error, got[0].Status.Code)
		})
	}
}

type callerKey struct{}

// TestObserver_noopProviders checks that, with the noop providers, Begin
// starts no span: it returns the caller's ctx itself.
func TestObserver_noopProviders(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []redislockotel.Option
	}{
		{"global unset", nil},
		{"noop", noopOptions()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := redislockotel.NewObserver(tc.opts...)
			ctx := context.WithValue(context.Background(), callerKey{}, 1)
			ev := &redislock.Event{Op: redislock.OpObtain, Keys: []string{"k"}, TTL: time.Second, Start: time.Now()}
			got := o.Begin(ctx, ev)
			assert.Equal(t, ctx, got, "Begin returns the ctx it was given")
			ev.Outcome, ev.Err = redislock.OutcomeError, context.Canceled
			o.End(got, ev)
		})
	}
}

// Every attribute, span and metric name of the package is fixed: the
// exported names match the strings the tests check.
func TestNames(t *testing.T) {
	keys := []attribute.Key{
		redislockotel.AttrKeyCount, redislockotel.AttrAttempts, redislockotel.AttrContended,
		redislockotel.AttrTTL, redislockotel.AttrHeld, redislockotel.AttrOutcome, redislockotel.AttrKeys,
	}
	for _, k := range keys {
		assert.True(t, strings.HasPrefix(string(k), "redislock."), k)
	}
	assert.Equal(t, []string{"obtained", "not_obtained", "ok", "lost", "error"}, []string{
		redislockotel.OutcomeObtained, redislockotel.OutcomeNotObtained, redislockotel.OutcomeOK,
		redislockotel.OutcomeLost, redislockotel.OutcomeError,
	})
	metrics := []string{
		redislockotel.MetricObtains, redislockotel.MetricContentions, redislockotel.MetricObtainDuration,
		redislockotel.MetricHoldDuration, redislockotel.MetricLost, redislockotel.MetricErrors,
	}
	assert.Equal(t, []string{
		"redislock.obtains", "redislock.contentions", "redislock.obtain.duration",
		"redislock.hold.duration", "redislock.lost", "redislock.errors",
	}, metrics)
	assert.Equal(t, "github.com/seed-223c80a0/redislock/otel", redislockotel.ScopeName)
}
