package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// The final sweep: Shutdown's last Docker work.

// errStillCreating: the daemon lists the container but finds no container
// of its ID (see stillBeingCreated).
var errStillCreating = errors.New("not found, yet listed: its creation is still in progress")

const (
	// lateSweepFor is how long lateSweep looks.
	lateSweepFor = time.Second
	// stillCreatingFor bounds, for the whole sweep, the wait for the
	// containers whose creation was still in progress to appear: in the
	// fault test one took more than 12 s after a network that dropped
	// packets came back (its creation request reached the daemon late).
	stillCreatingFor = 15 * time.Second
)

// finalize is Shutdown's last step: a sweep of whatever still carries the
// pool's label (a creation cut short, a removal that kept failing, a creation
// that a crashed predecessor had sent and the daemon finished after New
// looked), then the network.
func (p *Pool) finalize(base context.Context, sweep []string) error {
	ctx, cancel := context.WithTimeout(base, p.cfg.DockerTimeout)
	defer cancel()
	s := &finalSweep{p: p, seen: map[string]bool{}}
	for _, id := range sweep {
		s.remove(ctx, id)
	}
	s.labelled(ctx)
	s.lateSweep(ctx)
	s.awaitCreated(ctx)
	if p.cfg.Network.NeedsRemove {
		err := p.api.NetworkRemove(ctx, p.cfg.Network.Name)
		if err != nil && !cerrdefs.IsNotFound(err) {
			s.errs = append(s.errs, fmt.Errorf("dockerpool: remove network %q: %w", p.cfg.Network.Name, err))
		}
	}
	return errors.Join(s.errs...)
}

// finalSweep is the state of one: what it has seen, its errors, and the
// containers it found still being created, tried again last.
type finalSweep struct {
	p        *Pool
	seen     map[string]bool
	errs     []error
	creating []string
}

func (s *finalSweep) remove(ctx context.Context, id string) {
	s.seen[id] = true
	switch err := s.p.removeContainer(ctx, id); {
	case errors.Is(err, errStillCreating):
		s.creating = append(s.creating, id)
	case err != nil:
		s.errs = append(s.errs, err)
	}
}

// labelled removes every container carrying the pool's label that is not
// seen yet.
func (s *finalSweep) labelled(ctx context.Context) {
	list, err := s.p.api.ContainerList(ctx, container.ListOptions{All: true, Filters: s.p.labelFilter()})
	if err != nil {
		s.errs = append(s.errs, fmt.Errorf("dockerpool: list leftover containers: %w", err))
		return
	}
	for _, c := range list {
		if !s.seen[c.ID] {
			s.remove(ctx, c.ID)
		}
	}
}

// lateSweep, on a Group host where Shutdown cut a creation short, looks
// again for a while: the daemon finishes a creation whose caller gave up,
// and a request held up by the network (a host that dropped packets) can
// reach it after the first sweep's list.
func (s *finalSweep) lateSweep(ctx context.Context) {
	if s.p.cfg.host == "" || s.p.cutCreates.Load() == 0 {
		return
	}
	for end := time.Now().Add(lateSweepFor); time.Now().Before(end) && ctx.Err() == nil; {
		time.Sleep(100 * time.Millisecond) // nothing to wait on: the daemon tells no one
		s.labelled(ctx)
	}
}

// awaitCreated tries the containers still being created again, every
// 100 ms, until they are removed, stillCreatingFor passed or ctx ended:
// the daemon announces nothing until a creation ends.
func (s *finalSweep) awaitCreated(ctx context.Context) {
	end := time.Now().Add(stillCreatingFor)
	for len(s.creating) > 0 && ctx.Err() == nil && time.Now().Before(end) {
		time.Sleep(100 * time.Millisecond)
		ids := s.creating
		s.creating = nil
		for _, id := range ids {
			s.remove(ctx, id)
		}
	}
	for _, id := range s.creating {
		s.errs = append(s.errs, fmt.Errorf("remove container %s: %w", shortID(id), errStillCreating))
	}
}
