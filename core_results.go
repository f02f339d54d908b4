package dockerpool

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Results of Docker work: each result message says how its task ended, and
// the core moves the container on.

// created ends a creation: the new container goes to a waiter or the idle
// stack, or is removed when the pool no longer wants it.
func (c *core) created(m createdMsg, now time.Time) {
	c.finished(m.task.lane(), now)
	c.creating[m.task.ln]--
	c.started[m.task.ln]--
	if m.err != nil {
		c.createFailed(m, now)
		return
	}
	if !c.crashLoop {
		c.healthy()
	}
	c.st.Created++
	s := c.admit(m.id, now)
	c.logAttrs(slog.LevelDebug, "container created", slogID(s.id))
	if e, ok := c.early[s.id]; ok {
		delete(c.early, s.id)
		c.event(e, now)
		c.startRemove(s, ReasonDied)
		return
	}
	if c.phase != phaseRunning {
		c.startRemove(s, ReasonShutdown)
		return
	}
	c.offer(s, now)
}

func (c *core) createFailed(m createdMsg, now time.Time) {
	if m.id != "" { // made, but not started: remove it like any other
		c.startRemove(c.admit(m.id, now), ReasonFailedStart)
	}
	if c.phase != phaseRunning {
		return // shutting down (perhaps cutting creations short): health no longer matters
	}
	if m.id == "" {
		// The daemon may have made the container and the answer got lost:
		// look for it once any creation sent now has timed out.
		c.reconcileAt = now.Add(c.lim.dockerTimeout + 2*time.Second)
	}
	c.st.CreateErrors++
	c.markFailing(m.err, now)
	// One failure answers at most one caller: the others have their own
	// creation in flight.
	if m.task.ln == laneAcquire && c.liveWaiters > c.creating[laneAcquire]+len(c.checking) {
		if w := c.popWaiter(); w != nil {
			c.refuse(w.reply, fmt.Errorf("%w: %w", ErrCreateFailed, m.err))
		}
	}
}

// removed ends a removal; a failed one is retried.
func (c *core) removed(m removedMsg, now time.Time) {
	t := m.task
	c.finished(t.lane(), now)
	if m.err != nil && c.removeFailed(t, m.err, now) {
		return // retried
	}
	if m.err != nil && c.leaves() {
		c.drop(t.id)
		return
	}
	if s := c.known[t.id]; s != nil {
		delete(c.removing, s.id)
		delete(c.known, s.id)
	}
	if m.err == nil {
		c.st.Removed++
		c.removedBy[t.reason]++
		c.logAttrs(slog.LevelDebug, "container removed", slogID(t.id), slog.String("reason", t.reason.String()))
	}
}

// removeFailed counts a failed removal and schedules its retry. It reports
// false when the pool gives up on it: the final sweep tries again.
func (c *core) removeFailed(t removeTask, err error, now time.Time) bool {
	c.st.RemoveErrors++
	t.attempt++
	if t.attempt == maxRemoveTry {
		c.note(fmt.Errorf("dockerpool: removing container %s failed %d times, still trying: %w", shortID(t.id), t.attempt, err))
	}
	switch {
	case c.leaves():
		return false // left on the host, which is out
	case c.phase == phaseRunning:
		// While the pool runs, a removal is retried for as long as it
		// takes, with a capped backoff: the container stays counted.
		c.retries = append(c.retries, retry{t: t, at: now.Add(min(removeBackoff<<min(t.attempt-1, 10), backoffCap))})
		return true
	case t.attempt < maxRemoveTry && !c.forced:
		c.enqueue(t) // shutting down: no time to wait
		return true
	}
	c.removeFail = append(c.removeFail, t.id)
	return false
}

// checked ends the inspection of a suspect idle container.
func (c *core) checked(m checkedMsg, now time.Time) {
	c.finished(m.task.lane(), now)
	s := c.known[m.task.id]
	switch {
	case c.goneOrStopping(s, m.err):
	case m.err != nil:
		// Docker did not answer: the container is probably fine, the
		// daemon is not. Keep it; callers hear that Docker fails.
		c.markFailing(m.err, now)
		c.setState(s, stIdle)
		c.idle = append(c.idle, s)
	default:
		c.offer(s, now)
	}
}

// resetDone ends the reset of a returned container.
func (c *core) resetDone(m resetMsg, now time.Time) {
	c.finished(m.task.lane(), now)
	s := c.known[m.task.id]
	switch {
	case c.goneOrStopping(s, m.err):
	case errors.As(m.err, new(unverifiedError)):
		c.startRemove(s, ReasonResetUnverified)
		c.logAttrs(slog.LevelInfo, "reset not verified", slogID(s.id), slog.String("error", m.err.Error()))
	case m.err != nil:
		c.startRemove(s, ReasonResetFailed)
		c.logAttrs(slog.LevelInfo, "reset failed", slogID(s.id), slog.String("error", m.err.Error()))
	default:
		if c.lim.resetCleans {
			s.marked = false // renamed clean: adoptable again
		}
		c.offer(s, now)
	}
}

// goneOrStopping removes a container coming back from a check or a reset
// when it died meanwhile or the pool is shutting down, and reports whether
// it did.
func (c *core) goneOrStopping(s *slot, err error) bool {
	switch {
	case s.dead || errors.Is(err, ErrContainerDead):
		c.startRemove(s, ReasonDied)
	case c.phase != phaseRunning:
		c.startRemove(s, ReasonShutdown)
	default:
		return false
	}
	return true
}

// probed ends a health ping.
func (c *core) probed(err error, now time.Time) {
	c.finished(laneProbe, now)
	c.probing = false
	if err != nil {
		c.markFailing(fmt.Errorf("ping: %w", err), now)
		// Nobody should keep waiting on calls that will not come back.
		c.failWaiters(c.unavailable())
		return
	}
	if c.failing {
		c.retryAt = now // the daemon answers again: retry the refill at once
	}
}

// finalized ends Shutdown's last sweep: the owner stops.
func (c *core) finalized(err error, now time.Time) {
	c.finished(laneOps, now)
	c.finalErr = err
	c.phase = phaseStopped
}

// reconciled compares the daemon's list with what the pool knows: deaths
// it missed, and creations whose answer was lost.
func (c *core) reconciled(m reconciledMsg, now time.Time) {
	c.finished(laneOps, now)
	c.reconciling = false
	if m.err != nil || c.phase != phaseRunning {
		return
	}
	running := map[string]bool{}
	settle := c.lim.dockerTimeout + 2*time.Second
	for _, f := range m.found {
		running[f.id] = f.running
		if _, ok := c.known[f.id]; ok || !f.ours {
			continue
		}
		if age := now.Sub(f.created); age < settle && c.creatingNow() {
			// Perhaps a creation still in flight: look again once no
			// creation sent before the list can be, rather than at the next
			// periodic reconcile. With none in flight it can only be one
			// whose answer was lost (a host's outage cut it short).
			if at := f.created.Add(settle); at.Before(c.reconcileAt) {
				c.reconcileAt = at
			}
			continue
		}
		// Ours, unknown, and older than any creation still in flight: a
		// creation whose answer was lost. Remove it.
		c.startRemove(c.admit(f.id, f.created), ReasonStale)
	}
	if !c.host.backAt.IsZero() && now.Sub(c.host.backAt) < afterBack {
		c.reconcileAt = minTime(c.reconcileAt, now.Add(time.Second))
	}
	for id, s := range c.known {
		// Containers made after the list was asked for are not in it.
		if !running[id] && s.state != stRemoving && s.created.Before(c.reconcileIssued) {
			c.event(eventMsg{id: id, action: "die", exitCode: "137"}, now)
		}
	}
}

// creatingNow reports whether a creation is queued or running.
func (c *core) creatingNow() bool {
	for _, n := range c.creating {
		if n > 0 {
			return true
		}
	}
	return false
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}
