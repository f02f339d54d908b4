package dockerpool

import (
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Requests of callers: Acquire, its cancellation, Return and Remove,
// WaitIdle, Shutdown, and the adoption New asks for.

// acquire hands out the top idle container, or queues the caller; a
// caller promised an idle container (a Group over hosts) finds none left
// is handed back to the group instead.
func (c *core) acquire(reply chan acquireReply, promised bool, now time.Time) {
	c.bud.asked++
	if c.phase != phaseRunning {
		c.refuse(reply, ErrPoolShutdown)
		return
	}
	if c.host.down != nil {
		c.refuse(reply, c.host.down)
		return
	}
	if promised && len(c.idle) == 0 {
		c.refuse(reply, errPromiseGone)
		return
	}
	if len(c.idle) > 0 {
		s := c.popIdle()
		// On the agent path a container that dies ends its session, which
		// says so at once: no need to ask Docker.
		if c.lim.agent || c.lim.suspectIdle == 0 || now.Sub(s.idleSince) < c.lim.suspectIdle {
			c.lease(s, reply, now, now, false)
			return
		}
		// Idle long enough that it may have died unnoticed: look at it
		// first. The caller waits in the queue and is served by the check,
		// or by whatever comes back first.
		c.setState(s, stChecking)
		c.enqueue(checkTask{id: s.id})
	}
	if c.failing && len(c.checking) == 0 {
		c.refuse(reply, c.unavailable())
		if !c.probing {
			c.probing = true
			c.enqueue(probeTask{})
		}
		return
	}
	w := &waiter{reply: reply, start: now}
	c.waiters = append(c.waiters, w)
	c.waiterIndex[reply] = w
	c.liveWaiters++
	c.st.WaitCount++
}

// withdraw drops a waiting caller who gave up before it was answered.
func (c *core) withdraw(reply chan acquireReply) {
	w, ok := c.waiterIndex[reply]
	if !ok {
		return // answered with an error meanwhile: nothing to undo
	}
	w.gone = true
	delete(c.waiterIndex, reply)
	c.liveWaiters--
	c.st.CanceledAcquireCount++
}

// takeBack returns the container of a grant that its caller never received:
// it was no use, so neither the use nor the Acquire counts.
func (c *core) takeBack(id string, lease uint64, now time.Time) {
	s, ok := c.leased[id]
	if !ok || s.lease != lease {
		return
	}
	s.uses--
	c.st.AcquireCount--
	c.st.AcquireDuration -= s.leaseWait
	if s.waited {
		c.st.EmptyAcquireCount--
		if s.uses == 0 {
			c.st.ColdAcquireCount--
			c.bud.coldWait -= s.leaseWait
		}
		c.st.WaitDuration -= s.leaseWait
	}
	c.st.CanceledAcquireCount++
	c.endLease(s)
	c.offer(s, now)
}

// release takes back a leased container (Return, or Remove when r.remove).
func (c *core) release(r releaseReq, now time.Time) {
	s, ok := c.leased[r.id]
	if !ok || s.lease != r.lease {
		if r.flags&handleRevoked != 0 {
			c.answer(r.reply, ErrPoolShutdown)
		} else {
			c.answer(r.reply, fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(r.id)))
		}
		return
	}
	c.endLease(s)
	if r.flags&handleMarked != 0 {
		s.marked = true
	}
	c.answer(r.reply, nil)
	switch {
	case r.remove:
		c.startRemove(s, ReasonUser)
	case r.flags&handleOOM != 0:
		c.startRemove(s, ReasonOutOfMemory)
	case s.dead || r.flags&handleDead != 0:
		c.startRemove(s, ReasonDied)
	case r.busy || r.flags&handleTainted != 0:
		c.startRemove(s, ReasonTainted)
	case c.phase != phaseRunning:
		c.startRemove(s, ReasonShutdown)
	case c.lim.maxUses > 0 && s.uses >= c.lim.maxUses:
		c.startRemove(s, ReasonMaxUses)
	case !s.expires.IsZero() && !now.Before(s.expires):
		c.startRemove(s, ReasonLifetime)
	case c.lim.hasReset:
		c.setState(s, stResetting)
		c.enqueue(resetTask{id: s.id, marked: s.marked})
	default:
		c.offer(s, now)
	}
}

// waitIdle queues a WaitIdle caller; balance answers it when n containers
// are idle (at once, if they are now).
func (c *core) waitIdle(r idleWaitReq) {
	if c.phase != phaseRunning {
		c.answer(r.reply, ErrPoolShutdown)
		return
	}
	if c.host.down != nil {
		c.answer(r.reply, c.host.down)
		return
	}
	c.idleWaits = append(c.idleWaits, r)
}

func (c *core) unwaitIdle(reply chan error) {
	c.idleWaits = slices.DeleteFunc(c.idleWaits, func(w idleWaitReq) bool { return w.reply == reply })
}

// shutdown starts the shutdown protocol: nobody is admitted any more, waiters
// are answered, idle containers are removed. Leased ones are removed as they
// come back.
func (c *core) shutdown() {
	if c.phase != phaseRunning {
		return
	}
	c.phase = phaseDraining
	c.fx.closeAdmission = true
	c.failWaiters(ErrPoolShutdown)
	for _, w := range c.idleWaits {
		c.answer(w.reply, ErrPoolShutdown)
	}
	c.idleWaits = nil
	// Creations not started yet will never be needed.
	for l := range numLanes {
		c.queue[l] = slices.DeleteFunc(c.queue[l], func(t task) bool {
			if _, ok := t.(createTask); ok {
				c.creating[l]--
				return true
			}
			return false
		})
	}
	for len(c.idle) > 0 {
		c.startRemove(c.popIdle(), ReasonShutdown)
	}
	// Failed removals waiting for their retry go now.
	for _, r := range c.retries {
		c.enqueue(r.t)
	}
	c.retries = nil
	if c.host.down != nil {
		c.abandon() // its host is out: nothing waits on it
	}
}

// force stops waiting for leased containers: they are removed now, and their
// holders' handles stop working.
func (c *core) force() {
	if c.phase != phaseDraining || c.forced {
		return
	}
	c.forced = true
	c.fx.cancelCreations = true
	for _, s := range c.leased {
		c.flag(s, handleRevoked)
		c.endLease(s)
		c.startRemove(s, ReasonShutdown)
	}
}

// adopt takes over the containers New found from an earlier process: the
// trustworthy ones join the idle stack, up to MaxIdle, as if just created
// (lifetime and jitter alike); the others are removed. It is the pool's first
// message: from then on the pool runs.
func (c *core) adopt(found []adoptee, now time.Time) {
	if c.phase == phaseStarting {
		c.phase = phaseRunning
	}
	for _, f := range found {
		s := c.admit(f.id, f.created)
		_, died := c.early[f.id] // while New looked at it
		delete(c.early, f.id)
		if !f.ok || died || len(c.idle) >= c.lim.maxIdle {
			c.startRemove(s, ReasonStale)
			continue
		}
		c.st.Adopted++
		c.logAttrs(slog.LevelInfo, "container adopted", slogID(f.id))
		c.offer(s, now)
	}
	if c.lim.budgeted {
		c.bud.permits = max(c.bud.permits, c.size()) // adopted: the group hears of them in the report
	}
}
