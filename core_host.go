package dockerpool

import (
	"slices"
	"time"
)

// A member pool of a Group over hosts (GroupConfig.Hosts) hears from the
// group when its host goes out of placement and when it is back (hostMsg).
// The host's health lives in the group, not here: one prober per host
// serves every template's pool on it. While the host is out the pool turns
// callers away with the host's error (wrapping ErrHostDown), marks the
// handles it has leased dead (their operations end at once, through their
// life context), starts no Docker work and asks the group for no permits:
// what it queued (removals of the containers returned meanwhile, retries,
// the reconcile) starts when the host is back, so what a dead host's
// containers leave there is removed then. A pool that shuts down while its
// host is out leaves what it has there instead of waiting for the host:
// the next pool of that name removes it by label, as after a crash.

// hostMsg says that the pool's host went out of placement (err, naming the
// host and wrapping ErrHostDown) or is back (nil).
type hostMsg struct{ err error }

// hostState is what a member pool knows of its Group host.
type hostState struct {
	down   error     // out of placement, and why; nil when in
	backAt time.Time // when it last came back
}

// afterBack is how long after its host came back a pool keeps looking, every
// second, for containers that creations cut by the outage leave: the daemon
// finishes a creation whose caller gave up, and a request that a dropping
// network held up reaches it when TCP retransmits it, seconds later.
const afterBack = 15 * time.Second

func (m hostMsg) apply(c *core, now time.Time) { c.hostChange(m.err, now) }

func (c *core) hostChange(err error, now time.Time) {
	if err == nil {
		if c.host.down != nil {
			c.host.down = nil
			c.host.backAt = now
			c.healthy() // its calls failed because the host was out, not the pool
			c.retryAt = now
			c.reconcileAt = now // deaths missed while it was out
		}
		return
	}
	was := c.host.down
	c.host.down = err
	if was != nil {
		return
	}
	c.failWaiters(err)
	for _, w := range c.idleWaits {
		c.answer(w.reply, err)
	}
	c.idleWaits = nil
	for _, s := range c.leased {
		s.dead = true
		c.flag(s, handleDead|handleHostDown)
	}
	if c.phase != phaseRunning {
		c.abandon()
	}
}

// abandon, shutting down with the host out: the queued work that would
// wait on the host is dropped, its containers left there.
func (c *core) abandon() {
	for l := range numLanes {
		c.queue[l] = slices.DeleteFunc(c.queue[l], func(t task) bool {
			switch t := t.(type) {
			case createTask:
				c.creating[l]--
				return true
			case removeTask:
				c.drop(t.id)
				return true
			}
			return false
		})
	}
	for _, r := range c.retries {
		c.drop(r.t.id)
	}
	c.retries = nil
}

// drop forgets a container being removed without asking Docker.
func (c *core) drop(id string) {
	if _, ok := c.known[id]; ok {
		delete(c.removing, id)
		delete(c.known, id)
	}
}

// parked: the host is out and the pool runs: no Docker work starts.
func (c *core) parked() bool { return c.host.down != nil && c.phase == phaseRunning }

// leaves: shutting down with the host out, a removal is a drop.
func (c *core) leaves() bool { return c.host.down != nil && c.phase != phaseRunning }
