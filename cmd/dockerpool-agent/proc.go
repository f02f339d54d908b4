package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
)

// procInfo is what the agent reads of a process in /proc/<pid>/stat.
type procInfo struct {
	pid, ppid, pgid int
	sid             int    // the session: a terminal's program leads its own
	state           byte   // R, S, D, Z, T...
	start           uint64 // start time in clock ticks since boot: with pid, an identity
}

// procKey identifies a process across PID reuse.
type procKey struct {
	pid   int
	start uint64
}

func (p procInfo) key() procKey { return procKey{p.pid, p.start} }

// dead reports a process that is gone but for its zombie (Z) or about to
// (X): nothing to kill.
func (p procInfo) dead() bool { return p.state == 'Z' || p.state == 'X' || p.state == 'x' }

// readStat reads one process; false if it is gone.
func readStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	return parseStat(pid, b)
}

// parseStat parses /proc/<pid>/stat: "pid (comm) state ppid pgrp ...". The
// command name may hold spaces and parentheses: the fields start after the
// last ')'.
func parseStat(pid int, b []byte) (procInfo, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return procInfo{}, false
	}
	f := bytes.Fields(b[i+1:])
	// f[0] state, f[1] ppid, f[2] pgrp, f[3] session, ... f[19] starttime
	// (field 22).
	if len(f) < 20 || len(f[0]) != 1 {
		return procInfo{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	pgid, err2 := strconv.Atoi(string(f[2]))
	sid, err4 := strconv.Atoi(string(f[3]))
	start, err3 := strconv.ParseUint(string(f[19]), 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || err4 != nil {
		return procInfo{}, false
	}
	return procInfo{pid: pid, ppid: ppid, pgid: pgid, sid: sid, state: f[0][0], start: start}, true
}

// scan lists every process of the PID namespace.
func scan() map[int]procInfo {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	d.Close()
	procs := make(map[int]procInfo, len(names))
	for _, n := range names {
		pid, err := strconv.Atoi(n)
		if err != nil {
			continue
		}
		if p, ok := readStat(pid); ok {
			procs[pid] = p
		}
	}
	return procs
}

// descendants returns the processes of procs whose parent chain leads to
// root (root excluded), zombies included.
func descendants(procs map[int]procInfo, root int) []procInfo {
	const (
		unknown = iota
		yes
		no
	)
	memo := make(map[int]int8, len(procs))
	var under func(pid int, depth int) bool
	under = func(pid int, depth int) bool {
		if pid == root {
			return true
		}
		if m := memo[pid]; m != unknown {
			return m == yes
		}
		p, ok := procs[pid]
		if !ok || pid <= 1 || depth > len(procs) {
			return false
		}
		r := under(p.ppid, depth+1)
		if r {
			memo[pid] = yes
		} else {
			memo[pid] = no
		}
		return r
	}
	var out []procInfo
	for pid, p := range procs {
		if pid != root && under(pid, 0) {
			out = append(out, p)
		}
	}
	return out
}

// environToken returns the value of DOCKERPOOL_EXEC_ID in a process's
// environment, or "".
func environToken(pid int) string {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		return ""
	}
	prefix := []byte(execIDEnv + "=")
	var token []byte
	for kv := range bytes.SplitSeq(b, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, prefix); ok {
			token = v // the last one wins, as in os/exec
		}
	}
	return string(token)
}

// children lists the agent's child processes from
// /proc/self/task/*/children (cheap: no walk of all of /proc); ok is false if
// the kernel does not offer those files.
func children(self int) (pids []int, ok bool) {
	files, _ := filepath.Glob("/proc/" + strconv.Itoa(self) + "/task/*/children")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		ok = true
		for field := range bytes.FieldsSeq(b) {
			if pid, err := strconv.Atoi(string(field)); err == nil {
				pids = append(pids, pid)
			}
		}
	}
	return pids, ok
}
