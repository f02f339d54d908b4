package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// The group's owner goroutine: the only one that touches the budget core,
// the member table and the published set. Members' reports arrive in their
// mailboxes (memberLink); requests of callers on ctrl. The owner sends the
// core's decisions to the members' owners, which never wait for the group,
// so the two kinds of owner cannot wait for each other.

// groupTick is how often the group revises its demand estimates.
const groupTick = 250 * time.Millisecond

// groupReq is a request to the group's owner; handle answers it and says
// whether the owner is done.
type groupReq interface {
	handle(g *Group, now time.Time) (stop bool)
}

// joinReq puts a template's started members (one per host) in force:
// replace says whether one must be there already (Update) or must not
// (AddTemplate).
type joinReq struct {
	template string
	ms       []*member
	replace  bool
	reply    chan error
}

// leaveReq takes a template out of the group.
type leaveReq struct {
	template string
	reply    chan error
}

type groupStatsReq struct{ reply chan groupView }

type groupShutdownReq struct{ reply chan struct{} }

// groupView is the owner's side of GroupStats.
type groupView struct {
	used                 int
	evictWait, evictWarm int64
	members              map[string][]memberView
	hosts                map[string]HostStats
}

type memberView struct {
	pool    *Pool
	target  int
	share   int
	evicted int64
	queued  int // its template's callers in the group's queue (on the first member of a template)
}

func (g *Group) run() {
	t := time.NewTicker(groupTick)
	defer t.Stop()
	for {
		var now time.Time
		msgs := 1
		select {
		case <-g.wake:
			now = time.Now()
			msgs = g.drain(now)
		case <-t.C:
			now = time.Now()
			for _, h := range g.hosts {
				g.decided(h, h.core.tick(now))
			}
		case r := <-g.ctrl:
			now = time.Now()
			if r.handle(g, now) {
				close(g.done)
				return
			}
		}
		if len(g.queues) > 0 {
			g.serveQueue()
		}
		if m := g.cfg.meter; m != nil {
			m.busy += time.Since(now)
			m.msgs += int64(msgs)
		}
	}
}

// ownerMeter adds up the group owner's time handling messages (a report
// read, a request, a tick), for the benchmarks: written by the owner, read
// once it has exited.
type ownerMeter struct {
	busy time.Duration
	msgs int64
}

// drain reads the latest report of every member on the dirty list: the
// cost is the members with news, not all of them. It returns how many it
// read.
func (g *Group) drain(now time.Time) int {
	n := 0
	for l := g.dirty.Swap(nil); l != nil; {
		next := l.next
		l.next = nil
		l.queued.Store(false) // a report posted from now on pushes it again
		if m := g.all[l.id]; m != nil {
			select {
			case r := <-l.mail:
				g.take(m, r, now)
				n++
			default:
			}
		}
		l = next
	}
	return n
}

// take hands a member's report to its host's budget and carries out the
// decisions.
func (g *Group) take(m *member, r budgetReport, now time.Time) {
	h := m.host
	g.decided(h, h.core.report(m.id, r, now))
	g.reindex(m)
	g.refreshRoom(h)
	if h.core.members[m.id] == nil {
		delete(g.all, m.id) // retired and stopped
		delete(h.members, m.id)
	}
}

// decided carries out host h's budget decisions and brings the placement
// counts of the members they touched up to date.
func (g *Group) decided(h *groupHost, fx []budgetFx) {
	g.carry(fx)
	for _, f := range fx {
		if m := g.all[f.id]; m != nil {
			g.reindex(m)
		}
	}
	g.refreshRoom(h)
}

// carry sends the core's decisions to the members.
func (g *Group) carry(fx []budgetFx) {
	for _, f := range fx {
		m := g.all[f.id]
		if m == nil {
			continue
		}
		if f.permits > 0 {
			m.pool.post(permitMsg{n: f.permits})
		}
		if f.evict {
			m.pool.post(evictMsg{})
		}
		if f.warm >= 0 {
			m.pool.post(warmMsg{n: f.warm})
		}
	}
}

// join adds a template's members to the owner's tables and puts them in
// placement (the owner, or NewGroup before the owner runs).
func (g *Group) join(template string, ms []*member) {
	for _, m := range ms {
		g.all[m.id] = m
		m.host.members[m.id] = m
		m.host.core.add(m.id, m.template, m.pool.cfg.MinIdle, m.pool.cfg.MaxIdle)
	}
	if old := g.places[template]; old != nil {
		for _, m := range old.byHost {
			g.unplaceIdle(m)
		}
	}
	g.places[template] = &placement{byHost: ms}
}

// publish replaces the set in force with a copy changed by edit.
func (g *Group) publish(edit func(s *memberSet)) {
	old := g.set.Load()
	s := &memberSet{byName: maps.Clone(old.byName), broken: maps.Clone(old.broken), closed: old.closed}
	edit(s)
	g.set.Store(s)
}

// retire takes a template's members out of service: the cores give them
// nothing more, and their pools start their shutdown before the owner goes
// on (so that no Acquire gets one of their containers after the caller
// hears of the change). Their leased containers are removed as they come
// back.
func (g *Group) retire(ms []*member) {
	for _, m := range ms {
		m.host.core.retire(m.id)
		m.pool.post(shutdownReq{})
	}
}

func (r joinReq) handle(g *Group, _ time.Time) bool {
	set := g.set.Load()
	old := set.byName[r.template]
	switch {
	case set.closed:
		r.reply <- ErrPoolShutdown
		return false
	case r.replace && old == nil && set.broken[r.template] == nil:
		r.reply <- fmt.Errorf("%w %q (the group has %s)", ErrUnknownTemplate, r.template, set.names())
		return false
	case !r.replace && old != nil:
		r.reply <- fmt.Errorf("%w: template %q exists already", ErrInvalidConfig, r.template)
		return false
	}
	g.join(r.template, r.ms)
	for _, m := range r.ms {
		if !m.host.healthy {
			m.pool.post(hostMsg{err: m.host.downErr})
		}
	}
	g.publish(func(s *memberSet) {
		s.byName[r.template] = r.ms
		delete(s.broken, r.template)
	})
	if old != nil {
		g.retire(old)
	}
	r.reply <- nil
	return false
}

func (r leaveReq) handle(g *Group, _ time.Time) bool {
	set := g.set.Load()
	m := set.byName[r.template]
	_, broken := set.broken[r.template]
	switch {
	case set.closed:
		r.reply <- ErrPoolShutdown
		return false
	case m == nil && !broken:
		r.reply <- fmt.Errorf("%w %q (the group has %s)", ErrUnknownTemplate, r.template, set.names())
		return false
	}
	g.publish(func(s *memberSet) {
		delete(s.byName, r.template)
		delete(s.broken, r.template)
	})
	if m != nil {
		g.retire(m)
		for _, mm := range m {
			g.unplaceIdle(mm)
		}
		delete(g.places, r.template)
	}
	r.reply <- nil
	return false
}

func (r groupStatsReq) handle(g *Group, _ time.Time) bool {
	v := groupView{members: map[string][]memberView{}}
	for _, h := range g.hosts {
		v.used += h.core.used()
		v.evictWait += h.core.evictWait
		v.evictWarm += h.core.evictWarm
	}
	for name, ms := range g.set.Load().byName {
		for i, m := range ms {
			gm := m.host.core.members[m.id]
			mv := memberView{pool: m.pool, target: gm.target, share: gm.share, evicted: gm.evictedWait + gm.evictedWarm}
			if i == 0 {
				mv.queued = g.queuedFor(name)
			}
			v.members[name] = append(v.members[name], mv)
		}
	}
	if g.multi {
		v.hosts = map[string]HostStats{}
		for _, h := range g.hosts {
			v.hosts[h.name] = h.stats()
		}
	}
	r.reply <- v
	return false
}

func (r groupShutdownReq) handle(g *Group, _ time.Time) bool {
	g.publish(func(s *memberSet) { s.closed = true })
	g.failQueue(ErrPoolShutdown)
	for _, m := range g.all {
		g.pools = append(g.pools, m.pool)
	}
	for _, h := range g.hosts {
		if !h.healthy {
			g.unreached = append(g.unreached, h)
		}
	}
	r.reply <- struct{}{}
	return true
}

// ask sends r to the owner and waits for its answer on reply.
func ask[T any](g *Group, r groupReq, reply chan T) (T, error) {
	var zero T
	select {
	case g.ctrl <- r:
	case <-g.done:
		return zero, ErrPoolShutdown
	}
	return <-reply, nil
}

// Update replaces template's configuration (a new image, new settings):
// it starts a pool of the new configuration, puts it in force, and retires
// the old one: its idle containers are removed at once, its leased ones
// when they come back. Once Update returns, no container of the old
// configuration is handed out. If the new pool cannot start (its image is
// missing...), Update returns the error, naming the template, and the old
// configuration stays in force. Update also repairs a template that could
// not start at NewGroup (KeepGoing).
func (g *Group) Update(ctx context.Context, template string, cfg Config) error {
	if _, err := g.set.Load().lookup(template); err != nil && !errors.Is(err, ErrTemplateUnavailable) {
		return err
	}
	return g.add(ctx, template, cfg, true)
}

// AddTemplate adds a template to the running group. It fails, naming the
// template, if the name is taken or its pool cannot start (KeepGoing or
// not), and the group is unchanged.
func (g *Group) AddTemplate(ctx context.Context, template string, cfg Config) error {
	return g.add(ctx, template, cfg, false)
}

func (g *Group) add(ctx context.Context, template string, cfg Config, replace bool) error {
	ms, err := g.startMembers(ctx, template, cfg, replace)
	if err != nil {
		return err
	}
	reply := make(chan error, 1)
	err, sent := ask(g, joinReq{template: template, ms: ms, replace: replace, reply: reply}, reply)
	if sent != nil {
		err = sent
	}
	if err != nil {
		for _, m := range ms {
			_ = m.pool.Shutdown(ctx)
		}
	}
	return err
}

// RemoveTemplate takes a template out of the group: Acquire for it fails
// with ErrUnknownTemplate from now on; its idle containers are removed at
// once, its leased ones when they come back.
func (g *Group) RemoveTemplate(ctx context.Context, template string) error {
	reply := make(chan error, 1)
	err, sent := ask(g, leaveReq{template: template, reply: reply}, reply)
	return errors.Join(sent, err)
}

// Shutdown stops the group: from its start, Acquire returns ErrPoolShutdown.
// Every template's pool (on every host) shuts down in parallel, as
// Pool.Shutdown describes (ctx ending removes the containers still in
// use); templates retired by Update or RemoveTemplate are waited for too.
// With Hosts, what is on a host that is out (or that has not answered when
// ctx ends) is left there, and the error names those hosts, wrapping
// ErrHostDown: the next group of the same names removes it by label. Calling
// it again waits for the same end.
func (g *Group) Shutdown(ctx context.Context) error {
	reply := make(chan struct{}, 1)
	_, _ = ask(g, groupShutdownReq{reply: reply}, reply)
	<-g.done
	g.shutOnce.Do(func() {
		g.stopProbes()
		g.probes.Wait() // the owner is gone: the hosts are this goroutine's now
		cut := make(chan struct{})
		stop := context.AfterFunc(ctx, func() { g.cutAll(); close(cut) })
		errs := make([]error, len(g.pools))
		var wg sync.WaitGroup
		for i, p := range g.pools {
			wg.Go(func() { errs[i] = p.Shutdown(ctx) })
		}
		wg.Wait()
		if !stop() {
			<-cut
		}
		g.shutErr = errors.Join(append(g.unreachable(), errs...)...)
	})
	return g.shutErr
}
