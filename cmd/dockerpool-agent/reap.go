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
		if p, ok := readStat(pid); !ok || p.ppid != a.pid || p.state != 'Z' {
			continue
		}
		var ws syscall.WaitStatus
		_, _ = syscall.Wait4(pid, &ws, syscall.WNOHANG, nil)
	}
}
