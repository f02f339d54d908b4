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
// adaptive warmth (the default) each template's warm target follows its
// demand between its MinIdle and MaxIdle. Create one with NewGroup; it is
// safe for use by many goroutines at once.
type Group struct {
	cfg    GroupConfig
	set    atomic.Pointer[memberSet] // published by the owner: the templates in force
	nextID atomic.Uint64             // numbers the members

	ctrl chan groupReq
	wake chan struct{} // a member posted a report
	done chan struct{} // closed when the owner has exited

	// Owned by the owner goroutine (group_owner.go).
	core *budgetCore
	all  map[uint64]*member // every member not yet gone, retired ones included

	pools    []*Pool // written by the owner before done is closed: every member to shut down
	shutOnce sync.Once
	shutErr  error
}

// GroupConfig describes a Group.
type GroupConfig struct {
	// MaxSize caps the containers of all templates together: idle, in use
	// and being made. Required.
	MaxSize int
	// Templates names the pools of the group and their configuration. A
	// template's Name defaults to the template's name; its MaxSize, if set,
	// caps that template alone.
	Templates map[string]Config
	// StaticWarmth turns adaptive warmth off: each template keeps its
	// MinIdle warm, and containers returned stay idle up to MaxIdle.
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
	byName map[string]*member
	broken map[string]error
	closed bool
}

// member is one template's pool in the group.
type member struct {
	id       uint64
	template string
	pool     *Pool
	link     *memberLink
}

// memberLink is a member pool's way to its group: the pool's owner leaves
// its latest report in mail (capacity 1, a newer report replaces an older
// one unread) and wakes the group's owner. It never blocks.
type memberLink struct {
	id    uint64
	group *Group
	mail  chan budgetReport
	wake  chan struct{}
}

func (l *memberLink) post(r budgetReport) {
	for {
		select {
		case l.mail <- r:
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

// NewGroup starts a pool for every template and the group that shares
// MaxSize among them. It fails, naming the template, when a template's
// configuration is invalid or its pool cannot start (unless KeepGoing).
func NewGroup(ctx context.Context, cfg GroupConfig) (*Group, error) {
	if err := validateHosts(cfg.Hosts); err != nil {
		return nil, err
	}
	if len(cfg.Hosts) > 0 {
		return nil, fmt.Errorf("%w: GroupConfig.Hosts: not implemented yet", ErrInvalidConfig)
	}
	if cfg.MaxSize <= 0 {
		return nil, fmt.Errorf("%w: GroupConfig.MaxSize must be positive, not %d", ErrInvalidConfig, cfg.MaxSize)
	}
	if len(cfg.Templates) == 0 {
		return nil, fmt.Errorf("%w: GroupConfig.Templates is empty", ErrInvalidConfig)
	}
	g := &Group{
		cfg:  cfg,
		ctrl: make(chan groupReq),
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		core: newBudgetCore(cfg.MaxSize, !cfg.StaticWarmth),
		all:  map[uint64]*member{},
	}
	set := &memberSet{byName: map[string]*member{}, broken: map[string]error{}}
	for _, name := range slices.Sorted(maps.Keys(cfg.Templates)) {
		m, err := g.startMember(ctx, name, cfg.Templates[name], false)
		switch {
		case err == nil:
			set.byName[name] = m
			g.join(m)
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
	go g.run()
	return g, nil
}

// startMember starts the pool of template name, linked to the group.
// renamed: a replacement (Update), whose containers get a name of their own
// so that neither pool takes the other's for stale.
func (g *Group) startMember(ctx context.Context, name string, cfg Config, renamed bool) (*member, error) {
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
	if cfg.MaxSize <= 0 || cfg.MaxSize > g.cfg.MaxSize {
		cfg.MaxSize = g.cfg.MaxSize
	}
	s, err := resolve(cfg)
	if err == nil {
		s.member = &memberLink{id: id, group: g, mail: make(chan budgetReport, 1), wake: g.wake}
		var p *Pool
		if p, err = open(ctx, s); err == nil {
			return &member{id: id, template: name, pool: p, link: s.member}, nil
		}
	}
	return nil, fmt.Errorf("dockerpool: group: template %q: %w", name, err)
}

// Acquire returns a container of template for the caller's exclusive use,
// as Pool.Acquire does. At the group's MaxSize, with nothing idle for
// template, the least recently used idle container of another template
// makes room. Give it back with Return (or Remove).
func (g *Group) Acquire(ctx context.Context, template string) (*Container, error) {
	for {
		set := g.set.Load()
		m, err := set.lookup(template)
		if err != nil {
			return nil, err
		}
		c, err := m.pool.Acquire(ctx)
		if errors.Is(err, ErrPoolShutdown) {
			if now := g.set.Load(); !now.closed && now.byName[template] != m {
				continue // replaced by Update meanwhile: ask the new one
			}
		}
		if err != nil {
			return nil, fmt.Errorf("dockerpool: group: template %q: %w", template, err)
		}
		return c, nil
	}
}

func (s *memberSet) lookup(template string) (*member, error) {
	if s.closed {
		return nil, ErrPoolShutdown
	}
	if m := s.byName[template]; m != nil {
		return m, nil
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
// target idle: wait for at most its MinIdle.
func (g *Group) WaitIdle(ctx context.Context, template string, n int) error {
	m, err := g.set.Load().lookup(template)
	if err != nil {
		return err
	}
	return m.pool.WaitIdle(ctx, n)
}

// Templates returns the names of the templates in force, sorted.
func (g *Group) Templates() []string { return slices.Sorted(maps.Keys(g.set.Load().byName)) }

// Unavailable returns the templates left out because they could not start
// (GroupConfig.KeepGoing), with why.
func (g *Group) Unavailable() map[string]error { return maps.Clone(g.set.Load().broken) }
