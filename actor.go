package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/sourcegraph/conc/panics"
)

// This file holds the pool's state and the only code that changes it.
//
// core is a plain state machine: its methods take a message and the current
// time, update the state, answer requests on their buffered reply channels,
// and queue Docker work as tasks. They do no I/O and start no goroutine, so
// they can be tested with a bare core (see actor_test.go). run, at the bottom,
// is the owner goroutine: one select that feeds messages to the core and hands
// the tasks it queued to bounded workers.

// lane is a bounded group of workers.
type lane uint8

const (
	laneOps     lane = iota // refill, trim, removals, resets, reconciling, shutdown: MaxConcurrentDockerOps
	laneAcquire             // creations and checks for callers who found nothing idle: MaxConcurrentAcquire
	laneProbe               // the daemon health ping: one worker, never queued behind stalled calls
	numLanes
)

type taskKind uint8

const (
	taskCreate    taskKind = iota // create and start a container
	taskRemove                    // force-remove a container
	taskCheck                     // inspect an idle container before handing it out
	taskReset                     // run Config.OnReturn on a returned container
	taskProbe                     // ping the daemon
	taskFinalize                  // last sweep by label, then the network
	taskReconcile                 // list the pool's containers: deaths missed, creations whose answer was lost
)

func (k taskKind) String() string {
	return [...]string{"create", "remove", "check", "reset", "probe", "finalize", "reconcile"}[k]
}

// task is one unit of Docker work.
type task struct {
	kind    taskKind
	lane    lane
	id      string       // container, for remove, check and reset
	reason  RemoveReason // for remove
	attempt int          // for remove: earlier failures
	marked  bool         // for reset: the container carries the used mark
	agent   *agentConn   // for remove and reset: the container's agent session
	sweep   []string     // for finalize: containers whose removal failed
}

type slotState uint8

const (
	stNew       slotState = iota // just created, in no set yet
	stIdle                       // on the idle stack
	stLeased                     // held by a caller
	stChecking                   // idle, being inspected before it is handed out
	stResetting                  // returned, OnReturn running
	stRemoving                   // removal queued or running
)

// slot is the pool's record of one container.
type slot struct {
	id        string
	state     slotState
	created   time.Time
	expires   time.Time // MaxLifetime with jitter; zero: never
	idleSince time.Time
	uses      int        // times handed out
	handle    *Container // the current holder's handle, while leased
	dead      bool       // Docker said it died or is gone
	marked    bool       // renamed as used: an earlier holder ran an exec in it
	agent     *agentConn // the agent session, on the agent path
	reason    RemoveReason
}

// waiter is an Acquire call waiting for a container.
type waiter struct {
	reply chan acquireReply
	start time.Time
	gone  bool // cancelled; skipped when the queue is served
}

type phase uint8

const (
	phaseRunning    phase = iota
	phaseDraining         // Shutdown started: no Acquire, waiting for leased containers
	phaseFinalizing       // everything removed; last sweep running
	phaseStopped          // the owner loop exits
)

// Health and backoff.
const (
	backoffCap     = 5 * time.Second        // longest wait between refill attempts while Docker fails
	stallAfter     = 400 * time.Millisecond // Docker work outstanding this long without any result: ping the daemon
	probeTimeout   = 500 * time.Millisecond // a ping slower than this counts as a failure (a healthy daemon answers in milliseconds)
	maxRemoveTry   = 5                      // removal attempts during Shutdown before a container is left to the final sweep
	crashWindow    = 10 * time.Second       // a container exiting on its own this soon after it started is a failed creation
	reconcileEvery = 30 * time.Second       // how often the pool compares its containers with the daemon's list
	maxEarlyDeaths = 256                    // deaths of unknown containers remembered
	removeBackoff  = 200 * time.Millisecond // first wait before retrying a failed removal
)

// limits are the core's settings, fixed at New.
type limits struct {
	minIdle, maxIdle, maxSize int
	workers                   [numLanes]int
	maxUses                   int
	maxIdleTime, maxLifetime  time.Duration
	refillInterval            time.Duration
	suspectIdle               time.Duration // 0: never inspect before handing out
	hasReset                  bool          // Config.OnReturn or CheckOnReturn is set: returns go through taskReset
	hasHook                   bool          // Config.OnReturn is set
	dockerTimeout             time.Duration // bound of one Docker call
}

type core struct {
	lim  limits
	pool *Pool // stamped on the handles it gives out; nil in pure tests
	rnd  *rand.Rand
	log  *slog.Logger // may be nil

	// Containers by state. Every known container is in exactly one of the
	// sets below, as its slot.state says.
	known    map[string]*slot
	idle     []*slot // a stack: the top (last) is the most recently returned
	leased   map[string]*slot
	checking map[string]*slot
	reset    map[string]*slot
	removing map[string]*slot
	creating [numLanes]int // creations queued or running, by lane
	leases   uint64        // handles given out, to number them

	waiters     []*waiter
	waiterIndex map[chan acquireReply]*waiter
	liveWaiters int
	idleWaits   []idleWaitReq // WaitIdle callers

	// Docker work: queued per lane, started while running < workers.
	queue   [numLanes][]task
	running [numLanes]int
	started [numLanes]int // creations running, by lane (the rest of creating is queued)

	phase      phase
	forced     bool
	finalErr   error
	removeFail []string // removals that gave up; the final sweep retries them
	retries    []retry  // removals waiting to be retried

	// Health of the daemon.
	failing         bool
	lastErr         error
	failures        int       // consecutive failed creations
	retryAt         time.Time // no refill before this while failing
	lastProgress    time.Time // last time a task finished
	probing         bool
	reconciling     bool                // a reconcile task is out
	reconcileAt     time.Time           // next periodic reconcile
	reconcileIssued time.Time           // when the reconcile out was asked for
	crashLoop       bool                // new containers exit on their own right after they start
	lastCrash       time.Time           // when the last one did
	early           map[string]eventMsg // deaths of containers not known yet

	// Replies to send once the message is applied and the counters are
	// published (so that a caller who got a container sees it in InUse).
	out []reply

	// Effects for run to carry out after the message; reset by takeEffects.
	notes           []error // for OnError
	closeAdmission  bool    // Shutdown started: close the closing channel
	cancelCreations bool    // forced shutdown: abort creations in flight

	st Stats
}

// reply is an answer waiting in the outbox. Every reply channel has room for
// exactly one answer, so sending never blocks.
type reply struct {
	acq   chan acquireReply
	a     acquireReply
	err   chan error
	e     error
	stats chan Stats // answered with the snapshot at flush time
}

func (c *core) answer(ch chan acquireReply, r acquireReply) {
	c.out = append(c.out, reply{acq: ch, a: r})
}

func (c *core) answerErr(ch chan error, err error) {
	c.out = append(c.out, reply{err: ch, e: err})
}

// flush sends the replies of the last message.
func (c *core) flush() {
	for i, r := range c.out {
		switch {
		case r.acq != nil:
			r.acq <- r.a
		case r.stats != nil:
			r.stats <- c.snapshot()
		default:
			r.err <- r.e
		}
		c.out[i] = reply{}
	}
	c.out = c.out[:0]
}

type retry struct {
	t  task
	at time.Time
}

func newCore(lim limits, pool *Pool, seed uint64, log *slog.Logger) *core {
	lim.workers[laneProbe] = 1
	return &core{
		lim:         lim,
		pool:        pool,
		rnd:         rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		log:         log,
		known:       map[string]*slot{},
		leased:      map[string]*slot{},
		checking:    map[string]*slot{},
		reset:       map[string]*slot{},
		removing:    map[string]*slot{},
		waiterIndex: map[chan acquireReply]*waiter{},
		early:       map[string]eventMsg{},
		st:          Stats{DaemonHealthy: true},
	}
}

// ---- requests from callers -------------------------------------------------

// acquire hands out the top idle container, or queues the caller.
func (c *core) acquire(r acquireReq, now time.Time) {
	if c.phase != phaseRunning {
		c.answer(r.reply, acquireReply{err: ErrPoolShutdown})
		return
	}
	for len(c.idle) > 0 {
		s := c.popIdle()
		if s.agent != nil {
			// The agent's session ends when the container does: no need to
			// ask Docker.
			if s.agent.broken() != nil {
				s.dead = true
				c.startRemove(s, ReasonDied)
				continue
			}
		} else if c.lim.suspectIdle > 0 && now.Sub(s.idleSince) >= c.lim.suspectIdle {
			// Idle long enough that it may have died unnoticed: look at it
			// first. The caller waits in the queue and is served by the
			// check, or by whatever comes back first.
			c.setState(s, stChecking)
			c.enqueue(task{kind: taskCheck, lane: laneAcquire, id: s.id})
			break
		}
		c.lease(s, r.reply, now, now, false)
		return
	}
	if c.failing && len(c.checking) == 0 {
		c.answer(r.reply, acquireReply{err: fmt.Errorf("%w: %w", ErrDaemonUnavailable, c.lastErr)})
		if !c.probing {
			c.probing = true
			c.enqueue(task{kind: taskProbe, lane: laneProbe})
		}
		return
	}
	w := &waiter{reply: r.reply, start: now}
	c.waiters = append(c.waiters, w)
	c.waiterIndex[r.reply] = w
	c.liveWaiters++
	c.st.WaitCount++
}

// cancel removes a caller who gave up. If it had been answered already, the
// container is taken back from its reply channel.
func (c *core) cancel(r cancelReq, now time.Time) {
	if w, ok := c.waiterIndex[r.reply]; ok {
		w.gone = true
		delete(c.waiterIndex, r.reply)
		c.liveWaiters--
		c.st.CanceledAcquireCount++
		return
	}
	select {
	case rep := <-r.reply:
		if rep.c == nil {
			return // it was an error; nothing to take back
		}
		s, ok := c.leased[rep.c.id]
		if !ok || s.handle != rep.c {
			return
		}
		// Never seen by the caller: not a use.
		s.uses--
		s.handle = nil
		c.st.AcquireCount--
		c.st.CanceledAcquireCount++
		rep.c.state.Or(handleReleased)
		c.offer(s, now)
	default:
	}
}

// release takes back a leased container (Return, or Remove when r.remove).
func (c *core) release(r releaseReq, now time.Time) {
	s, ok := c.leased[r.c.id]
	if !ok || s.handle != r.c {
		if r.c.state.Load()&handleRevoked != 0 {
			c.answerErr(r.reply, ErrPoolShutdown)
		} else {
			c.answerErr(r.reply, fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(r.c.id)))
		}
		return
	}
	s.handle = nil
	if r.c.state.Load()&handleMarked != 0 {
		s.marked = true
	}
	c.answerErr(r.reply, nil)
	switch {
	case r.remove:
		c.startRemove(s, ReasonUser)
	case s.dead || r.c.state.Load()&handleDead != 0:
		c.startRemove(s, ReasonDied)
	case r.tainted || r.c.state.Load()&handleTainted != 0:
		c.startRemove(s, ReasonTainted)
	case c.phase != phaseRunning:
		c.startRemove(s, ReasonShutdown)
	case c.lim.maxUses > 0 && s.uses >= c.lim.maxUses:
		c.startRemove(s, ReasonMaxUses)
	case !s.expires.IsZero() && !now.Before(s.expires):
		c.startRemove(s, ReasonLifetime)
	case c.lim.hasReset:
		c.setState(s, stResetting)
		c.enqueue(task{kind: taskReset, lane: laneOps, id: s.id, marked: s.marked, agent: s.agent})
	default:
		c.offer(s, now)
	}
}

// waitIdle answers at once when n containers are idle, else when they are.
func (c *core) waitIdle(r idleWaitReq) {
	if c.phase != phaseRunning {
		c.answerErr(r.reply, ErrPoolShutdown)
		return
	}
	c.idleWaits = append(c.idleWaits, r)
}

func (c *core) unwaitIdle(r idleUnwaitReq) {
	c.idleWaits = slices.DeleteFunc(c.idleWaits, func(w idleWaitReq) bool { return w.reply == r.reply })
}

// stats answers a snapshot.
func (c *core) stats(r statsReq) { c.out = append(c.out, reply{stats: r.reply}) }

func (c *core) snapshot() Stats {
	st := c.st
	st.Idle = len(c.idle)
	st.InUse = len(c.leased)
	st.Creating = c.creating[laneOps] + c.creating[laneAcquire]
	st.Removing = len(c.removing)
	st.Checking = len(c.checking) + len(c.reset)
	st.Waiting = c.liveWaiters
	st.Total = st.Idle + st.InUse + st.Creating + st.Removing + st.Checking
	st.DaemonHealthy = !c.failing
	return st
}

// shutdown starts the shutdown protocol: nobody is admitted any more, waiters
// are answered, idle containers are removed. Leased ones are removed as they
// come back.
func (c *core) shutdown() {
	if c.phase != phaseRunning {
		return
	}
	c.phase = phaseDraining
	c.closeAdmission = true
	for _, w := range c.waiters {
		if !w.gone {
			c.answer(w.reply, acquireReply{err: ErrPoolShutdown})
		}
	}
	c.waiters, c.liveWaiters = nil, 0
	clear(c.waiterIndex)
	for _, w := range c.idleWaits {
		c.answerErr(w.reply, ErrPoolShutdown)
	}
	c.idleWaits = nil
	// Creations not started yet will never be needed.
	for l := range numLanes {
		kept := c.queue[l][:0]
		for _, t := range c.queue[l] {
			if t.kind == taskCreate {
				c.creating[l]--
				continue
			}
			kept = append(kept, t)
		}
		c.queue[l] = kept
	}
	for len(c.idle) > 0 {
		c.startRemove(c.popIdle(), ReasonShutdown)
	}
	// Failed removals waiting for their retry go now.
	for _, r := range c.retries {
		c.enqueue(r.t)
	}
	c.retries = nil
}

// force stops waiting for leased containers: they are removed now, and their
// holders' handles stop working.
func (c *core) force() {
	if c.phase != phaseDraining || c.forced {
		return
	}
	c.forced = true
	c.cancelCreations = true
	for _, s := range c.leased {
		s.handle.state.Or(handleRevoked)
		s.handle = nil
		c.startRemove(s, ReasonShutdown)
	}
}

// ---- results of Docker work ------------------------------------------------

func (c *core) done(r taskResult) {
	t, now := r.task, r.at
	c.running[t.lane]--
	c.lastProgress = now
	switch t.kind {
	case taskCreate:
		c.creating[t.lane]--
		c.started[t.lane]--
		if r.err != nil {
			if r.id != "" { // made, but not started: remove it like any other
				s := &slot{id: r.id, created: now}
				c.known[s.id] = s
				c.startRemove(s, ReasonFailedStart)
			}
			if c.phase != phaseRunning {
				return // shutting down (perhaps cutting creations short): health no longer matters
			}
			if r.id == "" {
				// The daemon may have made the container and the answer got
				// lost: look for it once any creation sent now has timed out.
				c.reconcileAt = now.Add(c.lim.dockerTimeout + 2*time.Second)
			}
			c.createFailed(t, r.err, now)
			return
		}
		if !c.crashLoop {
			c.healthy(now)
		}
		c.st.Created++
		s := &slot{id: r.id, created: now, agent: r.agent}
		if c.lim.maxLifetime > 0 {
			// Up to 10% less, so that containers made together do not all
			// expire together.
			jitter := time.Duration(c.rnd.Int64N(int64(c.lim.maxLifetime)/10 + 1))
			s.expires = now.Add(c.lim.maxLifetime - jitter)
		}
		c.known[s.id] = s
		c.logAttrs(slog.LevelDebug, "container created", slog.String("id", shortID(s.id)))
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

	case taskRemove:
		s := c.known[t.id]
		if r.err != nil {
			c.st.RemoveErrors++
			t.attempt++
			if t.attempt == maxRemoveTry {
				c.notes = append(c.notes, fmt.Errorf("dockerpool: removing container %s failed %d times, still trying: %w", shortID(t.id), t.attempt, r.err))
			}
			switch {
			case c.phase == phaseRunning:
				// While the pool runs, a removal is retried for as long as it
				// takes, with a capped backoff: the container stays counted.
				c.retries = append(c.retries, retry{t: t, at: now.Add(min(removeBackoff<<min(t.attempt-1, 10), backoffCap))})
				return
			case t.attempt < maxRemoveTry && !c.forced:
				c.enqueue(t) // shutting down: no time to wait
				return
			}
			// Shutting down and out of patience: the final sweep tries again.
			c.removeFail = append(c.removeFail, t.id)
		}
		if s != nil {
			delete(c.removing, s.id)
			delete(c.known, s.id)
		}
		if r.err == nil {
			c.st.Removed++
			c.st.RemovedBy[t.reason]++
			c.logAttrs(slog.LevelDebug, "container removed", slog.String("id", shortID(t.id)), slog.String("reason", t.reason.String()))
		}

	case taskCheck:
		s := c.known[t.id]
		switch {
		case s.dead || errors.Is(r.err, ErrContainerDead):
			c.startRemove(s, ReasonDied)
		case c.phase != phaseRunning:
			c.startRemove(s, ReasonShutdown)
		case r.err != nil:
			// Docker did not answer: the container is probably fine, the
			// daemon is not. Keep it; callers hear that Docker fails.
			c.markFailing(r.err, now)
			c.setState(s, stIdle)
			c.idle = append(c.idle, s)
		default:
			c.offer(s, now)
		}

	case taskReset:
		s := c.known[t.id]
		switch {
		case s.dead || errors.Is(r.err, ErrContainerDead):
			c.startRemove(s, ReasonDied)
		case r.err != nil:
			c.startRemove(s, ReasonResetFailed)
			c.logAttrs(slog.LevelInfo, "reset failed", slog.String("id", shortID(s.id)), slog.String("error", r.err.Error()))
		case c.phase != phaseRunning:
			c.startRemove(s, ReasonShutdown)
		default:
			if c.lim.hasHook {
				s.marked = false // reset by OnReturn: renamed clean, adoptable again
			}
			c.offer(s, now)
		}

	case taskProbe:
		c.probing = false
		if r.err != nil {
			c.markFailing(fmt.Errorf("ping: %w", r.err), now)
			// Nobody should keep waiting on calls that will not come back.
			c.failWaiters(fmt.Errorf("%w: %w", ErrDaemonUnavailable, c.lastErr))
			return
		}
		if c.failing {
			c.retryAt = now // the daemon answers again: retry the refill at once
		}

	case taskFinalize:
		c.finalErr = r.err
		c.phase = phaseStopped

	case taskReconcile:
		c.reconciling = false
		if r.err != nil || c.phase != phaseRunning {
			return
		}
		running := map[string]bool{}
		for _, f := range r.found {
			running[f.id] = f.running
			if _, ok := c.known[f.id]; ok || !f.ours || now.Sub(f.created) < c.lim.dockerTimeout+2*time.Second {
				continue
			}
			// Ours, unknown, and older than any creation still in flight:
			// a creation whose answer was lost. Remove it.
			s := &slot{id: f.id, created: f.created}
			c.known[s.id] = s
			c.startRemove(s, ReasonStale)
		}
		for id, s := range c.known {
			// Containers made after the list was asked for are not in it.
			if !running[id] && s.state != stRemoving && s.created.Before(c.reconcileIssued) {
				c.event(eventMsg{id: id, action: "die", exitCode: "137"}, now)
			}
		}
	}
}

func (c *core) createFailed(t task, err error, now time.Time) {
	c.st.CreateErrors++
	c.markFailing(err, now)
	// One failure answers at most one caller: the others have their own
	// creation in flight.
	if t.lane == laneAcquire && c.liveWaiters > c.creating[laneAcquire]+len(c.checking) {
		if w := c.popWaiter(); w != nil {
			c.answer(w.reply, acquireReply{err: fmt.Errorf("%w: %w", ErrCreateFailed, err)})
		}
	}
}

func (c *core) markFailing(err error, now time.Time) {
	c.lastErr = err
	c.failures++
	backoff := min(c.lim.refillInterval<<min(c.failures-1, 20), backoffCap)
	c.retryAt = now.Add(backoff)
	if !c.failing {
		c.failing = true
		c.notes = append(c.notes, fmt.Errorf("dockerpool: cannot make containers, refill backs off until it can: %w", err))
	}
	c.logAttrs(slog.LevelWarn, "refill backoff", slog.Int("failures", c.failures), slog.Duration("retry_in", backoff), slog.String("error", err.Error()))
}

func (c *core) healthy(now time.Time) {
	c.failures = 0
	if c.failing {
		c.failing = false
		c.lastErr = nil
		c.logAttrs(slog.LevelInfo, "docker recovered")
	}
}

func (c *core) failWaiters(err error) {
	for _, w := range c.waiters {
		if !w.gone {
			c.answer(w.reply, acquireReply{err: err})
		}
	}
	c.waiters, c.liveWaiters = nil, 0
	clear(c.waiterIndex)
}

// ---- events and time -------------------------------------------------------

// event applies a Docker event about one of the pool's containers.
func (c *core) event(e eventMsg, now time.Time) {
	switch e.action {
	case "died": // Podman
		e.action = "die"
	case "remove": // Podman
		e.action = "destroy"
	case "die", "oom", "destroy":
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
	if e.action == "oom" {
		// A process in the container was OOM-killed; the container may well
		// still run. It is not reused (a die follows if it stopped).
		switch s.state {
		case stIdle:
			c.removeFromIdle(s)
			c.startRemove(s, ReasonDied)
		case stLeased:
			if s.handle != nil {
				s.handle.state.Or(handleTainted)
			}
		default:
			s.dead = true
		}
		return
	}
	if e.action == "die" && s.uses == 0 && now.Sub(s.created) < crashWindow && e.exitCode != "137" && e.exitCode != "143" {
		// It exited on its own right after it started, before anybody used
		// it: the configuration cannot make a container that stays up, and
		// every replacement would do the same. Treat it as a failed
		// creation, so that refill backs off and OnError hears of it.
		c.crashLoop, c.lastCrash = true, now
		c.st.CreateErrors++
		c.markFailing(fmt.Errorf("container %s exited with code %s right after it started (does Cmd keep running?)", shortID(s.id), e.exitCode), now)
	}
	s.dead = true
	switch s.state {
	case stIdle:
		c.removeFromIdle(s)
		c.startRemove(s, ReasonDied)
	case stLeased:
		if s.handle != nil {
			s.handle.state.Or(handleDead)
		}
	}
	// stChecking and stResetting see s.dead when their task ends.
}

// resync is asked for when the event stream broke: deaths may have been
// missed, so the pool reconciles with the daemon's list now.
func (c *core) resync(now time.Time) {
	c.reconcileAt = now
	c.tick(now)
}

// tick runs every RefillInterval: expiry, retries, stall detection.
func (c *core) tick(now time.Time) {
	if c.crashLoop {
		// Over when a container made after the last crash has stayed up.
		for _, s := range c.idle {
			if s.created.After(c.lastCrash) && now.Sub(s.created) >= crashWindow {
				c.crashLoop = false
				c.healthy(now)
				break
			}
		}
	}
	if c.phase == phaseRunning && (c.lim.maxIdleTime > 0 || c.lim.maxLifetime > 0) {
		kept := c.idle[:0]
		var expired []*slot
		for _, s := range c.idle {
			switch {
			case c.lim.maxIdleTime > 0 && now.Sub(s.idleSince) >= c.lim.maxIdleTime:
				s.reason = ReasonIdleTime
				expired = append(expired, s)
			case !s.expires.IsZero() && !now.Before(s.expires):
				s.reason = ReasonLifetime
				expired = append(expired, s)
			default:
				kept = append(kept, s)
			}
		}
		c.idle = kept
		for _, s := range expired {
			c.startRemove(s, s.reason)
		}
	}
	kept := c.retries[:0]
	for _, r := range c.retries {
		if now.Before(r.at) {
			kept = append(kept, r)
			continue
		}
		c.enqueue(r.t)
	}
	c.retries = kept
	if !c.probing && c.running[laneOps]+c.running[laneAcquire] > 0 && now.Sub(c.lastProgress) >= stallAfter {
		c.probing = true
		c.lastProgress = now // at most one probe per stallAfter
		c.enqueue(task{kind: taskProbe, lane: laneProbe})
	}
	if c.phase == phaseRunning && !c.reconciling && !now.Before(c.reconcileAt) {
		c.reconciling = true
		c.reconcileAt = now.Add(reconcileEvery)
		c.reconcileIssued = now
		c.enqueue(task{kind: taskReconcile, lane: laneOps})
	}
}

// balance runs after every message: it starts creations for waiting callers,
// refills to MinIdle, trims to MaxIdle, and moves the shutdown forward.
func (c *core) balance(now time.Time) {
	if c.phase == phaseRunning {
		room := 1 << 30
		if c.lim.maxSize > 0 {
			room = c.lim.maxSize - c.size()
		}
		// Callers first: one creation each, minus what is already coming.
		need := c.liveWaiters - c.creating[laneAcquire] - len(c.checking)
		if need > 0 && c.failing {
			// Nothing will come for them until Docker answers again.
			for ; need > 0; need-- {
				c.answer(c.popWaiter().reply, acquireReply{err: fmt.Errorf("%w: %w", ErrDaemonUnavailable, c.lastErr)})
			}
		}
		for ; need > 0 && room > 0; need-- {
			c.enqueueCreate(laneAcquire)
			room--
		}
		for ; need < 0 && c.dropQueuedCreate(laneAcquire); need++ {
			room++
		}
		// Then idle headroom, unless Docker is failing and it is not time
		// to retry yet.
		if c.liveWaiters == 0 && (!c.failing || !now.Before(c.retryAt)) {
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
		for len(c.idle) > c.lim.maxIdle {
			s := c.idle[0]
			c.idle = c.idle[1:]
			c.startRemove(s, ReasonTrim)
		}
		if len(c.idleWaits) > 0 {
			c.idleWaits = slices.DeleteFunc(c.idleWaits, func(w idleWaitReq) bool {
				if len(c.idle) >= w.n {
					c.answerErr(w.reply, nil)
					return true
				}
				return false
			})
		}
	}
	if c.phase == phaseDraining && len(c.leased) == 0 && len(c.checking) == 0 && len(c.reset) == 0 &&
		len(c.removing) == 0 && c.creating[laneOps]+c.creating[laneAcquire] == 0 && len(c.retries) == 0 &&
		c.busy() == 0 {
		c.phase = phaseFinalizing
		c.enqueue(task{kind: taskFinalize, lane: laneOps, sweep: c.removeFail})
	}
}

// next pops the queued tasks that may start now, within each lane's bound.
func (c *core) next(buf []task, now time.Time) []task {
	if c.running[laneOps]+c.running[laneAcquire] == 0 {
		c.lastProgress = now // the stall clock starts with the first task
	}
	for l := range numLanes {
		for len(c.queue[l]) > 0 && c.running[l] < c.lim.workers[l] {
			t := c.queue[l][0]
			buf = append(buf, t)
			c.queue[l] = c.queue[l][1:]
			c.running[l]++
			if t.kind == taskCreate {
				c.started[l]++
			}
		}
	}
	return buf
}

// ---- helpers ----------------------------------------------------------------

// offer gives a container to the oldest waiter, or puts it on the idle stack,
// or removes it when MaxIdle containers are idle already.
func (c *core) offer(s *slot, now time.Time) {
	if w := c.popWaiter(); w != nil {
		c.lease(s, w.reply, w.start, now, true)
		return
	}
	if len(c.idle) >= c.lim.maxIdle {
		c.startRemove(s, ReasonTrim)
		return
	}
	c.setState(s, stIdle)
	s.idleSince = now
	c.idle = append(c.idle, s)
}

// lease hands s to the caller behind reply.
func (c *core) lease(s *slot, reply chan acquireReply, start, now time.Time, waited bool) {
	c.setState(s, stLeased)
	s.uses++
	c.leases++
	h := &Container{pool: c.pool, id: s.id, lease: c.leases, needMark: !s.marked, agent: s.agent}
	s.handle = h
	c.st.AcquireCount++
	if !start.IsZero() {
		c.st.AcquireDuration += now.Sub(start)
		if waited {
			c.st.WaitDuration += now.Sub(start)
		}
	}
	if waited {
		c.st.EmptyAcquireCount++
	}
	c.answer(reply, acquireReply{c: h})
}

func (c *core) popIdle() *slot {
	s := c.idle[len(c.idle)-1]
	c.idle[len(c.idle)-1] = nil
	c.idle = c.idle[:len(c.idle)-1]
	return s
}

func (c *core) removeFromIdle(s *slot) {
	for i, x := range c.idle {
		if x == s {
			c.idle = append(c.idle[:i], c.idle[i+1:]...)
			return
		}
	}
}

func (c *core) popWaiter() *waiter {
	for len(c.waiters) > 0 {
		w := c.waiters[0]
		c.waiters[0] = nil
		c.waiters = c.waiters[1:]
		if w.gone {
			continue
		}
		delete(c.waiterIndex, w.reply)
		c.liveWaiters--
		return w
	}
	return nil
}

// setState moves s out of the set of its current state and into the set of
// st. The idle stack is handled by the callers, who know where s sits in it.
func (c *core) setState(s *slot, st slotState) {
	switch s.state {
	case stLeased:
		delete(c.leased, s.id)
	case stChecking:
		delete(c.checking, s.id)
	case stResetting:
		delete(c.reset, s.id)
	case stRemoving:
		delete(c.removing, s.id)
	}
	s.state = st
	switch st {
	case stLeased:
		c.leased[s.id] = s
	case stChecking:
		c.checking[s.id] = s
	case stResetting:
		c.reset[s.id] = s
	case stRemoving:
		c.removing[s.id] = s
	}
}

func (c *core) startRemove(s *slot, why RemoveReason) {
	c.setState(s, stRemoving)
	s.reason = why
	c.enqueue(task{kind: taskRemove, lane: laneOps, id: s.id, reason: why, agent: s.agent})
}

func (c *core) enqueue(t task) { c.queue[t.lane] = append(c.queue[t.lane], t) }

func (c *core) enqueueCreate(l lane) {
	c.creating[l]++
	c.enqueue(task{kind: taskCreate, lane: l})
}

// dropQueuedCreate cancels one creation of lane l that has not started.
func (c *core) dropQueuedCreate(l lane) bool {
	q := c.queue[l]
	for i := len(q) - 1; i >= 0; i-- {
		if q[i].kind == taskCreate {
			c.queue[l] = append(q[:i], q[i+1:]...)
			c.creating[l]--
			return true
		}
	}
	return false
}

// busy counts the tasks queued or running in every lane.
func (c *core) busy() int {
	n := 0
	for l := range numLanes {
		n += c.running[l] + len(c.queue[l])
	}
	return n
}

// size counts the containers that MaxSize caps.
func (c *core) size() int {
	return len(c.idle) + len(c.leased) + len(c.checking) + len(c.reset) + c.creating[laneOps] + c.creating[laneAcquire]
}

func (c *core) logAttrs(level slog.Level, msg string, attrs ...slog.Attr) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
}

// takeEffects returns and clears the effects the last message produced.
func (c *core) takeEffects() (notes []error, closeAdmission, cancelCreations bool) {
	notes, closeAdmission, cancelCreations = c.notes, c.closeAdmission, c.cancelCreations
	c.notes, c.closeAdmission, c.cancelCreations = nil, false, false
	return
}

// check verifies the invariants that must hold after every message. A
// violation is a bug in this package, never a caller's mistake.
func (c *core) check() {
	n := 0
	for _, s := range c.idle {
		if s.state != stIdle || c.known[s.id] != s {
			panic(fmt.Sprintf("internal error: idle container %s in state %d", s.id, s.state))
		}
		n++
	}
	for name, set := range map[string]map[string]*slot{"leased": c.leased, "checking": c.checking, "reset": c.reset, "removing": c.removing} {
		for id, s := range set {
			if c.known[id] != s {
				panic(fmt.Sprintf("internal error: %s container %s is not known", name, id))
			}
			n++
		}
	}
	if n != len(c.known) {
		panic(fmt.Sprintf("internal error: %d containers in the sets, %d known (a container is in two sets or none)", n, len(c.known)))
	}
	for id, s := range c.leased {
		if s.state != stLeased || s.handle == nil {
			panic(fmt.Sprintf("internal error: leased container %s has state %d, handle %v", id, s.state, s.handle != nil))
		}
	}
	live := 0
	for _, w := range c.waiters {
		if !w.gone {
			live++
		}
	}
	if live != c.liveWaiters || live != len(c.waiterIndex) {
		panic(fmt.Sprintf("internal error: %d live waiters, counted %d, indexed %d", live, c.liveWaiters, len(c.waiterIndex)))
	}
	for l := range numLanes {
		queued := 0
		for _, t := range c.queue[l] {
			if t.kind == taskCreate {
				queued++
			}
		}
		if c.creating[l] != queued+c.started[l] || c.running[l] < 0 || c.running[l] > c.lim.workers[l] {
			panic(fmt.Sprintf("internal error: lane %d: creating %d, but %d queued and %d started; running %d of %d", l, c.creating[l], queued, c.started[l], c.running[l], c.lim.workers[l]))
		}
	}
}

// ---- the owner goroutine ------------------------------------------------------

// run is the owner: the only goroutine that touches p.core. Each case hands
// one message to one core method; afterMessage then carries out what the
// message caused. Nothing in the loop blocks except the select itself: replies
// go to buffered channels, Docker work goes to workers only while a worker is
// free (conc's Go would block otherwise), and workers hand results back
// through resultCh.
func (p *Pool) run() {
	p.ownerG.Store(goid())
	defer p.exit()
	c := p.core
	var buf []task
	buf = p.afterMessage(time.Now(), buf)
	for c.phase != phaseStopped {
		select {
		case r := <-p.acquireCh:
			now := time.Now()
			c.acquire(r, now)
			buf = p.afterMessage(now, buf)
		case r := <-p.releaseCh:
			now := time.Now()
			c.release(r, now)
			buf = p.afterMessage(now, buf)
		case r := <-p.resultCh:
			c.done(r)
			buf = p.afterMessage(r.at, buf)
		case m := <-p.ctrlCh:
			now := time.Now()
			c.control(m, now)
			buf = p.afterMessage(now, buf)
		}
	}
}

// control dispatches a rare request.
func (c *core) control(m ctrlMsg, now time.Time) {
	switch {
	case m.cancel != nil:
		c.cancel(*m.cancel, now)
	case m.stats != nil:
		c.stats(*m.stats)
	case m.idleWait != nil:
		c.waitIdle(*m.idleWait)
	case m.idleUnwait != nil:
		c.unwaitIdle(*m.idleUnwait)
	case m.shutdown != nil:
		c.shutdown()
	case m.force != nil:
		c.force()
	case m.event != nil:
		c.event(*m.event, now)
	case m.resync != nil:
		c.resync(now)
	case m.tick:
		c.tick(now)
	}
}

// afterMessage rebalances the pool, checks the invariants (in tests), carries
// out the effects of the last message and starts the Docker work that may
// start.
func (p *Pool) afterMessage(now time.Time, buf []task) []task {
	c := p.core
	c.balance(now)
	if debugChecks {
		c.check()
	}
	p.idle.Store(int64(len(c.idle)))
	p.inUse.Store(int64(len(c.leased)))
	c.flush()
	notes, closeAdmission, cancelCreations := c.takeEffects()
	for _, err := range notes {
		p.notify(err)
	}
	if closeAdmission {
		close(p.closing)
	}
	if cancelCreations {
		p.cancelCreate()
	}
	buf = c.next(buf[:0], now)
	for _, t := range buf {
		p.lanes[t.lane].Go(func() { p.work(t) })
	}
	return buf
}

// work runs one task on a worker and always reports back, a panic included.
func (p *Pool) work(t task) {
	r := taskResult{task: t}
	defer func() {
		r.at = time.Now()
		select {
		case p.resultCh <- r:
		case <-p.baseCtx.Done(): // the owner is gone (it only leaves early on a bug)
		}
	}()
	if rec := panics.Try(func() { p.do(t, &r) }); rec != nil {
		r.err = rec.AsError()
	}
}

func (p *Pool) do(t task, r *taskResult) {
	if t.kind == taskReconcile {
		r.found, r.err = p.reconcile()
		return
	}
	if t.kind == taskCreate {
		r.id, r.agent, r.err = p.createContainer()
		return
	}
	r.id, r.err = p.doOne(t)
}

func (p *Pool) doOne(t task) (string, error) {
	switch t.kind {
	case taskRemove:
		t.agent.close()
		ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
		defer cancel()
		return "", p.removeContainer(ctx, t.id)
	case taskCheck:
		return "", p.checkContainer(t.id)
	case taskReset:
		return "", p.resetContainer(t.id, t.marked, t.agent)
	case taskProbe:
		ctx, cancel := context.WithTimeout(p.baseCtx, probeTimeout)
		defer cancel()
		_, err := p.api.Ping(ctx)
		return "", err
	case taskFinalize:
		return "", p.finalize(t.sweep)
	}
	return "", fmt.Errorf("internal error: unknown task %d", t.kind)
}

// exit ends the pool once the owner loop is over: workers, helpers, client.
// If the owner panicked (a bug), the pool fails closed: every caller gets
// ErrPoolShutdown and the pool's containers are swept.
func (p *Pool) exit() {
	rec := recover()
	p.cancelCreate()
	p.cancelBase()
	for _, l := range p.lanes {
		l.Wait()
	}
	if rec != nil {
		err := fmt.Errorf("dockerpool: internal error, pool %q stopped: %v", p.cfg.Name, rec)
		p.notify(err)
		var sweep []string
		for id := range p.core.known {
			sweep = append(sweep, id)
		}
		p.shutdownErr = errors.Join(err, p.finalizeWith(context.WithoutCancel(p.baseCtx), sweep))
	} else {
		p.shutdownErr = p.core.finalErr
	}
	for _, s := range p.core.known { // after a bug: no session may outlive the pool
		s.agent.close()
	}
	p.finalStats = p.core.snapshot()
	p.idle.Store(0)
	p.inUse.Store(0)
	select {
	case <-p.closing:
	default:
		close(p.closing)
	}
	p.stopHelpers()
	if p.closer != nil {
		_ = p.closer.Close()
	}
	close(p.done)
	if rec != nil && debugChecks {
		panic(rec)
	}
}
