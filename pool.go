package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/sourcegraph/conc/pool"
)

// Pool keeps Docker containers started and waiting. Create one with New; it
// is safe for use by many goroutines at once. All of its state belongs to one
// goroutine, the owner, which the methods reach through channels.
type Pool struct {
	// Immutable after New.
	cfg         settings
	api         DockerAPI
	closer      io.Closer // the client New made, closed at the end; nil if the caller's
	spec        containerSpec
	instance    string
	agentTar    []byte // the agent binary as CopyToContainer wants it, when Agent.Binary is set
	resetCleans bool   // a reset renames the container clean (adoptable)

	baseCtx      context.Context // Docker work; cancelled when the owner exits
	cancelBase   context.CancelFunc
	createCtx    context.Context // creations; also cancelled by a forced shutdown
	cancelCreate context.CancelFunc

	// Channels to the owner.
	acquireCh chan acquireReq
	releaseCh chan releaseReq
	ctrlCh    chan message // the rare requests, events and ticks
	resultCh  chan message // the workers' results
	errCh     chan error   // to the goroutine that calls OnError

	closing chan struct{} // closed by the owner when Shutdown starts
	done    chan struct{} // closed when the owner and its helpers have exited

	// Written by the owner, read by anyone.
	idle, inUse atomic.Int64
	// The containers' mount table, read by the first file transfer on the
	// Docker exec path (mounts.go).
	mounts atomic.Pointer[mountTable]
	// The layer of the pool's first container right after its start, for
	// the verified reset on a writable root (reset.go).
	baseline atomic.Pointer[[]string]
	// socketOff: the daemon could not mount a socket's directory
	// (AgentConfig.Socket): the creations go without from then on.
	// socketNoted: a fall-back to the attach stream was told to OnError.
	socketOff, socketNoted atomic.Bool
	// Written by the owner before done is closed; read after.
	shutdownErr error
	finalStats  Stats

	// Owned by the owner goroutine (run).
	owner *owner
	lanes [numLanes]*pool.Pool

	// Reply channels are recycled: each gets exactly one answer, and goes
	// back only after its caller received it. A channel whose caller gave
	// up (the owner may still answer on it, or read it back) is never
	// reused.
	tel *telemetry // OpenTelemetry's instruments

	acquireReplies sync.Pool // of chan acquireReply
	releaseReplies sync.Pool // of chan error

	watcher      sync.WaitGroup // the event watcher and the ticker
	kick         chan struct{}  // capacity 1: the Group host is back, subscribe to events again now
	cutCreates   atomic.Int64   // creations Shutdown cut short (finalize.go, lateSweep)
	notifierDone chan struct{}  // closed when the OnError goroutine has exited
	ownerG       atomic.Uint64  // the owner's goroutine, for debug checks
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
	ctx, m := p.tel.begin(ctx, "dockerpool.Acquire", p.tel.acquireTime)
	r, _ := p.acquire(ctx, false)
	p.tel.acquired(ctx, m, r.c, r.waited, r.err)
	return r.c, r.err
}

// acquireSent is Acquire for a Group over hosts: sent says whether the
// request reached the owner (the group counts the placements that did not);
// promised: the group placed the caller here for an idle container, and
// the pool answers errPromiseGone if none is left.
func (p *Pool) acquireSent(ctx context.Context, promised bool) (*Container, bool, error) {
	p.assertNotOwner()
	ctx, m := p.tel.begin(ctx, "dockerpool.Acquire", p.tel.acquireTime)
	r, sent := p.acquire(ctx, promised)
	p.tel.acquired(ctx, m, r.c, r.waited, r.err)
	return r.c, sent, r.err
}

// acquire is Acquire's round trip to the owner; sent: the owner got the
// request.
func (p *Pool) acquire(ctx context.Context, promised bool) (acquireReply, bool) {
	if err := ctx.Err(); err != nil {
		return acquireReply{err: fmt.Errorf("dockerpool: acquire: %w", err)}, false
	}
	req := acquireReq{reply: p.acquireReplies.Get().(chan acquireReply), promised: promised}
	select {
	case p.acquireCh <- req:
	case <-p.closing:
		p.acquireReplies.Put(req.reply)
		return acquireReply{err: ErrPoolShutdown}, false
	case <-ctx.Done():
		p.acquireReplies.Put(req.reply)
		return acquireReply{err: fmt.Errorf("dockerpool: acquire: %w", ctx.Err())}, false
	}
	select {
	case r := <-req.reply:
		p.acquireReplies.Put(req.reply) // answered once, now empty: reusable
		return r, true
	case <-ctx.Done():
		// The owner takes back a container it may have sent meanwhile.
		select {
		case p.ctrlCh <- cancelReq{reply: req.reply}:
		case <-p.done:
		}
		return acquireReply{err: fmt.Errorf("dockerpool: acquire: %w", ctx.Err())}, true
	case <-p.done:
		return acquireReply{err: ErrPoolShutdown}, true
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
	state, err := c.markReleased()
	if err == nil {
		c.files.close() // before the reset: nothing of the handle's runs on
	}
	if err != nil {
		return err
	}
	req := c.releaseReq(state, remove, p.releaseReplies.Get().(chan error))
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
		// The answer may have come just before the end (the last Return of
		// a draining pool ends it at once): it wins.
		select {
		case err := <-req.reply:
			return err
		default:
			return ErrPoolShutdown
		}
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
	defer p.tel.stop() // once done is closed: its callback may wait for the owner until then
	select {
	case p.ctrlCh <- shutdownReq{}:
	case <-p.done:
		return p.shutdownErr
	}
	select {
	case <-p.done:
		return p.shutdownErr
	case <-ctx.Done():
	}
	select {
	case p.ctrlCh <- forceReq{}:
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
	case p.ctrlCh <- req:
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
	case p.ctrlCh <- req:
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
		case p.ctrlCh <- idleUnwaitReq{reply: req.reply}:
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
