package testdaemon

import (
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillLeftovers kills, by PID, every process whose command line names dir
// (a daemon's containerd, its shims, runsc-sandbox and runsc-gofer), and
// waits for them to go. It returns those still alive after ten seconds.
func KillLeftovers(dir string) []string {
	deadline := time.Now().Add(10 * time.Second)
	for {
		left := Naming(dir)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			var out []string
			for pid, cmd := range left {
				out = append(out, strconv.Itoa(pid)+" "+cmd)
			}
			return out
		}
		for pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // until they are gone: nothing to wait on for others' processes
	}
}

// Naming lists the live processes whose command line contains s, by PID.
func Naming(s string) map[int]string {
	out := map[int]string{}
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(b, []byte(s)) {
			continue
		}
		if st, ok := procState(filepath.Join("/proc", e.Name(), "stat")); ok && st == 'Z' {
			continue // a zombie: dead already
		}
		out[pid] = strings.ReplaceAll(string(b), "\x00", " ")
	}
	return out
}

// procState reads the state letter (R, S, T, Z...) of a process's or a
// thread's stat file; false if it is gone or unreadable.
func procState(statPath string) (byte, bool) {
	b, err := os.ReadFile(statPath)
	if err != nil {
		return 0, false
	}
	// The name in parentheses may hold anything: the state follows the last ')'.
	if i := bytes.LastIndexByte(b, ')'); i > 0 && i+2 < len(b) {
		return b[i+2], true
	}
	return 0, false
}

// unmountUnder detaches every mount under dir, the deepest first.
func unmountUnder(dir string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return
	}
	var points []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			points = append(points, f[4])
		}
	}
	sort.Slice(points, func(i, j int) bool { return len(points[i]) > len(points[j]) })
	for _, p := range points {
		_ = syscall.Unmount(p, syscall.MNT_DETACH)
	}
}
