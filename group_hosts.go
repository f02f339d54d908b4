package dockerpool

import (
	"cmp"
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

	room   int // maxSize - core.used() - need (group_place.go)
	need   int // callers placed on its members, on their way, who need room
	spare  int // idle containers of its members in force, not promised to a caller on its way
	heapAt int // its index in Group.room, -1 while out
	cut    atomic.Bool
	up     atomic.Bool // healthy, for WaitIdle (callers' goroutines)
}

// groupHosts validates the hosts and makes the group's: GroupConfig.Hosts,
// or one local host with the group's MaxSize.
func groupHosts(cfg *GroupConfig) ([]*groupHost, error) {
	if err := validateHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	if cfg.MaxCreating < 0 {
		return nil, fmt.Errorf("%w: GroupConfig.MaxCreating must not be negative, not %d", ErrInvalidConfig, cfg.MaxCreating)
	}
	maxMake := cmp.Or(cfg.MaxCreating, DefaultMaxCreating)
	now := time.Now()
	mk := func(i int, name string, maxSize int, api DockerAPI) *groupHost {
		h := &groupHost{idx: i, name: name, maxSize: maxSize, api: api, core: newBudgetCore(maxSize, maxMake, !cfg.StaticWarmth),
			members: map[uint64]*member{}, healthy: true, since: now, room: maxSize, heapAt: -1}
		h.up.Store(true)
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
		h.up.Store(false)
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
		h.up.Store(true)
		heap.Push(&g.room, h)
		for _, m := range h.members {
			g.reindex(m)
		}
		g.refreshRoom(h)
	}
	return false
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
