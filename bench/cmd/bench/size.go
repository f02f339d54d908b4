package main

import (
	"fmt"
	"sync"
	"time"

	"github.com/dockerpool/dockerpool"
)

// sizeTrials is how many times the MaxSize queue is measured.
const sizeTrials = 3

// usesPause is the quiet time before each cycle of the MaxUses comparison.
const usesPause = 200 * time.Millisecond

// runSize measures two fields that are not in the reference API:
//
//   - MaxSize: with MaxSize containers all idle (MinIdle = MaxIdle =
//     MaxSize), Callers callers at once each hold a container for Hold
//     without exec. Each caller's wait (its Acquire) is compared with
//     ceil(Callers/MaxSize)×Hold, the time the last wave can expect.
//   - MaxUses=1 against reuse: the warm Acquire + Exec(echo hi) + Return
//     cycle on two pools, interleaved. Before each cycle the single-use pool
//     is allowed to refill and settle, so both start warm on a quiet daemon;
//     the single-use cycle still pays for the refill its Acquire starts.
//     The refill time after a single use is reported as well: it bounds the
//     sustained rate.
func (e *env) runSize() error {
	if err := e.runMaxSize(); err != nil {
		return err
	}
	return e.runMaxUses()
}

func (e *env) runMaxSize() error {
	ctx := e.ctx
	size, callers, hold := e.p.MaxSize, e.p.Callers, e.p.Hold
	e.logf("size: MaxSize %d, %d callers holding %v, %d trials", size, callers, hold, sizeTrials)
	pool, err := e.newPool("maxsize", dockerpool.Config{MinIdle: size, MaxIdle: size, MaxSize: size})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, size); err != nil {
		return err
	}
	before := pool.Stats()
	var waits, walls []time.Duration
	var mu sync.Mutex
	for range sizeTrials {
		if err := e.settle(pool); err != nil {
			return err
		}
		if err := e.waitIdle(pool, size); err != nil {
			return err
		}
		start := make(chan struct{})
		var wg sync.WaitGroup
		errs := make([]error, callers)
		for i := range callers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				t0 := time.Now()
				c, err := pool.Acquire(ctx)
				w := time.Since(t0)
				if err != nil {
					errs[i] = err
					return
				}
				mu.Lock()
				waits = append(waits, w)
				mu.Unlock()
				time.Sleep(hold)
				errs[i] = pool.Return(ctx, c)
			}()
		}
		time.Sleep(10 * time.Millisecond)
		t0 := time.Now()
		close(start)
		wg.Wait()
		walls = append(walls, time.Since(t0))
		for _, err := range errs {
			if err != nil {
				return fmt.Errorf("size: %w", err)
			}
		}
	}
	after := pool.Stats()
	e.rep.add(summarize("size.wait", fmt.Sprintf("MaxSize=%d: each of %d callers' wait (Acquire), hold %v", size, callers, hold), waits))
	e.rep.add(summarize("size.wall", "  wall time until all callers are done, per trial", walls))
	e.rep.addFact(fact{Name: "size.created", Label: "MaxSize: containers created during the trials (0 = the cap held)", Value: float64(after.Created - before.Created), Unit: "containers"})
	return nil
}

func (e *env) runMaxUses() error {
	ctx := e.ctx
	n := e.p.UsesN
	e.logf("size: MaxUses=1 against reuse, %d rounds", n)
	reuse, err := e.newPool("reuse", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(reuse)
	single, err := e.newPool("single", dockerpool.Config{MinIdle: 2, MaxIdle: 4, MaxUses: 1})
	if err != nil {
		return err
	}
	defer e.closePool(single)

	cycle := func(p *dockerpool.Pool) (time.Duration, error) {
		t0 := time.Now()
		c, err := p.Acquire(ctx)
		if err != nil {
			return 0, err
		}
		res, err := c.Exec(ctx, hi)
		if rerr := p.Return(ctx, c); rerr != nil && err == nil {
			err = rerr
		}
		d := time.Since(t0)
		if err == nil && (string(res.Stdout) != "hi\n" || res.ExitCode != 0) {
			err = fmt.Errorf("got %q, exit %d", res.Stdout, res.ExitCode)
		}
		return d, err
	}
	// ready waits until the single-use pool has refilled and nothing is in
	// flight, and returns how long that took.
	ready := func() (time.Duration, error) {
		t0 := time.Now()
		if err := e.waitIdle(single, 2); err != nil {
			return 0, err
		}
		if err := e.settle(single); err != nil {
			return 0, err
		}
		d := time.Since(t0)
		time.Sleep(usesPause) // the daemon's asynchronous cleanup of the removal
		return d, nil
	}
	for range 3 { // warm-up
		if _, err := ready(); err != nil {
			return err
		}
		for _, p := range []*dockerpool.Pool{reuse, single} {
			if _, err := cycle(p); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}
	if _, err := ready(); err != nil {
		return err
	}
	var sReuse, sSingle, sRefill []time.Duration
	for r := range n {
		pools := []*dockerpool.Pool{reuse, single}
		if r%2 == 1 {
			pools[0], pools[1] = pools[1], pools[0]
		}
		for _, p := range pools {
			d, err := cycle(p)
			if err != nil {
				return fmt.Errorf("uses: %w", err)
			}
			// Each cycle starts on a quiet daemon: the single-use pool's
			// refill and removal do not spill into the other pool's cycle.
			refill, err := ready()
			if err != nil {
				return err
			}
			if p == reuse {
				sReuse = append(sReuse, d)
			} else {
				sSingle = append(sSingle, d)
				sRefill = append(sRefill, refill)
			}
		}
	}
	e.rep.add(summarize("uses.reuse", "reuse (MaxUses 0): Acquire + Exec + Return", sReuse))
	e.rep.add(summarize("uses.1", "MaxUses=1: Acquire + Exec + Return", sSingle))
	e.rep.add(summarize("uses.refill", "  MaxUses=1: from Return until refilled and settled", sRefill))
	return nil
}
