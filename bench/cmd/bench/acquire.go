package main

import (
	"fmt"
	"time"

	"github.com/dockerpool/dockerpool"
)

// runAcquire measures (d): warm Acquire alone, Return alone and the pair, on
// a real-daemon pool with one idle container, with no exec in between. No
// Docker call happens on this path; what is timed is the pool's own work and
// its two round trips to the owner goroutine.
func (e *env) runAcquire() error {
	ctx := e.ctx
	n := e.p.Pairs
	e.logf("acquire: %d warm Acquire/Return pairs", n)
	pool, err := e.newPool("acquire", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, 1); err != nil {
		return err
	}

	pair := func() (acq, ret time.Duration, err error) {
		t0 := time.Now()
		c, err := pool.Acquire(ctx)
		t1 := time.Now()
		if err != nil {
			return 0, 0, fmt.Errorf("acquire: %w", err)
		}
		err = pool.Return(ctx, c)
		t2 := time.Now()
		return t1.Sub(t0), t2.Sub(t1), err
	}
	for range min(n/10, 2000) {
		if _, _, err := pair(); err != nil {
			return err
		}
	}
	before := pool.Stats()
	acqs := make([]time.Duration, 0, n)
	rets := make([]time.Duration, 0, n)
	pairs := make([]time.Duration, 0, n)
	for range n {
		a, r, err := pair()
		if err != nil {
			return err
		}
		acqs = append(acqs, a)
		rets = append(rets, r)
		pairs = append(pairs, a+r)
	}
	after := pool.Stats()

	// An idle container older than the pool's suspect threshold (1s) is
	// inspected before it is handed out: time Acquire after short and long
	// idle periods, alternately.
	var short, long []time.Duration
	for i := range 2 * suspectRounds {
		idle := 300 * time.Millisecond
		if i%2 == 1 {
			idle = 1200 * time.Millisecond
		}
		time.Sleep(idle)
		a, _, err := pair()
		if err != nil {
			return err
		}
		if i%2 == 1 {
			long = append(long, a)
		} else {
			short = append(short, a)
		}
	}

	e.rep.add(summarize("d.acquire", "warm Acquire alone (real daemon, no exec)", acqs))
	e.rep.add(summarize("d.return", "Return alone", rets))
	e.rep.add(summarize("d.pair", "Acquire + Return", pairs))
	e.rep.add(summarize("d.idle300ms", "Acquire of a container idle 300ms", short))
	e.rep.add(summarize("d.idle1200ms", "Acquire of a container idle 1.2s (inspected first)", long))
	e.rep.addFact(fact{Name: "d.waited", Label: "(d) Acquires not served from the idle stack at once", Value: float64(after.EmptyAcquireCount - before.EmptyAcquireCount), Unit: fmt.Sprint("of ", n)})
	e.rep.addFact(fact{Name: "clock", Label: "cost of one time.Now() (included once in each sample)", Value: float64(clockCost().Nanoseconds()), Unit: "ns"})
	return nil
}

// suspectRounds is how many Acquires follow a short, and a long, idle period.
const suspectRounds = 6

// clockCost estimates what one time.Now call costs on this machine.
func clockCost() time.Duration {
	const k = 100000
	t0 := time.Now()
	var t time.Time
	for range k {
		t = time.Now()
	}
	return t.Sub(t0) / k
}
