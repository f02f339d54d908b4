package dockerpool

import "time"

// Messages to the owner goroutine. There is one Go type per kind of message,
// and every type implements message, whose apply hands it to the core method
// of its concern. The set is closed (apply is unexported), and nothing but
// these types crosses into the core: the owner's select receives them on
// typed channels (acquireCh, releaseCh for the frequent requests; ctrlCh
// for the rare ones and resultCh for the workers' results, both of type
// message).
//
// A request that needs an answer carries its own reply channel, made by the
// sender with capacity 1: the owner sends on it exactly once and never blocks
// doing so. The core never touches a channel: it names the reply channel in
// its effects, and the owner sends.
type message interface {
	apply(c *core, now time.Time)
}

// ---- requests from callers ---------------------------------------------------

// acquireReq asks for a container. The reply channel also identifies the
// waiter when the caller gives up (see cancelReq).
type acquireReq struct {
	reply chan acquireReply
	// promised: a Group over hosts placed the caller here for an idle
	// container (group_place.go); with none left, the core hands it back
	// (errPromiseGone) for the group to place again.
	promised bool
}

type acquireReply struct {
	c      *Container
	err    error
	waited bool // a warm miss, for the metrics
}

// releaseReq hands a leased container back: to the idle stack (Return) or to
// removal (Remove). The handle's flags travel in the request: the core never
// reads a handle.
type releaseReq struct {
	id     string
	lease  uint64 // which hand-out the handle stands for
	remove bool   // Remove rather than Return
	flags  uint64 // the handle's state word when it was released (handle* bits)
	busy   bool   // an exec was still running on the handle
	reply  chan error
}

// cancelReq says that the caller behind an acquireReq stopped waiting. The
// owner settles it before the core sees it: if it had answered already, it
// takes the answer back from the buffered reply channel and hands the core a
// takeBackMsg instead, so nothing is lost.
type cancelReq struct {
	reply chan acquireReply
}

// takeBackMsg returns the container of a grant whose caller gave up before
// it received it.
type takeBackMsg struct {
	id    string
	lease uint64
}

// idleWaitReq asks to be told when at least n containers are idle.
type idleWaitReq struct {
	n     int
	reply chan error
}

// idleUnwaitReq withdraws an idleWaitReq whose caller gave up.
type idleUnwaitReq struct {
	reply chan error
}

// shutdownReq starts the shutdown protocol; it is idempotent.
type shutdownReq struct{}

// forceReq ends the wait for leased containers: everything left is removed.
type forceReq struct{}

// statsReq asks for a consistent snapshot of the pool.
type statsReq struct {
	reply chan Stats
}

// adoptReq hands the owner the containers New found from an earlier
// process, checked, before the pool takes any other request.
type adoptReq struct {
	found []adoptee
	reply chan struct{}
}

// adoptee is a container of the pool's label found by New.
type adoptee struct {
	id      string
	created time.Time
	ok      bool       // running, same configuration, never used, agent answers
	agent   *agentConn // its agent session, on the agent path (owned by the owner)
}

// ---- the daemon and time ------------------------------------------------------

// eventMsg is a Docker event about one of the pool's containers.
type eventMsg struct {
	id       string
	action   string // "die", "oom", "destroy", ...
	exitCode string // for "die"
}

// actionAgentGone is the action of the eventMsg an agent session sends when
// it ends: the container is no use any more, whatever Docker says.
const actionAgentGone = "agent-gone"

// resyncMsg says the event stream was re-established: deaths may have been
// missed while nobody listened, so the owner reconciles with the daemon.
type resyncMsg struct{}

// tickMsg says RefillInterval passed.
type tickMsg struct{}

// ---- results of Docker work -------------------------------------------------
//
// Workers send exactly one result per task, whatever happens (a panic
// included).

// createdMsg ends a createTask.
type createdMsg struct {
	task  createTask
	id    string     // the container, also when it was made but not started
	agent *agentConn // its agent session, on the agent path (owned by the owner)
	err   error
}

// removedMsg ends a removeTask.
type removedMsg struct {
	task removeTask
	err  error
}

// checkedMsg ends a checkTask.
type checkedMsg struct {
	task checkTask
	err  error
}

// resetMsg ends a resetTask.
type resetMsg struct {
	task resetTask
	err  error
}

// probedMsg ends a probeTask.
type probedMsg struct{ err error }

// finalizedMsg ends the finalizeTask: the pool stops.
type finalizedMsg struct{ err error }

// reconciledMsg ends a reconcileTask.
type reconciledMsg struct {
	found []found
	err   error
}

// found is a container of the pool's label as the daemon lists it.
// permitMsg: the group lets a member make n more containers.
type permitMsg struct{ n int }

// evictMsg: the group asks a member for its least recently used idle container.
type evictMsg struct{}

// warmMsg: the group sets a member's warm target (its MinIdle).
type warmMsg struct{ n int }

type found struct {
	id      string
	created time.Time
	running bool
	ours    bool // made by this Pool value (its instance label)
}

// ---- dispatch: each message to the core method of its concern ---------------

func (m acquireReq) apply(c *core, now time.Time)    { c.acquire(m.reply, m.promised, now) }
func (m releaseReq) apply(c *core, now time.Time)    { c.release(m, now) }
func (m cancelReq) apply(c *core, _ time.Time)       { c.withdraw(m.reply) }
func (m takeBackMsg) apply(c *core, now time.Time)   { c.takeBack(m.id, m.lease, now) }
func (m idleWaitReq) apply(c *core, _ time.Time)     { c.waitIdle(m) }
func (m idleUnwaitReq) apply(c *core, _ time.Time)   { c.unwaitIdle(m.reply) }
func (shutdownReq) apply(c *core, _ time.Time)       { c.shutdown() }
func (forceReq) apply(c *core, _ time.Time)          { c.force() }
func (m statsReq) apply(c *core, _ time.Time)        { c.fx.stats = append(c.fx.stats, m.reply) }
func (m adoptReq) apply(c *core, now time.Time)      { c.adopt(m.found, now); c.fx.adopted = m.reply }
func (m eventMsg) apply(c *core, now time.Time)      { c.event(m, now) }
func (resyncMsg) apply(c *core, now time.Time)       { c.resync(now) }
func (tickMsg) apply(c *core, now time.Time)         { c.tick(now) }
func (m createdMsg) apply(c *core, now time.Time)    { c.created(m, now) }
func (m removedMsg) apply(c *core, now time.Time)    { c.removed(m, now) }
func (m checkedMsg) apply(c *core, now time.Time)    { c.checked(m, now) }
func (m resetMsg) apply(c *core, now time.Time)      { c.resetDone(m, now) }
func (m probedMsg) apply(c *core, now time.Time)     { c.probed(m.err, now) }
func (m finalizedMsg) apply(c *core, now time.Time)  { c.finalized(m.err, now) }
func (m reconciledMsg) apply(c *core, now time.Time) { c.reconciled(m, now) }
func (m permitMsg) apply(c *core, _ time.Time)       { c.permit(m.n) }
func (evictMsg) apply(c *core, _ time.Time)          { c.evict() }
func (m warmMsg) apply(c *core, _ time.Time)         { c.warm(m.n) }
