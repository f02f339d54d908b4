package main

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// What a command used, as isolate reports it: the CPU time of all its
// processes (those reparented to the agent included) and the largest
// resident set of any one of them.
//
// The sources: wait4's rusage of each process that ends, for the main
// process (os/exec) and for the orphans the agent reaps; and, while the
// command runs (for a CPU time limit), /proc/<pid>/stat of its live
// processes, whose cutime and cstime hold the children they waited for.

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every
// Linux the agent runs on (the kernel's ABI fixes it).
const clockTicks = 100

// cpuPoll is how often the CPU time of a command with a limit is summed.
const cpuPoll = 20 * time.Millisecond

// usage accumulates the resources of one command's processes that ended.
type usage struct {
	mu        sync.Mutex
	user, sys time.Duration
	maxRSS    int64 // bytes
}

// add counts a process that ended, from its rusage (which covers the
// children it waited for).
func (u *usage) add(ru *syscall.Rusage) {
	if ru == nil {
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	u.user += time.Duration(ru.Utime.Nano())
	u.sys += time.Duration(ru.Stime.Nano())
	u.maxRSS = max(u.maxRSS, ru.Maxrss*1024)
}

func (u *usage) get() (user, sys time.Duration, maxRSS int64) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.user, u.sys, u.maxRSS
}

// cpuOf reads a live (or zombie) process's CPU time, its own and that of
// the children it waited for, from /proc/<pid>/stat (fields 14 to 17).
func cpuOf(pid int) (user, sys time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3 (state)
	if len(f) < 15 {
		return 0, 0, false
	}
	var t [4]int64
	for k := range t {
		if t[k], err = strconv.ParseInt(string(f[11+k]), 10, 64); err != nil {
			return 0, 0, false
		}
	}
	tick := time.Second / clockTicks
	return time.Duration(t[0]+t[2]) * tick, time.Duration(t[1]+t[3]) * tick, true
}

// rssOf reads a live process's peak resident set (VmHWM), in bytes.
func rssOf(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb * 1024
		}
	}
	return 0
}

// cpuNow sums what e's processes used so far: those that ended, then those
// alive (or zombies) now, under the start lock so that the reaper does not
// move a process from one to the other meanwhile. The ended ones are read
// first: a process that ends in between is missed once, never counted twice.
func (a *agent) cpuNow(e *execution) (user, sys time.Duration, rss int64) {
	user, sys, rss = e.used.get()
	a.startMu.Lock()
	defer a.startMu.Unlock()
	v := a.newView()
	for _, p := range v.desc {
		if v.owner(p.pid) != e {
			continue
		}
		if u, s, ok := cpuOf(p.pid); ok {
			user, sys = user+u, sys+s
		}
		if !p.dead() {
			rss = max(rss, rssOf(p.pid))
		}
	}
	v.record()
	return user, sys, rss
}

// watchCPU kills e when its processes used their CPU time limit together,
// until stop is closed. It keeps the last sum it saw, for the report.
func (a *agent) watchCPU(e *execution, limit time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(cpuPoll)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		u, s, rss := a.cpuNow(e)
		e.mu.Lock()
		e.seenUser, e.seenSys, e.seenRSS = max(e.seenUser, u), max(e.seenSys, s), max(e.seenRSS, rss)
		e.mu.Unlock()
		if u+s >= limit {
			e.kill(reasonCPU)
			return
		}
	}
}

// oomKills reads how many processes the kernel's OOM killer killed in the
// container's memory cgroup (cgroup v2 memory.events, v1 memory.oom_control),
// or -1 when the container cannot read it.
func oomKills() int64 {
	for _, f := range []string{"/sys/fs/cgroup/memory.events", "/sys/fs/cgroup/memory/memory.oom_control"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err == nil {
					return n
				}
			}
		}
	}
	return -1
}
