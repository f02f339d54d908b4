package main

import (
	"syscall"
	"time"
)

const (
	// sweepBudget bounds a sweep: after it, what is still alive survives.
	sweepBudget = time.Second
	// sweepPause is the longest wait between two scans of a sweep.
	sweepPause = 10 * time.Millisecond
)

// view is one scan of /proc: the agent's descendants, and the execs they may
// belong to.
type view struct {
	a        *agent
	procs    map[int]procInfo
	desc     []procInfo            // the agent's descendants
	execs    []*execution          // started, still registered
	bySerial map[uint64]*execution // the same
	running  map[uint64]bool       // serials of the execs that run
	owners   map[procKey]uint64    // attributions recorded before
	memo     map[int]*execution    // attributions of this view
	found    map[procKey]uint64    // new attributions, to record
}

func (a *agent) newView() *view {
	procs := scan()
	v := &view{
		a:        a,
		procs:    procs,
		desc:     a.domain(procs),
		bySerial: map[uint64]*execution{},
		running:  map[uint64]bool{},
		memo:     map[int]*execution{},
		found:    map[procKey]uint64{},
	}
	a.mu.Lock()
	for _, e := range a.execs {
		if e.pid.Load() != 0 {
			v.execs = append(v.execs, e)
			v.bySerial[e.serial] = e
		}
	}
	a.mu.Unlock()
	for _, e := range v.execs {
		if e.running() {
			v.running[e.serial] = true
		}
	}
	a.ownMu.Lock()
	v.owners = make(map[procKey]uint64, len(a.owners))
	for k, s := range a.owners {
		v.owners[k] = s
	}
	a.ownMu.Unlock()
	return v
}

// domain is the processes the agent may kill: its descendants, or, when it
// is not their subreaper (a.wide), every process but PID 1, the agent and
// its ancestors.
func (a *agent) domain(procs map[int]procInfo) []procInfo {
	if !a.wide {
		return descendants(procs, a.pid)
	}
	spared := map[int]bool{1: true}
	for pid := a.pid; pid > 1 && !spared[pid]; {
		spared[pid] = true
		p, ok := procs[pid]
		if !ok {
			break
		}
		pid = p.ppid
	}
	var out []procInfo
	for pid, p := range procs {
		if !spared[pid] {
			out = append(out, p)
		}
	}
	return out
}

// othersRunning counts the execs other than e that run.
func (v *view) othersRunning(e *execution) int {
	n := len(v.running)
	if v.running[e.serial] {
		n--
	}
	return n
}

// owner tells which registered exec the process belongs to, or nil (a
// leftover of an exec that is over, or something the agent cannot place).
// In order: what an earlier scan saw (processes keep their owner after their
// parent died), the exec's main PID or process group (or a terminal's
// session), the exec token in the environment, the owner of the parent.
func (v *view) owner(pid int) *execution {
	if e, ok := v.memo[pid]; ok {
		return e
	}
	v.memo[pid] = nil // guards against a cycle while the parent is looked up
	p, ok := v.procs[pid]
	if !ok || pid == v.a.pid {
		return nil
	}
	e := v.attribute(p)
	v.memo[pid] = e
	if e != nil {
		v.found[p.key()] = e.serial
	}
	return e
}

func (v *view) attribute(p procInfo) *execution {
	if s, ok := v.owners[p.key()]; ok {
		return v.bySerial[s] // nil for an exec that is over
	}
	for _, e := range v.execs {
		// A terminal's program leads its own session: what left its
		// process group (a shell's jobs) is still in the session.
		if pid := int(e.pid.Load()); p.pid == pid || p.pgid == pid || e.tty != nil && p.sid == pid {
			return e
		}
	}
	if tok := environToken(p.pid); tok != "" {
		for _, e := range v.execs {
			if e.token == tok {
				return e
			}
		}
		return nil
	}
	if p.ppid != v.a.pid {
		return v.owner(p.ppid)
	}
	return nil
}

// record keeps the attributions of this view for later scans.
func (v *view) record() {
	if len(v.found) == 0 {
		return
	}
	v.a.ownMu.Lock()
	for k, s := range v.found {
		v.a.owners[k] = s
	}
	v.a.ownMu.Unlock()
}

// track records which exec each of the agent's descendants belongs to, so
// that a process whose parent died (it is reparented to the agent) and that
// left its process group and environment can still be told apart. It runs
// with the zombie reaper while execs run.
func (a *agent) track() {
	v := a.newView()
	for _, p := range v.desc {
		if !p.dead() {
			v.owner(p.pid)
		}
	}
	v.record()
	a.ownMu.Lock()
	for k := range a.owners {
		if p, ok := v.procs[k.pid]; !ok || p.start != k.start {
			delete(a.owners, k)
		}
	}
	a.ownMu.Unlock()
}

// sweep SIGKILLs the agent's live descendants that pick selects, scanning
// /proc again and again, until two scans in a row find none or sweepBudget
// passes. It returns how many processes it killed and how many it still
// found alive at the end (survivors).
//
// Only descendants of the agent are ever candidates: never PID 1, the agent
// or its ancestors, nor anything outside the agent's subtree (on a host, or
// processes of a docker exec beside the agent).
func (a *agent) sweep(pick func(v *view, p procInfo) bool) (killed, survivors int) {
	deadline := time.Now().Add(sweepBudget)
	seen := map[procKey]bool{}
	clean := 0
	for {
		a.startMu.Lock()
		v := a.newView()
		n := 0
		for _, p := range v.desc {
			if p.dead() || !pick(v, p) {
				continue
			}
			_ = syscall.Kill(p.pid, syscall.SIGKILL)
			seen[p.key()] = true
			n++
		}
		v.record()
		a.startMu.Unlock()

		pause := 5 * time.Millisecond
		if n == 0 {
			clean++
			if clean == 2 {
				return len(seen), 0
			}
			// A second look catches a process that moved to the agent
			// during the scan.
			pause = 2 * time.Millisecond
		} else {
			clean = 0
		}
		if time.Now().After(deadline) {
			return len(seen), n
		}
		time.Sleep(min(pause, sweepPause))
	}
}

// killExec kills a command and everything it started, and verifies it. It
// SIGKILLs the command's process group, then sweeps: when no other exec runs,
// every descendant of the agent goes (leftovers of earlier commands too, and
// orphans that left the group and cleared their environment); when others
// run, only what belongs to this exec (see view.owner). It returns the
// processes killed and the survivors.
func (a *agent) killExec(e *execution) (killed, survivors int) {
	if pgid := int(e.pid.Load()); pgid > 0 {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	killed, survivors = a.sweep(func(v *view, p procInfo) bool {
		if v.othersRunning(e) == 0 {
			return true
		}
		return v.owner(p.pid) == e
	})
	a.reapZombies()
	return killed, survivors
}
