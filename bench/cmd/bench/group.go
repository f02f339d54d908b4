package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The group trace: Acquire + Exec + Return over several templates whose
// popularity shifts every phase (Zipf-like, the hot template changing), on
// three designs side by side (run at once, each on its own fake daemon, on
// the same trace): independent pools of MaxSize/T each, the Group with
// static warmth, the Group with adaptive warmth.

// groupParams are the trace's knobs (flags -g-*).
type groupParams struct {
	Ops         int           `json:"ops"`
	Templates   int           `json:"templates"`
	MaxSize     int           `json:"max_size"`
	MaxIdle     int           `json:"max_idle"`
	Phase       time.Duration `json:"phase"`
	Rate        float64       `json:"rate"` // arrivals per second (Poisson)
	Hold        time.Duration `json:"hold"` // after the Exec, before the Return
	CreateDelay time.Duration `json:"create_delay"`
	Zipf        float64       `json:"zipf"`
	MaxCreating int           `json:"max_creating"` // GroupConfig.MaxCreating of the Groups (0: the default)
	Real        bool          `json:"real"`         // the real daemon instead of the fake (no create delay added)
	Only        string        `json:"only"`         // run only this design (empty: all three at once)
	Sequential  bool          `json:"sequential"`   // the designs one after another, each alone on the daemon
	Agent       bool          `json:"agent"`        // the templates on the agent path (real daemon only)
}

type traceOp struct {
	at  time.Duration
	tpl int
}

// makeTrace draws the arrivals: Poisson at Rate; the template of rank r has
// weight 1/(r+1)^Zipf, and the ranks rotate by one template every Phase.
func makeTrace(gp groupParams, seed uint64) []traceOp {
	rnd := rand.New(rand.NewPCG(seed, 17))
	w := make([]float64, gp.Templates)
	sum := 0.0
	for r := range w {
		w[r] = 1 / math.Pow(float64(r+1), gp.Zipf)
		sum += w[r]
	}
	ops := make([]traceOp, gp.Ops)
	at := time.Duration(0)
	for i := range ops {
		at += time.Duration(rnd.ExpFloat64() / gp.Rate * float64(time.Second))
		x, rank := rnd.Float64()*sum, 0
		for ; rank < len(w)-1 && x > w[rank]; rank++ {
			x -= w[rank]
		}
		hot := int(at / gp.Phase)
		ops[i] = traceOp{at: at, tpl: (hot*3 + rank) % gp.Templates} // the hot one jumps, not slides
	}
	return ops
}

// design is one way to serve the trace.
type design interface {
	acquire(ctx context.Context, tpl int) (*dockerpool.Container, error)
	release(ctx context.Context, c *dockerpool.Container) error
	counts() (acquires, empty, cold, evicted int64)
	shutdown(ctx context.Context) error
}

type pools []*dockerpool.Pool

func (ps pools) acquire(ctx context.Context, tpl int) (*dockerpool.Container, error) {
	return ps[tpl].Acquire(ctx)
}

func (ps pools) release(ctx context.Context, c *dockerpool.Container) error {
	for _, p := range ps {
		if err := p.Return(ctx, c); !errors.Is(err, dockerpool.ErrInvalidContainer) {
			return err
		}
	}
	return dockerpool.ErrInvalidContainer
}

func (ps pools) counts() (a, e, c, ev int64) {
	for _, p := range ps {
		st := p.Stats()
		a, e, c = a+st.AcquireCount, e+st.EmptyAcquireCount, c+st.ColdAcquireCount
	}
	return
}

func (ps pools) shutdown(ctx context.Context) error {
	var errs []error
	for _, p := range ps {
		errs = append(errs, p.Shutdown(ctx))
	}
	return errors.Join(errs...)
}

type group struct{ g *dockerpool.Group }

func (g group) acquire(ctx context.Context, tpl int) (*dockerpool.Container, error) {
	return g.g.Acquire(ctx, fmt.Sprint("t", tpl))
}
func (g group) release(ctx context.Context, c *dockerpool.Container) error { return g.g.Return(ctx, c) }
func (g group) shutdown(ctx context.Context) error                         { return g.g.Shutdown(ctx) }
func (g group) counts() (a, e, c, ev int64) {
	st := g.g.Stats()
	for _, ts := range st.Templates {
		a, e, c = a+ts.AcquireCount, e+ts.EmptyAcquireCount, c+ts.ColdAcquireCount
	}
	return a, e, c, st.EvictedForWaiter + st.EvictedForWarmth
}

// groupResult is one design's figures.
type groupResult struct {
	Design    string  `json:"design"`
	Ops       int     `json:"ops"`
	Errors    int     `json:"errors"`
	WarmHit   float64 `json:"warm_hit"` // served at once by an idle container
	Cold      int64   `json:"cold"`     // served by a container made for the caller
	Evictions int64   `json:"evictions"`
	Acquire   Summary `json:"acquire"`
	// The Acquires over a millisecond, by what served them: a container
	// never handed out before, or a returned one.
	MissFresh  Summary `json:"miss_fresh"`
	MissReused Summary `json:"miss_reused"`
}

// templateConfig is the configuration of template i of a design.
func (e *env) templateConfig(what string, i int, cfg dockerpool.Config, f *fakedocker.Fake) dockerpool.Config {
	cfg = e.poolConfig(fmt.Sprintf("%s-t%d", what, i), cfg)
	cfg.Cmd = []string{"sleep", fmt.Sprint(1000000 + i)} // the templates differ
	cfg.CheckIdleAfter = -1                              // no inspect before a hand-out: a hit is an idle container
	if e.p.Group.Agent && f == nil {
		// The agent is the main process (Cmd is not used): the templates
		// differ by a variable.
		cfg.Image.Name = e.agentImage
		cfg.Agent = &dockerpool.AgentConfig{}
		cfg.ContainerConfig = &container.Config{Env: []string{fmt.Sprint("DPBENCH_TEMPLATE=", i)}}
	}
	if f != nil {
		cfg.HostConfig = nil
		cfg.Client = f
	}
	return cfg
}

// newFake is a fake daemon whose creations take CreateDelay.
func (e *env) newFake(gp groupParams) *fakedocker.Fake {
	if gp.Real {
		return nil
	}
	f := fakedocker.New(e.image)
	f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
		if op != fakedocker.OpCreate {
			return nil
		}
		select {
		case <-time.After(gp.CreateDelay):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f
}

var designNames = []string{"independent", "group-static", "group-adaptive"}

// startDesign starts design i of designNames, on a fake of its own (or the
// real daemon).
func (e *env) startDesign(gp groupParams, i int) (design, error) {
	f := e.newFake(gp)
	if i == 0 {
		each := max(1, gp.MaxSize/gp.Templates)
		var ps pools
		for t := range gp.Templates {
			p, err := dockerpool.New(e.ctx, e.templateConfig("gi", t, dockerpool.Config{MinIdle: each, MaxIdle: each, MaxSize: each}, f))
			if err != nil {
				_ = ps.shutdown(e.ctx)
				return nil, err
			}
			ps = append(ps, p)
		}
		return ps, nil
	}
	k := i - 1
	cfg := dockerpool.GroupConfig{MaxSize: gp.MaxSize, StaticWarmth: k == 0, MaxCreating: gp.MaxCreating, Templates: map[string]dockerpool.Config{}}
	for t := range gp.Templates {
		cfg.Templates[fmt.Sprint("t", t)] = e.templateConfig(fmt.Sprint("g", k), t, dockerpool.Config{MinIdle: 1, MaxIdle: gp.MaxIdle}, f)
	}
	g, err := dockerpool.NewGroup(e.ctx, cfg)
	if err != nil {
		return nil, err
	}
	return group{g}, nil
}

// replayed is what a replay measured: every Acquire's latency, and those of
// the misses (over a millisecond) split by what served them: a container
// never handed out before (made for the caller, or warmed while it waited)
// or one that had been returned.
type replayed struct {
	lat, fresh, reused []time.Duration
	errs               int
}

// replay runs the trace on d: every op at its time on a goroutine of its own.
func (e *env) replay(d design, tr []traceOp, hold time.Duration) replayed {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var r replayed
	seen := map[string]bool{}
	start := time.Now()
	for _, op := range tr {
		if wait := time.Until(start.Add(op.at)); wait > 0 {
			select {
			case <-time.After(wait):
			case <-e.ctx.Done(): // interrupted: the ops started end, no new ones
			}
		}
		if e.ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
			defer cancel()
			t0 := time.Now()
			c, err := d.acquire(ctx, op.tpl)
			took := time.Since(t0)
			if err == nil {
				_, err = c.Exec(ctx, []string{"true"})
				time.Sleep(hold)
				err = errors.Join(err, d.release(ctx, c))
			}
			mu.Lock()
			defer mu.Unlock()
			r.lat = append(r.lat, took)
			if c != nil && took > time.Millisecond {
				if seen[c.ID()] {
					r.reused = append(r.reused, took)
				} else {
					r.fresh = append(r.fresh, took)
				}
			}
			if c != nil {
				seen[c.ID()] = true
			}
			if err != nil {
				r.errs++
				e.logf("group trace: %v", err)
			}
		})
	}
	wg.Wait()
	return r
}

// runGroup measures the group trace.
func (e *env) runGroup() error {
	gp := e.p.Group
	if gp.Agent {
		if !gp.Real {
			return errors.New("group: -g-agent needs -g-real (the fake runs no agent)")
		}
		if err := e.ensureAgent(); err != nil {
			return err
		}
	}
	tr := makeTrace(gp, 1)
	e.logf("group: %d ops over %d templates, %.1f/s, phase %v (%v in all), MaxSize %d, hold %v, create delay %v, real %v, sequential %v, agent %v",
		gp.Ops, gp.Templates, gp.Rate, gp.Phase, tr[len(tr)-1].at.Round(time.Second), gp.MaxSize, gp.Hold, gp.CreateDelay, gp.Real, gp.Sequential, gp.Agent)
	res := make([]groupResult, len(designNames))
	measure := func(i int, d design) {
		r := e.replay(d, tr, gp.Hold)
		a, empty, cold, ev := d.counts()
		res[i] = groupResult{Design: designNames[i], Ops: len(r.lat), Errors: r.errs, Cold: cold, Evictions: ev,
			WarmHit: float64(a-empty) / float64(max(a, 1)), Acquire: summarize("group."+designNames[i], "Acquire on the trace", r.lat),
			MissFresh:  summarize("group."+designNames[i]+".fresh", "Acquire over 1 ms served by a container never handed out before", r.fresh),
			MissReused: summarize("group."+designNames[i]+".reused", "Acquire over 1 ms served by a returned container", r.reused)}
	}
	stop := func(d design) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		_ = d.shutdown(ctx)
		cancel()
	}
	if gp.Sequential {
		// Each design alone on the daemon: started, warmed, measured, shut down.
		for i := range designNames {
			if gp.Only != "" && designNames[i] != gp.Only {
				continue
			}
			d, err := e.startDesign(gp, i)
			if err != nil {
				return err
			}
			time.Sleep(3 * time.Second) // warm up to MinIdle
			measure(i, d)
			stop(d)
		}
	} else {
		var ds []design
		defer func() {
			for _, d := range ds {
				stop(d)
			}
		}()
		for i := range designNames {
			d, err := e.startDesign(gp, i)
			if err != nil {
				return err
			}
			ds = append(ds, d)
		}
		time.Sleep(3 * time.Second) // warm up to MinIdle
		var wg sync.WaitGroup
		for i, d := range ds {
			if gp.Only != "" && designNames[i] != gp.Only {
				continue
			}
			wg.Go(func() { measure(i, d) })
		}
		wg.Wait()
	}
	e.rep.Group = res
	e.rep.GroupParams = &gp
	for _, r := range res {
		if r.Design == "" {
			continue
		}
		e.logf("group %-15s ops %d errors %d warm-hit %.1f%% cold %d evictions %d acquire p50 %v p99 %v max %v",
			r.Design, r.Ops, r.Errors, 100*r.WarmHit, r.Cold, r.Evictions, r.Acquire.P50, r.Acquire.P99, r.Acquire.Max)
		for _, m := range []Summary{r.MissFresh, r.MissReused} {
			e.logf("group %-15s   %s: n %d p50 %v p90 %v max %v", r.Design, m.Label, m.N, m.P50, percentile(m.samples, 90), m.Max)
		}
	}
	if ind, ad := res[0].Acquire.P99, res[2].Acquire.P99; ad > 0 && ind > 0 {
		v := float64(ind) / float64(ad)
		e.logf("group p99 ratio independent/adaptive: %.1fx", v)
		e.rep.addGoal(goal{Name: "group.p99", Label: "group: p99 Acquire, 8 independent pools over the adaptive Group", Value: v, Display: fmt.Sprintf("%.1f×", v), Target: "≥ 3", Pass: v >= 3})
	}
	if r := res[2]; r.Design != "" {
		e.rep.addGoal(goal{Name: "group.warm", Label: "group: warm-hit rate of the adaptive Group", Value: r.WarmHit, Display: fmt.Sprintf("%.1f%%", 100*r.WarmHit), Target: "≥ 90%", Pass: r.WarmHit >= 0.9})
	}
	return nil
}
