package main

import (
	"fmt"
	"io"
	"math"
	"strings"
	"text/tabwriter"
	"time"
)

// report is everything a run measured; -json prints it as is.
type report struct {
	Machine          machine       `json:"machine"`
	Params           params        `json:"params"`
	Results          []Summary     `json:"results"`
	Rates            []rate        `json:"rates,omitempty"`
	Facts            []fact        `json:"facts,omitempty"`
	Goals            []goal        `json:"goals"`
	Notes            []string      `json:"notes,omitempty"`
	Group            []groupResult `json:"group,omitempty"`
	GroupParams      *groupParams  `json:"group_params,omitempty"`
	BackgroundErrors int64         `json:"background_errors"` // OnError calls of the run's pools
	Elapsed          string        `json:"elapsed"`
}

type machine struct {
	CPUs          int     `json:"cpus"`
	GOMAXPROCS    int     `json:"gomaxprocs"`
	CPUModel      string  `json:"cpu_model"`
	MemoryGiB     float64 `json:"memory_gib"`
	Kernel        string  `json:"kernel"`
	OS            string  `json:"os"`
	Go            string  `json:"go"`
	Docker        string  `json:"docker"`
	DockerAPI     string  `json:"docker_api"`
	StorageDriver string  `json:"storage_driver"`
	CgroupDriver  string  `json:"cgroup_driver"`
	Runtime       string  `json:"runtime"`
	// LoadStart and LoadEnd are /proc/loadavg at the start and the end of
	// the run: other work on the machine shows up here.
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

// rate is a throughput measured in a few timed windows; PerSec is their
// median.
type rate struct {
	Name    string    `json:"name"`
	Label   string    `json:"label"`
	PerSec  float64   `json:"per_sec"`
	Windows []float64 `json:"windows"` // per-window rates, in run order
	NsPerOp float64   `json:"ns_per_op"`
}

// fact is a single number worth reporting (soak figures, counters).
type fact struct {
	Name  string  `json:"name"`
	Label string  `json:"label"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// goal is one target of the issue, or an informative ratio (Target empty).
type goal struct {
	Name    string  `json:"name"`
	Label   string  `json:"label"`
	Value   float64 `json:"value"`
	Display string  `json:"display"`
	Target  string  `json:"target,omitempty"`
	Pass    bool    `json:"pass"`
	Stretch string  `json:"stretch,omitempty"`
	// StretchPass is set when there is a stretch target.
	StretchPass bool `json:"stretch_pass,omitempty"`
}

func (r *report) add(s Summary)            { r.Results = append(r.Results, s) }
func (r *report) addRate(x rate)           { r.Rates = append(r.Rates, x) }
func (r *report) note(s string)            { r.Notes = append(r.Notes, s) }
func (r *report) addFact(f fact)           { r.Facts = append(r.Facts, f) }
func (r *report) addGoal(g goal)           { r.Goals = append(r.Goals, g) }
func (r *report) notef(f string, a ...any) { r.note(fmt.Sprintf(f, a...)) }

func (r *report) find(name string) *Summary {
	for i := range r.Results {
		if r.Results[i].Name == name {
			return &r.Results[i]
		}
	}
	return nil
}

func (r *report) findRate(name string) *rate {
	for i := range r.Rates {
		if r.Rates[i].Name == name {
			return &r.Rates[i]
		}
	}
	return nil
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return math.NaN()
	}
	return float64(a) / float64(b)
}

// evaluate turns the measurements into the goals. Latency ratios
// compare medians (p50); the p95 ratio is shown beside them for information.
func (r *report) evaluate() {
	r.Goals = nil
	x := func(v float64) string { return fmt.Sprintf("%.3f×", v) }
	a, b, c, c2 := r.find("a"), r.find("b"), r.find("c"), r.find("c2")
	if a != nil && b != nil {
		v := ratio(b.P50, a.P50)
		r.addGoal(goal{Name: "b/a", Label: "(b)/(a) p50: pool exec cycle over bare exec", Value: v, Display: x(v),
			Target: "≤ 1.10", Pass: v <= 1.10, Stretch: "≤ 1.03", StretchPass: v <= 1.03})
		v95 := ratio(b.P95, a.P95)
		r.addGoal(goal{Name: "b/a.p95", Label: "(b)/(a) p95 (information)", Value: v95, Display: x(v95)})
		d := b.P50 - a.P50
		r.addGoal(goal{Name: "b-a", Label: "(b)-(a) p50 (difference of two noisy medians)", Value: float64(d), Display: fmtDur(d)})
		if ba, br := r.find("b.acquire"), r.find("b.return"); ba != nil && br != nil {
			own := ba.P50 + br.P50
			r.addGoal(goal{Name: "b.own", Label: "(b) Acquire + Return p50 inside (b): the pool's own part, timed directly", Value: float64(own),
				Display: fmt.Sprintf("%s (%.4f× of (a))", fmtDur(own), 1+ratio(own, a.P50))})
		}
	}
	if h := r.find("h"); h != nil {
		r.addGoal(goal{Name: "h.p50", Label: "(h) agent path: Acquire + Exec(echo hi) + Return p50", Value: float64(h.P50), Display: fmtDur(h.P50),
			Target: "≤ 2ms", Pass: h.P50 <= 2*time.Millisecond})
		if b != nil {
			v := ratio(b.P50, h.P50)
			r.addGoal(goal{Name: "b/h", Label: "(b)/(h) p50: docker exec path over agent path", Value: v, Display: x(v), Target: "≥ 20", Pass: v >= 20})
		}
		if a != nil {
			v := ratio(a.P50, h.P50)
			r.addGoal(goal{Name: "a/h", Label: "(a)/(h) p50: bare Docker exec over the agent path (information)", Value: v, Display: x(v)})
		}
	}
	if b != nil && c != nil {
		v := ratio(c.P50, b.P50)
		r.addGoal(goal{Name: "c/b", Label: "(c)/(b) p50: cold API container over warm pool", Value: v, Display: x(v), Target: "≥ 5", Pass: v >= 5})
	}
	if b != nil && c2 != nil {
		v := ratio(c2.P50, b.P50)
		r.addGoal(goal{Name: "c2/b", Label: "(c2)/(b) p50: docker run --rm over warm pool", Value: v, Display: x(v), Target: "≥ 5", Pass: v >= 5})
	}
	if d := r.find("d.acquire"); d != nil {
		r.addGoal(goal{Name: "d.p50", Label: "(d) warm Acquire p50", Value: float64(d.P50), Display: fmtDur(d.P50), Target: "≤ 20µs", Pass: d.P50 <= 20*time.Microsecond})
		r.addGoal(goal{Name: "d.p99", Label: "(d) warm Acquire p99", Value: float64(d.P99), Display: fmtDur(d.P99), Target: "≤ 200µs", Pass: d.P99 <= 200*time.Microsecond})
	}
	if pe, be := r.find("e.pool"), r.find("e.bare"); pe != nil && be != nil {
		v := ratio(pe.P50, be.P50)
		r.addGoal(goal{Name: "e", Label: "(e) burst: pool over bare create+start (median of trials)", Value: v, Display: x(v), Target: "≤ 1.2", Pass: v <= 1.2})
	}
	if pf, bf := r.find("f.pool"), r.find("f.bare"); pf != nil && bf != nil {
		v := ratio(pf.P50, bf.P50)
		r.addGoal(goal{Name: "f", Label: "(f) Shutdown over bare force-removes (median of trials)", Value: v, Display: x(v), Target: "≤ 1.2", Pass: v <= 1.2})
	}
	if g1 := r.findRate("g.pool.1"); g1 != nil {
		r.addGoal(goal{Name: "g", Label: "(g) pool on fake Docker, 1 caller", Value: g1.PerSec, Display: fmt.Sprintf("%.0f pairs/s", g1.PerSec),
			Target: "≥ 500,000/s", Pass: g1.PerSec >= 500000})
		for _, n := range []string{"1", "N"} {
			pool, pud := r.findRate("g.pool."+n), r.findRate("g.puddle."+n)
			if pool == nil || pud == nil {
				continue
			}
			v := pool.PerSec / pud.PerSec
			who := "1 caller"
			if n == "N" {
				who = "GOMAXPROCS callers"
			}
			r.addGoal(goal{Name: "g.puddle." + n, Label: "(g) pool / puddle throughput, " + who, Value: v, Display: x(v)})
		}
	}
	for _, n := range []string{"1", "N"} {
		pool, ch, ch4 := r.findRate("g.pool."+n), r.findRate("g.chan."+n), r.findRate("g.chan4."+n)
		if pool == nil || ch == nil || ch4 == nil {
			continue
		}
		ns := func(v float64) string { return fmt.Sprintf("%.0fns", v) }
		r.addGoal(goal{Name: "g.rt." + n, Label: "(g." + n + ") 2 bare round trips to a goroutine (2-case select)", Value: ch.NsPerOp, Display: ns(ch.NsPerOp)})
		r.addGoal(goal{Name: "g.select4." + n, Label: "(g." + n + ")   + the owner's shape: 4-case select, a clock read per message", Value: ch4.NsPerOp - ch.NsPerOp, Display: fmt.Sprintf("%+.0fns", ch4.NsPerOp-ch.NsPerOp)})
		r.addGoal(goal{Name: "g.rest." + n, Label: "(g." + n + ")   + the pool's own work (core, handles, publishing, replies)", Value: pool.NsPerOp - ch4.NsPerOp, Display: fmt.Sprintf("%+.0fns", pool.NsPerOp-ch4.NsPerOp)})
	}
	if w := r.find("size.wait"); w != nil {
		bound := time.Duration(math.Ceil(float64(r.Params.Callers)/float64(r.Params.MaxSize))) * r.Params.Hold
		r.addGoal(goal{Name: "size", Label: fmt.Sprintf("MaxSize=%d, %d callers: p99 wait vs ceil(%d/%d)×%v", r.Params.MaxSize, r.Params.Callers, r.Params.Callers, r.Params.MaxSize, r.Params.Hold),
			Value: float64(w.P99), Display: fmtDur(w.P99), Target: "≤ " + fmtDur(bound), Pass: w.P99 <= bound})
	}
	if u1, ur := r.find("uses.1"), r.find("uses.reuse"); u1 != nil && ur != nil {
		v := ratio(u1.P50, ur.P50)
		r.addGoal(goal{Name: "uses", Label: "MaxUses=1 over reuse, Acquire+Exec+Return p50", Value: v, Display: x(v)})
	}
	r.evaluateFiles()
	r.evaluateLimits()
	r.evaluateUntrusted()
	r.evaluateGVisor()
}

// findFact returns the fact of that name, or nil.
func (r *report) findFact(name string) *fact {
	for i := range r.Facts {
		if r.Facts[i].Name == name {
			return &r.Facts[i]
		}
	}
	return nil
}

// printTable writes the human-readable report.
func (r *report) printTable(w io.Writer) {
	m := r.Machine
	fmt.Fprintf(w, "\nmachine: %d CPUs (%s), %.1f GiB, kernel %s, %s, Docker %s (API %s), storage %s, cgroup %s, GOMAXPROCS %d\n",
		m.CPUs, m.CPUModel, m.MemoryGiB, m.Kernel, m.Go, m.Docker, m.DockerAPI, m.StorageDriver, m.CgroupDriver, m.GOMAXPROCS)
	fmt.Fprintf(w, "load average (1, 5, 15 min): %s at the start, %s at the end\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(w, "mode %s, n=%d, cold=%d, pairs=%d, burst=%d×%d trials, elapsed %s, pool background errors %d\n\n",
		r.Params.Mode, r.Params.N, r.Params.Cold, r.Params.Pairs, r.Params.Burst, r.Params.Trials, r.Elapsed, r.BackgroundErrors)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measurement\tn\tp50\tp95\tp99\tmax\tmean\t\tlabel")
	for _, s := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t\t%s\n", s.Name, s.N, fmtDur(s.P50), fmtDur(s.P95), fmtDur(s.P99), fmtDur(s.Max), fmtDur(s.Mean), s.Label)
	}
	tw.Flush()

	if len(r.Rates) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "throughput\tpairs/s\tns/pair\twindows\t\tlabel")
		for _, x := range r.Rates {
			var ws []string
			for _, v := range x.Windows {
				ws = append(ws, fmt.Sprintf("%.0fk", v/1000))
			}
			fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t\t%s\n", x.Name, x.PerSec, x.NsPerOp, strings.Join(ws, " "), x.Label)
		}
		tw.Flush()
	}

	if len(r.Facts) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "fact\tvalue\tunit\t\tlabel")
		for _, f := range r.Facts {
			fmt.Fprintf(tw, "%s\t%.6g\t%s\t\t%s\n", f.Name, f.Value, f.Unit, f.Label)
		}
		tw.Flush()
	}

	if len(r.Goals) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "goal\tvalue\ttarget\tverdict\t")
		for _, g := range r.Goals {
			verdict, target := "info", g.Target
			if g.Target != "" {
				verdict = "MISS"
				if g.Pass {
					verdict = "PASS"
				}
			}
			if g.Stretch != "" {
				target += " (stretch " + g.Stretch + ")"
				if g.StretchPass {
					verdict += " (stretch PASS)"
				} else {
					verdict += " (stretch MISS)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", g.Label, g.Display, target, verdict)
		}
		tw.Flush()
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range r.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
	}
}
