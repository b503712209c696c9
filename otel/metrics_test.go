package redislockotel_test

import (
	"context"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/seed-223c80a0/redislock"
	redislockotel "github.com/seed-223c80a0/redislock/otel"
)

func noopOptions() []redislockotel.Option {
	return []redislockotel.Option{
		redislockotel.WithTracerProvider(tracenoop.NewTracerProvider()),
		redislockotel.WithMeterProvider(metricnoop.NewMeterProvider()),
	}
}

// collect returns the metrics of this package by name, checking their scope.
func (tm *telemetry) collect(t *testing.T) map[string]metricdata.Metrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, tm.reader.Collect(context.Background(), &rm))
	out := map[string]metricdata.Metrics{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != redislockotel.ScopeName {
			continue
		}
		assert.Equal(t, redislockotel.Version, sm.Scope.Version)
		assert.Equal(t, semconv.SchemaURL, sm.Scope.SchemaURL)
		for _, m := range sm.Metrics {
			out[m.Name] = m
		}
	}
	return out
}

// setKey writes an attribute set as "k=v,k=v", sorted, leaving out
// db.system.name (checked to be "redis" on its own).
func setKey(t *testing.T, set attribute.Set) string {
	t.Helper()
	v, ok := set.Value(semconv.DBSystemNameKey)
	assert.True(t, ok && v.AsString() == "redis", "db.system.name of %v", set.Encoded(attribute.DefaultEncoder()))
	var parts []string
	for _, kv := range set.ToSlice() {
		if kv.Key != semconv.DBSystemNameKey {
			parts = append(parts, string(kv.Key)+"="+kv.Value.String())
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// sums returns the points of a monotonic int64 counter by attribute set.
func sums(t *testing.T, m metricdata.Metrics) map[string]int64 {
	t.Helper()
	sum, ok := m.Data.(metricdata.Sum[int64])
	require.True(t, ok, "%s is an int64 sum: %T", m.Name, m.Data)
	assert.True(t, sum.IsMonotonic, "%s is monotonic", m.Name)
	assert.Equal(t, metricdata.CumulativeTemporality, sum.Temporality)
	out := map[string]int64{}
	for _, dp := range sum.DataPoints {
		out[setKey(t, dp.Attributes)] = dp.Value
	}
	return out
}

// counts returns the counts of a float64 histogram by attribute set, and
// checks that every recorded value is positive and within maxSum.
func counts(t *testing.T, m metricdata.Metrics, maxSum float64) map[string]uint64 {
	t.Helper()
	h, ok := m.Data.(metricdata.Histogram[float64])
	require.True(t, ok, "%s is a float64 histogram: %T", m.Name, m.Data)
	out := map[string]uint64{}
	for _, dp := range h.DataPoints {
		out[setKey(t, dp.Attributes)] = dp.Count
		assert.Greater(t, dp.Sum, 0.0, "%s sum", m.Name)
		assert.Less(t, dp.Sum, maxSum, "%s sum", m.Name)
		assert.NotEmpty(t, dp.Bounds, "%s has explicit buckets", m.Name)
	}
	return out
}

// TestObserver_metrics does a known sequence of operations against
// miniredis and a real redis-server, then checks every instrument: name,
// unit, kind, and each point's attributes and value.
func TestObserver_metrics(t *testing.T) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			client, _ := be.start(t)
			tm := newTelemetry(t)
			locker := redislock.New(client, redislockotel.Instrument(tm.options(
				redislockotel.WithAttributes(attribute.String("pool", "p")))...))
			plain := redislock.New(client)
			ctx := context.Background()

			// Two obtained and released, one of them ObtainMulti.
			lock, err := locker.Obtain(ctx, "m:a", time.Second, nil)
			require.NoError(t, err)
			multi, err := locker.ObtainMulti(ctx, []string{"{m}:b", "{m}:c"}, time.Second, nil)
			require.NoError(t, err)
			time.Sleep(2 * time.Millisecond)
			require.NoError(t, lock.Release(ctx))
			require.NoError(t, multi.Release(ctx))

			// One not obtained after 3 round trips that found it held.
			_, err = plain.Obtain(ctx, "m:held", time.Minute, nil)
			require.NoError(t, err)
			_, err = locker.Obtain(ctx, "m:held", time.Minute,
				&redislock.Options{RetryStrategy: redislock.LimitRetry(redislock.LinearBackoff(time.Millisecond), 2)})
			require.ErrorIs(t, err, redislock.ErrNotObtained)

			// Two errors: a ctx canceled, a bad TTL.
			canceled, cancel := context.WithCancel(ctx)
			cancel()
			_, err = locker.Obtain(canceled, "m:d", time.Second, nil)
			require.ErrorIs(t, err, context.Canceled)
			_, err = locker.Obtain(ctx, "m:d", -time.Second, nil)
			require.ErrorIs(t, err, redislock.ErrInvalidTTL)

			// One lock lost: Refresh and Release find it gone.
			lost, err := locker.Obtain(ctx, "m:e", time.Minute, nil)
			require.NoError(t, err)
			require.NoError(t, client.Do(ctx, client.B().Del().Key("m:e").Build()).Error())
			require.ErrorIs(t, lost.Refresh(ctx, time.Minute, nil), redislock.ErrNotObtained)
			require.ErrorIs(t, lost.Release(ctx), redislock.ErrLockNotHeld)

			got := tm.collect(t)
			want := map[string]struct{ unit, desc string }{
				"redislock.obtains":         {"{obtain}", "Obtain and ObtainMulti calls"},
				"redislock.contentions":     {"{attempt}", "found the lock held"},
				"redislock.obtain.duration": {"s", "waits between retries included"},
				"redislock.hold.duration":   {"s", "from the obtain of a lock to its Release"},
				"redislock.lost":            {"{lock}", "no longer held"},
				"redislock.errors":          {"{error}", "error.type"},
			}
			require.Len(t, got, len(want), "metrics: %v", got)
			for name, w := range want {
				assert.Equal(t, w.unit, got[name].Unit, name)
				assert.Contains(t, got[name].Description, w.desc, name)
			}

			assert.Equal(t, map[string]int64{
				"db.operation.name=obtain,pool=p,redislock.outcome=obtained":       2,
				"db.operation.name=obtain_multi,pool=p,redislock.outcome=obtained": 1,
				"db.operation.name=obtain,pool=p,redislock.outcome=not_obtained":   1,
				"db.operation.name=obtain,pool=p,redislock.outcome=error":          2,
			}, sums(t, got["redislock.obtains"]))
			assert.Equal(t, map[string]int64{
				// Three attempts and the one that queued the waiter.
				"db.operation.name=obtain,pool=p,redislock.outcome=not_obtained": 4,
			}, sums(t, got["redislock.contentions"]))
			assert.Equal(t, map[string]uint64{
				"db.operation.name=obtain,pool=p,redislock.outcome=obtained":       2,
				"db.operation.name=obtain_multi,pool=p,redislock.outcome=obtained": 1,
				"db.operation.name=obtain,pool=p,redislock.outcome=not_obtained":   1,
				"db.operation.name=obtain,pool=p,redislock.outcome=error":          2,
			}, counts(t, got["redislock.obtain.duration"], 10))
			assert.Equal(t, map[string]uint64{
				"db.operation.name=release,pool=p,redislock.outcome=ok":   2,
				"db.operation.name=release,pool=p,redislock.outcome=lost": 1,
			}, counts(t, got["redislock.hold.duration"], 10))
			assert.Equal(t, map[string]int64{
				"db.operation.name=refresh,pool=p,redislock.outcome=lost": 1,
				"db.operation.name=release,pool=p,redislock.outcome=lost": 1,
			}, sums(t, got["redislock.lost"]))
			assert.Equal(t, map[string]int64{
				"db.operation.name=obtain,error.type=canceled,pool=p":    1,
				"db.operation.name=obtain,error.type=invalid_ttl,pool=p": 1,
			}, sums(t, got["redislock.errors"]))

			// The hold time of the lock released after 2ms is at least that.
			h := got["redislock.hold.duration"].Data.(metricdata.Histogram[float64])
			for _, dp := range h.DataPoints {
				if out, _ := dp.Attributes.Value("redislock.outcome"); out.AsString() == "ok" {
					least, ok := dp.Min.Value()
					assert.True(t, ok)
					assert.GreaterOrEqual(t, least, 0.0019)
				}
			}
		})
	}
}
