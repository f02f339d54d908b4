package main

import "github.com/dockerpool/dockerpool/internal/agentproto"

// stream is what the frames of one id reach: an execution or a transfer.
type stream interface {
	input() *inbox              // its data from the pool; nil if it takes none
	output() *agentproto.Credit // the window of its data to the pool; nil if it sends none
	abort()                     // a Kill frame
	resize(rows, cols uint16)   // a Resize frame: only a terminal has a size
}

func (e *execution) input() *inbox              { return e.stdin }
func (e *execution) output() *agentproto.Credit { return e.out }
func (e *execution) abort()                     { e.kill(reasonKill) }
func (e *execution) resize(rows, cols uint16) {
	if e.tty != nil {
		e.tty.resize(e.a, e.id, rows, cols)
	}
}

// A transfer has no terminal.
func (*transfer) resize(uint16, uint16) {}

// noStream stands for an id that is over or unknown: frames for it are
// dropped.
type noStream struct{}

func (noStream) input() *inbox              { return nil }
func (noStream) output() *agentproto.Credit { return nil }
func (noStream) abort()                     {}
func (noStream) resize(uint16, uint16)      {}

// stream returns what frames of id go to.
func (a *agent) stream(id uint32) stream {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e := a.execs[id]; e != nil {
		return e
	}
	if t := a.transfers[id]; t != nil {
		return t
	}
	return noStream{}
}

// granter returns the function that gives credit back to the pool for the
// data of id.
func (a *agent) granter(id uint32) func(int) {
	return func(n int) { a.out.frame(agentproto.Grant, id, agentproto.GrantPayload(n)) }
}
