package main

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/dockerpool/dockerpool"
)

// width is the parallelism of the bare side of (e) and (f); the pools get
// the same bounds (MaxConcurrentAcquire and MaxConcurrentDockerOps).
const width = dockerpool.DefaultMaxConcurrentAcquire

// runLifecycle measures, in trials that alternate which side goes first:
//
//	(e) a burst of N callers at once on a pool with one idle container (so
//	    that N-1 need a creation), wall time until all have a container,
//	    against N bare create+start with the same parallelism;
//	(f) Shutdown of the N idle containers the burst left (WaitIdle(N) first)
//	    against N bare force-removes with the same parallelism.
//
// The pool has MinIdle 1 and MaxIdle N; Shutdown does not refill, so MinIdle
// does not change what (f) times.
//
// Both sides get the same pauses, so that the daemon is in the same state
// when a timed phase starts: Settle before the burst (after the pool's setup,
// which is not timed), and Gap between the end of the burst and the start of
// the removals (the pool's Return, WaitIdle(N) and settling happen within it).
func (e *env) runLifecycle() error {
	n, trials := e.p.Burst, e.p.Trials
	e.logf("burst/shutdown: %d trials of %d containers, parallelism %d", trials, n, width)
	var ePool, eBare, fPool, fBare, callers []time.Duration
	var created []float64
	for t := range trials {
		sides := []func() error{
			func() error {
				burst, shut, lat, made, err := e.poolLifecycle(t, n)
				if err != nil {
					return fmt.Errorf("pool trial %d: %w", t, err)
				}
				ePool, fPool = append(ePool, burst), append(fPool, shut)
				callers = append(callers, lat...)
				created = append(created, made)
				return nil
			},
			func() error {
				burst, rm, err := e.bareLifecycle(n)
				if err != nil {
					return fmt.Errorf("bare trial %d: %w", t, err)
				}
				eBare, fBare = append(eBare, burst), append(fBare, rm)
				return nil
			},
		}
		if t%2 == 1 {
			sides[0], sides[1] = sides[1], sides[0]
		}
		for _, side := range sides {
			if err := side(); err != nil {
				return err
			}
		}
		e.logf("burst/shutdown: trial %d/%d: burst pool %v bare %v; shutdown pool %v bare %v", t+1, trials,
			ePool[t].Round(time.Millisecond), eBare[t].Round(time.Millisecond), fPool[t].Round(time.Millisecond), fBare[t].Round(time.Millisecond))
	}
	mode := e.p.Mode
	if mode != "shutdown" {
		e.rep.add(summarize("e.pool", fmt.Sprintf("burst: %d Acquires at once, 1 idle, wall time (per trial)", n), ePool))
		e.rep.add(summarize("e.bare", fmt.Sprintf("burst: %d bare create+start, parallelism %d, wall time", n, width), eBare))
		e.rep.add(summarize("e.caller", "burst: each caller's Acquire latency", callers))
		e.rep.addFact(fact{Name: "e.created", Label: "(e) containers the pool created per burst (mean)", Value: mean(created), Unit: "containers"})
	}
	if mode != "burst" {
		e.rep.add(summarize("f.pool", fmt.Sprintf("Shutdown of %d idle containers", n), fPool))
		e.rep.add(summarize("f.bare", fmt.Sprintf("%d bare force-removes, parallelism %d", n, width), fBare))
	}
	return nil
}

// poolLifecycle runs one pool trial: the burst, then Shutdown of the idle
// containers it leaves. It also returns each caller's Acquire latency and
// how many containers the pool created during the burst.
func (e *env) poolLifecycle(trial, n int) (burst, shut time.Duration, lat []time.Duration, made float64, err error) {
	pool, err := e.newPool(fmt.Sprintf("burst%d", trial), dockerpool.Config{
		MinIdle: 1, MaxIdle: n, MaxConcurrentAcquire: width, MaxConcurrentDockerOps: width,
	})
	if err != nil {
		return
	}
	defer e.closePool(pool)
	if err = e.waitIdle(pool, 1); err != nil {
		return
	}
	if err = e.settle(pool); err != nil {
		return
	}
	time.Sleep(e.p.Settle)
	before := pool.Stats()

	start := make(chan struct{})
	var wg sync.WaitGroup
	got := make([]*dockerpool.Container, n)
	ends := make([]time.Time, n)
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got[i], errs[i] = pool.Acquire(e.ctx)
			ends[i] = time.Now()
		}()
	}
	time.Sleep(10 * time.Millisecond) // every caller is parked on start
	t0 := time.Now()
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			err = errs[i]
			return
		}
		d := ends[i].Sub(t0)
		lat = append(lat, d)
		burst = max(burst, d)
	}
	burstEnd := t0.Add(burst)
	made = float64(pool.Stats().Created - before.Created)

	for _, c := range got {
		if err = pool.Return(e.ctx, c); err != nil {
			return
		}
	}
	if err = e.waitIdle(pool, n); err != nil {
		return
	}
	if err = e.settle(pool); err != nil {
		return
	}
	// The containers are as old as the bare ones when their removal starts.
	if late := time.Since(burstEnd) - e.p.Gap; late > 0 {
		e.logf("burst/shutdown: pool trial %d: Shutdown starts %v later than planned", trial, late.Round(time.Millisecond))
	}
	time.Sleep(time.Until(burstEnd.Add(e.p.Gap)))
	shut, err = e.closePool(pool)
	return
}

// bareLifecycle creates and starts n containers with the API, width at a
// time, then force-removes them, width at a time; it times both phases.
func (e *env) bareLifecycle(n int) (burst, rm time.Duration, err error) {
	ids := make([]string, n)
	defer func() {
		for _, id := range ids {
			if id != "" && err != nil {
				_ = e.bare.remove(context.WithoutCancel(e.ctx), id)
			}
		}
	}()
	time.Sleep(e.p.Settle)
	t0 := time.Now()
	err = parallel(n, width, func(i int) error {
		id, err := e.bare.createStart(e.ctx)
		ids[i] = id
		return err
	})
	burst = time.Since(t0)
	if err != nil {
		return
	}
	time.Sleep(time.Until(t0.Add(burst + e.p.Gap)))
	t0 = time.Now()
	err = parallel(n, width, func(i int) error { return e.bare.remove(e.ctx, ids[i]) })
	rm = time.Since(t0)
	return
}

// settle waits until the pool has no creation or removal in flight.
func (e *env) settle(pool *dockerpool.Pool) error {
	deadline := time.Now().Add(time.Minute)
	for {
		st := pool.Stats()
		if st.Creating == 0 && st.Removing == 0 && st.Checking == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pool did not settle: %+v", st)
		}
		if err := e.ctx.Err(); err != nil {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}
