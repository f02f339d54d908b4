package dockerpool

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"sync/atomic"
)

// Container is a pooled container handed out by Acquire. It belongs to its
// caller until Return or Remove; after that the handle is dead: every method
// but ID returns ErrContainerReleased, even if the pool has since handed the
// same Docker container to somebody else.
//
// The methods of one Container may be called from several goroutines; see
// ExecStream for what concurrent commands in one container do.
type Container struct {
	pool     *Pool
	id       string
	lease    uint64 // which hand-out of this container the handle stands for
	needMark bool   // the container does not carry the used mark yet
	runner   runner // how commands reach the container: Docker exec, or its agent

	markMu sync.Mutex // serializes the marking of concurrent first Execs

	files fileServers // the Docker path's file server (runner_docker_fileserver.go)

	// life is cancelled, with the reason, when the container dies or is
	// revoked: the operations running on the handle end at once, rather
	// than wait for streams that a dead container may never close (a
	// gVisor sandbox killed by the OOM killer leaves its execs' streams
	// open). Made by the first operation (see lifeContext), so that a
	// hand-out without one costs nothing.
	life atomic.Pointer[handleLife]

	// Low 32 bits: operations (Exec, file transfers) running on this handle.
	// High bits: the flags below. Written by the holder's goroutines and,
	// for handleDead, handleTainted and handleRevoked, by the owner.
	state atomic.Uint64
}

const (
	execMask       uint64 = 1<<32 - 1
	handleReleased uint64 = 1 << 32 // Return or Remove was called
	handleTainted  uint64 = 1 << 33 // an exec may have left processes behind
	handleDead     uint64 = 1 << 34 // Docker said the container died or is gone
	handleRevoked  uint64 = 1 << 35 // Shutdown gave up waiting and removed it
	handleMarked   uint64 = 1 << 36 // the container was renamed as used
	handleOOM      uint64 = 1 << 37 // the OOM killer killed a process in it
	handleHostDown uint64 = 1 << 38 // its Group host went out of placement (with handleDead)
)

// newHandle makes the handle of one hand-out. On the agent path, commands go
// through the container's agent session.
func newHandle(p *Pool, id string, lease uint64, needMark bool, agent *agentConn) *Container {
	c := &Container{pool: p, id: id, lease: lease, needMark: needMark, runner: dockerRunner{}}
	if agent != nil {
		c.runner = agentRunner{a: agent}
	}
	return c
}

// ID returns the Docker container ID.
func (c *Container) ID() string { return c.id }

// Image returns the image the container runs, as Config.Image.Name (or
// ContainerConfig.Image) names it.
func (c *Container) Image() string { return c.pool.spec.config.Image }

// Labels returns the container's labels: Config.Labels, the labels of
// Config.ContainerConfig, and the pool's own (LabelPool, LabelConfig,
// LabelInstance). The map is a copy: changing it changes nothing.
func (c *Container) Labels() map[string]string { return maps.Clone(c.pool.spec.config.Labels) }

// Tainted reports whether an exec on this handle timed out, hit its output
// limit or was cancelled and the pool could not prove that all of its
// processes were killed. A tainted container is removed on Return instead of
// being reused.
func (c *Container) Tainted() bool { return c.state.Load()&handleTainted != 0 }

// markUsed renames the container as used, once per container, before the
// first command runs in it: from then on New never adopts it. It gives up
// when ctx (the operation's) ends: nothing has run yet, and the next
// operation tries again.
func (c *Container) markUsed(ctx context.Context) error {
	c.markMu.Lock()
	defer c.markMu.Unlock()
	if c.state.Load()&handleMarked != 0 {
		return nil
	}
	if err := c.pool.rename(ctx, c.id, usedNamePrefix); err != nil {
		if ctx.Err() != nil {
			// The operation ended (its host went out, its ctx or timeout
			// ended): say why, not "context canceled".
			return fmt.Errorf("mark container %s used: %w", shortID(c.id), context.Cause(ctx))
		}
		return err
	}
	c.state.Or(handleMarked)
	return nil
}

// needsMark reports whether the used mark must be set before anything runs.
func (c *Container) needsMark() bool { return c.needMark && c.state.Load()&handleMarked == 0 }

// beginOp registers an operation on the handle, or says why it may not run.
func (c *Container) beginOp() error {
	for {
		s := c.state.Load()
		switch {
		case s&handleRevoked != 0:
			return fmt.Errorf("%w: container %s was removed", ErrPoolShutdown, shortID(c.id))
		case s&handleReleased != 0:
			return fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(c.id))
		case s&handleHostDown != 0:
			return c.endOf(s)
		case s&handleDead != 0:
			return fmt.Errorf("%w: container %s", ErrContainerDead, shortID(c.id))
		}
		if c.state.CompareAndSwap(s, s+1) {
			return nil
		}
	}
}

func (c *Container) endOp() { c.state.Add(^uint64(0)) }

// handleLife is a handle's life context and its cancel.
type handleLife struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// setFlags sets flags on the handle; when they say the container is dead or
// revoked, the operations running on it are cancelled with the reason.
func (c *Container) setFlags(bits uint64) {
	s := c.state.Or(bits) | bits
	if l := c.life.Load(); l != nil {
		if why := c.endOf(s); why != nil {
			l.cancel(why)
		}
	}
}

// lifeContext returns the handle's life context, made on first use. The
// owner sets the flags before it looks for the context, an operation makes
// the context before it looks at the flags: one of the two sees the other,
// so a death is never missed.
func (c *Container) lifeContext() context.Context {
	l := c.life.Load()
	if l == nil {
		ctx, cancel := context.WithCancelCause(context.Background())
		if !c.life.CompareAndSwap(nil, &handleLife{ctx: ctx, cancel: cancel}) {
			cancel(nil) // a concurrent first operation made it
		}
		l = c.life.Load()
	}
	if why := c.endOf(c.state.Load()); why != nil {
		l.cancel(why)
	}
	return l.ctx
}

// endOf says why the handle's operations must end, for its state word s,
// or nil.
func (c *Container) endOf(s uint64) error {
	switch {
	case s&handleRevoked != 0:
		return fmt.Errorf("%w: container %s was removed", ErrPoolShutdown, shortID(c.id))
	case s&handleHostDown != 0:
		return fmt.Errorf("%w: container %s on host %q: %w", ErrContainerDead, shortID(c.id), c.pool.cfg.host, ErrHostDown)
	case s&handleDead != 0 && s&handleOOM != 0:
		return fmt.Errorf("%w: container %s died: %w", ErrContainerDead, shortID(c.id), ErrOutOfMemory)
	case s&handleDead != 0:
		return fmt.Errorf("%w: Docker reported that container %s died", ErrContainerDead, shortID(c.id))
	}
	return nil
}

// running counts the operations running on the handle.
func (c *Container) running() int { return int(c.state.Load() & execMask) }

// markReleased ends the handle. It returns the state word from before, with
// which Return tells the owner how the handle ended: still busy, tainted,
// dead, marked.
func (c *Container) markReleased() (uint64, error) {
	for {
		s := c.state.Load()
		if s&handleRevoked != 0 {
			return 0, ErrPoolShutdown
		}
		if s&handleReleased != 0 {
			return 0, fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(c.id))
		}
		if c.state.CompareAndSwap(s, s|handleReleased) {
			return s, nil
		}
	}
}

// releaseReq is the request that ends the hand-out of the handle, from its
// state word as markReleased left it.
func (c *Container) releaseReq(state uint64, remove bool, reply chan error) releaseReq {
	return releaseReq{
		id: c.id, lease: c.lease, remove: remove,
		flags: state &^ execMask, busy: state&execMask != 0,
		reply: reply,
	}
}
