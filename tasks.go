package dockerpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
)

// Docker work. The core queues tasks (one type per kind of work); the owner
// starts each on a worker of its lane, with the container's agent session
// when it needs one, and the worker sends back exactly one result message.

// task is one unit of Docker work.
type task interface {
	lane() lane
	kind() taskKind
	// run does the work on a worker and returns its result. agent is the
	// container's session on the agent path, when the task needs it.
	run(p *Pool, agent *agentConn) message
	// done is the result of this task ended by err.
	done(err error) message
}

// taskKind names a task, for logs and tests.
type taskKind uint8

const (
	taskCreate    taskKind = iota // create and start a container
	taskRemove                    // force-remove a container
	taskCheck                     // inspect an idle container before handing it out
	taskReset                     // reset a returned container
	taskProbe                     // ping the daemon
	taskFinalize                  // last sweep by label, then the network
	taskReconcile                 // list the pool's containers: deaths missed, creations whose answer was lost
)

func (k taskKind) String() string {
	return [...]string{"create", "remove", "check", "reset", "probe", "finalize", "reconcile"}[k]
}

type (
	createTask struct{ ln lane }
	removeTask struct {
		id      string
		reason  RemoveReason
		attempt int // earlier failures
	}
	checkTask struct{ id string }
	resetTask struct {
		id     string
		marked bool // the container carries the used mark
	}
	probeTask     struct{}
	finalizeTask  struct{ sweep []string } // containers whose removal failed
	reconcileTask struct{}
)

func (t createTask) lane() lane  { return t.ln }
func (removeTask) lane() lane    { return laneOps }
func (checkTask) lane() lane     { return laneAcquire }
func (resetTask) lane() lane     { return laneOps }
func (probeTask) lane() lane     { return laneProbe }
func (finalizeTask) lane() lane  { return laneOps }
func (reconcileTask) lane() lane { return laneOps }

func (createTask) kind() taskKind    { return taskCreate }
func (removeTask) kind() taskKind    { return taskRemove }
func (checkTask) kind() taskKind     { return taskCheck }
func (resetTask) kind() taskKind     { return taskReset }
func (probeTask) kind() taskKind     { return taskProbe }
func (finalizeTask) kind() taskKind  { return taskFinalize }
func (reconcileTask) kind() taskKind { return taskReconcile }

func (t createTask) run(p *Pool, _ *agentConn) message {
	m := p.tel.beginTask("dockerpool.container.create", "", p.tel.createTime)
	id, agent, err := p.createContainer()
	m.end(p.baseCtx, p.tel.createTime, &p.tel.createOpts, err)
	return createdMsg{task: t, id: id, agent: agent, err: err}
}

func (t removeTask) run(p *Pool, agent *agentConn) message {
	m := p.tel.beginTask("dockerpool.container.remove", t.id, p.tel.removeTime, keyReason.String(t.reason.String()))
	agent.close()
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	err := p.removeContainer(ctx, t.id)
	m.end(ctx, p.tel.removeTime, &p.tel.removeOpts, err)
	return removedMsg{task: t, err: err}
}

func (t checkTask) run(p *Pool, _ *agentConn) message {
	return checkedMsg{task: t, err: p.checkContainer(t.id)}
}

func (t resetTask) run(p *Pool, agent *agentConn) message {
	m := p.tel.beginTask("dockerpool.container.reset", t.id, p.tel.resetTime)
	err := p.resetContainer(t.id, t.marked, agent)
	m.end(p.baseCtx, p.tel.resetTime, &p.tel.resetOpts, err)
	return resetMsg{task: t, err: err}
}

func (probeTask) run(p *Pool, _ *agentConn) message {
	ctx, cancel := context.WithTimeout(p.baseCtx, probeTimeout)
	defer cancel()
	_, err := p.api.Ping(ctx)
	return probedMsg{err: err}
}

func (t finalizeTask) run(p *Pool, _ *agentConn) message {
	return finalizedMsg{err: p.finalize(p.baseCtx, t.sweep)}
}

func (reconcileTask) run(p *Pool, _ *agentConn) message {
	found, err := p.reconcile()
	return reconciledMsg{found: found, err: err}
}

// ---- the work ------------------------------------------------------------------

// createContainer creates and starts one container. When the creation fails
// after Docker made the container, it returns the ID with the error: the
// owner then removes the container like any other, retries included. On the
// agent path it also copies the agent in when asked, attaches to it before
// the start and waits for its hello.
func (p *Pool) createContainer() (string, *agentConn, error) {
	ctx, cancel := context.WithTimeout(p.createCtx, p.cfg.DockerTimeout)
	defer cancel()
	// The client adjusts the configs it is given (capabilities, fields of
	// older API versions): each creation gets its own copies.
	cc, hc := *p.spec.config, *p.spec.host
	var agent *agentConn
	sock := p.newSocket(&cc, &hc)
	if sock != nil {
		defer func() { sock.close(agent != nil) }() // a session keeps its directory
	}
	resp, err := p.api.ContainerCreate(ctx, &cc, &hc, p.spec.network, nil, "")
	if err != nil {
		if p.createCtx.Err() != nil {
			p.cutCreates.Add(1) // the daemon may still finish it: finalize looks again
		}
		if sock != nil && strings.Contains(err.Error(), sock.dir) {
			p.socketOff.Store(true) // the daemon does not see this machine's files
			p.socketFallBack(fmt.Errorf("the daemon cannot mount the socket's directory: %w", err))
		}
		return "", nil, fmt.Errorf("create container from image %q: %w", p.spec.config.Image, err)
	}
	agent, err = p.prepareAgent(ctx, resp.ID)
	if err != nil {
		return resp.ID, nil, err
	}
	if agent != nil && sock != nil {
		agent.sockDir = sock.socketDir // removed by agent.close, with the container
	}
	if err := p.api.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		agent.close()
		return resp.ID, nil, fmt.Errorf("start container %s: %w", shortID(resp.ID), err)
	}
	if agent != nil {
		onSocket, err := agent.handshake(p.cfg.agent.HandshakeTimeout, sock)
		if err != nil {
			agent.close()
			return resp.ID, nil, err
		}
		if sock != nil && !onSocket {
			p.socketFallBack(fmt.Errorf("the agent of container %s did not connect to its socket (its log says why)", shortID(resp.ID)))
		}
	}
	if err := p.recordBaseline(ctx, resp.ID); err != nil {
		agent.close()
		return resp.ID, nil, err
	}
	if ctx.Err() != nil { // a forced shutdown cancelled us after the fact
		agent.close()
		return resp.ID, nil, fmt.Errorf("create container: %w", ctx.Err())
	}
	return resp.ID, agent, nil
}

// newSocket makes the agent's socket of a creation and gives the configs
// its mount and variables (AgentConfig.Socket); nil without, or when it
// cannot be made (the creation then goes on the attach stream).
func (p *Pool) newSocket(cc *container.Config, hc *container.HostConfig) *agentSocket {
	if a := p.cfg.agent; a == nil || !a.Socket || p.socketOff.Load() {
		return nil
	}
	s, err := newAgentSocket()
	if err != nil {
		p.socketFallBack(err)
		return nil
	}
	s.shareWith(cc, hc)
	return s
}

// socketFallBack tells OnError, once per pool, that a session stays on the
// attach stream although AgentConfig.Socket is set, and why.
func (p *Pool) socketFallBack(why error) {
	if p.socketNoted.CompareAndSwap(false, true) {
		p.notify(fmt.Errorf("dockerpool: Agent.Socket: the agent's session stays on the attach stream (said once): %w", why))
	}
}

// prepareAgent copies the agent into a created container when asked, and
// attaches to it. It returns nil off the agent path.
func (p *Pool) prepareAgent(ctx context.Context, id string) (*agentConn, error) {
	a := p.cfg.agent
	if a == nil {
		return nil, nil
	}
	if p.agentTar != nil {
		err := p.api.CopyToContainer(ctx, id, path.Dir(a.Path), bytes.NewReader(p.agentTar), container.CopyToContainerOptions{})
		if err != nil {
			return nil, fmt.Errorf("%w: copy the agent into container %s: %w", ErrAgent, shortID(id), err)
		}
	}
	return p.attachAgent(ctx, id)
}

// removeContainer force-removes a container: SIGKILL and removal in one call,
// so it never waits out a stop timeout. A container that is already gone
// counts as removed.
func (p *Pool) removeContainer(ctx context.Context, id string) error {
	err := p.api.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
	if cerrdefs.IsNotFound(err) {
		err = p.stillBeingCreated(ctx, id)
	}
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove container %s: %w", shortID(id), err)
	}
	return nil
}

// stillBeingCreated is asked when the daemon says that a container to
// remove does not exist. Docker lists a container while its creation is
// still in progress, before it can be found by ID (the creation registers
// it last); a removal then fails with "No such container", and the
// container appears a moment later, for good. That happens to the
// containers whose creation a crashed process had in flight, which New
// lists and removes. So while the pool's listing still has the container,
// stillBeingCreated returns an error, and the removal is retried (with the
// usual backoff) until it succeeds; nil when the container is really gone.
// If the listing fails, the periodic reconcile is the safety net.
func (p *Pool) stillBeingCreated(ctx context.Context, id string) error {
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: p.labelFilter()})
	if err != nil {
		return nil
	}
	for _, c := range list {
		if c.ID == id {
			return errStillCreating
		}
	}
	return nil
}

// checkContainer reports an error when the container is not running any more.
func (p *Pool) checkContainer(id string) error {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	info, err := p.api.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return fmt.Errorf("%w: container %s is gone: %w", ErrContainerDead, shortID(id), err)
	}
	if err != nil {
		return fmt.Errorf("inspect container %s: %w", shortID(id), err)
	}
	if info.State != nil && !info.State.Running && info.State.OOMKilled {
		// The OOM killer ended the whole container (under gVisor, the
		// sandbox's kernel is one process to the host's).
		return fmt.Errorf("%w: container %s was killed by the OOM killer: %w", ErrContainerDead, shortID(id), ErrOutOfMemory)
	}
	if info.State == nil || !info.State.Running {
		return fmt.Errorf("%w: container %s", ErrContainerDead, shortID(id))
	}
	if info.State.OOMKilled {
		return fmt.Errorf("%w: container %s was OOM-killed", ErrContainerDead, shortID(id))
	}
	return nil
}

// rename gives the container the name prefix+its short ID.
func (p *Pool) rename(ctx context.Context, id, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.DockerTimeout)
	defer cancel()
	err := p.api.ContainerRename(ctx, id, prefix+shortID(id))
	if err != nil && !strings.Contains(err.Error(), "same name as its current name") {
		return fmt.Errorf("rename container %s: %w", shortID(id), err)
	}
	return nil
}

// resetContainer runs the user's OnReturn hook and the agent's reset, checks
// that the container is still running, and, when it carries the used mark
// and was reset, renames it clean again.
func (p *Pool) resetContainer(id string, marked bool, agent *agentConn) error {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	h := newHandle(p, id, 0, !marked, agent)
	if marked {
		h.state.Or(handleMarked)
	}
	if p.cfg.OnReturn != nil {
		if err := p.runOnReturn(ctx, h); err != nil {
			return err
		}
	}
	switch a := p.cfg.agent; {
	case p.cfg.VerifiedReset:
		if err := p.verifiedReset(ctx, h); err != nil {
			return err
		}
	case a != nil && a.ResetOnReturn && agent != nil:
		if err := agent.reset(p.cfg.DockerTimeout, a.ResetDirs); err != nil {
			return err
		}
	}
	if err := p.checkContainer(id); err != nil {
		return err
	}
	if p.resetCleans && h.state.Load()&handleMarked != 0 {
		return p.rename(p.baseCtx, id, cleanNamePrefix) // reset: adoptable again after a crash
	}
	return nil
}

// runOnReturn runs Config.OnReturn with a handle of its own, which dies with
// the hook whatever it kept of it.
func (p *Pool) runOnReturn(ctx context.Context, h *Container) error {
	err := p.cfg.OnReturn(ctx, h)
	if s, _ := h.markReleased(); s&execMask != 0 {
		err = errors.Join(err, errors.New("an exec was still running when it returned"))
	}
	if h.Tainted() {
		err = errors.Join(err, errors.New("an exec could not be cleaned up"))
	}
	if err != nil {
		return fmt.Errorf("OnReturn: %w", err)
	}
	return nil
}

// reconcile lists every container of the pool's label, for the owner to
// compare with what it knows.
func (p *Pool) reconcile() ([]found, error) {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	list, err := p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: p.labelFilter()})
	if err != nil {
		return nil, fmt.Errorf("list containers of pool %q: %w", p.cfg.Name, err)
	}
	out := make([]found, 0, len(list))
	for _, c := range list {
		out = append(out, found{
			id:      c.ID,
			created: time.Unix(c.Created, 0),
			running: c.State == "running",
			ours:    c.Labels[LabelInstance] == p.instance,
		})
	}
	return out, nil
}

// labelFilter selects the containers of this pool's name.
func (p *Pool) labelFilter() filters.Args {
	return filters.NewArgs(filters.Arg("label", LabelPool+"="+p.cfg.Name))
}

// done is the result of a task that ended with err, for a worker whose task
// panicked (and for tests that play the workers).
func (t createTask) done(err error) message  { return createdMsg{task: t, err: err} }
func (t removeTask) done(err error) message  { return removedMsg{task: t, err: err} }
func (t checkTask) done(err error) message   { return checkedMsg{task: t, err: err} }
func (t resetTask) done(err error) message   { return resetMsg{task: t, err: err} }
func (probeTask) done(err error) message     { return probedMsg{err: err} }
func (finalizeTask) done(err error) message  { return finalizedMsg{err: err} }
func (reconcileTask) done(err error) message { return reconciledMsg{err: err} }
