package dockerpool

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
)

// Helpers of the owner that bring it news: Docker's events about the pool's
// containers, and the ticks of RefillInterval. Both post messages; neither
// touches the pool's state.

// watchEvents follows Docker's events for the pool's containers and hands
// them to the owner. When the stream breaks it subscribes again, asking the
// daemon to replay what happened since the last event it saw, and tells the
// owner to re-list the containers (resyncMsg) in case the replay missed
// anything.
//
// The first subscription is made by subscribe, on New's goroutine, before
// New lists the containers: listen before listing, so that nothing dies
// unseen in between (its Since, two seconds back, covers a daemon that
// registers the subscription a little later).
func (p *Pool) watchEvents(first subscription) {
	defer p.watcher.Done()
	ctx := p.baseCtx
	backoff := 100 * time.Millisecond
	sub := first
	for ctx.Err() == nil {
		last, err := p.follow(ctx, sub.msgs, sub.errs)
		if ctx.Err() != nil {
			return
		}
		if p.cfg.Logger != nil {
			p.cfg.Logger.Warn("docker event stream broke", slog.String("pool", p.cfg.Name), slog.Any("error", err))
		}
		// Replay from the last event seen (or the subscription), and the
		// second before it: Since has a granularity of one second, and the
		// core takes an event twice without harm.
		since := sub.at.Add(-time.Second)
		if !last.IsZero() {
			if l := last.Add(-time.Second); l.After(since) {
				since = l
			}
			backoff = 100 * time.Millisecond
		}
		select {
		case <-p.kick: // the host is back: no need to wait
			backoff = 100 * time.Millisecond
		default:
			if !p.sleepOrKick(ctx, backoff) {
				return
			}
		}
		backoff = min(2*backoff, backoffCap)
		sub = p.subscribe(since)
		p.post(resyncMsg{})
	}
}

// subscription is one request for Docker's events.
type subscription struct {
	at   time.Time // when it was made
	msgs <-chan events.Message
	errs <-chan error
}

// subscribe asks the daemon for the events of the pool's containers since
// the given time.
func (p *Pool) subscribe(since time.Time) subscription {
	at := time.Now()
	msgs, errs := p.api.Events(p.baseCtx, events.ListOptions{Filters: p.eventFilter(), Since: strconv.FormatInt(since.Unix(), 10)})
	return subscription{at: at, msgs: msgs, errs: errs}
}

// follow posts the events of one subscription until it breaks; it returns
// the time of the last event it saw, and the error that ended it.
func (p *Pool) follow(ctx context.Context, msgs <-chan events.Message, errs <-chan error) (time.Time, error) {
	var last time.Time
	for {
		select {
		case m := <-msgs:
			if m.Time > 0 {
				last = time.Unix(m.Time, 0)
			}
			p.post(eventMsg{id: m.Actor.ID, action: string(m.Action), exitCode: m.Actor.Attributes["exitCode"]})
		case err := <-errs:
			return last, err
		case <-ctx.Done():
			return last, ctx.Err()
		}
	}
}

// eventFilter selects the events the pool cares about: deaths of its
// containers, under Docker's names and Podman's.
func (p *Pool) eventFilter() filters.Args {
	return filters.NewArgs(
		filters.Arg("type", string(events.ContainerEventType)),
		filters.Arg("label", LabelPool+"="+p.cfg.Name),
		filters.Arg("event", string(events.ActionDie)),
		filters.Arg("event", string(events.ActionOOM)),
		filters.Arg("event", string(events.ActionDestroy)),
		filters.Arg("event", "died"),   // Podman
		filters.Arg("event", "remove"), // Podman
	)
}

// sleepOrKick waits d, or until the Group host is back (kickEvents), or
// until ctx ends (then it returns false).
func (p *Pool) sleepOrKick(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-p.kick:
	case <-ctx.Done():
		return false
	}
	return true
}

// kickEvents tells the event watcher that the pool's Group host is back:
// a watcher waiting to subscribe again does so at once. (The stream of a
// host that went out was ended with the host's epoch, hostClient.)
func (p *Pool) kickEvents() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// sleep waits d, or until ctx ends (then it returns false).
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// ticker posts a tick to the owner every RefillInterval: expiry, retries,
// stall detection and the periodic reconcile run on it. (As a message
// rather than a case of the owner's select, it costs the frequent messages
// nothing.)
func (p *Pool) ticker() {
	defer p.watcher.Done()
	t := time.NewTicker(p.cfg.RefillInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			p.post(tickMsg{})
		case <-p.baseCtx.Done():
			return
		}
	}
}
