package testdaemon_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"go.uber.org/goleak"

	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testdaemon"
)

// TestMain fails the run if a goroutine outlives the tests: the hosts'
// clients are closed by Stop.
func TestMain(m *testing.M) {
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: goroutines outlived the tests: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// startHosts starts n hosts with the test image in each, stopped at the
// end of the test, which then checks that nothing of them is left.
func startHosts(t *testing.T, n int) (*testdaemon.Hosts, string) {
	t.Helper()
	if why := testdaemon.Missing(); why != "" {
		dockerpooltest.Unavailable(t, "%s", why)
	}
	var (
		mu  sync.Mutex
		ref string
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h, err := testdaemon.StartHosts(ctx, testdaemon.NewRun(), n, testdaemon.HostsOptions{
		Setup: func(ctx context.Context, d *testdaemon.Daemon) error {
			r, err := dockerpooltest.BuildImage(ctx, d.Client, dockerpooltest.ImageOptions{})
			mu.Lock()
			ref = r // the same content, the same reference on each
			mu.Unlock()
			return err
		},
	})
	if errors.Is(err, dockerpooltest.ErrNoBusybox) {
		dockerpooltest.Unavailable(t, "no test image for the hosts: %v", err)
	}
	if err != nil {
		t.Fatalf("StartHosts: %v", err)
	}
	t.Cleanup(func() {
		if err := h.Stop(); err != nil {
			t.Errorf("Stop: %v", err)
		}
		for _, left := range h.Leftovers() {
			t.Errorf("after Stop: %s", left)
		}
	})
	return h, ref
}

func ping(d *testdaemon.Daemon) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_, err := d.TCP.Ping(ctx)
	return err
}

// answersAgain pings d until it answers, for ten seconds at most, and
// returns how long that took.
func answersAgain(t *testing.T, d *testdaemon.Daemon, after string) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := ping(d)
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > 10*time.Second {
			t.Fatalf("%s: %s does not answer 10s later: %v", after, d.Name, err)
		}
		time.Sleep(100 * time.Millisecond) // the daemon announces nothing: ask again
	}
}

// TestHostsEachFaultCutsARawClientOffAndIsUndone starts two hosts and, on
// the first, does each fault: a Ping with a one-second timeout fails
// during it (the other host answers meanwhile) and succeeds once it is
// undone. A Kill also kills the containers' processes, and the restarted
// daemon has its image and its (now dead) container. At the end nothing
// of the hosts is left: no process, namespace, link, cgroup or directory.
func TestHostsEachFaultCutsARawClientOffAndIsUndone(t *testing.T) {
	h, ref := startHosts(t, 2)
	d, other := h.Daemons[0], h.Daemons[1]
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", d.PID())); strings.TrimSpace(string(comm)) != "dockerd" {
		t.Fatalf("PID %d is %q, not dockerd: the faults would signal the wrong process", d.PID(), comm)
	}
	created, err := d.TCP.ContainerCreate(ctx, &container.Config{Image: ref, Cmd: []string{"sleep", "infinity"}},
		&container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		t.Fatalf("create a container over TCP: %v", err)
	}
	if err := d.TCP.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("start it: %v", err)
	}
	info, err := d.TCP.ContainerInspect(ctx, created.ID)
	if err != nil || info.State.Pid == 0 {
		t.Fatalf("inspect it: pid %d, %v", info.State.Pid, err)
	}
	if procs := testdaemon.InCgroup("dockerpool-testdaemon-" + d.Name); len(procs) == 0 {
		t.Fatalf("the container's process %d is not in the daemon's cgroup", info.State.Pid)
	}

	for _, f := range []struct {
		name     string
		do, undo func() error
	}{
		{"pause", d.Pause, d.Resume},
		{"link down", d.LinkDown, d.LinkUp},
		{"drop", d.Drop, d.Undrop},
		{"kill", d.Kill, func() error { return d.Restart(ctx) }},
	} {
		if err := f.do(); err != nil {
			t.Fatalf("%s: %v", f.name, err)
		}
		start := time.Now()
		err := ping(d)
		took := time.Since(start)
		if err == nil {
			t.Fatalf("%s: a Ping of %s succeeded (threads not stopped: %v)", f.name, d.Name, d.RunningThreads())
		}
		if err := ping(other); err != nil {
			t.Fatalf("%s of %s: the other host does not answer: %v", f.name, d.Name, err)
		}
		if f.name == "kill" {
			if syscall.Kill(info.State.Pid, 0) == nil && !zombie(info.State.Pid) {
				t.Fatalf("kill: the container's process %d outlived its daemon", info.State.Pid)
			}
		}
		if err := f.undo(); err != nil {
			t.Fatalf("undo %s: %v", f.name, err)
		}
		back := answersAgain(t, d, "undo "+f.name)
		t.Logf("%-9s: Ping failed after %v (%v); it answers %v after the fault is undone", f.name, took.Round(time.Millisecond), err, back.Round(time.Millisecond))
	}

	info, err = d.TCP.ContainerInspect(ctx, created.ID)
	if err != nil || info.State.Running {
		t.Fatalf("after the kill and restart, the container: running %v, %v; want it there, dead", info.State.Running, err)
	}
	if _, err := d.TCP.ImageInspect(ctx, ref); err != nil {
		t.Fatalf("after the restart the image is gone: %v", err)
	}
}

func zombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i > 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// TestHostsAreReachedOverTLSOnly checks that a host refuses a client
// without the set's certificate.
func TestHostsAreReachedOverTLSOnly(t *testing.T) {
	h, _ := startHosts(t, 1)
	d := h.Daemons[0]
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(d.Remote, "tcp://"), 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", d.Remote, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Write([]byte("GET /_ping HTTP/1.0\r\n\r\n"))
	b := make([]byte, 64)
	n, _ := conn.Read(b)
	if strings.Contains(string(b[:n]), "200 OK") {
		t.Fatalf("%s answered plain HTTP: %q", d.Remote, b[:n])
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil || !strings.Contains(string(out), testdaemon.NetnsPrefix+d.Name) {
		t.Fatalf("ip netns list does not show %s: %v: %s", testdaemon.NetnsPrefix+d.Name, err, out)
	}
}

// TestStartLeavesADaemonOfTheSameNameAlone: a directory of the name that
// exists (another run's daemon) makes Start fail, and touches nothing of
// it: no file removed, no namespace deleted.
func TestStartLeavesADaemonOfTheSameNameAlone(t *testing.T) {
	name := "taken-" + testdaemon.NewRun()
	dir := testdaemon.DirPrefix + name
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	marker := dir + "/theirs"
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d, err := testdaemon.Start(ctx, name, testdaemon.Options{})
	if err == nil {
		_ = d.Stop()
		t.Fatalf("Start of %s, whose directory exists, succeeded", name)
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("err = %v; want it to say the directory is in use", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Errorf("the failed Start removed what was there: %v", err)
	}
}
