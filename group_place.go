package dockerpool

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"time"
)

// Placement of a Group over hosts: where an Acquire goes. The group's
// owner places every Acquire, so it counts, per member, the callers it
// placed there (placed) against the Acquire requests the member's pool
// says it received (budgetReport.asked): the difference is the callers on
// their way, which the latest report does not show yet. A caller on its
// way takes one of the member's idle containers, or needs room on the
// host and in the member itself (its template's MaxSize, which counts per
// host). The owner places a caller only where the counts say it can be
// served at once: an idle container of its template not promised to
// another caller, else room (free, or another template's idle container to
// evict) on the healthy host with the most of it where its template's pool
// is not full. When no healthy host has any, the caller waits in the
// group's queue (group_queue.go), in arrival order, and is placed when a
// report, a tick or a host's return shows room: it never waits at one
// host's cap, or its template's cap there, while another host has room
// for it. The counts are
// conservative (a waiter's creation is counted against the room twice until
// its pool reports it), so they may delay a placement until the next report
// but never overfill a host. A caller placed for an idle container that is
// gone when it arrives (it died, expired, or its host's budget evicted it
// for another template) is handed back by the member (errPromiseGone) and
// placed again: on another host's idle container, or where there is room,
// which may be a cold start on the same host; not to wait at a full one
// (after maxPromisesGone hand-backs it waits where it is placed).
//
// Everything is indexed so that the owner's work per message does not grow
// with the hosts: per template, the members with idle containers to spare
// (idle); over the healthy hosts, a heap by room (Group.room). A template
// whose pools are full on the hosts with the most room makes the owner look
// further down the heap, best first, past those hosts only.

// placement is where a template's Acquires go: its members by host index,
// and those on healthy hosts with idle containers to spare.
type placement struct {
	byHost []*member
	idle   []*member
	next   int // where the next look at idle starts: spreads the load
}

// placeTicket is one caller's request for a place (owner's after it is
// sent, but for reply).
type placeTicket struct {
	template string
	avoid    *groupHost // a host whose pool just turned the caller away, or nil
	reply    chan placeReply
	m        *member // where it was placed
	promised bool    // for one of m's idle containers, not for room
	seq      uint64  // its arrival, for the order across templates' queues
	queued   bool    // waiting in the group's queue (Group.queues)
	gone     bool    // its caller gave up while queued
}

type placeReply struct {
	m        *member
	promised bool // for an idle container of m
	err      error
}

// placeReq asks the owner where an Acquire goes; withdrawReq says that the
// caller gave up before its placement was answered, or that its Acquire
// never reached the pool (ctx, shutdown): the place is free again.
type (
	placeReq    struct{ t *placeTicket }
	withdrawReq struct{ t *placeTicket }
)

func (r placeReq) handle(g *Group, _ time.Time) bool {
	g.place(r.t, false)
	return false
}

func (r withdrawReq) handle(g *Group, _ time.Time) bool {
	t := r.t
	switch {
	case t.queued:
		t.gone = true
		g.queues[t.template].live--
	case t.m != nil:
		t.m.placed--
		g.reindex(t.m)
		g.refreshRoom(t.m.host)
		t.m = nil
	}
	return false
}

// place answers t with a member, an error, or (queued) nothing yet. It
// returns false when t waits in the queue.
func (g *Group) place(t *placeTicket, fromQueue bool) bool {
	p := g.places[t.template]
	if p == nil {
		_, err := g.set.Load().lookup(t.template)
		t.queued = false
		t.reply <- placeReply{err: cmpErr(err, ErrPoolShutdown)}
		return true
	}
	if len(g.room) == 0 {
		t.queued = false
		t.reply <- placeReply{err: fmt.Errorf("%w: no healthy host (of %d)", ErrHostDown, len(g.hosts))}
		return true
	}
	var m *member
	if fromQueue || g.queuedFor(t.template) == 0 { // else behind its template's queued callers
		if m, t.promised = g.pick(p, t.avoid); m == nil && t.avoid != nil {
			m, t.promised = g.pick(p, nil)
		}
	}
	if m == nil {
		if !fromQueue {
			g.enqueue(t)
		}
		return false
	}
	t.queued, t.m = false, m
	m.placed++
	g.reindex(m)
	g.refreshRoom(m.host)
	t.reply <- placeReply{m: m, promised: t.promised}
	return true
}

// pick chooses the member of p an Acquire goes to: one with an idle
// container to spare (idle), else roomiest's; nil if no healthy host other
// than avoid has room for it.
func (g *Group) pick(p *placement, avoid *groupHost) (m *member, idle bool) {
	n := len(p.idle)
	for i := range n {
		m := p.idle[(p.next+i)%n]
		if m.host != avoid {
			p.next = (p.next + i + 1) % n
			return m, true
		}
	}
	return g.roomiest(p, avoid), false
}

// roomiest is p's member on the healthy host with the most room, other
// than avoid, where p's template is not full. It walks the heap best
// first: the top, then the better of what lies below the hosts passed
// over, so that it looks only as far as the hosts it must skip.
func (g *Group) roomiest(p *placement, avoid *groupHost) *member {
	g.walk = append(g.walk[:0], 0)
	for len(g.walk) > 0 && len(g.room) > 0 {
		k := 0
		for j := range g.walk {
			if g.room.less(g.room[g.walk[j]], g.room[g.walk[k]]) {
				k = j
			}
		}
		i := g.walk[k]
		g.walk[k] = g.walk[len(g.walk)-1]
		g.walk = g.walk[:len(g.walk)-1]
		h := g.room[i]
		if h.room <= 0 && h.room+h.spare <= 0 {
			return nil // nor has any host below it
		}
		if m := p.byHost[h.idx]; h != avoid && !m.full() {
			return m
		}
		for _, c := range [...]int{2*i + 1, 2*i + 2} {
			if c < len(g.room) {
				g.walk = append(g.walk, c)
			}
		}
	}
	return nil
}

// full: m's pool is at its own MaxSize (its template's, per host), with
// the creations its waiting callers asked for and the callers on their
// way that need room: one more caller there would wait for one of its
// containers to come back.
func (m *member) full() bool {
	if m.maxSize >= m.host.maxSize {
		return false // the host's cap binds first
	}
	gm := m.host.core.members[m.id]
	if gm == nil {
		return true
	}
	return gm.held()+max(0, gm.rep.wantWait-gm.inflight())+m.need >= m.maxSize
}

// anyRoom: some healthy host has room (free, or idle containers to evict)
// for a template not full there.
func (g *Group) anyRoom() bool {
	return len(g.room) > 0 && (g.room[0].room > 0 || g.room[0].room+g.room[0].spare > 0)
}

// reindex recomputes what member m adds to its host's counts (its callers
// on their way that need room, its idle containers to spare) and its place
// on its template's idle list. The host's heap is fixed by refreshRoom.
func (g *Group) reindex(m *member) {
	need, spare := 0, 0
	if gm := m.host.core.members[m.id]; gm != nil {
		coming := max(0, int(m.placed-gm.rep.asked))
		avail := max(0, gm.rep.idle-gm.pending())
		take := min(coming, avail)
		need = coming - take
		if !gm.retired {
			spare = avail - take
		}
	}
	h := m.host
	h.need += need - m.need
	h.spare += spare - m.spare
	m.need, m.spare = need, spare
	p := g.places[m.template]
	inForce := p != nil && m.host.idx < len(p.byHost) && p.byHost[m.host.idx] == m
	switch in := m.idleAt >= 0; {
	case spare > 0 && !in && h.healthy && inForce:
		m.idleAt = len(p.idle)
		p.idle = append(p.idle, m)
	case (spare == 0 || !h.healthy || !inForce) && in:
		g.unplaceIdle(m)
	}
}

// unplaceIdle takes m off its template's idle list.
func (g *Group) unplaceIdle(m *member) {
	p := g.places[m.template]
	if m.idleAt < 0 || p == nil || m.idleAt >= len(p.idle) || p.idle[m.idleAt] != m {
		m.idleAt = -1
		return
	}
	last := p.idle[len(p.idle)-1]
	p.idle[m.idleAt] = last
	last.idleAt = m.idleAt
	p.idle = p.idle[:len(p.idle)-1]
	m.idleAt = -1
}

// refreshRoom recomputes h's free room (its budget's permits out, the
// creations its pools' waiting callers asked for that no permit covers
// yet, and the callers on their way that need room) and its place in the
// heap. A waiting caller's creation can wait for its permit (MaxCreating
// holds it back): until then it is in neither the permits nor the callers
// on their way, and counting it nowhere let the group place more callers
// on a host than it could hold, who then waited at its cap while other
// hosts had room (seen in the owner-cost simulation without -race).
func (g *Group) refreshRoom(h *groupHost) {
	h.room = h.maxSize - h.core.claimed() - h.need
	if h.heapAt >= 0 {
		heap.Fix(&g.room, h.heapAt)
	}
}

// hostHeap orders the healthy hosts by free room, the most first, then by
// room counting other templates' idle containers (evictable).
type hostHeap []*groupHost

func (q hostHeap) Len() int           { return len(q) }
func (q hostHeap) Less(i, j int) bool { return q.less(q[i], q[j]) }
func (hostHeap) less(a, b *groupHost) bool {
	if fa, fb := max(a.room, 0), max(b.room, 0); fa != fb {
		return fa > fb
	}
	if ea, eb := a.room+a.spare, b.room+b.spare; ea != eb {
		return ea > eb
	}
	return a.idx < b.idx
}
func (q hostHeap) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].heapAt, q[j].heapAt = i, j
}
func (q *hostHeap) Push(x any) {
	h := x.(*groupHost)
	h.heapAt = len(*q)
	*q = append(*q, h)
}
func (q *hostHeap) Pop() any {
	old := *q
	h := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	h.heapAt = -1
	return h
}

func cmpErr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

// maxPromisesGone bounds the placements of one Acquire for idle containers
// that were gone on arrival; after that it waits where it is placed.
const maxPromisesGone = 3

// placedHook, in tests, runs between a caller's placement and its Acquire
// reaching the member's pool.
var placedHook func(host string)

// acquireOnHosts is Acquire with Hosts: the owner places the caller, and a
// caller turned away by a host that went out meanwhile is placed again.
func (g *Group) acquireOnHosts(ctx context.Context, template string) (*Container, error) {
	var avoid *groupHost
	gone := 0 // promised idle containers that were gone on arrival
	for tries := 0; ; tries++ {
		if _, err := g.set.Load().lookup(template); err != nil {
			return nil, err
		}
		t := &placeTicket{template: template, avoid: avoid, reply: make(chan placeReply, 1)}
		m, promised, err := g.placed(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("dockerpool: group: template %q: %w", template, err)
		}
		set := g.set.Load()
		if placedHook != nil {
			placedHook(m.host.name)
		}
		c, sent, err := m.pool.acquireSent(ctx, promised && gone < maxPromisesGone)
		if !sent {
			g.withdraw(t)
		}
		if err == nil {
			return c, nil
		}
		if errors.Is(err, errPromiseGone) {
			gone++
			continue // its idle container died, expired or was evicted on the way: place it again
		}
		if ctx.Err() == nil && (errors.Is(err, ErrHostDown) || errors.Is(err, ErrPoolShutdown) && set.replaced(template, m)) {
			continue // the host went out, or Update replaced the template: place it again
		}
		if ctx.Err() == nil && tries < len(g.hosts) &&
			(errors.Is(err, ErrDaemonUnavailable) || errors.Is(err, ErrCreateFailed) && connectionLost(err)) {
			// Its pool saw its daemon fail before the prober did (a creation
			// cut by the daemon's crash, for one): try another.
			avoid = m.host
			continue
		}
		return nil, fmt.Errorf("dockerpool: group: template %q on host %q: %w", template, m.host.name, err)
	}
}

// placed asks the owner for t's place and waits for it (in the group's
// queue, when no host has room) until ctx ends; promised: for an idle
// container there.
func (g *Group) placed(ctx context.Context, t *placeTicket) (m *member, promised bool, err error) {
	select {
	case g.ctrl <- placeReq{t: t}:
	case <-g.done:
		return nil, false, ErrPoolShutdown
	case <-ctx.Done():
		return nil, false, fmt.Errorf("dockerpool: acquire: %w", ctx.Err())
	}
	select {
	case r := <-t.reply:
		return r.m, r.promised, r.err
	case <-ctx.Done():
		g.withdraw(t) // a place it may have got meanwhile is freed
		return nil, false, fmt.Errorf("dockerpool: acquire: %w", ctx.Err())
	case <-g.done:
		return nil, false, ErrPoolShutdown
	}
}

func (g *Group) withdraw(t *placeTicket) {
	select {
	case g.ctrl <- withdrawReq{t: t}:
	case <-g.done:
	}
}
