package dockerpool_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testdaemon"
)

// gvisorTests are the integration tests that run again under gVisor: the
// exec paths (Docker exec and the agent), the sandbox preset, files in
// and out, limits and usage, and the verified reset.
const gvisorTests = "^(TestExec|TestAgent|TestSandbox|TestFiles|TestUsage|TestReset)"

// gvisorSkipped are the tests of gvisorTests that the gVisor run leaves
// out: the thousand concurrent execs (the agent's protocol under load) test
// our code, not the runtime; under gVisor's ptrace platform they stalled
// the private daemon (its pings timed out), so that the tests beside them
// failed. (The big streams, for memory bounds and flow control, are not
// among gvisorTests: they are TestInChildProcesses/BigStreams.)
const gvisorSkipped = "AThousandConcurrentExecs"

// gvisorEnv marks the child test binary of the gVisor run: its tests run
// on a daemon whose default runtime is runsc.
const gvisorEnv = "DOCKERPOOL_TEST_GVISOR"

// underGVisor says whether this test binary is the gVisor run's child.
func underGVisor() bool { return os.Getenv(gvisorEnv) != "" }

// runscPath finds gVisor's runsc, or skips (fails under CI).
func runscPath(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("runsc")
	if err != nil {
		dockerpooltest.Unavailable(t, "gVisor's runsc is not installed (apt-get install runsc): %v", err)
	}
	return path
}

// testGVisor (TestInChildProcesses/GVisor) runs the exec, sandbox, files,
// usage and reset tests again on a private daemon whose default runtime is
// gVisor's runsc, in a child test binary (DOCKER_HOST pointing at it), and
// checks that once the daemon is stopped no process of it is left: no
// containerd-shim, no runsc-sandbox, no runsc-gofer.
func testGVisor(t *testing.T) {
	dockerpooltest.Image(t) // the tests need what the main daemon's tests need
	runsc := runscPath(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	// A name of its own: another run on this machine may run it too.
	d, err := testdaemon.Start(ctx, "gvisor-"+testdaemon.NewRun(), testdaemon.Options{
		Runtimes:       map[string]testdaemon.Runtime{"runsc": {Path: runsc, Args: []string{"--network=none"}}},
		DefaultRuntime: "runsc",
	})
	if err != nil {
		t.Fatalf("start a daemon with runsc: %v", err)
	}
	t.Cleanup(func() {
		if err := d.Stop(); err != nil {
			t.Errorf("stop the gVisor daemon: %v", err)
		}
		if left := testdaemon.Naming(d.Dir); len(left) > 0 {
			t.Errorf("processes of the gVisor daemon outlived it: %v", left)
		}
	})
	defer func() {
		if t.Failed() {
			t.Logf("the gVisor daemon's log:\n%s", d.Log())
		}
	}()
	runChild(ctx, t, child{run: gvisorTests, skip: gvisorSkipped, timeout: 7 * time.Minute,
		env: []string{"DOCKER_HOST=" + d.Host, gvisorEnv + "=1"}})
}

// TestGVisorRuntimeMissingFromTheDaemonIsAClearError asks the machine's
// daemon, which has no runsc registered, for the runtime.
func TestGVisorRuntimeMissingFromTheDaemonIsAClearError(t *testing.T) {
	t.Parallel()
	if underGVisor() {
		return // the daemon has it: the test is for a daemon without
	}
	cli := dockerpooltest.Client(t)
	cfg := dockerpooltest.Config(t, dockerpool.Config{MinIdle: 1, MaxSize: 1,
		HostConfig: dockerpool.SandboxHostConfig(dockerpool.SandboxOptions{Runtime: "dockerpool-no-such-runtime"})})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := dockerpool.New(ctx, cfg)
	if err == nil {
		_ = p.Shutdown(ctx)
		t.Fatal("New with a runtime the daemon lacks succeeded")
	}
	if !errors.Is(err, dockerpool.ErrRuntimeNotFound) || !strings.Contains(err.Error(), "dockerpool-no-such-runtime") || !strings.Contains(err.Error(), "runc") {
		t.Fatalf("err = %v; want ErrRuntimeNotFound naming the runtime and the daemon's runtimes (runc)", err)
	}
	dockerpooltest.AssertClean(t, cli, cfg.Name)
}

// sandboxHost is SandboxHostConfig for the integration tests: under
// gVisor it asks for runsc, as a user of gVisor would.
func sandboxHost(opts dockerpool.SandboxOptions) *container.HostConfig {
	if underGVisor() {
		opts.Runtime = "runsc"
	}
	return dockerpool.SandboxHostConfig(opts)
}

// processesInside lists the command lines of the processes in c as ps in
// the container sees them, run as root by a Docker exec of its own (not the
// pool's). Under gVisor, the daemon's top cannot see them: it asks runsc for
// the sandbox's PIDs and looks them up in the host's ps, which shows host
// processes that happen to have the same numbers.
func processesInside(t *testing.T, c *dockerpool.Container) []string {
	t.Helper()
	out := dockerExec(t, c.ID(), "ps", "-o", "args")
	var procs []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n")[1:] { // a header first
		if line = strings.TrimSpace(line); line != "ps -o args" {
			procs = append(procs, line)
		}
	}
	return procs
}

// dockerExec runs cmd in container id as root through the Docker API
// directly, and returns its stdout; it fails the test if cmd fails.
func dockerExec(t *testing.T, id string, cmd ...string) string {
	t.Helper()
	cli := dockerpooltest.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ex, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, User: "0", AttachStdout: true, AttachStderr: true})
	if err != nil {
		t.Fatalf("exec %q in %s: %v", cmd, id[:12], err)
	}
	att, err := cli.ContainerExecAttach(ctx, ex.ID, container.ExecAttachOptions{})
	if err != nil {
		t.Fatalf("attach to %q in %s: %v", cmd, id[:12], err)
	}
	defer att.Close()
	var stdout, stderr bytes.Buffer
	if _, err := stdcopy.StdCopy(&stdout, &stderr, att.Reader); err != nil {
		t.Fatalf("read %q in %s: %v", cmd, id[:12], err)
	}
	info, err := cli.ContainerExecInspect(ctx, ex.ID)
	if err != nil || info.ExitCode != 0 {
		t.Fatalf("%q in %s: exit %d, %v: %s", cmd, id[:12], info.ExitCode, err, stderr.String())
	}
	return stdout.String()
}
