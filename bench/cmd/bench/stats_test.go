package main

import (
	"strings"
	"testing"
	"time"
)

func TestPercentileIsNearestRank(t *testing.T) {
	var s []time.Duration
	for i := 1; i <= 100; i++ {
		s = append(s, time.Duration(i))
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 50}, {95, 95}, {99, 99}, {100, 100}, {0, 1}, {0.5, 1}} {
		if got := percentile(s, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if got := percentile([]time.Duration{7}, 99); got != 7 {
		t.Errorf("one sample: p99 = %v", got)
	}
}

func TestSummarizeSortsACopy(t *testing.T) {
	in := []time.Duration{3, 1, 2}
	s := summarize("x", "x", in)
	if s.Min != 1 || s.Max != 3 || s.P50 != 2 || s.Mean != 2 || s.N != 3 {
		t.Errorf("summary %+v", s)
	}
	if in[0] != 3 {
		t.Error("summarize reordered its input")
	}
}

func TestFmtDur(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                        "0",
		800:                      "800ns",
		1530:                     "1.53µs",
		45700 * time.Microsecond: "45.7ms",
		2500 * time.Millisecond:  "2.5s",
		-148 * time.Microsecond:  "-148µs",
	} {
		if got := fmtDur(d); got != want {
			t.Errorf("fmtDur(%d) = %q, want %q", d, got, want)
		}
	}
}

func TestEvaluateGivesVerdictsOnMedians(t *testing.T) {
	r := report{Params: params{Callers: 50, MaxSize: 5, Hold: 100 * time.Millisecond}}
	r.add(summarize("a", "", []time.Duration{100, 100, 100}))
	r.add(summarize("b", "", []time.Duration{104, 104, 1000}))
	r.add(summarize("d.acquire", "", []time.Duration{time.Microsecond, 300 * time.Microsecond}))
	r.addRate(rate{Name: "g.pool.1", PerSec: 400000})
	r.add(summarize("size.wait", "", []time.Duration{time.Second}))
	r.evaluate()
	verdict := map[string]bool{}
	for _, g := range r.Goals {
		verdict[g.Name] = g.Pass
		if g.Name == "b/a" && (!g.Pass || g.StretchPass) {
			t.Errorf("b/a = %v: want PASS, stretch MISS", g.Value)
		}
	}
	for name, want := range map[string]bool{"d.p50": true, "d.p99": false, "g": false, "size": true} {
		if got, ok := verdict[name]; !ok || got != want {
			t.Errorf("goal %s: pass=%v (present %v), want %v", name, got, ok, want)
		}
	}
	var sb strings.Builder
	r.printTable(&sb)
	if !strings.Contains(sb.String(), "MISS") || !strings.Contains(sb.String(), "PASS") {
		t.Errorf("table lacks verdicts:\n%s", sb.String())
	}
}
