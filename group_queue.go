package dockerpool

// The group's queue of callers (GroupConfig.Hosts): those the owner could
// not place, because no healthy host has room for their template. One FIFO
// per template, and the arrival order across them (placeTicket.seq): the
// oldest caller is placed first, but a caller whose template is full on
// every host with room (its own MaxSize) does not hold up the callers of
// other templates behind it. A caller who gives up stays in its queue,
// marked gone, until it reaches the head. The owner's.

// ticketQueue is one template's waiting callers, oldest first.
type ticketQueue struct {
	q    []*placeTicket
	live int    // not gone: Stats().Waiting counts them
	pass uint64 // the serveQueue pass that found its template full
}

func (q *ticketQueue) pop() {
	if !q.q[0].gone {
		q.live--
	}
	q.q[0] = nil
	q.q = q.q[1:]
}

// enqueue puts t at the end of its template's queue.
func (g *Group) enqueue(t *placeTicket) {
	q := g.queues[t.template]
	if q == nil {
		q = &ticketQueue{}
		g.queues[t.template] = q
	}
	g.seq++
	t.seq, t.queued = g.seq, true
	q.q = append(q.q, t)
	q.live++
}

// serveQueue places the queued callers, oldest first, while there is
// room. A caller that cannot be placed while no host has room stops it;
// one that cannot be placed because its template is full wherever there
// is room leaves its template's queue for the next pass, and the others
// go on.
func (g *Group) serveQueue() {
	g.pass++
	for {
		q := g.oldestQueue()
		if q == nil {
			return
		}
		if g.place(q.q[0], true) {
			q.pop()
			continue
		}
		if !g.anyRoom() {
			return
		}
		q.pass = g.pass
	}
}

// oldestQueue is the queue whose head came first, among those this pass
// did not find full; it drops the gone heads and the empty queues.
func (g *Group) oldestQueue() *ticketQueue {
	var best *ticketQueue
	for name, q := range g.queues {
		for len(q.q) > 0 && q.q[0].gone {
			q.pop()
		}
		if len(q.q) == 0 {
			delete(g.queues, name)
			continue
		}
		if q.pass != g.pass && (best == nil || q.q[0].seq < best.q[0].seq) {
			best = q
		}
	}
	return best
}

// failQueue answers every queued caller with err.
func (g *Group) failQueue(err error) {
	for _, q := range g.queues {
		for _, t := range q.q {
			if !t.gone {
				t.queued = false
				t.reply <- placeReply{err: err}
			}
		}
	}
	clear(g.queues)
}

// queuedFor is how many callers of template wait in the group's queue.
func (g *Group) queuedFor(template string) int {
	if q := g.queues[template]; q != nil {
		return q.live
	}
	return 0
}
