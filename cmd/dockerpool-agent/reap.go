package main

import (
	"syscall"
	"time"
)

// reapInterval is how often the agent reaps zombies and records which exec
// each process belongs to.
const reapInterval = 200 * time.Millisecond

// housekeeping reaps zombies and tracks process owners, forever.
func (a *agent) housekeeping() {
	t := time.NewTicker(reapInterval)
	defer t.Stop()
	for range t.C {
		a.reapZombies()
		a.mu.Lock()
		busy := len(a.execs) > 0
		a.mu.Unlock()
		if busy {
			a.track()
		} else {
			a.ownMu.Lock()
			clear(a.owners)
			a.ownMu.Unlock()
		}
	}
}

// reapZombies waits for the agent's zombie children that os/exec does not
// wait for: orphans of the commands, reparented to the agent (it is their
// subreaper, or PID 1). It never calls wait for "any child", which would
// steal the status of a command's main process from os/exec; instead it
// lists the agent's children, keeps the zombies that are not the main process
// of an exec, and waits for each by PID. Holding startMu exclusively, it sees
// no child that is started but not yet registered as a main process.
func (a *agent) reapZombies() {
	a.startMu.Lock()
	defer a.startMu.Unlock()
	pids, ok := children(a.pid)
	if !ok {
		for _, p := range scan() {
			if p.ppid == a.pid {
				pids = append(pids, p.pid)
			}
		}
	}
	for _, pid := range pids {
		a.mu.Lock()
		main := a.mains[pid]
		a.mu.Unlock()
		if main {
			continue
		}
		p, ok := readStat(pid)
		if !ok || p.ppid != a.pid || p.state != 'Z' {
			continue
		}
		e := a.ownerOfZombie(p)
		var ws syscall.WaitStatus
		var ru syscall.Rusage
		if got, _ := syscall.Wait4(pid, &ws, syscall.WNOHANG, &ru); got == pid && e != nil {
			e.used.add(&ru) // an orphan of the command: its time counts
		}
	}
}

// ownerOfZombie tells which running exec an orphan belonged to: as an
// earlier scan recorded it, or by its process group.
func (a *agent) ownerOfZombie(p procInfo) *execution {
	a.ownMu.Lock()
	serial, known := a.owners[p.key()]
	a.ownMu.Unlock()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.execs {
		if known && e.serial == serial || !known && p.pgid != 0 && int(e.pid.Load()) == p.pgid {
			return e
		}
	}
	return nil
}
