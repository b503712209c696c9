package main

import (
	"math"
	"math/bits"
	"time"
)

// histogram counts durations in log-linear buckets, 1<<subBits per power of
// two, so that a quantile is within 1/16 (6%) of the true value whatever the
// length of the run; the mean and the max are exact. Each worker has its
// own; they are merged at the end.
type histogram struct {
	counts [61 << subBits]int64
	n      int64
	sum    time.Duration
	max    time.Duration
}

const subBits = 4

// bucket returns the index of the bucket of v (in ns): v itself under 16,
// then 16 buckets for each power of two.
func bucket(v uint64) int {
	if v < 1<<subBits {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1
	return (e+1)<<subBits + int(v>>e) - 1<<subBits
}

// upper returns the largest value that falls in bucket b.
func upper(b int) uint64 {
	if b < 1<<subBits {
		return uint64(b)
	}
	e := b>>subBits - 1
	m := uint64(b&(1<<subBits-1) + 1<<subBits)
	return (m+1)<<e - 1
}

// record adds one duration; a negative one counts as 0.
func (h *histogram) record(d time.Duration) {
	d = max(d, 0)
	h.counts[bucket(uint64(d))]++
	h.n++
	h.sum += d
	h.max = max(h.max, d)
}

// merge adds the counts of o to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.max = max(h.max, o.max)
}

// mean returns the exact mean duration, 0 when h is empty.
func (h *histogram) mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return h.sum / time.Duration(h.n)
}

// quantile returns the q-quantile (0 < q <= 1): the upper bound of the
// bucket that holds it, capped at the max.
func (h *histogram) quantile(q float64) time.Duration {
	rank := max(int64(math.Ceil(q*float64(h.n))), 1)
	var seen int64
	for b, c := range h.counts {
		if seen += c; seen >= rank {
			return min(time.Duration(upper(b)), h.max)
		}
	}
	return h.max
}
