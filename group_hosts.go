package dockerpool

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// A Group over several hosts (GroupConfig.Hosts): one member pool per
// (template, host), one budgetCore per host, and the group's owner routes.
// The host's health lives here, in the group, not in the pools: one prober
// per host pings it (bounded by HostPing) and tells the owner when it goes
// out or comes back; the owner then cuts or heals the host's epoch
// (hostClient: every Docker call of its pools in flight ends at once) and
// tells each of its pools (hostMsg, core_host.go). Placement is indexed so
// that the owner's work per message does not grow with the hosts: per
// template, the members that reported idle containers; over the hosts, a
// heap by free room.

// Host probing.
const (
	hostPingEvery  = 500 * time.Millisecond // between pings of a healthy host: out within HostPing + this
	hostBackoffMin = 250 * time.Millisecond // first wait before probing a host that went out
	hostBackoffMax = 2 * time.Second        // longest: a host that answers is back within this
)

// groupHost is one host of the group: the owner's state about it.
type groupHost struct {
	idx     int
	name    string // "" for the local host of a group without Hosts
	maxSize int
	api     DockerAPI   // the host's client, for the ping; nil for the local host
	client  *hostClient // what its pools use; nil for the local host
	core    *budgetCore
	members map[uint64]*member

	healthy bool
	since   time.Time
	outages int
	lastErr string
	downErr error // while out: what its pools and their handles say (wraps ErrHostDown)

	room   int // maxSize - core.used()
	heapAt int // its index in Group.room, -1 while out
	cut    atomic.Bool
}

// groupHosts validates the hosts and makes the group's: GroupConfig.Hosts,
// or one local host with the group's MaxSize.
func groupHosts(cfg *GroupConfig) ([]*groupHost, error) {
	if err := validateHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	now := time.Now()
	mk := func(i int, name string, maxSize int, api DockerAPI) *groupHost {
		h := &groupHost{idx: i, name: name, maxSize: maxSize, api: api, core: newBudgetCore(maxSize, !cfg.StaticWarmth),
			members: map[uint64]*member{}, healthy: true, since: now, room: maxSize, heapAt: -1}
		if api != nil {
			h.client = newHostClient(api)
		}
		return h
	}
	if len(cfg.Hosts) == 0 {
		if cfg.MaxSize <= 0 {
			return nil, fmt.Errorf("%w: GroupConfig.MaxSize must be positive, not %d", ErrInvalidConfig, cfg.MaxSize)
		}
		return []*groupHost{mk(0, "", cfg.MaxSize, nil)}, nil
	}
	sum := 0
	for _, h := range cfg.Hosts {
		sum += h.MaxSize
	}
	if cfg.MaxSize != 0 && cfg.MaxSize < sum {
		return nil, fmt.Errorf("%w: GroupConfig.MaxSize (%d) is below the sum of the hosts' MaxSize (%d): with Hosts the budget is each host's", ErrInvalidConfig, cfg.MaxSize, sum)
	}
	if cfg.HostPing < 0 {
		return nil, fmt.Errorf("%w: GroupConfig.HostPing must not be negative", ErrInvalidConfig)
	}
	cfg.HostPing = cmpOr(cfg.HostPing, DefaultHostPing)
	hs := make([]*groupHost, len(cfg.Hosts))
	for i, h := range cfg.Hosts {
		hs[i] = mk(i, h.Name, h.MaxSize, h.Client)
	}
	return hs, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}

// maxSize is the group's budget as GroupStats reports it.
func (g *Group) maxSize() int {
	n := 0
	for _, h := range g.hosts {
		n += h.maxSize
	}
	return n
}

// startProbes puts the hosts in placement and starts their probers.
func (g *Group) startProbes() {
	g.probeCtx, g.stopProbes = context.WithCancel(context.Background())
	if !g.multi {
		return
	}
	for _, h := range g.hosts {
		heap.Push(&g.room, h)
		g.probes.Go(func() { g.probe(h) })
	}
}

// probe pings h every hostPingEvery while it is healthy, and with backoff
// while it is out, and tells the owner when that changes.
func (g *Group) probe(h *groupHost) {
	healthy, backoff := true, hostBackoffMin
	for {
		wait := hostPingEvery
		if !healthy {
			wait = backoff
			backoff = min(2*backoff, hostBackoffMax)
		}
		if !sleep(g.probeCtx, wait) {
			return
		}
		err := g.ping(h)
		if g.probeCtx.Err() != nil {
			return
		}
		if (err == nil) == healthy {
			continue
		}
		healthy, backoff = err == nil, hostBackoffMin
		select {
		case g.ctrl <- hostHealthReq{h: h, err: err}:
		case <-g.done:
			return
		}
	}
}

// ping asks h for a ping within HostPing.
func (g *Group) ping(h *groupHost) error {
	ctx, cancel := context.WithTimeout(g.probeCtx, g.cfg.HostPing)
	defer cancel()
	_, err := h.api.Ping(ctx)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("no answer to a ping within %v", g.cfg.HostPing)
	}
	return err
}

// hostHealthReq: the prober of h saw it fail (err) or answer again.
type hostHealthReq struct {
	h   *groupHost
	err error
}

func (r hostHealthReq) handle(g *Group, now time.Time) bool {
	h := r.h
	if r.err != nil && h.healthy {
		h.healthy, h.since, h.lastErr = false, now, r.err.Error()
		h.outages++
		h.downErr = fmt.Errorf("%w: host %q: %w", ErrHostDown, h.name, r.err)
		heap.Remove(&g.room, h.heapAt)
		h.client.cut(h.downErr) // its calls in flight end now
		for _, m := range h.members {
			g.unplaceIdle(m)
			m.pool.post(hostMsg{err: h.downErr})
		}
	} else if r.err == nil && !h.healthy {
		h.client.heal()
		for _, m := range h.members {
			m.pool.post(hostMsg{})
			m.pool.kickEvents() // its event stream ended with the epoch: subscribe again now
		}
		h.healthy, h.since, h.downErr = true, now, nil
		heap.Push(&g.room, h)
		g.refreshRoom(h)
		for _, m := range h.members {
			g.noteIdle(m, m.idle)
		}
	}
	return false
}

// ---- placement -------------------------------------------------------------

// placement is where a template's Acquires go: its members by host, and
// those on healthy hosts that reported idle containers.
type placement struct {
	byHost []*member
	idle   []*member
	next   int // where the next look at idle starts: spreads the load
}

// noteIdle records a member's idle count and keeps the idle list.
func (g *Group) noteIdle(m *member, idle int) {
	m.idle = idle
	p := g.places[m.template]
	if p == nil || m.host.idx >= len(p.byHost) || p.byHost[m.host.idx] != m {
		return // retired
	}
	switch in := m.idleAt >= 0; {
	case idle > 0 && !in && m.host.healthy:
		m.idleAt = len(p.idle)
		p.idle = append(p.idle, m)
	case (idle == 0 || !m.host.healthy) && in:
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

// pick chooses the member of p an Acquire goes to: one with an idle
// container not promised to an Acquire already placed there, else the one
// on the healthy host with the most room; nil with no healthy host.
// avoid, if not nil, is a host whose pool just turned the caller away.
func (g *Group) pick(p *placement, avoid *groupHost) *member {
	n := len(p.idle)
	for i := range n {
		m := p.idle[(p.next+i)%n]
		if m.host != avoid && int64(m.idle) > m.inflight.Load() {
			p.next = (p.next + i + 1) % n
			return m
		}
	}
	// The most room, less the Acquires placed there and not yet answered
	// (the reports lag): a scan of the healthy hosts. TODO: index it (the
	// heap orders by reported room only).
	var best *member
	bestRoom := 0
	for _, h := range g.room {
		if h == avoid {
			continue
		}
		m := p.byHost[h.idx]
		if r := h.room - int(m.inflight.Load()); best == nil || r > bestRoom {
			best, bestRoom = m, r
		}
	}
	return best
}

// refreshRoom recomputes h's free room and its place in the heap.
func (g *Group) refreshRoom(h *groupHost) {
	if r := h.maxSize - h.core.used(); r != h.room {
		h.room = r
		if h.heapAt >= 0 {
			heap.Fix(&g.room, h.heapAt)
		}
	}
}

// hostHeap orders the healthy hosts by free room, the most first.
type hostHeap []*groupHost

func (q hostHeap) Len() int           { return len(q) }
func (q hostHeap) Less(i, j int) bool { return q.less(q[i], q[j]) }
func (hostHeap) less(a, b *groupHost) bool {
	if a.room != b.room {
		return a.room > b.room
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

// placeReq asks the owner where an Acquire of template goes.
type placeReq struct {
	template string
	avoid    *groupHost
	reply    chan placeReply
}

type placeReply struct {
	m   *member
	err error
}

func (r placeReq) handle(g *Group, _ time.Time) bool {
	p := g.places[r.template]
	if p == nil {
		_, err := g.set.Load().lookup(r.template)
		r.reply <- placeReply{err: cmpErr(err, ErrPoolShutdown)}
		return false
	}
	m := g.pick(p, r.avoid)
	if m == nil {
		r.reply <- placeReply{err: fmt.Errorf("%w: no healthy host (of %d)", ErrHostDown, len(g.hosts))}
		return false
	}
	m.inflight.Add(1)
	r.reply <- placeReply{m: m}
	return false
}

func cmpErr(err, def error) error {
	if err == nil {
		return def
	}
	return err
}

// acquireOnHosts is Acquire with Hosts: the owner places the caller, and a
// caller turned away by a host that went out meanwhile is placed again.
func (g *Group) acquireOnHosts(ctx context.Context, template string) (*Container, error) {
	var avoid *groupHost
	for tries := 0; ; tries++ {
		if _, err := g.set.Load().lookup(template); err != nil {
			return nil, err
		}
		reply := make(chan placeReply, 1)
		pl, err := ask(g, placeReq{template: template, avoid: avoid, reply: reply}, reply)
		if err == nil {
			err = pl.err
		}
		if err != nil {
			return nil, fmt.Errorf("dockerpool: group: template %q: %w", template, err)
		}
		set := g.set.Load()
		c, err := pl.m.pool.Acquire(ctx)
		pl.m.inflight.Add(-1)
		if err == nil {
			return c, nil
		}
		if ctx.Err() == nil && (errors.Is(err, ErrHostDown) || errors.Is(err, ErrPoolShutdown) && set.replaced(template, pl.m)) {
			continue // the host went out, or Update replaced the template: place it again
		}
		if ctx.Err() == nil && errors.Is(err, ErrDaemonUnavailable) && tries < len(g.hosts) {
			avoid = pl.m.host // its pool saw its daemon fail before the prober did: try another
			continue
		}
		return nil, fmt.Errorf("dockerpool: group: template %q on host %q: %w", template, pl.m.host.name, err)
	}
}

// stats is h's part of GroupStats (the owner's).
func (h *groupHost) stats() HostStats {
	st := HostStats{Healthy: h.healthy, Since: h.since, Used: h.core.used(), MaxSize: h.maxSize, Outages: h.outages, LastError: h.lastErr}
	for _, m := range h.core.members {
		st.Idle += m.rep.idle
		st.InUse += m.rep.inUse
	}
	return st
}

// cutAll, when Shutdown's ctx ends: every host's calls end now, and its
// pools leave what is on it instead of waiting for it.
func (g *Group) cutAll() {
	for _, h := range g.hosts {
		if h.client == nil {
			continue
		}
		why := fmt.Errorf("%w: host %q: shutdown's ctx ended first", ErrHostDown, h.name)
		h.cut.Store(true)
		h.client.cut(why)
		for _, m := range h.members {
			m.pool.post(hostMsg{err: why})
		}
	}
}

// unreachable names the hosts whose containers Shutdown left: out at
// Shutdown, or cut when its ctx ended.
func (g *Group) unreachable() []error {
	var errs []error
	for _, h := range g.hosts {
		switch {
		case h.client == nil:
		case !h.healthy:
			errs = append(errs, fmt.Errorf("dockerpool: group: shutdown: %w (out since %s): its containers were left there", h.downErr, h.since.Format(time.RFC3339)))
		case h.cut.Load():
			errs = append(errs, fmt.Errorf("dockerpool: group: shutdown: %w: host %q did not finish in time; what is left there stays", ErrHostDown, h.name))
		}
	}
	return errs
}
