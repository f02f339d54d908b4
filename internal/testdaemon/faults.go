package testdaemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
)

// faults is what is being done to a daemon, for Stop to undo. A Daemon's
// fault methods are called from one goroutine at a time (the test's).
type faults struct {
	paused, killed, linkDown, dropped bool
}

// Pause stops the daemon's process (SIGSTOP): its sockets stay open and
// its kernel still accepts connections, but nothing answers. Its
// containerd and containers go on. The kernel stops each thread when it
// next runs, after kill(2) has returned: Pause returns once every thread
// is stopped (a Ping sent right after the signal was seen answered in CI).
func (d *Daemon) Pause() error {
	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("testdaemon: SIGSTOP %s: %w", d.Name, err)
	}
	d.faults.paused = true
	deadline := time.Now().Add(5 * time.Second)
	for {
		running := d.RunningThreads()
		if len(running) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testdaemon: %s (pid %d): threads still run 5s after SIGSTOP: %v", d.Name, d.PID(), running)
		}
		time.Sleep(time.Millisecond) // the kernel announces no stop to others than the parent
	}
}

// RunningThreads lists the threads of the daemon's process that are not
// stopped, as "TID:state" (the state letter of /proc/PID/task/TID/stat).
func (d *Daemon) RunningThreads() []string {
	dir := fmt.Sprintf("/proc/%d/task", d.PID())
	entries, err := os.ReadDir(dir)
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, e := range entries {
		st, ok := procState(filepath.Join(dir, e.Name(), "stat"))
		if ok && st != 'T' && st != 't' && st != 'Z' && st != 'X' { // !ok: the thread ended
			out = append(out, e.Name()+":"+string(st))
		}
	}
	return out
}

// Resume undoes Pause (SIGCONT).
func (d *Daemon) Resume() error {
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("testdaemon: SIGCONT %s: %w", d.Name, err)
	}
	d.faults.paused = false
	return nil
}

// Kill crashes the host as a power cut would: SIGKILL of dockerd, then,
// by PID, of everything it had started (containerd, the shims, the
// storage driver's helpers, and the containers' processes, found by their
// cgroup). Its directories and mounts stay (unmounting them as a reboot
// would keeps the restarted containerd from coming up: dockerd's private
// mount of its data root is among them): Restart starts the daemon again
// on them, and it then finds its containers dead (exited, 255).
func (d *Daemon) Kill() error {
	_ = d.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		return fmt.Errorf("testdaemon: dockerd %s (pid %d) did not die within 10s of SIGKILL", d.Name, d.PID())
	}
	d.faults.paused, d.faults.killed = false, true
	if left := d.killAll(); len(left) > 0 {
		return fmt.Errorf("testdaemon: %s: processes outlived the kill: %v", d.Name, left)
	}
	// containerd is dead, but the machine's init reaps orphans a few
	// seconds late, and until then the restarted dockerd would take the
	// zombie named in containerd's pid file for a live containerd and wait
	// for it. A reboot clears /run, where that file would be.
	if err := os.Remove(filepath.Join(d.Dir, "exec", "containerd", "containerd.pid")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("testdaemon: %s: %w", d.Name, err)
	}
	return nil
}

// Restart starts the daemon again after Kill, on the same directories,
// and waits until it answers (on its socket and over TCP).
func (d *Daemon) Restart(ctx context.Context) error {
	select {
	case <-d.exited:
	default:
		return fmt.Errorf("testdaemon: Restart of %s, which runs (pid %d): Kill it first", d.Name, d.PID())
	}
	if err := d.launch(); err != nil {
		return err
	}
	if err := d.ready(ctx, time.Minute); err != nil {
		return err
	}
	d.faults.killed = false
	return nil
}

// LinkDown sets the daemon's end of its link (eth0 in its namespace) down,
// as when a remote host's network goes: the host's end loses its carrier
// but keeps its route, so packets to the daemon go nowhere (not out of the
// default route, as they did when the host's end itself went down and took
// the route with it: a connection then reached whatever answered there),
// and open connections hang (nothing resets them).
func (d *Daemon) LinkDown() error {
	if err := d.ipLink("down"); err != nil {
		return err
	}
	d.faults.linkDown = true
	return nil
}

// LinkUp undoes LinkDown.
func (d *Daemon) LinkUp() error {
	if err := d.ipLink("up"); err != nil {
		return err
	}
	d.faults.linkDown = false
	return nil
}

func (d *Daemon) ipLink(state string) error {
	if d.veth == "" {
		return fmt.Errorf("testdaemon: %s has no link (made by Start, not StartHosts)", d.Name)
	}
	ns := NetnsPrefix + d.Name
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "eth0", state).CombinedOutput(); err != nil {
		return fmt.Errorf("testdaemon: ip -n %s link set eth0 %s: %v: %s", ns, state, err, out)
	}
	return nil
}

// Drop makes the daemon's namespace drop every packet to its TCP port
// (iptables INPUT DROP, open connections included): connections hang,
// and an open event stream is not ended.
func (d *Daemon) Drop() error {
	if err := d.iptables("-I"); err != nil {
		return err
	}
	d.faults.dropped = true
	return nil
}

// Undrop undoes Drop.
func (d *Daemon) Undrop() error {
	if err := d.iptables("-D"); err != nil {
		return err
	}
	d.faults.dropped = false
	return nil
}

func (d *Daemon) iptables(op string) error {
	if d.veth == "" {
		return fmt.Errorf("testdaemon: %s is not a TCP host (made by Start, not StartHosts)", d.Name)
	}
	args := []string{"--net=/var/run/netns/" + NetnsPrefix + d.Name, "iptables", "-w", "5",
		op, "INPUT", "-p", "tcp", "--dport", strconv.Itoa(Port), "-j", "DROP"}
	if out, err := exec.Command("nsenter", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("testdaemon: nsenter %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// undoFaults resumes a paused daemon (a stopped process does not act on
// SIGTERM), brings its link up and lifts the DROP; then, so that Stop is
// quick, removes its containers (a daemon that stops gives each running
// one its stop timeout).
func (d *Daemon) undoFaults() error {
	var errs []error
	if d.faults.paused {
		errs = append(errs, d.Resume())
	}
	if d.faults.linkDown {
		errs = append(errs, d.LinkUp())
	}
	if d.faults.dropped {
		errs = append(errs, d.Undrop())
	}
	if d.cgroup != "" && !d.faults.killed && d.Client != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if list, err := d.Client.ContainerList(ctx, container.ListOptions{All: true}); err == nil {
			for _, c := range list {
				_ = d.Client.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
			}
		}
	}
	return errors.Join(errs...)
}

// killAll kills, by PID, every process that names the daemon's directory
// and every process in its containers' cgroups, and returns those still
// alive after ten seconds.
func (d *Daemon) killAll() []string {
	left := KillLeftovers(d.Dir)
	if d.cgroup == "" {
		return left
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		procs := InCgroup(d.cgroup)
		if len(procs) == 0 {
			return left
		}
		if time.Now().After(deadline) {
			for pid, cmd := range procs {
				left = append(left, strconv.Itoa(pid)+" "+cmd+" (in cgroup "+d.cgroup+")")
			}
			return left
		}
		for pid := range procs {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(50 * time.Millisecond) // until they are gone: nothing to wait on for others' processes
	}
}

// InCgroup lists the live processes in a cgroup whose path has a
// component named name, by PID, with their command lines.
func InCgroup(name string) map[int]string {
	out := map[int]string{}
	if name == "" {
		return out
	}
	entries, _ := os.ReadDir("/proc")
	needle := []byte("/" + name)
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cgroup"))
		if err != nil || !hasComponent(b, needle) {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if len(cmd) == 0 || zombie(pid) {
			continue // dead, or dying: its memory is gone already
		}
		out[pid] = strings.ReplaceAll(string(cmd), "\x00", " ")
	}
	return out
}

// hasComponent says whether a /proc/<pid>/cgroup text has a path with the
// component needle ("/name", followed by "/" or the end of the line).
func hasComponent(b, needle []byte) bool {
	for {
		i := bytes.Index(b, needle)
		if i < 0 {
			return false
		}
		b = b[i+len(needle):]
		if len(b) == 0 || b[0] == '/' || b[0] == '\n' {
			return true
		}
	}
}

func zombie(pid int) bool {
	st, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return true // gone
	}
	i := bytes.LastIndexByte(st, ')')
	return i > 0 && i+2 < len(st) && st[i+2] == 'Z'
}

// Cgroups lists the directories of the cgroup named name, in every
// hierarchy (v1's controllers, or v2's one), with their children.
func Cgroups(name string) []string {
	if name == "" {
		return nil
	}
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + name)
	if fi, err := os.Stat("/sys/fs/cgroup/" + name); err == nil && fi.IsDir() {
		roots = append(roots, "/sys/fs/cgroup/"+name)
	}
	seen := map[string]bool{}
	var dirs []string
	for _, r := range roots {
		real, err := filepath.EvalSymlinks(r) // cpu and cpuacct are one hierarchy
		if err != nil || seen[real] {
			continue
		}
		seen[real] = true
		_ = filepath.WalkDir(real, func(p string, e fs.DirEntry, err error) error {
			if err == nil && e.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
	}
	return dirs
}

// removeCgroups removes the cgroup named name and its children, the
// deepest first, once their processes are gone (killAll).
func removeCgroups(name string) error {
	if name == "" {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		dirs := Cgroups(name)
		sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
		var errs []error
		for _, p := range dirs {
			if err := syscall.Rmdir(p); err != nil && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("rmdir %s: %w", p, err))
			}
		}
		if len(errs) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("testdaemon: cgroups of %s left: %w", name, errors.Join(errs...))
		}
		time.Sleep(50 * time.Millisecond) // a process just killed leaves its cgroup when reaped
	}
}
