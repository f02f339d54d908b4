package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockerpool/dockerpool"
)

var hi = []string{"echo", "hi"}

// runExec measures, interleaved round-robin:
//
//	(a)  a bare exec round trip on one long-lived container: the floor;
//	(b)  the pool's warm Acquire + Exec(echo hi) + Return;
//	(c)  a cold container with the API: create + start + exec + force-remove;
//	(c2) docker run --rm <image> echo hi through the CLI;
//	(h)  the pool's warm Acquire + Exec(echo hi) + Return on the agent path
//	     (dockerpool-agent in the container, no Docker exec).
//
// Every round runs (a) and (b), and a block of hBlock (h); one round in
// n/cold also runs (c) and (c2). (h) is timed in blocks because a Docker exec
// leaves the daemon and runc busy for a few milliseconds after it returns:
// the first (h) after one pays for that, and is reported apart (h.first).
// After the rounds, 1,000 concurrent execs go through the agents of 10
// containers.
// The order inside a round rotates from one round to the next.
func (e *env) runExec() error {
	ctx := e.ctx
	n, cold := e.p.N, e.p.Cold
	e.logf("exec: %d rounds of (a) and (b), %d of (c) and (c2)", n, cold)

	floorID, err := e.bare.createStart(ctx)
	if err != nil {
		return fmt.Errorf("floor container: %w", err)
	}
	defer func() { _ = e.bare.remove(context.WithoutCancel(ctx), floorID) }()

	pool, err := e.newPool("exec", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, 1); err != nil {
		return err
	}

	agentPool, err := e.newAgentPool("agent", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(agentPool)
	if err := e.waitIdle(agentPool, 1); err != nil {
		return err
	}

	const hBlock = 5
	var (
		sh, hAcq, hExec, hRet   []time.Duration
		hFirst                  []time.Duration
		sa, sb, sc, sc2         []time.Duration
		aCreate, aAttach        []time.Duration
		aStream, aInspect       []time.Duration
		bAcq, bExec, bRet       []time.Duration
		cCreate, cExec, cRemove []time.Duration
		floorRetries            int // (a) execs whose first inspect still said running
	)
	opA := func(record bool) error {
		t0 := time.Now()
		r, err := bareExec(ctx, e.cli, floorID, hi)
		d := time.Since(t0)
		if err != nil {
			return fmt.Errorf("(a): %w", err)
		}
		if r.stdout != "hi\n" || r.code != 0 {
			return fmt.Errorf("(a): got %q, exit %d", r.stdout, r.code)
		}
		if record {
			sa = append(sa, d)
			aCreate, aAttach = append(aCreate, r.create), append(aAttach, r.attach)
			aStream, aInspect = append(aStream, r.stream), append(aInspect, r.inspect)
			if r.inspects > 1 {
				floorRetries++
			}
		}
		return nil
	}
	opB := func(record bool) error {
		t0 := time.Now()
		c, err := pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("(b) acquire: %w", err)
		}
		t1 := time.Now()
		res, err := c.Exec(ctx, hi)
		t2 := time.Now()
		if rerr := pool.Return(ctx, c); rerr != nil && err == nil {
			err = rerr
		}
		t3 := time.Now()
		if err != nil {
			return fmt.Errorf("(b): %w", err)
		}
		if string(res.Stdout) != "hi\n" || res.ExitCode != 0 {
			return fmt.Errorf("(b): got %q, exit %d", res.Stdout, res.ExitCode)
		}
		if record {
			sb = append(sb, t3.Sub(t0))
			bAcq = append(bAcq, t1.Sub(t0))
			bExec = append(bExec, t2.Sub(t1))
			bRet = append(bRet, t3.Sub(t2))
		}
		return nil
	}
	var opH func(record bool) error
	opHBlock := func(record bool) error {
		for i := range hBlock {
			n := len(sh)
			if err := opH(record); err != nil {
				return err
			}
			if record && i == 0 {
				hFirst = append(hFirst, sh[n])
			}
		}
		return nil
	}
	opH = func(record bool) error {
		t0 := time.Now()
		c, err := agentPool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("(h) acquire: %w", err)
		}
		t1 := time.Now()
		res, err := c.Exec(ctx, hi)
		t2 := time.Now()
		if rerr := agentPool.Return(ctx, c); rerr != nil && err == nil {
			err = rerr
		}
		t3 := time.Now()
		if err != nil {
			return fmt.Errorf("(h): %w", err)
		}
		if string(res.Stdout) != "hi\n" || res.ExitCode != 0 {
			return fmt.Errorf("(h): got %q, exit %d", res.Stdout, res.ExitCode)
		}
		if record {
			sh = append(sh, t3.Sub(t0))
			hAcq = append(hAcq, t1.Sub(t0))
			hExec = append(hExec, t2.Sub(t1))
			hRet = append(hRet, t3.Sub(t2))
		}
		return nil
	}
	opC := func(record bool) error {
		t0 := time.Now()
		id, err := e.bare.createStart(ctx)
		if err != nil {
			return fmt.Errorf("(c): %w", err)
		}
		t1 := time.Now()
		r, err := bareExec(ctx, e.cli, id, hi)
		t2 := time.Now()
		rerr := e.bare.remove(ctx, id)
		t3 := time.Now()
		if err != nil {
			return fmt.Errorf("(c): %w", err)
		}
		if rerr != nil {
			return fmt.Errorf("(c) remove: %w", rerr)
		}
		if r.stdout != "hi\n" || r.code != 0 {
			return fmt.Errorf("(c): got %q, exit %d", r.stdout, r.code)
		}
		if record {
			sc = append(sc, t3.Sub(t0))
			cCreate = append(cCreate, t1.Sub(t0))
			cExec = append(cExec, t2.Sub(t1))
			cRemove = append(cRemove, t3.Sub(t2))
		}
		return nil
	}
	opC2 := func(record bool) error {
		t0 := time.Now()
		if err := e.bare.dockerRun(ctx); err != nil {
			return fmt.Errorf("(c2): %w", err)
		}
		if record {
			sc2 = append(sc2, time.Since(t0))
		}
		return nil
	}

	// Warm-up: connections, the daemon's caches, the page cache.
	for i := range 10 {
		ops := []func(bool) error{opA, opB, opHBlock}
		if i < 2 {
			ops = append(ops, opC, opC2)
		}
		for _, op := range ops {
			if err := op(false); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
	}

	before := pool.Stats()
	every := max(n/cold, 1)
	coldDone := 0
	for r := range n {
		ops := []func(bool) error{opA, opB, opHBlock}
		if r%every == 0 && coldDone < cold {
			ops = append(ops, opC, opC2)
			coldDone++
		}
		for i := range ops {
			if err := ops[(i+r)%len(ops)](true); err != nil {
				return err
			}
		}
		if (r+1)%100 == 0 {
			e.logf("exec: %d/%d rounds", r+1, n)
		}
	}
	after := pool.Stats()

	e.rep.add(summarize("a", "bare exec round trip (create, attach, stdcopy, inspect)", sa))
	e.rep.add(summarize("a.create", "  of which ContainerExecCreate", aCreate))
	e.rep.add(summarize("a.attach", "  of which ContainerExecAttach (starts it)", aAttach))
	e.rep.add(summarize("a.stream", "  of which output until EOF", aStream))
	e.rep.add(summarize("a.inspect", "  of which ContainerExecInspect until ended", aInspect))
	e.rep.add(summarize("b", "pool Acquire + Exec(echo hi) + Return", sb))
	e.rep.add(summarize("b.acquire", "  of which Acquire", bAcq))
	e.rep.add(summarize("b.exec", "  of which Exec", bExec))
	e.rep.add(summarize("b.return", "  of which Return", bRet))
	e.rep.add(summarize("h", "agent path: Acquire + Exec(echo hi) + Return", sh))
	e.rep.add(summarize("h.first", "  (h) right after a Docker exec (first of each block)", hFirst))
	e.rep.add(summarize("h.acquire", "  of which Acquire", hAcq))
	e.rep.add(summarize("h.exec", "  of which Exec through the agent", hExec))
	e.rep.add(summarize("h.return", "  of which Return", hRet))
	e.rep.add(summarize("c", "cold API: create + start + exec + force-remove", sc))
	e.rep.add(summarize("c.create", "  of which create + start", cCreate))
	e.rep.add(summarize("c.exec", "  of which exec", cExec))
	e.rep.add(summarize("c.remove", "  of which force-remove", cRemove))
	e.rep.add(summarize("c2", "docker run --rm (CLI) echo hi", sc2))
	e.rep.addFact(fact{Name: "a.reinspect", Label: "(a) execs whose first ExecInspect still said running", Value: float64(floorRetries), Unit: "of " + fmt.Sprint(len(sa))})
	e.rep.addFact(fact{Name: "b.waited", Label: "(b) Acquires not served from the idle stack at once (Stats.EmptyAcquireCount)", Value: float64(after.EmptyAcquireCount - before.EmptyAcquireCount), Unit: "of " + fmt.Sprint(len(sb))})
	e.rep.addFact(fact{Name: "b.created", Label: "(b) containers the pool created during the rounds", Value: float64(after.Created - before.Created), Unit: "containers"})
	return e.agentLoad()
}

// agentLoad runs 1,000 concurrent short execs through the agents of 10
// containers and reports their latency.
func (e *env) agentLoad() error {
	const containers, execs = 10, 1000
	ctx := e.ctx
	pool, err := e.newAgentPool("agentload", dockerpool.Config{MinIdle: containers, MaxIdle: containers})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, containers); err != nil {
		return err
	}
	var held []*dockerpool.Container
	defer func() {
		for _, c := range held {
			_ = pool.Return(ctx, c)
		}
	}()
	for range containers {
		c, err := pool.Acquire(ctx)
		if err != nil {
			return fmt.Errorf("agent load: %w", err)
		}
		held = append(held, c)
	}
	lat := make([]time.Duration, execs)
	var failed atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range execs {
		wg.Go(func() {
			t0 := time.Now()
			res, err := held[i%containers].Exec(ctx, []string{"echo", fmt.Sprint(i)})
			lat[i] = time.Since(t0)
			if err != nil || string(res.Stdout) != fmt.Sprintf("%d\n", i) {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	wall := time.Since(start)
	e.rep.add(summarize("h.load", "1,000 concurrent execs through the agents of 10 containers (each from its start)", lat))
	e.rep.addFact(fact{Name: "h.load.wall", Label: "1,000 concurrent agent execs: wall time", Value: float64(wall.Milliseconds()), Unit: "ms"})
	e.rep.addFact(fact{Name: "h.load.errors", Label: "1,000 concurrent agent execs: errors", Value: float64(failed.Load()), Unit: "execs"})
	if failed.Load() > 0 {
		return fmt.Errorf("agent load: %d of %d execs failed", failed.Load(), execs)
	}
	return nil
}
