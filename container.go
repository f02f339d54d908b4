package dockerpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/network"
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
	lease    uint64     // which hand-out of this container the handle stands for
	needMark bool       // the container does not carry the used mark yet
	agent    *agentConn // the container's agent session, on the agent path

	markMu sync.Mutex // serializes the marking of concurrent first Execs

	// Low 32 bits: execs running on this handle. High bits: the flags below.
	// Written by the holder's goroutines and, for handleDead and
	// handleRevoked, by the owner.
	state atomic.Uint64
}

const (
	execMask       uint64 = 1<<32 - 1
	handleReleased uint64 = 1 << 32 // Return or Remove was called
	handleTainted  uint64 = 1 << 33 // an exec may have left processes behind
	handleDead     uint64 = 1 << 34 // Docker said the container died or is gone
	handleRevoked  uint64 = 1 << 35 // Shutdown gave up waiting and removed it
	handleMarked   uint64 = 1 << 36 // the container was renamed as used
)

// markUsed renames the container as used, once per container, before the
// first command runs in it: from then on New never adopts it.
func (c *Container) markUsed() error {
	c.markMu.Lock()
	defer c.markMu.Unlock()
	if c.state.Load()&handleMarked != 0 {
		return nil
	}
	if err := c.pool.rename(c.id, usedNamePrefix); err != nil {
		return err
	}
	c.state.Or(handleMarked)
	return nil
}

// ID returns the Docker container ID.
func (c *Container) ID() string { return c.id }

// Tainted reports whether an exec on this handle timed out, hit its output
// limit or was cancelled and the pool could not prove that all of its
// processes were killed. A tainted container is removed on Return instead of
// being reused.
func (c *Container) Tainted() bool { return c.state.Load()&handleTainted != 0 }

// beginExec registers an exec on the handle, or says why it may not run.
func (c *Container) beginExec() error {
	for {
		s := c.state.Load()
		switch {
		case s&handleRevoked != 0:
			return fmt.Errorf("%w: container %s was removed", ErrPoolShutdown, shortID(c.id))
		case s&handleReleased != 0:
			return fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(c.id))
		case s&handleDead != 0:
			return fmt.Errorf("%w: container %s", ErrContainerDead, shortID(c.id))
		}
		if c.state.CompareAndSwap(s, s+1) {
			return nil
		}
	}
}

func (c *Container) endExec() { c.state.Add(^uint64(0)) }

// markReleased ends the handle. It reports whether execs were still running
// on it: such a container must not be reused.
func (c *Container) markReleased() (busy bool, err error) {
	for {
		s := c.state.Load()
		if s&handleRevoked != 0 {
			return false, ErrPoolShutdown
		}
		if s&handleReleased != 0 {
			return false, fmt.Errorf("%w: container %s", ErrContainerReleased, shortID(c.id))
		}
		if c.state.CompareAndSwap(s, s|handleReleased) {
			return s&execMask != 0, nil
		}
	}
}

// containerSpec is what every container of the pool is created from.
type containerSpec struct {
	config  *container.Config
	host    *container.HostConfig
	network *network.NetworkingConfig
	hash    string
}

// buildSpec merges the user's configuration with the pool's own labels and
// defaults. imageID is the resolved image, for the configuration hash.
func buildSpec(s settings, imageID, instance string) containerSpec {
	var cc container.Config
	if s.ContainerConfig != nil {
		cc = *s.ContainerConfig
	}
	if cc.Image == "" {
		cc.Image = s.Image.Name
	}
	if len(cc.Cmd) == 0 {
		cc.Cmd = slices.Clone(s.Cmd)
	}
	labels := map[string]string{}
	maps.Copy(labels, cc.Labels)
	maps.Copy(labels, s.Labels)
	labels[LabelPool] = s.Name

	var hc container.HostConfig
	if s.HostConfig != nil {
		hc = *s.HostConfig
	}
	if hc.Init == nil {
		yes := true
		hc.Init = &yes
	}
	var nc *network.NetworkingConfig
	if hc.NetworkMode == "" {
		hc.NetworkMode = container.NetworkMode(s.Network.Name)
	}

	if a := s.agent; a != nil {
		// The agent is the main process, and talks on its stdin/stdout.
		cc.Entrypoint = []string{a.Path}
		cc.Cmd = nil
		cc.OpenStdin, cc.StdinOnce, cc.Tty = true, false, false
		cc.AttachStdin, cc.AttachStdout, cc.AttachStderr = true, true, true
		if hc.LogConfig.Type == "" {
			// Everything the agent writes is protocol (commands' output
			// included): keep it out of the container's log.
			hc.LogConfig.Type = "none"
		}
	}
	cc.Labels = labels
	hash := configHash(imageID, &cc, &hc, nc)
	cc.Labels = maps.Clone(labels)
	cc.Labels[LabelConfig] = hash
	cc.Labels[LabelInstance] = instance
	return containerSpec{config: &cc, host: &hc, network: nc, hash: hash}
}

// ---- background work: each function below runs on a worker ----------------

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
	resp, err := p.api.ContainerCreate(ctx, &cc, &hc, p.spec.network, nil, "")
	if err != nil {
		return "", nil, fmt.Errorf("create container from image %q: %w", p.spec.config.Image, err)
	}
	var agent *agentConn
	if a := p.cfg.agent; a != nil {
		if p.agentTar != nil {
			err := p.api.CopyToContainer(ctx, resp.ID, path.Dir(a.Path), bytes.NewReader(p.agentTar), container.CopyToContainerOptions{})
			if err != nil {
				return resp.ID, nil, fmt.Errorf("%w: copy the agent into container %s: %w", ErrAgent, shortID(resp.ID), err)
			}
		}
		if agent, err = p.attachAgent(ctx, resp.ID); err != nil {
			return resp.ID, nil, err
		}
	}
	if err := p.api.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		agent.close()
		return resp.ID, nil, fmt.Errorf("start container %s: %w", shortID(resp.ID), err)
	}
	if agent != nil {
		if err := agent.handshake(p.cfg.agent.HandshakeTimeout); err != nil {
			agent.close()
			return resp.ID, nil, err
		}
	}
	if ctx.Err() != nil { // a forced shutdown cancelled us after the fact
		agent.close()
		return resp.ID, nil, fmt.Errorf("create container: %w", ctx.Err())
	}
	return resp.ID, agent, nil
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
	list, err := p.api.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelPool+"="+p.cfg.Name)),
	})
	if err != nil {
		return nil
	}
	for _, c := range list {
		if c.ID == id {
			return errors.New("not found, yet listed: its creation is still in progress")
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
	if info.State == nil || !info.State.Running {
		return fmt.Errorf("%w: container %s", ErrContainerDead, shortID(id))
	}
	if info.State.OOMKilled {
		return fmt.Errorf("%w: container %s was OOM-killed", ErrContainerDead, shortID(id))
	}
	return nil
}

// rename gives the container the name prefix+its short ID.
func (p *Pool) rename(id, prefix string) error {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	err := p.api.ContainerRename(ctx, id, prefix+shortID(id))
	if err != nil && !strings.Contains(err.Error(), "same name as its current name") {
		return fmt.Errorf("rename container %s: %w", shortID(id), err)
	}
	return nil
}

// resetContainer runs the user's OnReturn hook and the agent's reset, checks
// that the container is still running, and, when it carries the used mark,
// renames it clean again.
func (p *Pool) resetContainer(id string, marked bool, agent *agentConn) error {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	h := &Container{pool: p, id: id, needMark: !marked, agent: agent}
	if marked {
		h.state.Or(handleMarked)
	}
	if p.cfg.OnReturn != nil {
		err := p.cfg.OnReturn(ctx, h)
		// The hook's handle dies with the hook, whatever it kept of it.
		if busy, _ := h.markReleased(); busy {
			err = errors.Join(err, errors.New("an exec was still running when it returned"))
		}
		if h.Tainted() {
			err = errors.Join(err, errors.New("an exec could not be cleaned up"))
		}
		if err != nil {
			return fmt.Errorf("OnReturn: %w", err)
		}
	}
	if a := p.cfg.agent; a != nil && a.ResetOnReturn && agent != nil {
		if err := agent.reset(p.cfg.DockerTimeout, a.ResetDirs); err != nil {
			return err
		}
	}
	if err := p.checkContainer(id); err != nil {
		return err
	}
	reset := p.cfg.OnReturn != nil || (p.cfg.agent != nil && p.cfg.agent.ResetOnReturn)
	if reset && h.state.Load()&handleMarked != 0 {
		return p.rename(id, cleanNamePrefix) // reset: adoptable again after a crash
	}
	return nil
}
