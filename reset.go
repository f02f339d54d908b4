package dockerpool

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/container"
)

// The verified reset (Config.VerifiedReset): what a holder of a container
// can leave that outlives its processes, emptied, and then checked. A
// container the reset cannot vouch for is removed (ReasonResetUnverified),
// never handed out again.

//go:embed clean.sh
var cleanScript string

// unverifiedError says what a verified reset found still there.
type unverifiedError struct{ left []string }

func (e unverifiedError) Error() string {
	return "the reset could not make the container as good as new: " + strings.Join(e.left, "; ")
}

// verifiedReset kills every process but the main one, empties every
// writable place and the System V IPC objects, and checks them; on a
// writable root, it also compares the container's layer with what it was
// right after the start.
func (p *Pool) verifiedReset(ctx context.Context, h *Container) error {
	op, err := h.begin(ctx, "reset", 0)
	if err != nil {
		return err
	}
	defer op.end()
	if err := h.runner.reset(op.ctx, h, op); err != nil {
		return err
	}
	if p.cfg.HostConfig == nil || !p.cfg.HostConfig.ReadonlyRootfs {
		return p.sameLayer(ctx, h.id)
	}
	return nil
}

// reset is the agent's verified reset: it does it all, in the container.
func (r agentRunner) reset(_ context.Context, c *Container, _ *operation) error {
	left, err := r.a.resetVerified(c.pool.cfg.DockerTimeout, c.pool.agentResetDirs())
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return unverifiedError{left: left}
	}
	return nil
}

// reset on the Docker exec path: reap.sh kills and verifies, then clean.sh
// empties the container's writable places (from its mounts) and checks.
func (dockerRunner) reset(ctx context.Context, c *Container, op *operation) error {
	if err := reap(c, "", "", false); err != nil {
		return unverifiedError{left: []string{"processes: " + err.Error()}}
	}
	mt, err := c.pool.mountTable(ctx, c, op)
	if err != nil {
		return unverifiedError{left: []string{err.Error()}}
	}
	unlisted := mt.unlistable() // reported with what clean.sh finds
	var out bytes.Buffer
	args := append([]string{"/bin/sh", "-c", cleanScript, "dockerpool-clean"}, mt.writablePlaces()...)
	code, stderr, o := runHelper(ctx, c, op, args, nil, &out, 64<<10)
	switch {
	case o.err != nil || o.cause != nil:
		return unverifiedError{left: append(unlisted, fmt.Sprintf("clean: %v %v", o.err, o.cause))}
	case code != 0:
		left := unlisted
		for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			left = append(left, strings.TrimPrefix(line, "left: "))
		}
		if stderr != "" {
			left = append(left, stderr)
		}
		return unverifiedError{left: left}
	case unlisted != nil:
		return unverifiedError{left: unlisted}
	}
	return nil
}

// agentResetDirs is what the agent empties on top of the writable places.
func (p *Pool) agentResetDirs() []string {
	if p.cfg.agent == nil {
		return nil
	}
	return p.cfg.agent.ResetDirs
}

// sameLayer checks that the container's writable layer is what it was right
// after the pool started its first container: a file written, changed or
// deleted there cannot be undone, and the container is not as good as new.
func (p *Pool) sameLayer(ctx context.Context, id string) error {
	base := p.baseline.Load()
	if base == nil {
		return unverifiedError{left: []string{"no record of the layer of a fresh container"}}
	}
	now, err := p.layerChanges(ctx, id)
	if err != nil {
		return err
	}
	if !slices.Equal(now, *base) {
		var diff []string
		for _, c := range now {
			if !slices.Contains(*base, c) {
				diff = append(diff, "the layer: "+c)
			}
		}
		return unverifiedError{left: diff}
	}
	return nil
}

// layerChanges lists a container's changes to its image, sorted, as
// "C /etc".
func (p *Pool) layerChanges(ctx context.Context, id string) ([]string, error) {
	changes, err := p.api.ContainerDiff(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("diff container %s: %w", shortID(id), err)
	}
	out := make([]string, 0, len(changes))
	for _, c := range changes {
		out = append(out, changeKind(c.Kind)+" "+c.Path)
	}
	slices.Sort(out)
	return out, nil
}

func changeKind(k container.ChangeType) string {
	switch k {
	case container.ChangeAdd:
		return "A"
	case container.ChangeDelete:
		return "D"
	}
	return "C"
}

// recordBaseline keeps the layer of the pool's first container right after
// its start, for sameLayer. Only a verified reset on a writable root needs
// it.
func (p *Pool) recordBaseline(ctx context.Context, id string) error {
	if !p.cfg.VerifiedReset || p.baseline.Load() != nil || p.cfg.HostConfig != nil && p.cfg.HostConfig.ReadonlyRootfs {
		return nil
	}
	base, err := p.layerChanges(ctx, id)
	if err != nil {
		return err
	}
	p.baseline.CompareAndSwap(nil, &base)
	return nil
}
