package dockerpool

import (
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// The daemon's health, Docker's events, time, and the balance that runs
// after every message.

// unavailable is the error of a caller turned away while Docker fails, or
// while the containers exit right after they start.
func (c *core) unavailable() error {
	if c.crashLoop {
		return fmt.Errorf("%w: %w", ErrCrashLoop, c.lastErr)
	}
	return fmt.Errorf("%w: %w", ErrDaemonUnavailable, c.lastErr)
}

func (c *core) markFailing(err error, now time.Time) {
	c.lastErr = err
	c.failures++
	backoff := min(c.lim.refillInterval<<min(c.failures-1, 20), backoffCap)
	c.retryAt = now.Add(backoff)
	if !c.failing {
		c.failing = true
		c.note(fmt.Errorf("dockerpool: cannot make containers, refill backs off until it can: %w", err))
	}
	c.logAttrs(slog.LevelWarn, "refill backoff", slog.Int("failures", c.failures), slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
}

func (c *core) healthy() {
	c.failures = 0
	if c.failing {
		c.failing = false
		c.lastErr = nil
		c.logAttrs(slog.LevelInfo, "docker recovered")
	}
}

// failWaiters answers every waiting caller with err.
func (c *core) failWaiters(err error) {
	for _, w := range c.waiters {
		if !w.gone {
			c.refuse(w.reply, err)
		}
	}
	c.waiters, c.liveWaiters = nil, 0
	clear(c.waiterIndex)
}

// ---- events -------------------------------------------------------------------

// event applies a Docker event about one of the pool's containers.
func (c *core) event(e eventMsg, now time.Time) {
	switch e.action {
	case "died": // Podman
		e.action = "die"
	case "remove": // Podman
		e.action = "destroy"
	case "die", "oom", "destroy", actionAgentGone:
	default:
		return // kill, stop...: a die follows if they worked
	}
	s, ok := c.known[e.id]
	if !ok {
		// Perhaps a container whose creation result is still on its way:
		// remember the death for when it arrives.
		if len(c.early) >= maxEarlyDeaths {
			clear(c.early) // old news about containers long gone
		}
		c.early[e.id] = e
		return
	}
	if s.state == stRemoving {
		return
	}
	switch e.action {
	case "oom":
		// A process in the container was OOM-killed: the container may well
		// still run, and its holder may go on (an Exec that ended with 137
		// learns why), but it is not reused (a die follows if it stopped).
		c.retire(s, handleOOM|handleTainted, ReasonOutOfMemory)
		return
	case actionAgentGone:
		// The agent's session ended: the container is no use any more.
		c.retire(s, handleTainted, ReasonDied)
		return
	case "die":
		c.crashed(s, e, now)
	}
	s.dead = true
	c.retire(s, handleDead, ReasonDied)
}

// retire makes sure a container is not reused: an idle one is removed at
// once (for why), a leased one gets bits on its handle and goes on Return,
// and one being checked or reset is marked dead for when its task ends.
func (c *core) retire(s *slot, bits uint64, why RemoveReason) {
	switch s.state {
	case stIdle:
		c.removeFromIdle(s)
		c.startRemove(s, why)
	case stLeased:
		c.flag(s, bits)
	default:
		s.dead = true
	}
}

// crashed notices a container that exited on its own right after it
// started, before anybody used it: the configuration cannot make a container
// that stays up, and every replacement would do the same. It counts as a
// failed creation, so that refill backs off and OnError hears of it.
func (c *core) crashed(s *slot, e eventMsg, now time.Time) {
	if s.uses > 0 || now.Sub(s.created) >= crashWindow || e.exitCode == "137" || e.exitCode == "143" {
		return // used, old, or killed by a signal: not a crash loop
	}
	c.crashLoop, c.lastCrash = true, now
	c.st.CreateErrors++
	c.markFailing(fmt.Errorf("container %s exited with code %s right after it started (does Cmd keep running?)", shortID(s.id), e.exitCode), now)
}

// resync is asked for when the event stream broke: deaths may have been
// missed, so the pool reconciles with the daemon's list now.
func (c *core) resync(now time.Time) {
	c.reconcileAt = now
	c.tick(now)
}

// ---- time ---------------------------------------------------------------------

// tick runs every RefillInterval: the end of a crash loop, expiry, retries,
// stall detection and the periodic reconcile.
func (c *core) tick(now time.Time) {
	if c.crashLoop {
		// Over when a container made after the last crash has stayed up.
		for _, s := range c.idle {
			if s.created.After(c.lastCrash) && now.Sub(s.created) >= crashWindow {
				c.crashLoop = false
				c.healthy()
				break
			}
		}
	}
	if c.phase == phaseRunning && (c.lim.maxIdleTime > 0 || c.lim.maxLifetime > 0) {
		c.expire(now)
	}
	c.retries = slices.DeleteFunc(c.retries, func(r retry) bool {
		if now.Before(r.at) {
			return false
		}
		c.enqueue(r.t)
		return true
	})
	if !c.probing && c.running[laneOps]+c.running[laneAcquire] > 0 && now.Sub(c.lastProgress) >= stallAfter {
		c.probing = true
		c.lastProgress = now // at most one probe per stallAfter
		c.enqueue(probeTask{})
	}
	if c.phase == phaseRunning && !c.reconciling && !now.Before(c.reconcileAt) {
		c.reconciling = true
		c.reconcileAt = now.Add(reconcileEvery)
		c.reconcileIssued = now
		c.enqueue(reconcileTask{})
	}
}

// expire removes the idle containers past MaxIdleTime or their lifetime.
func (c *core) expire(now time.Time) {
	var expired []*slot
	c.idle = slices.DeleteFunc(c.idle, func(s *slot) bool {
		switch {
		case c.lim.maxIdleTime > 0 && now.Sub(s.idleSince) >= c.lim.maxIdleTime:
			s.reason = ReasonIdleTime
		case !s.expires.IsZero() && !now.Before(s.expires):
			s.reason = ReasonLifetime
		default:
			return false
		}
		expired = append(expired, s)
		return true
	})
	for _, s := range expired {
		c.startRemove(s, s.reason)
	}
}

// ---- balance --------------------------------------------------------------------

// balance runs after every message: it starts creations for waiting callers,
// refills to MinIdle, trims to MaxIdle, answers WaitIdle, and moves the
// shutdown forward.
func (c *core) balance(now time.Time) {
	if c.phase == phaseRunning {
		room := 1 << 30
		if c.lim.maxSize > 0 {
			room = c.lim.maxSize - c.size()
		}
		if c.lim.budgeted {
			c.reclaim()
			room = min(room, c.bud.permits-c.size())
		}
		room = c.serveWaiters(room)
		c.refill(room, now)
		if c.lim.budgeted {
			c.wants(now)
		}
		for len(c.idle) > c.lim.maxIdle {
			s := c.idle[0]
			c.idle = c.idle[1:]
			c.startRemove(s, ReasonTrim)
		}
		c.idleWaits = slices.DeleteFunc(c.idleWaits, func(w idleWaitReq) bool {
			if len(c.idle) >= w.n {
				c.answer(w.reply, nil)
				return true
			}
			return false
		})
	}
	if c.phase == phaseDraining && len(c.leased) == 0 && len(c.checking) == 0 && len(c.reset) == 0 &&
		len(c.removing) == 0 && c.creating[laneOps]+c.creating[laneAcquire] == 0 && len(c.retries) == 0 &&
		c.busy() == 0 {
		c.phase = phaseFinalizing
		c.enqueue(finalizeTask{sweep: c.removeFail})
	}
	if c.lim.budgeted {
		c.giveBack()
	}
}

// serveWaiters starts one creation per waiting caller, minus what is
// already coming, within room; it returns the room left.
func (c *core) serveWaiters(room int) int {
	need := c.liveWaiters - c.creating[laneAcquire] - len(c.checking)
	if need > 0 && c.failing {
		// Nothing will come for them until Docker answers again.
		for ; need > 0; need-- {
			c.refuse(c.popWaiter().reply, c.unavailable())
		}
	}
	for ; need > 0 && room > 0; need-- {
		c.enqueueCreate(laneAcquire)
		room--
	}
	for ; need < 0 && c.dropQueuedCreate(laneAcquire); need++ {
		room++
	}
	return room
}

// refill keeps MinIdle containers ready, unless callers wait (they come
// first) or Docker is failing and it is not time to retry yet.
func (c *core) refill(room int, now time.Time) {
	if c.liveWaiters > 0 || (c.failing && now.Before(c.retryAt)) {
		return
	}
	have := len(c.idle) + len(c.checking) + c.creating[laneOps] + c.creating[laneAcquire]
	deficit := c.lim.minIdle - have
	if c.failing {
		deficit = min(deficit, 1) // one attempt at a time while failing
		if deficit > 0 {
			c.retryAt = now.Add(backoffCap) // until this attempt ends
		}
	}
	for ; deficit > 0 && room > 0; deficit-- {
		c.enqueueCreate(laneOps)
		room--
	}
}
