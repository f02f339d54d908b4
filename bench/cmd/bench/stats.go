package main

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Summary is the distribution of one measurement: percentiles of sorted
// samples, nearest-rank.
type Summary struct {
	Name  string        `json:"name"`  // short key, such as "a" or "d.acquire"
	Label string        `json:"label"` // what was timed
	N     int           `json:"n"`
	P50   time.Duration `json:"p50_ns"`
	P95   time.Duration `json:"p95_ns"`
	P99   time.Duration `json:"p99_ns"`
	Max   time.Duration `json:"max_ns"`
	Min   time.Duration `json:"min_ns"`
	Mean  time.Duration `json:"mean_ns"`

	samples []time.Duration // sorted; kept for the plot, not exported
}

// summarize sorts a copy of samples and computes the percentiles.
func summarize(name, label string, samples []time.Duration) Summary {
	s := Summary{Name: name, Label: label, N: len(samples)}
	if len(samples) == 0 {
		return s
	}
	sorted := slices.Clone(samples)
	slices.Sort(sorted)
	var sum time.Duration
	for _, d := range sorted {
		sum += d
	}
	s.samples = sorted
	s.Min = sorted[0]
	s.Max = sorted[len(sorted)-1]
	s.P50 = percentile(sorted, 50)
	s.P95 = percentile(sorted, 95)
	s.P99 = percentile(sorted, 99)
	s.Mean = sum / time.Duration(len(sorted))
	return s
}

// percentile returns the nearest-rank p-th percentile of sorted samples: the
// smallest sample such that at least p% of the samples are at or below it.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// median of float64 values (used for rates measured in a few rounds).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// fmtDur prints a duration with three significant digits in a unit that
// suits it.
func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d == 0:
		return "0"
	case d < time.Microsecond:
		return fmt.Sprintf("%dns", d.Nanoseconds())
	case d < time.Millisecond:
		return fmt.Sprintf("%.3gµs", float64(d)/float64(time.Microsecond))
	case d < time.Second:
		return fmt.Sprintf("%.3gms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.3gs", d.Seconds())
	}
}
