package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Group keeps warm containers of several templates (images or
// configurations) under one budget: MaxSize caps the containers of all
// templates together, idle, in use and being made. Each template is a Pool
// of its own, with its own MinIdle, MaxIdle, MaxUses, lifetimes, agent and
// sandbox settings; the group decides how many containers each may have.
//
// At the cap, an Acquire for a template with nothing idle evicts the least
// recently used idle container of another template to make room, and callers
// of all templates waiting for room are served in the order they came. With
// adaptive warmth (the default) the budget is shared out by demand: each
// template gets the containers that save the most misses (group_warmth.go),
// and keeps idle its share less what it has in use, between its MinIdle and
// MaxIdle. Create one with NewGroup; it is
// safe for use by many goroutines at once.
type Group struct {
	cfg    GroupConfig
	set    atomic.Pointer[memberSet] // published by the owner: the templates in force
	nextID atomic.Uint64             // numbers the members

	ctrl chan groupReq
	wake chan struct{} // a member posted a report
	done chan struct{} // closed when the owner has exited

	// hosts: GroupConfig.Hosts, or one local host (name "", the group's
	// MaxSize, never probed) without them. Their state is the owner's.
	hosts      []*groupHost
	multi      bool                       // GroupConfig.Hosts is set: Acquire asks the owner for a host
	dirty      atomic.Pointer[memberLink] // members with a report in their mailbox, pushed by their pools
	probes     sync.WaitGroup             // the hosts' probers
	stopProbes context.CancelFunc
	probeCtx   context.Context

	// Owned by the owner goroutine (group_owner.go).
	all    map[uint64]*member    // every member not yet gone, retired ones included
	places map[string]*placement // by template in force: where its Acquires go (group_hosts.go)

	room   hostHeap                // the healthy hosts, the one with the most room first
	walk   []int                   // roomiest's frontier in room, kept for its capacity
	queues map[string]*ticketQueue // callers waiting for room on any host, by template (group_queue.go)
	seq    uint64                  // numbers the queued callers
	pass   uint64                  // numbers serveQueue's passes

	pools     []*Pool      // written by the owner before done is closed: every member to shut down
	unreached []*groupHost // written by the owner before done is closed: the hosts out at Shutdown
	shutOnce  sync.Once
	shutErr   error
}

// GroupConfig describes a Group.
type GroupConfig struct {
	// MaxSize caps the containers of all templates together: idle, in use
	// and being made. Required.
	MaxSize int
	// Templates names the pools of the group and their configuration. A
	// template's Name defaults to the template's name; its MaxSize, if set,
	// caps that template alone (with Hosts, on each host: placement sends a
	// caller only where its template has room of its own).
	Templates map[string]Config
	// StaticWarmth turns adaptive warmth off: each template keeps its
	// MinIdle warm, and containers returned stay idle up to MaxIdle. With
	// adaptive warmth (the default) the group shares the budget out by each
	// template's measured concurrent use, and a template keeps idle its
	// share less what it has in use, between its MinIdle and MaxIdle.
	StaticWarmth bool
	// KeepGoing makes NewGroup leave out a template that cannot start (its
	// image is missing, its network...) instead of failing: Acquire for it
	// returns ErrTemplateUnavailable wrapping the cause, Unavailable lists
	// them, and Update can bring one in later. By default NewGroup fails
	// with an error naming the template, and nothing is left running.
	KeepGoing bool
	// Hosts spreads the group over several Docker daemons: every template
	// runs a pool on every host (its Config.Client replaced by the host's
	// Client; its MinIdle, MaxIdle and MaxSize count per host), and each
	// host's MaxSize is that host's budget, with eviction and warmth per
	// host. Acquire takes an idle container of the template on any healthy
	// host first, else makes one on the healthy host with the most room.
	// With Hosts, MaxSize may be 0 (the sum of the hosts' caps) and must not
	// be below that sum. Without Hosts, the group runs on each template's
	// Config.Client (the local daemon by default).
	Hosts []Host
	// HostPing bounds each host's health ping (default DefaultHostPing, 1s).
	// A host whose ping fails or does not answer in time is out of
	// placement within about two seconds; it is probed with backoff and
	// back in when it answers. Only used with Hosts.
	HostPing time.Duration
	// MaxCreating bounds the creations under way at a time on one daemon
	// (each host, with Hosts), over all templates: default
	// DefaultMaxCreating. At the cap a creation costs a removal too, and a
	// daemon asked for more at once than its CPUs can do slows every one of
	// them; callers beyond the bound wait for a creation or a Return of
	// their template, whichever comes first. Raise it for a daemon with
	// many CPUs; negative is an error.
	MaxCreating int

	meter *ownerMeter // benchmarks: the owner's time per message (group_owner.go)
}

// Errors of a Group.
var (
	// ErrUnknownTemplate: the group has no template of that name. The
	// message lists the ones it has.
	ErrUnknownTemplate = errors.New("dockerpool: unknown template")
	// ErrTemplateUnavailable: the template could not start (GroupConfig.KeepGoing).
	// It wraps the cause, such as ErrImageNotFound.
	ErrTemplateUnavailable = errors.New("dockerpool: template unavailable")
)

// memberSet is what the owner publishes: immutable once published.
type memberSet struct {
	byName map[string][]*member // a template's members, by host index
	broken map[string]error
	closed bool
}

// member is one template's pool in the group.
type member struct {
	id       uint64
	template string
	pool     *Pool
	link     *memberLink
	host     *groupHost

	// Placement (group_place.go), the owner's.
	maxSize     int   // its pool's MaxSize: its template's, at most its host's
	placed      int64 // Acquires placed here (less those that never reached the pool)
	need, spare int   // what it adds to its host's need and spare
	idleAt      int   // its index in its placement's idle list, or -1
}

// memberLink is a member pool's way to its group: the pool's owner leaves
// its latest report in mail (capacity 1, a newer report replaces an older
// one unread) and wakes the group's owner. It never blocks.
type memberLink struct {
	id    uint64
	group *Group
	mail  chan budgetReport
	wake  chan struct{}

	// The member is on the group's dirty list (pushed by its pool's owner,
	// taken off by the group's owner): the group reads only the mailboxes
	// that have news, whatever the number of members.
	queued atomic.Bool
	next   *memberLink
}

func (l *memberLink) post(r budgetReport) {
	for {
		select {
		case l.mail <- r:
			if l.queued.CompareAndSwap(false, true) {
				d := &l.group.dirty
				for {
					h := d.Load()
					l.next = h
					if d.CompareAndSwap(h, l) {
						break
					}
				}
			}
			select {
			case l.wake <- struct{}{}:
			default:
			}
			return
		default:
			select { // only this pool's owner sends: the slot frees for it
			case <-l.mail:
			default:
			}
		}
	}
}

// NewGroup starts a pool for every template (on every host, with
// GroupConfig.Hosts) and the group that shares the budget among them. It
// fails, naming the template (and the host), when a template's
// configuration is invalid or its pool cannot start (unless KeepGoing), and
// when a host is invalid or two hosts are one daemon (Host.Client); nothing
// is then left running.
func NewGroup(ctx context.Context, cfg GroupConfig) (*Group, error) {
	hosts, err := groupHosts(&cfg)
	if err != nil {
		return nil, err
	}
	if len(cfg.Templates) == 0 {
		return nil, fmt.Errorf("%w: GroupConfig.Templates is empty", ErrInvalidConfig)
	}
	if err := sameDaemonID(ctx, cfg.Hosts); err != nil {
		return nil, err
	}
	g := &Group{
		cfg:    cfg,
		ctrl:   make(chan groupReq),
		wake:   make(chan struct{}, 1),
		done:   make(chan struct{}),
		hosts:  hosts,
		multi:  len(cfg.Hosts) > 0,
		all:    map[uint64]*member{},
		places: map[string]*placement{},
		queues: map[string]*ticketQueue{},
	}
	set := &memberSet{byName: map[string][]*member{}, broken: map[string]error{}}
	for _, name := range slices.Sorted(maps.Keys(cfg.Templates)) {
		ms, err := g.startMembers(ctx, name, cfg.Templates[name], false)
		switch {
		case err == nil:
			set.byName[name] = ms
			g.join(name, ms)
		case cfg.KeepGoing:
			set.broken[name] = err
		default:
			for _, m := range g.all {
				_ = m.pool.Shutdown(ctx)
			}
			return nil, err
		}
	}
	g.set.Store(set)
	g.startProbes()
	go g.run()
	return g, nil
}

// startMembers starts the pools of template name, one per host, linked
// to the group; if one cannot start, those started are shut down.
func (g *Group) startMembers(ctx context.Context, name string, cfg Config, renamed bool) ([]*member, error) {
	ms := make([]*member, 0, len(g.hosts))
	for _, h := range g.hosts {
		m, err := g.startMember(ctx, name, cfg, renamed, h)
		if err != nil {
			for _, m := range ms {
				_ = m.pool.Shutdown(ctx)
			}
			return nil, err
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// startMember starts the pool of template name on host h, linked to the
// group. renamed: a replacement (Update), whose containers get a name of
// their own so that neither pool takes the other's for stale.
func (g *Group) startMember(ctx context.Context, name string, cfg Config, renamed bool, h *groupHost) (*member, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: a template needs a name", ErrInvalidConfig)
	}
	id := g.nextID.Add(1)
	if cfg.Name == "" {
		cfg.Name = name
	}
	if renamed {
		cfg.Name = fmt.Sprintf("%s-u%d", cfg.Name, id)
	}
	if cfg.MaxSize <= 0 || cfg.MaxSize > h.maxSize {
		cfg.MaxSize = h.maxSize
	}
	if h.client != nil {
		cfg.Client = h.client
	}
	s, err := resolve(cfg)
	if err == nil {
		s.host = h.name
		if h.name != "" {
			s.hostVerdict = g.cfg.HostPing + hostPingEvery
		}
		s.member = &memberLink{id: id, group: g, mail: make(chan budgetReport, 1), wake: g.wake}
		var p *Pool
		if p, err = open(ctx, s); err == nil {
			return &member{id: id, template: name, pool: p, link: s.member, host: h, maxSize: cfg.MaxSize, idleAt: -1}, nil
		}
	}
	if h.name != "" {
		return nil, fmt.Errorf("dockerpool: group: template %q on host %q: %w", name, h.name, err)
	}
	return nil, fmt.Errorf("dockerpool: group: template %q: %w", name, err)
}

// Acquire returns a container of template for the caller's exclusive use,
// as Pool.Acquire does. At the group's MaxSize, with nothing idle for
// template, the least recently used idle container of another template
// makes room. Give it back with Return (or Remove).
//
// With Hosts, it takes an idle container of template on any healthy host
// first, else waits for one made on the healthy host with the most room
// where template is below its own MaxSize (evicting there at the host's
// cap); with no such host it waits in the group for the first room on any. A caller waiting on a host that goes
// out is placed again on another; with no healthy host, Acquire returns an
// error wrapping ErrHostDown.
func (g *Group) Acquire(ctx context.Context, template string) (*Container, error) {
	if g.multi {
		return g.acquireOnHosts(ctx, template)
	}
	for {
		set := g.set.Load()
		ms, err := set.lookup(template)
		if err != nil {
			return nil, err
		}
		c, err := ms[0].pool.Acquire(ctx)
		if errors.Is(err, ErrPoolShutdown) && set.replaced(template, ms[0]) {
			continue // replaced by Update meanwhile: ask the new one
		}
		if err != nil {
			return nil, fmt.Errorf("dockerpool: group: template %q: %w", template, err)
		}
		return c, nil
	}
}

// replaced: the member m of template is no longer in force (Update).
func (s *memberSet) replaced(template string, m *member) bool {
	now := m.link.group.set.Load()
	if now.closed {
		return false
	}
	ms := now.byName[template]
	return m.host.idx >= len(ms) || ms[m.host.idx] != m
}

func (s *memberSet) lookup(template string) ([]*member, error) {
	if s.closed {
		return nil, ErrPoolShutdown
	}
	if ms := s.byName[template]; ms != nil {
		return ms, nil
	}
	if err := s.broken[template]; err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrTemplateUnavailable, template, err)
	}
	return nil, fmt.Errorf("%w %q (the group has %s)", ErrUnknownTemplate, template, s.names())
}

func (s *memberSet) names() string {
	names := slices.Sorted(maps.Keys(s.byName))
	if len(names) == 0 {
		return "no templates"
	}
	return strings.Join(names, ", ")
}

// Return gives a container back to its template's pool, as Pool.Return.
// A container of a template replaced by Update or removed is removed.
func (g *Group) Return(ctx context.Context, c *Container) error {
	p, err := g.poolOf(c)
	if err != nil {
		return err
	}
	return p.Return(ctx, c)
}

// Remove takes a container out of the group for good, as Pool.Remove.
func (g *Group) Remove(ctx context.Context, c *Container) error {
	p, err := g.poolOf(c)
	if err != nil {
		return err
	}
	return p.Remove(ctx, c)
}

func (g *Group) poolOf(c *Container) (*Pool, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: nil", ErrInvalidContainer)
	}
	if c.pool == nil || c.pool.cfg.member == nil || c.pool.cfg.member.group != g {
		return nil, fmt.Errorf("%w: container %s is not of this group", ErrInvalidContainer, shortID(c.id))
	}
	return c.pool, nil
}

// WaitIdle blocks until at least n containers of template are idle, as
// Pool.WaitIdle. Under adaptive warmth a template keeps only its warm
// target idle: wait for at most its MinIdle. With Hosts, it waits for n
// idle on every healthy host (MinIdle counts per host): a host that is out
// of placement, or goes out meanwhile, is not waited for; with no healthy
// host it returns an error wrapping ErrHostDown.
func (g *Group) WaitIdle(ctx context.Context, template string, n int) error {
	ms, err := g.set.Load().lookup(template)
	if err != nil {
		return err
	}
	waited := false
	for _, m := range ms {
		if !m.host.up.Load() {
			continue
		}
		err := m.pool.WaitIdle(ctx, n)
		if errors.Is(err, ErrHostDown) && ctx.Err() == nil {
			continue // out while we waited
		}
		waited = waited || err == nil
		if err != nil {
			if m.host.name != "" {
				return fmt.Errorf("dockerpool: group: template %q on host %q: %w", template, m.host.name, err)
			}
			return err
		}
	}
	if !waited {
		return fmt.Errorf("dockerpool: group: template %q: %w: no healthy host (of %d)", template, ErrHostDown, len(ms))
	}
	return nil
}

// Templates returns the names of the templates in force, sorted.
func (g *Group) Templates() []string { return slices.Sorted(maps.Keys(g.set.Load().byName)) }

// Unavailable returns the templates left out because they could not start
// (GroupConfig.KeepGoing), with why.
func (g *Group) Unavailable() map[string]error { return maps.Clone(g.set.Load().broken) }
