package dockerpool

import "fmt"

// check verifies the invariants that must hold after every message. A
// violation is a bug in this package, never a caller's mistake: it panics
// with "internal error".
func (c *core) check() {
	c.checkSets()
	c.checkWaiters()
	c.checkLanes()
	c.checkBudget()
}

// checkSets: every known container is in exactly one set, consistent with
// its state, and a leased one has its hand-out.
func (c *core) checkSets() {
	n := 0
	for _, s := range c.idle {
		if s.state != stIdle || c.known[s.id] != s {
			panic(fmt.Sprintf("internal error: idle container %s in state %d", s.id, s.state))
		}
		n++
	}
	sets := []struct {
		name  string
		set   map[string]*slot
		state slotState
	}{{"leased", c.leased, stLeased}, {"checking", c.checking, stChecking}, {"reset", c.reset, stResetting}, {"removing", c.removing, stRemoving}}
	for _, set := range sets {
		for id, s := range set.set {
			if c.known[id] != s || s.state != set.state {
				panic(fmt.Sprintf("internal error: %s container %s is not known or in state %d", set.name, id, s.state))
			}
			n++
		}
	}
	if n != len(c.known) {
		panic(fmt.Sprintf("internal error: %d containers in the sets, %d known (a container is in two sets or none)", n, len(c.known)))
	}
	for id, s := range c.known {
		if (s.state == stLeased) != (s.lease != 0) {
			panic(fmt.Sprintf("internal error: container %s in state %d has lease %d", id, s.state, s.lease))
		}
	}
}

func (c *core) checkWaiters() {
	live := 0
	for _, w := range c.waiters {
		if !w.gone {
			live++
		}
	}
	if live != c.liveWaiters || live != len(c.waiterIndex) {
		panic(fmt.Sprintf("internal error: %d live waiters, counted %d, indexed %d", live, c.liveWaiters, len(c.waiterIndex)))
	}
}

// checkLanes: every creation is queued or started, and lanes stay within
// their bounds.
func (c *core) checkLanes() {
	for l := range numLanes {
		queued := 0
		for _, t := range c.queue[l] {
			if _, ok := t.(createTask); ok {
				queued++
			}
		}
		if c.creating[l] != queued+c.started[l] || c.running[l] < 0 || c.running[l] > c.lim.workers[l] {
			panic(fmt.Sprintf("internal error: lane %d: creating %d, but %d queued and %d started; running %d of %d", l, c.creating[l], queued, c.started[l], c.running[l], c.lim.workers[l]))
		}
	}
}
