package dockerpool

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"strconv"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// This file holds the pool's helpers around the owner: the Docker event
// watcher, the final sweep, and debug checks. Refill and trimming are
// decisions of the core (actor.go: balance and tick); the ticker that drives
// them is a case of the owner's select.

// watchEvents follows Docker's events for the pool's containers and hands the
// deaths to the owner. When the stream breaks it subscribes again, asking the
// daemon to replay what happened meanwhile, and re-lists the running
// containers in case the replay missed anything.
func (p *Pool) watchEvents(since time.Time) {
	defer p.watcher.Done()
	ctx := p.baseCtx
	f := filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", LabelPool+"="+p.cfg.Name),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionOOM)),
		filters.Arg("event", string(events.ActionDestroy)),
		// Podman's names for the same events.
		filters.Arg("event", "died"),
		filters.Arg("event", "remove"),
	)
	backoff := 100 * time.Millisecond
	for attempt := 0; ctx.Err() == nil; attempt++ {
		opts := events.ListOptions{Filters: f, Since: strconv.FormatInt(since.Unix(), 10)}
		msgs, errs := p.api.Events(ctx, opts)
		if attempt > 0 {
			select {
			case p.ctrlCh <- ctrlMsg{resync: &resyncMsg{}}:
			case <-ctx.Done():
				return
			}
		}
		healthy := false
	stream:
		for {
			select {
			case m := <-msgs:
				healthy = true
				if m.Time > 0 {
					since = time.Unix(m.Time, 0)
				}
				select {
				case p.ctrlCh <- ctrlMsg{event: &eventMsg{id: m.Actor.ID, action: string(m.Action), exitCode: m.Actor.Attributes["exitCode"]}}:
				case <-ctx.Done():
					return
				}
			case err := <-errs:
				if ctx.Err() != nil {
					return
				}
				if p.cfg.Logger != nil {
					p.cfg.Logger.Warn("docker event stream broke", slog.String("pool", p.cfg.Name), slog.Any("error", err))
				}
				break stream
			case <-ctx.Done():
				return
			}
		}
		if healthy {
			backoff = 100 * time.Millisecond
		}
		since = time.Now().Add(-2 * time.Second)
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
		backoff = min(2*backoff, backoffCap)
	}
}

// ticker posts a tick to the owner every RefillInterval: refill, expiry,
// retries and stall detection run on it. (As a message rather than a case of
// the owner's select, it costs the frequent messages nothing.)
func (p *Pool) ticker() {
	defer p.watcher.Done()
	t := time.NewTicker(p.cfg.RefillInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			select {
			case p.ctrlCh <- ctrlMsg{tick: true}:
			case <-p.baseCtx.Done():
				return
			}
		case <-p.baseCtx.Done():
			return
		}
	}
}

// reconcile lists every container of the pool's label, for the owner to
// compare with what it knows.
func (p *Pool) reconcile() ([]found, error) {
	ctx, cancel := context.WithTimeout(p.baseCtx, p.cfg.DockerTimeout)
	defer cancel()
	list, err := p.api.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelPool+"="+p.cfg.Name)),
	})
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

// finalize is Shutdown's last step: a sweep of whatever still carries the
// pool's label (a creation cut short, a removal that kept failing, a creation
// that a crashed predecessor had sent and the daemon finished after New
// looked), then the network.
func (p *Pool) finalize(sweep []string) error {
	return p.finalizeWith(p.baseCtx, sweep)
}

func (p *Pool) finalizeWith(base context.Context, sweep []string) error {
	ctx, cancel := context.WithTimeout(base, p.cfg.DockerTimeout)
	defer cancel()
	var errs []error
	list, err := p.api.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", LabelPool+"="+p.cfg.Name)),
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("dockerpool: list leftover containers: %w", err))
	}
	for _, c := range list {
		sweep = append(sweep, c.ID)
	}
	for _, id := range sweep {
		if err := p.removeContainer(ctx, id); err != nil {
			errs = append(errs, err)
		}
	}
	if p.cfg.Network.NeedsRemove {
		err := p.api.NetworkRemove(ctx, p.cfg.Network.Name)
		if err != nil && !cerrdefs.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("dockerpool: remove network %q: %w", p.cfg.Network.Name, err))
		}
	}
	return errors.Join(errs...)
}

// readPullProgress reads a pull's JSON progress stream to its end. The
// daemon reports a failed pull inside the stream, not as an HTTP error.
func readPullProgress(r io.Reader, s settings) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			Status       string `json:"status"`
			ID           string `json:"id"`
			Progress     string `json:"progress"`
			ErrorMessage string `json:"error"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("read pull progress: %w", err)
		}
		if m.ErrorMessage != "" {
			return errors.New(m.ErrorMessage)
		}
		if s.Logger != nil && m.Status != "" && m.Progress == "" {
			s.Logger.Info("pull", slog.String("image", s.Image.Name), slog.String("layer", m.ID), slog.String("status", m.Status))
		}
	}
}

func slogID(id string) slog.Attr { return slog.String("id", shortID(id)) }

// debugChecks turns on the invariant and goroutine-ownership checks. The
// tests turn it on; it costs a stack dump per public call.
var debugChecks = false

// assertNotOwner panics when a public method runs on the owner goroutine:
// the owner would wait for itself.
func (p *Pool) assertNotOwner() {
	if debugChecks && goid() == p.ownerG.Load() {
		panic("dockerpool: internal error: pool method called on the owner goroutine")
	}
}

// goid returns the current goroutine's ID, for debug checks only.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}
