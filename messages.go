package dockerpool

import "time"

// Messages to the owner goroutine. There is one Go type per kind of request.
// A request that needs an answer carries its own reply channel, made by the
// sender with capacity 1: the owner sends on it exactly once and never blocks
// doing so.

// acquireReq asks for a container. The reply channel also identifies the
// waiter when the caller gives up (see cancelReq).
type acquireReq struct {
	reply chan acquireReply
}

type acquireReply struct {
	c   *Container
	err error
}

// cancelReq says that the caller behind an acquireReq stopped waiting. If the
// owner had already answered, it takes the container back from the buffered
// reply channel, so nothing is lost.
type cancelReq struct {
	reply chan acquireReply
}

// releaseReq hands a leased container back: to the idle stack (Return) or to
// removal (Remove).
type releaseReq struct {
	c       *Container
	remove  bool // Remove rather than Return
	tainted bool // an exec was still running or could not be cleaned up
	reply   chan error
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

// eventMsg is a Docker event about one of the pool's containers, or notice
// that the event stream broke (resync) and the pool must re-list.
type eventMsg struct {
	id       string
	action   string // "die", "oom", "destroy", ...
	exitCode string // for "die"
}

// resyncMsg says the event stream was re-established: deaths may have been
// missed while nobody listened, so the owner reconciles with the daemon.
type resyncMsg struct{}

// ctrlMsg carries the requests that are rare, so that the owner's select
// stays short for the frequent ones (acquire, release, results): a select
// costs per case, on every message. Exactly one field is set.
type ctrlMsg struct {
	cancel     *cancelReq
	stats      *statsReq
	idleWait   *idleWaitReq
	idleUnwait *idleUnwaitReq
	shutdown   *shutdownReq
	force      *forceReq
	event      *eventMsg
	resync     *resyncMsg
	tick       bool // RefillInterval passed
}

// Results of background work. Workers send exactly one per task, whatever
// happens (a panic included).

type taskResult struct {
	task  task
	id    string // the created container, for taskCreate
	err   error
	at    time.Time
	found []found    // for taskReconcile
	agent *agentConn // for taskCreate on the agent path
}

// found is a container of the pool's label as the daemon lists it.
type found struct {
	id      string
	created time.Time
	running bool
	ours    bool // made by this Pool value (its instance label)
}
