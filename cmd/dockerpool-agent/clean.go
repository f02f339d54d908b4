package main

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The verified reset's cleaning: every place a command can leave a trace
// that outlives its processes, emptied and then checked.

// writablePlaces lists the container's writable tmpfs and mqueue mounts,
// from /proc/self/mountinfo: /tmp and the like, /dev/shm, /dev/mqueue. /dev
// itself (the runtime's device nodes), /proc and /sys are not the
// commands' places.
// It also says whether an mqueue file system is mounted.
func writablePlaces() (places []string, mqueue bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields, fs := strings.Fields(pre), strings.Fields(post)
		if !ok || len(fields) < 6 || len(fs) < 1 {
			continue
		}
		point, opts := unescape(fields[4]), fields[5]
		mqueue = mqueue || fs[0] == "mqueue"
		if fs[0] != "tmpfs" && fs[0] != "mqueue" || strings.HasPrefix(opts, "ro") {
			continue
		}
		if point == "/dev" || strings.HasPrefix(point, "/proc") || strings.HasPrefix(point, "/sys") {
			continue
		}
		places = append(places, point)
	}
	return places, mqueue, sc.Err()
}

// unescape undoes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	r, err := strconv.Unquote(`"` + strings.ReplaceAll(s, `"`, `\"`) + `"`)
	if err != nil {
		return s
	}
	return r
}

// leftIn lists what is still in the directories.
func leftIn(dirs []string) []string {
	var left []string
	for _, d := range dirs {
		entries, err := os.ReadDir(d)
		if err != nil && !os.IsNotExist(err) {
			left = append(left, fmt.Sprintf("%s: %v", d, err))
		}
		for _, e := range entries {
			left = append(left, filepath.Join(d, e.Name()))
		}
	}
	return left
}

// System V IPC: the objects are listed in /proc/sysvipc, and removed with
// their ctl call and IPC_RMID.
var sysvIPC = []struct {
	kind string
	ctl  uintptr // the system call
	col  int     // the column of the id in /proc/sysvipc/<kind>
}{
	{"shm", syscall.SYS_SHMCTL, 1},
	{"msg", syscall.SYS_MSGCTL, 1},
	{"sem", syscall.SYS_SEMCTL, 1},
}

const ipcRmid = 0 // IPC_RMID

// ipcObjects lists the System V IPC objects of the container's IPC
// namespace, as "shm 32769".
func ipcObjects() []string {
	var objs []string
	for _, k := range sysvIPC {
		b, err := os.ReadFile("/proc/sysvipc/" + k.kind)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		for _, line := range lines[1:] { // after the header
			if f := strings.Fields(line); len(f) > k.col {
				objs = append(objs, k.kind+" "+f[k.col])
			}
		}
	}
	return objs
}

// removeIPC removes every System V IPC object the agent may remove.
func removeIPC() {
	for _, obj := range ipcObjects() {
		kind, id, _ := strings.Cut(obj, " ")
		n, err := strconv.Atoi(id)
		if err != nil {
			continue
		}
		for _, k := range sysvIPC {
			if k.kind == kind {
				_, _, _ = syscall.Syscall(k.ctl, uintptr(n), ipcRmid, 0)
			}
		}
	}
}

// verifiedClean empties the container's writable places and its IPC, and
// returns what is left (nothing, when the container is as good as new).
func verifiedClean(extra []string) []string {
	places, mqueue, err := writablePlaces()
	if err != nil {
		return []string{"read the container's mounts: " + err.Error()}
	}
	places = append(places, extra...)
	left := unlistedQueues(mqueue)
	if err := emptyDirs(places); err != nil {
		left = append(left, err.Error())
	}
	left = append(left, leftIn(places)...)
	if _, err := os.Stat("/proc/sysvipc"); err != nil {
		return append(left, removeUnlistedIPC()...)
	}
	removeIPC()
	for _, obj := range ipcObjects() {
		left = append(left, "System V IPC "+obj)
	}
	return left
}
