package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sourcegraph/conc/panics"
)

// The owner goroutine: the only one that touches the core, the reply
// channels, the handles' flags and the agent sessions. Each message goes to
// owner.handle, which steps the core and carries out the effects; run is the
// select that feeds it. The core tests and the benchmarks drive the same
// owner.handle, with an ownerIO of their own in place of the Pool.

// ownerIO is what the owner does to the world besides answering callers. The
// Pool implements it; tests implement it to play the workers.
type ownerIO interface {
	publish(idle, inUse int)            // the counters of IdleCount and InUse
	startTask(t task, agent *agentConn) // hand a task to a worker of its lane
	notify(err error)                   // a background error for OnError
	closeAdmission()                    // Shutdown started
	cancelCreations()                   // a forced Shutdown: abort creations in flight
}

// owner carries out what the core decides.
type owner struct {
	core     *core
	io       ownerIO
	pool     *Pool                 // stamped on the handles; nil in core tests
	handles  map[uint64]*Container // handles of the leases not ended, by lease
	sessions map[string]*agentConn // agent sessions, by container
	report   func(budgetReport)    // a Group member's reports to its group; nil otherwise
	g        uint64                // the goroutine that may use the owner (debug checks)
}

func newOwner(c *core, io ownerIO, p *Pool) *owner {
	o := &owner{core: c, io: io, pool: p, handles: map[uint64]*Container{}, sessions: map[string]*agentConn{}}
	o.claim()
	return o
}

// claim makes the calling goroutine the owner, for the debug checks.
func (o *owner) claim() {
	if debugChecks {
		o.g = goid()
	}
}

// handle applies one message and carries out its effects.
func (o *owner) handle(m message, now time.Time) {
	o.check()
	switch r := m.(type) {
	case cancelReq:
		m = o.settleCancel(r)
		if m == nil {
			return
		}
	case createdMsg:
		if r.agent != nil {
			o.sessions[r.id] = r.agent
			r.agent = nil
			m = r
		}
	case adoptReq:
		for i := range r.found {
			if a := r.found[i].agent; a != nil {
				o.sessions[r.found[i].id] = a
				r.found[i].agent = nil
			}
		}
	}
	o.carryOut(o.core.step(m, now))
}

// settleCancel looks at the reply channel of a caller who gave up: if the
// owner answered it with a container meanwhile, the container is taken back
// (the handle dies unseen); if it is still empty, the core drops the waiter.
func (o *owner) settleCancel(r cancelReq) message {
	select {
	case rep := <-r.reply:
		if rep.c == nil {
			return nil // it was an error; nothing to take back
		}
		rep.c.state.Or(handleReleased)
		return takeBackMsg{id: rep.c.id, lease: rep.c.lease}
	default:
		return r
	}
}

// carryOut does what the core decided, in the order effects documents.
func (o *owner) carryOut(fx *effects) {
	o.io.publish(fx.idle, fx.inUse)
	for _, f := range fx.flags {
		if h := o.handles[f.lease]; h != nil {
			h.setFlags(f.bits)
		}
	}
	for _, g := range fx.grants {
		h := newHandle(o.pool, g.id, g.lease, g.needMark, o.sessions[g.id])
		o.handles[g.lease] = h
		g.reply <- acquireReply{c: h, waited: g.waited}
	}
	for _, r := range fx.refused {
		r.reply <- acquireReply{err: r.err}
	}
	for _, r := range fx.replies {
		r.reply <- r.err
	}
	for _, ch := range fx.stats {
		ch <- fx.snapshot
	}
	if fx.adopted != nil {
		close(fx.adopted)
	}
	for _, l := range fx.forget {
		delete(o.handles, l)
	}
	for _, err := range fx.notes {
		o.io.notify(err)
	}
	if fx.closeAdmission {
		o.io.closeAdmission()
	}
	if fx.cancelCreations {
		o.io.cancelCreations()
	}
	for _, t := range fx.tasks {
		o.startTask(t)
	}
	if fx.report != nil && o.report != nil {
		o.report(*fx.report)
	}
}

// startTask hands a task to a worker, with the container's agent session
// when the task needs it. A removal takes the session: it closes it.
func (o *owner) startTask(t task) {
	var a *agentConn
	switch t := t.(type) {
	case removeTask:
		a = o.sessions[t.id]
		delete(o.sessions, t.id)
	case resetTask:
		a = o.sessions[t.id]
	}
	o.io.startTask(t, a)
}

// check panics, in debug builds, when the owner is used off its goroutine,
// as x/net/http2's serveG.check does.
func (o *owner) check() {
	if debugChecks && o.g != 0 && goid() != o.g {
		panic("dockerpool: internal error: owner used off the owner goroutine")
	}
}

// ---- the Pool as the owner's world --------------------------------------------

// run is the owner goroutine. Nothing in the loop blocks except the select
// itself: replies go to buffered channels, Docker work goes to workers only
// while a worker is free (conc's Go would block otherwise), and workers hand
// their results back through resultCh.
func (p *Pool) run() {
	o := p.owner
	o.claim()
	p.ownerG.Store(o.g)
	defer p.exit()
	for o.core.phase != phaseStopped {
		select {
		case r := <-p.acquireCh:
			o.handle(r, time.Now())
		case r := <-p.releaseCh:
			o.handle(r, time.Now())
		case m := <-p.resultCh:
			o.handle(m, time.Now())
		case m := <-p.ctrlCh:
			o.handle(m, time.Now())
		}
	}
}

func (p *Pool) publish(idle, inUse int) {
	p.idle.Store(int64(idle))
	p.inUse.Store(int64(inUse))
}

func (p *Pool) startTask(t task, agent *agentConn) {
	p.lanes[t.lane()].Go(func() { p.work(t, agent) })
}

func (p *Pool) closeAdmission()  { close(p.closing) }
func (p *Pool) cancelCreations() { p.cancelCreate() }

// work runs one task on a worker and always reports back, a panic included.
func (p *Pool) work(t task, agent *agentConn) {
	var m message
	defer func() {
		select {
		case p.resultCh <- m:
		case <-p.baseCtx.Done(): // the owner is gone (it only leaves early on a bug)
		}
	}()
	if rec := panics.Try(func() { m = t.run(p, agent) }); rec != nil {
		m = t.done(rec.AsError())
	}
}

// post sends a message to the owner from a helper goroutine, unless the
// pool is over.
func (p *Pool) post(m message) {
	select {
	case p.ctrlCh <- m:
	case <-p.baseCtx.Done():
	}
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
	c := p.owner.core
	if rec != nil {
		err := fmt.Errorf("dockerpool: internal error, pool %q stopped: %v", p.cfg.Name, rec)
		p.notify(err)
		var sweep []string
		for id := range c.known {
			sweep = append(sweep, id)
		}
		p.shutdownErr = errors.Join(err, p.finalize(context.WithoutCancel(p.baseCtx), sweep))
	} else {
		p.shutdownErr = c.finalErr
	}
	for _, a := range p.owner.sessions { // after a bug: no session may outlive the pool
		a.close()
	}
	p.finalStats = c.snapshot()
	p.publish(0, 0)
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
