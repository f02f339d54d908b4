package dockerpool_test

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInChildProcesses runs, side by side, the two parts of the suite that
// need a test process of their own, each in a child: this test binary run
// again for them alone.
//
//   - GVisor: the exec, agent, sandbox, files, usage and reset tests again,
//     on a private daemon whose default runtime is gVisor's runsc.
//   - BigStreams: the streams of megabytes and of a gigabyte, which measure
//     the heap of their whole process, so that no other test may run in it.
//
// Together they took 150 to 167 s here; one after the other, Go ran them
// alone for 200 s (a gigabyte stream waits on the daemon and the file
// system more than it computes, gVisor's ptrace platform leaves a fifth of
// the CPU idle). Not parallel to the rest: the timing bounds of
// the other tests are for a machine that is not also running these. Go runs
// it before the parallel tests.
func TestInChildProcesses(t *testing.T) {
	if underGVisor() {
		t.Fatal("TestInChildProcesses ran inside the gVisor run's child: the -test.run pattern is wrong")
	}
	t.Run("GVisor", func(t *testing.T) {
		if inBigStreams() {
			t.Fatal("the gVisor run started inside the big streams' child: the -test.run pattern is wrong")
		}
		t.Parallel()
		testGVisor(t)
	})
	t.Run("BigStreams", func(t *testing.T) {
		t.Parallel()
		testBigStreams(t)
	})
}

// child is a run of this test binary for some of its tests alone.
type child struct {
	run, skip string   // -test.run and -test.skip
	env       []string // added to this process's environment
	timeout   time.Duration
}

// runChild runs c and returns its output (-test.v) and how many tests
// passed in it. It fails t when the child fails, runs none, or skips any:
// a skip in a child is a test that did not run.
func runChild(ctx context.Context, t *testing.T, c child) (string, int) {
	t.Helper()
	args := []string{"-test.run=" + c.run, "-test.v", "-test.count=1", "-test.timeout=" + c.timeout.String()}
	if c.skip != "" {
		args = append(args, "-test.skip="+c.skip)
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	b, err := cmd.CombinedOutput()
	out := string(b)
	passed, failed := strings.Count(out, "--- PASS"), strings.Count(out, "--- FAIL")
	t.Logf("child %s: %d tests passed, %d failed, in %v", c.run, passed, failed, time.Since(start).Round(time.Second))
	if err != nil {
		t.Fatalf("the child %s failed: %v\n%s", c.run, err, out)
	}
	if passed == 0 || strings.Contains(out, "--- SKIP") {
		t.Fatalf("in the child %s, tests were skipped or none ran:\n%s", c.run, out)
	}
	return out, passed
}

// bigStreamsEnv marks the child test binary of TestInChildProcesses/BigStreams.
const bigStreamsEnv = "DOCKERPOOL_TEST_BIG_STREAMS"

// inBigStreams says whether this test binary is the big streams' child.
func inBigStreams() bool { return os.Getenv(bigStreamsEnv) != "" }

// bigStreams are the tests that measure the heap of their whole process
// while they stream: run one after the other, alone in a child process.
var bigStreams = []struct {
	name string
	test func(*testing.T)
}{
	{"ExecStreamPassesMegabytesWithoutHoldingThem", execStreamPassesMegabytesWithoutHoldingThem},
	{"FilesStreamAGigabyteEachWayInBoundedMemory", filesStreamAGigabyteEachWayInBoundedMemory},
	{"AgentTakesAGigabyteOfStdinIntoASandboxedCommandThatReadsLate", agentTakesAGigabyteOfStdinIntoASandboxedCommandThatReadsLate},
}

// testBigStreams (TestInChildProcesses/BigStreams) runs bigStreams in a
// child, or, in the child, runs them. To run one in this process instead:
//
//	DOCKERPOOL_TEST_BIG_STREAMS=1 go test -race -run 'TestInChildProcesses/BigStreams/Files' .
func testBigStreams(t *testing.T) {
	if inBigStreams() {
		for _, s := range bigStreams {
			t.Run(s.name, s.test)
		}
		return
	}
	out, _ := runChild(context.Background(), t, child{run: "^TestInChildProcesses$/^BigStreams$", timeout: 6 * time.Minute,
		env: []string{bigStreamsEnv + "=1"}})
	for _, s := range bigStreams {
		if !strings.Contains(out, "--- PASS: TestInChildProcesses/BigStreams/"+s.name+" ") {
			t.Errorf("the big streams' child did not pass %s:\n%s", s.name, out)
		}
	}
	t.Logf("the big streams' child:\n%s", out)
}
