package dockerpool

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/sourcegraph/conc/pool"
)

// pingTimeout bounds New's first contact with the daemon.
const pingTimeout = 5 * time.Second

// Pool keeps Docker containers started and waiting. Create one with New; it
// is safe for use by many goroutines at once. All of its state belongs to one
// goroutine, the owner, which the methods reach through channels.
type Pool struct {
	// Immutable after New.
	cfg      settings
	api      dockerAPI
	closer   io.Closer // the client New made, closed at the end; nil if the caller's
	spec     containerSpec
	instance string
	agentTar []byte // the agent binary as CopyToContainer wants it, when Agent.Binary is set

	baseCtx      context.Context // Docker work; cancelled when the owner exits
	cancelBase   context.CancelFunc
	createCtx    context.Context // creations; also cancelled by a forced shutdown
	cancelCreate context.CancelFunc

	// Channels to the owner.
	acquireCh chan acquireReq
	releaseCh chan releaseReq
	ctrlCh    chan ctrlMsg // the rare requests
	resultCh  chan taskResult
	errCh     chan error // to the goroutine that calls OnError

	closing chan struct{} // closed by the owner when Shutdown starts
	done    chan struct{} // closed when the owner and its helpers have exited

	// Written by the owner, read by anyone.
	idle, inUse atomic.Int64
	// Written by the owner before done is closed; read after.
	shutdownErr error
	finalStats  Stats

	// Owned by run().
	core  *core
	lanes [numLanes]*pool.Pool

	// Reply channels are recycled: each gets exactly one answer, and goes
	// back only after its caller received it. A channel whose caller gave
	// up (the owner may still answer on it, or read it back) is never
	// reused.
	acquireReplies sync.Pool // of chan acquireReply
	releaseReplies sync.Pool // of chan error

	watcher      sync.WaitGroup // the event watcher and the ticker
	notifierDone chan struct{}  // closed when the OnError goroutine has exited
	ownerG       atomic.Uint64  // the owner's goroutine, for debug checks
}

// New checks cfg, connects to Docker, prepares the network and the image,
// adopts the containers an earlier process left under cfg.Name, and returns a
// running pool. The pool fills up to MinIdle in the background; New does not
// wait for it.
//
// ctx bounds New itself, not the pool's life: call Shutdown to end the pool.
func New(ctx context.Context, cfg Config) (*Pool, error) {
	s, err := resolve(cfg)
	if err != nil {
		return nil, err
	}
	var api dockerAPI = cfg.Client
	var closer io.Closer
	if cfg.Client == nil {
		cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return nil, fmt.Errorf("dockerpool: docker client: %w", err)
		}
		api, closer = cli, cli
	}
	p, err := newPool(ctx, s, api)
	if err != nil {
		if closer != nil {
			_ = closer.Close()
		}
		return nil, err
	}
	p.closer = closer
	return p, nil
}

// newPool does New's work against any implementation of the Docker seam.
func newPool(ctx context.Context, s settings, api dockerAPI) (*Pool, error) {
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	_, err := api.Ping(pctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("dockerpool: cannot reach the Docker daemon (is it running? DOCKER_HOST?): %w", err)
	}
	if err := prepareNetwork(ctx, s, api); err != nil {
		return nil, err
	}
	imageID, err := prepareImage(ctx, s, api)
	if err != nil {
		return nil, err
	}

	var idb [8]byte
	_, _ = rand.Read(idb[:])
	p := &Pool{
		cfg:       s,
		api:       api,
		instance:  hex.EncodeToString(idb[:]),
		acquireCh: make(chan acquireReq),
		releaseCh: make(chan releaseReq),
		ctrlCh:    make(chan ctrlMsg),
		resultCh:  make(chan taskResult, s.MaxConcurrentDockerOps+s.MaxConcurrentAcquire+1),
		errCh:     make(chan error, 64),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),

		notifierDone: make(chan struct{}),
	}
	p.acquireReplies.New = func() any { return make(chan acquireReply, 1) }
	p.releaseReplies.New = func() any { return make(chan error, 1) }
	p.spec = buildSpec(s, imageID, p.instance)
	if s.agent != nil && s.agent.Binary != "" {
		if p.agentTar, err = agentTar(s.agent.Binary, s.agent.Path); err != nil {
			return nil, err
		}
	}
	p.baseCtx, p.cancelBase = context.WithCancel(context.WithoutCancel(ctx))
	p.createCtx, p.cancelCreate = context.WithCancel(p.baseCtx)
	p.lanes[laneOps] = pool.New().WithMaxGoroutines(s.MaxConcurrentDockerOps)
	p.lanes[laneAcquire] = pool.New().WithMaxGoroutines(s.MaxConcurrentAcquire)
	p.lanes[laneProbe] = pool.New().WithMaxGoroutines(1)
	p.core = newCore(limits{
		minIdle:        s.MinIdle,
		maxIdle:        s.MaxIdle,
		maxSize:        s.MaxSize,
		workers:        [numLanes]int{s.MaxConcurrentDockerOps, s.MaxConcurrentAcquire, 1},
		dockerTimeout:  s.DockerTimeout,
		maxUses:        s.MaxUses,
		maxIdleTime:    s.MaxIdleTime,
		maxLifetime:    s.MaxLifetime,
		refillInterval: s.RefillInterval,
		suspectIdle:    s.CheckIdleAfter,
		hasReset:       s.OnReturn != nil || s.CheckOnReturn || (s.agent != nil && s.agent.ResetOnReturn),
		hasHook:        s.OnReturn != nil || (s.agent != nil && s.agent.ResetOnReturn),
	}, p, binary.LittleEndian.Uint64(idb[:]), s.Logger)

	// Listen before listing, so that nothing dies unseen in between.
	since := time.Now().Add(-2 * time.Second)
	go p.notifier()
	p.watcher.Add(2)
	go p.watchEvents(since)
	go p.ticker()

	if err := p.adopt(ctx); err != nil {
		p.stopHelpers()
		return nil, err
	}
	go p.run()
	return p, nil
}

func prepareNetwork(ctx context.Context, s settings, api dockerAPI) error {
	name := s.Network.Name
	if name == "none" || name == "host" {
		return nil // network modes, not networks (Podman has no object for them)
	}
	_, err := api.NetworkInspect(ctx, name, network.InspectOptions{})
	switch {
	case err == nil:
		return nil
	case !cerrdefs.IsNotFound(err):
		return fmt.Errorf("dockerpool: inspect network %q: %w", name, err)
	case !s.Network.NeedsCreate:
		if s.HostConfig != nil && s.HostConfig.NetworkMode != "" {
			return nil // the containers do not join it
		}
		return fmt.Errorf("%w: %q (set Network.NeedsCreate to create it)", ErrNetworkNotFound, name)
	}
	labels := map[string]string{}
	for k, v := range s.Network.Labels {
		labels[k] = v
	}
	labels[LabelPool] = s.Name
	_, err = api.NetworkCreate(ctx, name, network.CreateOptions{Driver: s.Network.Driver, Labels: labels})
	if err != nil && cerrdefs.IsConflict(err) {
		return nil // made by somebody else meanwhile: reuse it
	}
	if err != nil {
		return fmt.Errorf("dockerpool: create network %q: %w", name, err)
	}
	return nil
}

// prepareImage makes sure the image is on the daemon, pulling it as the policy
// says, and returns its ID.
func prepareImage(ctx context.Context, s settings, api dockerAPI) (string, error) {
	name := s.Image.Name
	info, inspectErr := api.ImageInspect(ctx, name)
	present := inspectErr == nil
	if inspectErr != nil && !cerrdefs.IsNotFound(inspectErr) {
		return "", fmt.Errorf("dockerpool: inspect image %q: %w", name, inspectErr)
	}
	pull := s.pullPolicy == PullAlways || (s.pullPolicy == PullIfNotPresent && !present)
	if pull {
		pullErr := pullImage(ctx, s, api)
		switch {
		case pullErr == nil:
			info, inspectErr = api.ImageInspect(ctx, name)
			if inspectErr != nil {
				return "", fmt.Errorf("dockerpool: inspect image %q after pull: %w", name, inspectErr)
			}
			return info.ID, nil
		case present:
			// Offline, but we have a copy: go on with it.
			s.OnError(fmt.Errorf("dockerpool: pull %q failed, using the local image: %w", name, pullErr))
			return info.ID, nil
		default:
			return "", fmt.Errorf("%w: %q: pull failed: %w", ErrImageNotFound, name, pullErr)
		}
	}
	if !present {
		return "", fmt.Errorf("%w: %q is not on the daemon and the pull policy is %q: %w", ErrImageNotFound, name, s.pullPolicy, inspectErr)
	}
	return info.ID, nil
}

// pullImage pulls the image, reading the progress stream to its end (the pull
// is not finished before), and returns the daemon's reason on failure.
func pullImage(ctx context.Context, s settings, api dockerAPI) error {
	rc, err := api.ImagePull(ctx, s.Image.Name, image.PullOptions{})
	if err != nil {
		return err
	}
	defer rc.Close()
	return readPullProgress(rc, s)
}

// adopt lists the containers under the pool's label: running ones made from
// the same configuration that never ran an exec become idle (up to MaxIdle);
// everything else is queued for removal.
func (p *Pool) adopt(ctx context.Context) error {
	list, err := p.api.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelPool+"="+p.cfg.Name)),
	})
	if err != nil {
		return fmt.Errorf("dockerpool: list containers of pool %q: %w", p.cfg.Name, err)
	}
	type verdict struct {
		id      string
		created time.Time
		ok      bool
		agent   *agentConn
	}
	verdicts := make([]verdict, len(list))
	check := pool.New().WithMaxGoroutines(p.cfg.MaxConcurrentDockerOps)
	for i, c := range list {
		verdicts[i] = verdict{id: c.ID, created: time.Unix(c.Created, 0)}
		if c.State != "running" || c.Labels[LabelConfig] != p.spec.hash || wasUsed(c.Names) {
			continue
		}
		check.Go(func() {
			info, err := p.api.ContainerInspect(ctx, c.ID)
			// No exec running either (the used mark is set before a
			// first exec starts, so this is belt and braces).
			verdicts[i].ok = err == nil && info.State != nil && info.State.Running && len(info.ExecIDs) == 0
			if verdicts[i].ok && p.cfg.agent != nil {
				// Its agent must still answer.
				a, err := p.attachAgent(ctx, c.ID)
				if err == nil {
					err = a.ping(p.cfg.agent.HandshakeTimeout)
				}
				if err != nil {
					a.close()
					verdicts[i].ok = false
					return
				}
				verdicts[i].agent = a
			}
		})
	}
	check.Wait()
	now := time.Now()
	for _, v := range verdicts {
		s := &slot{id: v.id, created: v.created, state: stNew, agent: v.agent}
		p.core.known[v.id] = s
		if v.ok && len(p.core.idle) < p.cfg.MaxIdle {
			if p.cfg.MaxLifetime > 0 {
				s.expires = v.created.Add(p.cfg.MaxLifetime)
			}
			p.core.setState(s, stIdle)
			s.idleSince = now
			p.core.idle = append(p.core.idle, s)
			p.core.st.Adopted++
			p.core.logAttrs(0, "container adopted", slogID(v.id))
			continue
		}
		p.core.startRemove(s, ReasonStale)
	}
	return nil
}

// wasUsed reports whether a container carries the used mark: an exec ran in
// it since it was created or last reset.
func wasUsed(names []string) bool {
	for _, n := range names {
		if strings.HasPrefix(strings.TrimPrefix(n, "/"), usedNamePrefix) {
			return true
		}
	}
	return false
}

// Acquire returns a container for the caller's exclusive use: the most
// recently returned idle one, or, when none is idle, one created for the
// caller. Give it back with Return (or Remove) when done.
//
// When ctx ends first, Acquire returns an error for which
// errors.Is(err, ctx.Err()) holds; a container being created for the caller
// is not lost but kept idle. Once Shutdown has started, Acquire returns
// ErrPoolShutdown. While Docker fails and nothing is idle, it returns
// ErrDaemonUnavailable at once.
func (p *Pool) Acquire(ctx context.Context) (*Container, error) {
	p.assertNotOwner()
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dockerpool: acquire: %w", err)
	}
	req := acquireReq{reply: p.acquireReplies.Get().(chan acquireReply)}
	select {
	case p.acquireCh <- req:
	case <-p.closing:
		p.acquireReplies.Put(req.reply)
		return nil, ErrPoolShutdown
	case <-ctx.Done():
		p.acquireReplies.Put(req.reply)
		return nil, fmt.Errorf("dockerpool: acquire: %w", ctx.Err())
	}
	select {
	case r := <-req.reply:
		p.acquireReplies.Put(req.reply) // answered once, now empty: reusable
		return r.c, r.err
	case <-ctx.Done():
		// The owner takes back a container it may have sent meanwhile.
		select {
		case p.ctrlCh <- ctrlMsg{cancel: &cancelReq{reply: req.reply}}:
		case <-p.done:
		}
		return nil, fmt.Errorf("dockerpool: acquire: %w", ctx.Err())
	case <-p.done:
		return nil, ErrPoolShutdown
	}
}

// Return gives a container back to the pool. It goes on top of the idle stack,
// so the next Acquire gets it, unless it must go: MaxIdle containers are idle
// already, it reached MaxUses or MaxLifetime, it died, an exec on it could not
// be cleaned up (see Container.Tainted), or the pool is shutting down. Then it
// is removed in the background.
//
// Returning a handle twice, after Remove, or to another pool is an error and
// changes nothing. Return does not wait for Docker; ctx is not used today.
func (p *Pool) Return(ctx context.Context, c *Container) error {
	return p.release(c, false)
}

// Remove takes a container out of the pool for good: it is force-removed from
// the daemon in the background, and refill replaces it. Use it when a
// container is in a state you do not want the next caller to see.
func (p *Pool) Remove(ctx context.Context, c *Container) error {
	return p.release(c, true)
}

func (p *Pool) release(c *Container, remove bool) error {
	p.assertNotOwner()
	if c == nil {
		return fmt.Errorf("%w: nil", ErrInvalidContainer)
	}
	if c.pool != p {
		return fmt.Errorf("%w: container %s", ErrInvalidContainer, shortID(c.id))
	}
	busy, err := c.markReleased()
	if err != nil {
		return err
	}
	req := releaseReq{c: c, remove: remove, tainted: busy, reply: p.releaseReplies.Get().(chan error)}
	select {
	case p.releaseCh <- req:
	case <-p.done:
		return ErrPoolShutdown
	}
	select {
	case err := <-req.reply:
		p.releaseReplies.Put(req.reply)
		return err
	case <-p.done:
		return ErrPoolShutdown
	}
}

// Shutdown stops the pool. From its start, Acquire returns ErrPoolShutdown,
// waiting callers included. It waits for the containers in use to be returned
// (their holders may still Exec meanwhile), removes the idle ones in parallel
// and waits for removals in flight, then removes the network when
// Network.NeedsRemove is set.
//
// If ctx ends first, Shutdown removes the containers still in use (their
// handles stop working) and returns an error wrapping ctx.Err(). Either way
// no container of the pool is left when it returns: that takes the removals'
// time after ctx ends, at most Config.DockerTimeout per call against a
// daemon that does not answer. Calling it again, from any goroutine, waits
// for the same end.
func (p *Pool) Shutdown(ctx context.Context) error {
	p.assertNotOwner()
	select {
	case p.ctrlCh <- ctrlMsg{shutdown: &shutdownReq{}}:
	case <-p.done:
		return p.shutdownErr
	}
	select {
	case <-p.done:
		return p.shutdownErr
	case <-ctx.Done():
	}
	select {
	case p.ctrlCh <- ctrlMsg{force: &forceReq{}}:
	case <-p.done:
	}
	<-p.done
	return errors.Join(fmt.Errorf("dockerpool: shutdown: %w: containers still in use were removed", ctx.Err()), p.shutdownErr)
}

// IdleCount returns the number of idle containers, ready to be acquired.
func (p *Pool) IdleCount() int { return int(p.idle.Load()) }

// InUse returns the number of containers held by callers.
func (p *Pool) InUse() int { return int(p.inUse.Load()) }

// Stats returns a consistent snapshot of the pool's state and counters.
// After Shutdown it returns the last snapshot.
func (p *Pool) Stats() Stats {
	p.assertNotOwner()
	req := statsReq{reply: make(chan Stats, 1)}
	select {
	case p.ctrlCh <- ctrlMsg{stats: &req}:
	case <-p.done:
		return p.finalStats
	}
	select {
	case st := <-req.reply:
		return st
	case <-p.done:
		return p.finalStats
	}
}

// WaitIdle blocks until at least n containers are idle, for instance to
// let a service warm up before it takes traffic:
//
//	err := pool.WaitIdle(ctx, cfg.MinIdle)
//
// It returns ctx's error when ctx ends first, and ErrPoolShutdown when the
// pool shuts down. n above MaxIdle can never be reached and is an error.
func (p *Pool) WaitIdle(ctx context.Context, n int) error {
	p.assertNotOwner()
	if n > p.cfg.MaxIdle {
		return fmt.Errorf("%w: WaitIdle(%d) above MaxIdle (%d)", ErrInvalidConfig, n, p.cfg.MaxIdle)
	}
	req := idleWaitReq{n: n, reply: make(chan error, 1)}
	select {
	case p.ctrlCh <- ctrlMsg{idleWait: &req}:
	case <-p.closing:
		return ErrPoolShutdown
	case <-ctx.Done():
		return fmt.Errorf("dockerpool: wait for %d idle: %w", n, ctx.Err())
	}
	select {
	case err := <-req.reply:
		return err
	case <-ctx.Done():
		select {
		case p.ctrlCh <- ctrlMsg{idleUnwait: &idleUnwaitReq{reply: req.reply}}:
		case <-p.done:
		}
		return fmt.Errorf("dockerpool: wait for %d idle (%d now): %w", n, p.IdleCount(), ctx.Err())
	case <-p.done:
		return ErrPoolShutdown
	}
}

// notify hands a background error to the OnError goroutine without ever
// blocking; when it lags far behind, errors are dropped.
func (p *Pool) notify(err error) {
	select {
	case p.errCh <- err:
	default:
	}
}

// notifier calls OnError, one error at a time, off the owner goroutine (so
// that OnError may call the pool).
func (p *Pool) notifier() {
	defer close(p.notifierDone)
	for err := range p.errCh {
		p.cfg.OnError(err)
	}
}

// stopHelpers ends the event watcher and the notifier, after every worker has
// ended (nobody may notify once errCh is closed).
func (p *Pool) stopHelpers() {
	p.cancelBase()
	p.watcher.Wait()
	close(p.errCh)
	<-p.notifierDone
}
