package dockerpool

import (
	"fmt"
	"slices"
	"time"
)

// The seam between a pool's core and a Group (group.go): a member pool may
// have at most as many containers as it holds permits. It asks the group for
// more by reporting what it wants, gets them as permitMsg, gives back at once
// what it does not need, gives up its least recently used idle container on
// evictMsg, and keeps the warm target the group sets (warmMsg). A plain Pool
// has lim.budgeted false and none of this runs.

// budget is a member's side of the group's accounting.
type budget struct {
	permits  int           // size() never exceeds it
	grants   int64         // permits received so far
	evicts   int64         // eviction requests handled so far
	wantWait int           // creations for waiting callers that wait for a permit
	wantWarm int           // creations for MinIdle that wait for a permit
	coldWait time.Duration // total wait of the cold starts
	asked    int64         // Acquire requests received so far (the group's placements that arrived)
	coming   int           // waiting callers with a creation or a check on its way
	fresh    int           // permits granted in this step, not yet spent
	last     budgetReport
}

// maxReportedWaits bounds the arrival times a report carries.
const maxReportedWaits = 64

// budgetReport is what a member tells the group, as levels and cumulative
// counts, so that a newer report replaces an older one unread.
type budgetReport struct {
	held               int   // permits held
	grants, evicts     int64 // permits received, evictions handled
	asked              int64 // Acquire requests received
	wantWait, wantWarm int
	waitSince          []time.Time // arrival of the callers behind wantWait, oldest first
	idle, inUse        int
	waiting            int       // callers waiting for a container
	creating           int       // creations under way
	lruIdle            time.Time // since when the least recently used idle container is idle
	acquires, misses   int64     // hand-outs, and the cold starts among them
	missWait           time.Duration
	stopped            bool // the pool is finalizing: nothing more will be made
}

func (r budgetReport) same(o budgetReport) bool {
	return r.held == o.held && r.grants == o.grants && r.evicts == o.evicts && r.asked == o.asked &&
		r.wantWait == o.wantWait && r.wantWarm == o.wantWarm && r.idle == o.idle && r.inUse == o.inUse && r.waiting == o.waiting && r.creating == o.creating &&
		r.lruIdle.Equal(o.lruIdle) && r.acquires == o.acquires && r.misses == o.misses &&
		r.missWait == o.missWait && r.stopped == o.stopped && slices.EqualFunc(r.waitSince, o.waitSince, time.Time.Equal)
}

// permit accepts n more permits from the group.
func (c *core) permit(n int) {
	c.bud.permits += n
	c.bud.fresh += n
	c.bud.grants += int64(n)
}

// reclaim, at the start of balance, gives back the permits of containers
// that left: the group, not the member, decides who uses the room next (the
// oldest waiter of any template). Only permits granted in this step may
// start creations.
func (c *core) reclaim() {
	c.bud.permits = min(c.bud.permits, c.size()+c.bud.fresh)
	c.bud.fresh = 0
}

// evict gives up the least recently used idle container, if any is left.
func (c *core) evict() {
	c.bud.evicts++
	if c.phase != phaseRunning || len(c.idle) == 0 {
		return
	}
	s := c.idle[0]
	c.idle[0] = nil
	c.idle = c.idle[1:]
	c.startRemove(s, ReasonEvicted)
}

// warm sets the refill target the group chose, within MaxIdle.
func (c *core) warm(n int) { c.lim.minIdle = max(0, min(n, c.lim.maxIdle)) }

// wants works out, after serveWaiters and refill, what more they would have
// made with permits, within the pool's own MaxSize.
func (c *core) wants(now time.Time) {
	room := 1 << 30
	if c.lim.maxSize > 0 {
		room = c.lim.maxSize - c.size()
	}
	need := c.liveWaiters - c.creating[laneAcquire] - len(c.checking)
	c.bud.coming = c.liveWaiters - max(0, need)
	c.bud.wantWait = max(0, min(need, room))
	room -= c.bud.wantWait
	warm := 0
	if c.liveWaiters == 0 && (!c.failing || !now.Before(c.retryAt)) {
		warm = c.lim.minIdle - (len(c.idle) + len(c.checking) + c.creating[laneOps] + c.creating[laneAcquire])
		if c.failing {
			warm = min(warm, 1)
		}
	}
	c.bud.wantWarm = max(0, min(warm, room))
}

// giveBack returns the permits no container needs, at the end of balance.
func (c *core) giveBack() {
	if c.phase != phaseRunning || c.host.down != nil {
		c.bud.wantWait, c.bud.wantWarm = 0, 0
	}
	c.bud.permits = min(c.bud.permits, c.size())
}

// budgetNews is the report of this step, or nil when it says nothing new.
func (c *core) budgetNews() *budgetReport {
	r := budgetReport{
		held: c.bud.permits, grants: c.bud.grants, evicts: c.bud.evicts, asked: c.bud.asked,
		wantWait: c.bud.wantWait, wantWarm: c.bud.wantWarm,
		idle: len(c.idle), inUse: len(c.leased), waiting: c.liveWaiters,
		creating: c.creating[laneOps] + c.creating[laneAcquire],
		acquires: c.st.AcquireCount, misses: c.st.ColdAcquireCount, missWait: c.bud.coldWait,
		stopped: c.phase >= phaseFinalizing,
	}
	if len(c.idle) > 0 {
		r.lruIdle = c.idle[0].idleSince
	}
	if r.wantWait > 0 {
		skip := c.bud.coming // these have a creation or a check coming
		for _, w := range c.waiters {
			if w.gone {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			if len(r.waitSince) == maxReportedWaits {
				break
			}
			r.waitSince = append(r.waitSince, w.start)
		}
	}
	if r.same(c.bud.last) {
		return nil
	}
	c.bud.last = r
	return &c.bud.last
}

// checkBudget: a member never has more containers than permits.
func (c *core) checkBudget() {
	if c.lim.budgeted && c.size() > c.bud.permits {
		panic(fmt.Sprintf("internal error: %d containers on %d permits", c.size(), c.bud.permits))
	}
}
