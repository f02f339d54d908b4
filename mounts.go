package dockerpool

import (
	"fmt"
	"sort"
	"strings"
)

// The container's mounts, as it sees them, tell where Docker's archive API
// (docker cp) sees what the container sees: on the root file system's
// writable layer and on volumes and bind mounts, yes; on a tmpfs, /proc and
// the like, no: there it writes into the layer underneath, which the
// container does not see, and reports success (moby#22020). Every container
// of a pool is made alike, so the pool reads the table once, from
// /proc/self/mountinfo in a container.

// mount is one line of /proc/self/mountinfo.
type mount struct {
	point  string // where it is mounted
	fstype string
	ro     bool
}

// mountTable is a container's mounts, the deepest mount points first.
type mountTable []mount

// parseMountinfo reads /proc/self/mountinfo (proc(5)): "36 35 98:0 /mnt1
// /mnt/parent rw,noatime master:1 - ext3 /dev/root rw".
func parseMountinfo(s string) (mountTable, error) {
	var t mountTable
	for _, line := range strings.Split(s, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 6 || len(g) < 1 {
			return nil, fmt.Errorf("mountinfo: cannot read %q", line)
		}
		opts := strings.Split(f[5], ",")
		t = append(t, mount{point: unescapeMount(f[4]), fstype: g[0], ro: len(opts) > 0 && opts[0] == "ro"})
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("mountinfo: no mounts")
	}
	sort.SliceStable(t, func(i, j int) bool { return len(t[i].point) > len(t[j].point) })
	return t, nil
}

// unescapeMount undoes the octal escapes of mountinfo (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &v); err == nil {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// find returns the mount that holds path p (absolute, clean).
func (t mountTable) find(p string) mount {
	for _, m := range t {
		if m.point == "/" || p == m.point || strings.HasPrefix(p, m.point+"/") {
			return m
		}
	}
	return mount{point: "/"}
}

// writablePlaces lists the writable tmpfs and mqueue mounts, where a
// command's files outlive it: /tmp and the like, /dev/shm, /dev/mqueue. /dev
// itself (the runtime's device nodes), /proc and /sys are not the commands'.
func (t mountTable) writablePlaces() []string {
	var places []string
	for _, m := range t {
		if m.fstype != "tmpfs" && m.fstype != "mqueue" || m.ro {
			continue
		}
		if m.point == "/dev" || strings.HasPrefix(m.point, "/proc") || strings.HasPrefix(m.point, "/sys") {
			continue
		}
		places = append(places, m.point)
	}
	sort.Strings(places)
	return places
}

// unlistable says which channels a holder could leave objects in that the
// reset cannot list in this container, or nil. POSIX message queues are
// listed through an mqueue mount: a container without one (gVisor mounts
// none) may still have queues (mq_open works), and nobody can see them.
func (t mountTable) unlistable() []string {
	for _, m := range t {
		if m.fstype == "mqueue" {
			return nil
		}
	}
	return []string{"POSIX message queues cannot be listed: the container has no mqueue mount (gVisor has none)"}
}

// archiveSees reports whether Docker's archive API sees, at this mount,
// what the container sees (and, to write, may write there).
func (m mount) archiveSees(write bool) bool {
	switch m.fstype {
	case "tmpfs", "ramfs", "proc", "sysfs", "devpts", "mqueue", "cgroup", "cgroup2", "devtmpfs", "securityfs", "debugfs", "":
		return false
	}
	return !write || !m.ro
}
