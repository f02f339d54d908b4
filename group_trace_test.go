package dockerpool

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The adaptive warmth on the shifting trace of cmd/bench -mode group, on the
// fake daemon under synctest: minutes of the trace take seconds, so the
// warmth can be judged on every run, not only in a benchmark.

// traceParams is one run of the trace.
type traceParams struct {
	ops, templates, maxSize, maxIdle int
	rate, zipf                       float64
	phase, hold, create              time.Duration
	static                           bool
	// cores > 0: the daemon does cores creations or removals at a time, a
	// creation taking create and a removal remove; more wait their turn, as
	// on a real daemon whose CPUs are busy.
	cores   int
	remove  time.Duration
	maxMake int // GroupConfig.MaxCreating
}

// traceResult is what a run of the trace saw.
type traceResult struct {
	acquires, empty, cold, evictWait, evictWarm int64
	p99                                         time.Duration
}

func (r traceResult) warmHit() float64 { return 1 - float64(r.empty)/float64(r.acquires) }

func (r traceResult) String() string {
	return fmt.Sprintf("warm-hit %.1f%% (%d of %d found nothing idle), cold %d, evictions %d for waiters + %d for warmth, p99 Acquire %v",
		100*r.warmHit(), r.empty, r.acquires, r.cold, r.evictWait, r.evictWarm, r.p99)
}

// traceArrivals draws the trace as cmd/bench does: Poisson arrivals; the
// template of rank r has weight 1/(r+1)^zipf, and every phase the hot one
// jumps three templates on.
func traceArrivals(p traceParams, seed uint64) (at []time.Duration, tpl []int) {
	rnd := rand.New(rand.NewPCG(seed, 17))
	w := make([]float64, p.templates)
	sum := 0.0
	for r := range w {
		w[r] = 1 / math.Pow(float64(r+1), p.zipf)
		sum += w[r]
	}
	t := time.Duration(0)
	for range p.ops {
		t += time.Duration(rnd.ExpFloat64() / p.rate * float64(time.Second))
		x, rank := rnd.Float64()*sum, 0
		for ; rank < len(w)-1 && x > w[rank]; rank++ {
			x -= w[rank]
		}
		at = append(at, t)
		tpl = append(tpl, (int(t/p.phase)*3+rank)%p.templates)
	}
	return at, tpl
}

// runTrace replays the trace on a Group over a fake whose creations take
// p.create. Call it inside a synctest bubble.
func runTrace(t *testing.T, p traceParams, seed uint64) traceResult {
	f := fakedocker.New(fakeImage)
	cpu := make(chan struct{}, max(1, p.cores))
	f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
		d := p.create
		switch {
		case op == fakedocker.OpRemove && p.cores > 0:
			d = p.remove
		case op != fakedocker.OpCreate:
			return nil
		}
		if p.cores > 0 {
			select {
			case cpu <- struct{}{}:
				defer func() { <-cpu }()
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		select {
		case <-time.After(d):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	cfg := GroupConfig{MaxSize: p.maxSize, StaticWarmth: p.static, MaxCreating: p.maxMake, Templates: map[string]Config{}}
	for i := range p.templates {
		cfg.Templates[fmt.Sprint("t", i)] = Config{MinIdle: 1, MaxIdle: p.maxIdle, CheckIdleAfter: -1}
	}
	g := startFakeGroup(t, f, cfg)
	time.Sleep(3 * time.Second) // warm up to MinIdle, as cmd/bench does
	at, tpl := traceArrivals(p, seed)
	var mu sync.Mutex
	var lat []time.Duration
	var missBy [6]int
	var wg sync.WaitGroup
	start := time.Now()
	for i := range at {
		time.Sleep(time.Until(start.Add(at[i])))
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			t0 := time.Now()
			c, err := g.Acquire(ctx, fmt.Sprint("t", tpl[i]))
			took := time.Since(t0)
			if err != nil {
				t.Errorf("Acquire: %v", err)
				return
			}
			if _, err := c.Exec(ctx, []string{"true"}); err != nil {
				t.Errorf("Exec: %v", err)
			}
			time.Sleep(p.hold)
			if err := g.Return(ctx, c); err != nil {
				t.Errorf("Return: %v", err)
			}
			mu.Lock()
			lat = append(lat, took)
			if took > 0 {
				b := int(at[i]%p.phase) * len(missBy) / int(p.phase)
				missBy[b]++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	st := g.Stats()
	var r traceResult
	for _, ts := range st.Templates {
		r.acquires += ts.AcquireCount
		r.empty += ts.EmptyAcquireCount
		r.cold += ts.ColdAcquireCount
	}
	r.evictWait, r.evictWarm = st.EvictedForWaiter, st.EvictedForWarmth
	r.p99 = percentile(lat, 0.99)
	t.Logf("misses by time into the phase (sixths): %v", missBy)
	shutdownGroup(t, g)
	return r
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

// The adaptive warmth meets the goal on the fake: a warm-hit rate of
// at least 90% over the whole shifting trace, at a budget of 24 (well below
// the 8 × MaxIdle = 64 that would keep every template fully warm), and does
// better than static warmth (MinIdle 1 each) on the same trace. Twice: with
// creations of a second (what one costs on a busy real daemon), and on a
// daemon that does two creations or removals at a time (600 and 250 ms),
// where more at once queue. On the second, without GroupConfig.MaxCreating's
// bound, this trace (seed 2) collapsed to a 4% warm-hit rate: every miss at
// the cap evicted and created, the queue of creations grew, and every caller
// missed.
func TestGroupAdaptiveWarmthFollowsAShiftingMix(t *testing.T) {
	t.Parallel()
	base := traceParams{ops: 3000, templates: 8, maxSize: 24, maxIdle: 8, rate: 10, zipf: 1.1,
		phase: 30 * time.Second, hold: 500 * time.Millisecond}
	slow, busy := base, base
	slow.create = time.Second
	busy.create, busy.remove, busy.cores = 600*time.Millisecond, 250*time.Millisecond, 2
	for _, tc := range []struct {
		name string
		p    traceParams
		seed uint64
	}{{"one-second-creations", slow, 1}, {"two-cpu-daemon", busy, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var adaptive, static traceResult
			p := tc.p
			synctest.Test(t, func(t *testing.T) { adaptive = runTrace(t, p, tc.seed) })
			p.static = true
			synctest.Test(t, func(t *testing.T) { static = runTrace(t, p, tc.seed) })
			t.Logf("adaptive: %v", adaptive)
			t.Logf("static:   %v", static)
			if adaptive.acquires != int64(p.ops) {
				t.Fatalf("adaptive: %d acquires counted, want %d", adaptive.acquires, p.ops)
			}
			if h := adaptive.warmHit(); h < 0.9 {
				t.Errorf("adaptive warmth: warm-hit %.1f%%, want at least 90%%", 100*h)
			}
			if adaptive.warmHit() <= static.warmHit() {
				t.Errorf("adaptive warmth (%.1f%%) does no better than static warmth (%.1f%%)", 100*adaptive.warmHit(), 100*static.warmHit())
			}
		})
	}
}

// The shares follow the demand: a template kept busy by three callers gets
// more than its MinIdle, a template nobody uses keeps its MinIdle, and when
// the demand moves, the shares move with it.
func TestGroupAdaptiveShareFollowsDemand(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		f := fakedocker.New(fakeImage)
		g := startFakeGroup(t, f, GroupConfig{MaxSize: 8, Templates: map[string]Config{
			"a": {MinIdle: 1, MaxIdle: 6}, "b": {MinIdle: 1, MaxIdle: 6},
		}})
		// busy keeps three callers of name at Acquire, 500 ms, Return for d,
		// and reads the stats just before they stop.
		busy := func(name string, d time.Duration) map[string]TemplateStats {
			var wg sync.WaitGroup
			end := time.Now().Add(d)
			for range 3 {
				wg.Go(func() {
					for time.Now().Before(end) {
						c, err := g.Acquire(ctx, name)
						if err != nil {
							t.Errorf("Acquire %s: %v", name, err)
							return
						}
						time.Sleep(500 * time.Millisecond)
						if err := g.Return(ctx, c); err != nil {
							t.Errorf("Return: %v", err)
							return
						}
					}
				})
			}
			time.Sleep(d - 100*time.Millisecond)
			st := g.Stats().Templates
			wg.Wait()
			return st
		}
		st := busy("a", 10*time.Second)
		if a, b := st["a"], st["b"]; a.Share < 4 || b.Share != 1 || a.WarmTarget != max(1, min(6, a.Share-a.InUse)) {
			t.Fatalf("with a busy: a's share %d (want ≥ 4), warm target %d (want share less its %d in use); b's share %d (want its MinIdle, 1)", a.Share, a.WarmTarget, a.InUse, b.Share)
		}
		if a := st["a"]; a.InUse+a.Idle < 4 {
			t.Fatalf("a has %d in use and %d idle, want at least 4 in all", a.InUse, a.Idle)
		}
		st = busy("b", 20*time.Second)
		if a, b := st["a"], st["b"]; b.Share < 4 || b.Share <= a.Share {
			t.Fatalf("after the demand moved to b: b's share %d (want ≥ 4 and above a's), a's %d", b.Share, a.Share)
		}
		shutdownGroup(t, g)
	})
}
