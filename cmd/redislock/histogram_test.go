package main

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestHistogram_quantile checks the histogram against exact quantiles of a
// sorted sample: within 1/16 above, never below, and an exact max and mean.
func TestHistogram_quantile(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var h histogram
	var all []time.Duration
	var sum time.Duration
	for range 100_000 {
		// Log-uniform from 1ns to about 1s.
		d := time.Duration(1 << r.IntN(30))
		d += time.Duration(r.Int64N(int64(d)))
		h.record(d)
		all = append(all, d)
		sum += d
	}
	slices.Sort(all)
	require.Equal(t, all[len(all)-1], h.max)
	require.Equal(t, sum/time.Duration(len(all)), h.mean())
	for _, q := range []float64{0.01, 0.5, 0.9, 0.99, 0.999, 1} {
		exact := all[max(int(q*float64(len(all)))-1, 0)]
		got := h.quantile(q)
		require.GreaterOrEqual(t, got, exact, "q %v", q)
		require.LessOrEqual(t, float64(got), float64(exact)*(1+1.0/16)+1, "q %v", q)
	}

	// Every value falls in a bucket whose upper bound is at least the value
	// and within 1/16 of it.
	for _, v := range []uint64{0, 1, 15, 16, 17, 31, 32, 33, 1000, 1 << 40, 1<<40 + 12345, 1 << 62} {
		b := bucket(v)
		require.GreaterOrEqual(t, upper(b), v, "v %d", v)
		require.LessOrEqual(t, float64(upper(b)), float64(v)*(1+1.0/16)+1, "v %d", v)
		if b > 0 {
			require.Less(t, upper(b-1), v, "v %d", v)
		}
	}
	var empty histogram
	require.Zero(t, empty.mean())
}
