package redislockotel

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

const (
	// ScopeName is the instrumentation scope of the tracer and the meter:
	// this package's import path.
	ScopeName = "github.com/seed-223c80a0/redislock/otel"

	// Version is the version of this instrumentation, reported with
	// ScopeName.
	Version = "0.1.0"
)

// config is what the Options set.
type config struct {
	tracerProvider trace.TracerProvider // nil: the global one
	meterProvider  metric.MeterProvider // nil: the global one
	attrs          []attribute.KeyValue
	withKeys       bool
}

// Option configures an Observer made by NewObserver or Instrument.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

// WithTracerProvider sets the TracerProvider the spans are made with.
// Default: the global one (otel.GetTracerProvider), which may be set after
// the Observer is made. A nil tp is ignored.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tracerProvider = tp
		}
	})
}

// WithMeterProvider sets the MeterProvider the instruments are made with.
// Default: the global one (otel.GetMeterProvider), which may be set after
// the Observer is made. A nil mp is ignored.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.meterProvider = mp
		}
	})
}

// WithAttributes adds attrs to every span and every measurement, for
// instance a db.namespace or the name of the service's lock pool. They are
// fixed when the Observer is made, so keep them low in cardinality. Several
// WithAttributes add up. Default: none.
func WithAttributes(attrs ...attribute.KeyValue) Option {
	return optionFunc(func(c *config) {
		c.attrs = append(c.attrs, attrs...)
	})
}

// WithKeys records the lock keys on the spans (the redislock.keys
// attribute), and the operation's error message, which names a key, as the
// span status description. Never on metrics, whose attributes stay low in
// cardinality. Default: off, and neither keys nor error messages are
// recorded; tokens and metadata are never recorded.
func WithKeys() Option {
	return optionFunc(func(c *config) {
		c.withKeys = true
	})
}
