package dockerpool_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The verified reset, on the real daemon: a holder tries to leave a trace in
// every channel, and the next holder sees exactly what a fresh container
// shows.

var (
	ipcToolOnce sync.Once
	ipcToolBin  []byte
	ipcToolErr  error
)

// ipcTool builds internal/ipctool (ipcmk and ipcrm for the busybox image,
// which has neither) once per test binary.
func ipcTool(t *testing.T) []byte {
	t.Helper()
	ipcToolOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dockerpool-ipctool-")
		if err != nil {
			ipcToolErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "ipctool")
		cmd := exec.Command("go", "build", "-o", out, "./internal/ipctool")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			ipcToolErr = err
			t.Logf("%s", b)
			return
		}
		ipcToolBin, ipcToolErr = os.ReadFile(out)
	})
	if ipcToolErr != nil {
		t.Fatalf("build ipctool: %v", ipcToolErr)
	}
	return ipcToolBin
}

// snapshotScript prints what a holder can see of earlier holders: the
// processes (but for the main one, pid 1 and this script), what is in every
// writable place, the System V IPC objects and message queues, the
// environment of other processes, the hostname and the limits.
const snapshotScript = `self=$$
echo "== processes"
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] && continue
  [ "$p" = "$self" ] && continue
  read -r st < "$d/stat" 2>/dev/null || continue
  set -- ${st##*) }
  [ "$2" = "$self" ] && continue
  echo "$(tr '\0' ' ' < $d/cmdline 2>/dev/null) uid=$(grep '^Uid' $d/status 2>/dev/null | cut -f2) env=$(tr '\0' '\n' < $d/environ 2>/dev/null | grep -c SECRET)"
done | grep -v 'dockerpool-agent\|sleep infinity' | sort
echo "== files"
for d in /tmp /dev/shm /dev/mqueue /mnt; do [ -d $d ] && find $d -mindepth 1 2>/dev/null; done | sort
echo "== ipc"
cat /proc/sysvipc/shm /proc/sysvipc/msg /proc/sysvipc/sem | grep -cv key
echo "== host"
[ "$(hostname)" = "$(cat /etc/hostname)" ] && echo "hostname: the container's own"
ulimit -a | sort`

func TestResetLeavesNothingOfTheLastHolderInAnyChannel(t *testing.T) {
	for _, sandbox := range []bool{false, true} {
		name := "plain"
		if sandbox {
			name = "sandbox"
		}
		t.Run(name, func(t *testing.T) {
			onEachPath(t, func(t *testing.T, path execPath) {
				testResetLeavesNothing(t, path, sandbox)
			})
		})
	}
}

func testResetLeavesNothing(t *testing.T, path execPath, sandbox bool) {
	is := is.New(t)
	var logs syncBuffer
	cfg := dockerpool.Config{MinIdle: 1, MaxIdle: 1, MaxSize: 1, VerifiedReset: true, Logger: slog.New(slog.NewTextHandler(io.MultiWriter(tWriter{t}, &logs), nil))}
	if sandbox {
		cfg.HostConfig = sandboxHost(dockerpool.SandboxOptions{})
		cfg.ContainerConfig = &container.Config{User: dockerpool.SandboxUser}
	} else {
		// Writes go to tmpfs mounts, as in a judge's setup: a write to the
		// writable layer cannot be undone (see the next test).
		cfg.HostConfig = &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/tmp": "size=8m", "/mnt": "size=8m"}}
	}
	tool := ipcTool(t)
	p := warm(t, path.config(t, cfg, dockerpooltest.ImageOptions{Files: map[string][]byte{"/usr/bin/ipctool": tool, "/usr/bin/ipcrm": tool}}))
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	fresh := shOut(t, c, snapshotScript)
	// Every trace a holder can leave: processes in the background, in a
	// session of their own, double-forked, with a secret in their
	// environment; files in every writable place; IPC objects and a
	// message queue; a hostname and limits it tries to change.
	traces := []string{
		"sleep 1000 >/dev/null 2>&1 &",
		"setsid sleep 1001 >/dev/null 2>&1 < /dev/null &",
		"(sh -c 'sleep 1002 >/dev/null 2>&1 &' &)",
		"echo leak > /tmp/leak; echo leak > /dev/shm/leak; [ -d /mnt ] && echo leak > /mnt/leak; mkdir -p /tmp/d/e",
		"ipctool make",
		"hostname evil 2>/dev/null; ulimit -n 64",
	}
	for _, tr := range traces {
		res, err := c.ExecStd(ctx, []string{"sh", "-c", tr}, dockerpool.ExecOptions{Env: []string{"SECRET=hunter2"}})
		is.NoErr(err)
		is.Equal(res.ExitCode, 0)
	}
	if !(path.agent && sandbox) { // an agent running as nobody cannot start a command as another user
		res, err := c.ExecStd(ctx, []string{"sh", "-c", "sleep 1003 >/dev/null 2>&1 &"}, dockerpool.ExecOptions{User: "1234"})
		is.NoErr(err)
		is.Equal(res.ExitCode, 0)
	}
	dirty := shOut(t, c, snapshotScript)
	// Every trace is there before the reset: the test can fail.
	wants := []string{"sleep 1000 ", "sleep 1001 ", "sleep 1002 ", "env=1", "/tmp/leak", "/tmp/d/e", "/dev/shm/leak"}
	if !underGVisor() { // gVisor has no mqueue mount and no /proc/sysvipc: nobody can list them
		wants = append(wants, "/dev/mqueue/dockerpool-test", "== ipc\n3\n")
	}
	if !sandbox {
		wants = append(wants, "/mnt/leak")
	}
	if !(path.agent && sandbox) {
		wants = append(wants, "sleep 1003  uid=1234")
	}
	for _, w := range wants {
		if !strings.Contains(dirty, w) {
			t.Errorf("trace %q not left before the reset:\n%s", w, dirty)
		}
	}
	is.NoErr(p.Return(ctx, c))
	is.NoErr(p.WaitIdle(ctx, 1))

	next, err := p.Acquire(ctx)
	is.NoErr(err)
	defer p.Return(context.Background(), next)
	got := shOut(t, next, snapshotScript)
	st := p.Stats()
	t.Logf("the next holder got %s container %s (removals: %v)", map[bool]string{true: "the same", false: "another"}[next.ID() == c.ID()], next.ID()[:12], st.RemovedBy)
	if got != fresh {
		t.Errorf("the next holder sees what a fresh container does not:\n--- fresh\n%s\n--- next\n%s\n--- dirty\n%s", fresh, got, dirty)
	}
	switch {
	case underGVisor():
		// Message queues exist (mq_open works) but cannot be listed: the
		// reset cannot vouch for the container, on either path.
		is.True(next.ID() != c.ID())
		is.Equal(st.RemovedBy[dockerpool.ReasonResetUnverified], int64(1))
		why := "POSIX message queues cannot be listed"
		if sandbox && !path.agent {
			why = "processes: " // first: nobody cannot kill uid 1234's process, as without gVisor
		}
		is.True(strings.Contains(logs.String(), why))
		// System V IPC: the agent counts the objects (*_INFO) and removes
		// them by id; the Docker exec path cannot list them.
		if path.agent {
			is.True(!strings.Contains(logs.String(), "System V IPC"))
		} else if !sandbox {
			is.True(strings.Contains(logs.String(), "System V IPC shm objects cannot be listed"))
		}
	case !sandbox || path.agent:
		// Everything could be cleaned: the container itself comes back.
		is.Equal(next.ID(), c.ID())
	default:
		// In the sandbox, the reset (as nobody, without CAP_KILL) cannot
		// kill the process of uid 1234: the container is not vouched for,
		// and the next holder gets a fresh one.
		is.True(next.ID() != c.ID())
		is.Equal(st.RemovedBy[dockerpool.ReasonResetUnverified], int64(1))
	}
}

func TestResetThatCannotBeVerifiedRemovesTheContainer(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		// A writable root: a file written to the layer cannot be undone.
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, MaxIdle: 1, VerifiedReset: true}))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		shOut(t, c, "echo changed >> /etc/passwd")
		is.NoErr(p.Return(bg(t), c))
		waitGone(t, c.ID(), 20*time.Second)
		eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonResetUnverified] == 1 })
		next, err := p.Acquire(bg(t))
		is.NoErr(err)
		is.True(next.ID() != c.ID())
		is.True(!strings.Contains(shOut(t, next, "cat /etc/passwd"), "changed"))
		is.NoErr(p.Return(bg(t), next))
	})
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}
