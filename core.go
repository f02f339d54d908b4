package dockerpool

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"time"
)

// The pool's state and the only code that changes it live in the core_*.go
// files. core is a plain state machine in the manner of etcd raft's Step:
// step takes one message and the current time, changes the state, and
// returns the effects the message caused (replies to send, handle flags to
// set, Docker work to start, notes for OnError). It does no I/O, starts no
// goroutine, touches no channel, handle or agent session, and knows nothing
// of the Pool: the owner (owner.go) carries the effects out. The files split
// it by concern:
//
//	core.go          state, step, effects, and the helpers every concern uses
//	core_callers.go  requests of callers: acquire, release, cancel, WaitIdle, shutdown, adoption
//	core_results.go  results of Docker work
//	core_health.go   the daemon's health, events, time (ticks) and balance
//	core_check.go    the invariants, checked after every message in tests

// lane is a bounded group of workers.
type lane uint8

const (
	laneOps     lane = iota // refill, trim, removals, resets, reconciling, shutdown: MaxConcurrentDockerOps
	laneAcquire             // creations and checks for callers who found nothing idle: MaxConcurrentAcquire
	laneProbe               // the daemon health ping: one worker, never queued behind stalled calls
	numLanes
)

type slotState uint8

const (
	stNew       slotState = iota // just created, in no set yet
	stIdle                       // on the idle stack
	stLeased                     // held by a caller
	stChecking                   // idle, being inspected before it is handed out
	stResetting                  // returned, being reset
	stRemoving                   // removal queued or running
)

// slot is the pool's record of one container.
type slot struct {
	id        string
	state     slotState
	created   time.Time
	expires   time.Time // MaxLifetime with jitter; zero: never
	idleSince time.Time
	uses      int           // times handed out
	lease     uint64        // the current hand-out, while leased; 0 otherwise
	leaseWait time.Duration // what the current hand-out added to AcquireDuration
	waited    bool          // the current hand-out had to wait (nothing was idle)
	dead      bool          // Docker said it died or is gone
	marked    bool          // renamed as used: an earlier holder ran an exec in it
	reason    RemoveReason
}

// waiter is an Acquire call waiting for a container.
type waiter struct {
	reply chan acquireReply // names the caller; only the owner sends on it
	start time.Time
	gone  bool // cancelled; skipped when the queue is served
}

type phase uint8

const (
	phaseStarting phase = iota // until the adoption: the pool makes nothing before it knows what it has
	phaseRunning
	phaseDraining   // Shutdown started: no Acquire, waiting for leased containers
	phaseFinalizing // everything removed; last sweep running
	phaseStopped    // the owner loop exits
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
	agent                     bool          // the agent path: a session that ends says the container is gone
	hasReset                  bool          // returns go through a resetTask (OnReturn, CheckOnReturn, the agent's reset)
	resetCleans               bool          // a successful reset makes the container clean (renamed, adoptable)
	dockerTimeout             time.Duration // bound of one Docker call
	budgeted                  bool          // a Group's member: every creation needs a permit (core_budget.go)
}

type core struct {
	lim limits
	rnd *rand.Rand
	log *slog.Logger // may be nil

	// Containers by state. Every known container is in exactly one of the
	// sets below, as its slot.state says.
	known    map[string]*slot
	idle     []*slot // a stack: the top (last) is the most recently returned
	leased   map[string]*slot
	checking map[string]*slot
	reset    map[string]*slot
	removing map[string]*slot
	creating [numLanes]int // creations queued or running, by lane
	leases   uint64        // hand-outs so far, to number them

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

	bud  budget    // a Group member's permits; unused by a plain pool
	host hostState // the Group host's state as the group says (core_host.go)

	st        Stats // counters; the gauges and RemovedBy are filled in by snapshot
	removedBy [numReasons]int64

	fx effects // what the message being applied caused
}

type retry struct {
	t  removeTask
	at time.Time
}

// effects is what one message caused, for the owner to carry out in this
// order: publish the counters, set handle flags, send the replies, forget
// ended leases, report the notes, close admission or cancel creations, start
// the tasks. Replies go out after the counters are published, so that a
// caller who got a container sees it in InUse.
type effects struct {
	idle, inUse int // the counters IdleCount and InUse publish

	flags   []handleFlag // bits to set on the handles of leases
	grants  []grant      // Acquire answered with a container
	refused []refusal    // Acquire answered with an error
	replies []errReply   // Return, Remove and WaitIdle answered
	stats   []chan Stats // answered with snapshot
	adopted chan struct{}
	forget  []uint64 // leases that ended: their handles are no longer the owner's concern

	snapshot Stats // for stats, taken after the message

	notes           []error // for OnError
	closeAdmission  bool    // Shutdown started: close the closing channel
	cancelCreations bool    // forced shutdown: abort creations in flight
	tasks           []task  // Docker work to start now

	report *budgetReport // a Group member's news for the group; nil when nothing changed
}

// grant hands container id to the caller behind reply, as hand-out lease.
type grant struct {
	reply    chan acquireReply
	id       string
	lease    uint64
	needMark bool // the container does not carry the used mark yet
	waited   bool // nothing was idle: the caller waited (a warm miss)
}

type refusal struct {
	reply chan acquireReply
	err   error
}

type errReply struct {
	reply chan error
	err   error
}

// handleFlag sets bits (handle* flags) on the handle of a lease.
type handleFlag struct {
	lease uint64
	bits  uint64
}

// reset empties the effects, keeping their storage for the next message.
func (fx *effects) reset() {
	clear(fx.flags)
	clear(fx.grants)
	clear(fx.refused)
	clear(fx.replies)
	clear(fx.stats)
	clear(fx.notes)
	clear(fx.tasks)
	*fx = effects{
		flags: fx.flags[:0], grants: fx.grants[:0], refused: fx.refused[:0],
		replies: fx.replies[:0], stats: fx.stats[:0], forget: fx.forget[:0],
		notes: fx.notes[:0], tasks: fx.tasks[:0],
	}
}

func newCore(lim limits, seed uint64, log *slog.Logger) *core {
	lim.workers[laneProbe] = 1
	return &core{
		lim:         lim,
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

// step applies one message: the state changes, the pool rebalances, and the
// effects are returned for the owner to carry out. They stay valid until the
// next step.
func (c *core) step(m message, now time.Time) *effects {
	c.fx.reset()
	m.apply(c, now)
	c.balance(now)
	if debugChecks {
		c.check()
	}
	c.fx.tasks = c.next(c.fx.tasks, now)
	c.fx.idle, c.fx.inUse = len(c.idle), len(c.leased)
	if c.lim.budgeted {
		c.fx.report = c.budgetNews()
	}
	if len(c.fx.stats) > 0 {
		c.fx.snapshot = c.snapshot()
	}
	return &c.fx
}

// ---- helpers of every concern -----------------------------------------------

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

// admit records a container that is new to the pool (created or adopted),
// with its lifetime: up to 10% less than MaxLifetime, at random, so that
// containers made together do not all expire together.
func (c *core) admit(id string, created time.Time) *slot {
	s := &slot{id: id, created: created}
	if c.lim.maxLifetime > 0 {
		jitter := time.Duration(c.rnd.Int64N(int64(c.lim.maxLifetime)/10 + 1))
		s.expires = created.Add(c.lim.maxLifetime - jitter)
	}
	c.known[id] = s
	return s
}

// lease hands s to the caller behind reply.
func (c *core) lease(s *slot, reply chan acquireReply, start, now time.Time, waited bool) {
	c.setState(s, stLeased)
	s.uses++
	c.leases++
	s.lease, s.waited, s.leaseWait = c.leases, waited, 0
	c.st.AcquireCount++
	if !start.IsZero() {
		s.leaseWait = now.Sub(start)
		c.st.AcquireDuration += s.leaseWait
		if waited {
			c.st.WaitDuration += s.leaseWait
		}
	}
	if waited {
		c.st.EmptyAcquireCount++
		if s.uses == 1 { // made while the caller waited: a cold start
			c.st.ColdAcquireCount++
			c.bud.coldWait += s.leaseWait
		}
	}
	c.fx.grants = append(c.fx.grants, grant{reply: reply, id: s.id, lease: s.lease, needMark: !s.marked, waited: waited})
}

// endLease ends the current hand-out of s: its handle is dead from now on.
func (c *core) endLease(s *slot) {
	c.fx.forget = append(c.fx.forget, s.lease)
	s.lease = 0
}

func (c *core) flag(s *slot, bits uint64) {
	if s.lease != 0 {
		c.fx.flags = append(c.fx.flags, handleFlag{lease: s.lease, bits: bits})
	}
}

func (c *core) refuse(reply chan acquireReply, err error) {
	c.fx.refused = append(c.fx.refused, refusal{reply: reply, err: err})
}

func (c *core) answer(reply chan error, err error) {
	c.fx.replies = append(c.fx.replies, errReply{reply: reply, err: err})
}

func (c *core) note(err error) { c.fx.notes = append(c.fx.notes, err) }

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
	if c.leaves() {
		c.drop(s.id)
		return
	}
	c.enqueue(removeTask{id: s.id, reason: why})
}

func (c *core) enqueue(t task) { l := t.lane(); c.queue[l] = append(c.queue[l], t) }

func (c *core) enqueueCreate(l lane) {
	c.creating[l]++
	c.enqueue(createTask{ln: l})
}

// dropQueuedCreate cancels one creation of lane l that has not started.
func (c *core) dropQueuedCreate(l lane) bool {
	q := c.queue[l]
	for i := len(q) - 1; i >= 0; i-- {
		if _, ok := q[i].(createTask); ok {
			c.queue[l] = append(q[:i], q[i+1:]...)
			c.creating[l]--
			return true
		}
	}
	return false
}

// next moves the queued tasks that may start now, within each lane's bound,
// to buf.
func (c *core) next(buf []task, now time.Time) []task {
	if c.running[laneOps]+c.running[laneAcquire] == 0 {
		c.lastProgress = now // the stall clock starts with the first task
	}
	if c.parked() {
		return buf
	}
	for l := range numLanes {
		for len(c.queue[l]) > 0 && c.running[l] < c.lim.workers[l] {
			t := c.queue[l][0]
			c.queue[l][0] = nil
			c.queue[l] = c.queue[l][1:]
			buf = append(buf, t)
			c.running[l]++
			if _, ok := t.(createTask); ok {
				c.started[l]++
			}
		}
	}
	return buf
}

// finished accounts for the end of a task of lane l.
func (c *core) finished(l lane, now time.Time) {
	c.running[l]--
	c.lastProgress = now
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
	st.RemovedBy = make(map[RemoveReason]int64, numReasons)
	for r, n := range c.removedBy {
		st.RemovedBy[RemoveReason(r)] = n
	}
	return st
}

func (c *core) logAttrs(level slog.Level, msg string, attrs ...slog.Attr) {
	if c.log != nil {
		c.log.LogAttrs(context.Background(), level, msg, attrs...)
	}
}
