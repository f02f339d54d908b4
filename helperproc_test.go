package dockerpool_test

import (
	"bufio"
	"bytes"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/testwait"
)

// helperProcess is this test binary run again as a helper process (one a
// test can crash with SIGKILL): TestMain sees DOCKERPOOL_HELPER_POOL in its
// environment and runs holdAPool instead of the tests. It never outlives the
// test that started it:
//
//   - it is killed and waited for at the test's cleanup, whatever happened;
//   - the kernel kills it when the test binary dies, go test's -timeout
//     included (Pdeathsig);
//   - it exits by itself after helperTimeout, in case both are missed;
//   - its stdout and stderr are pipes that this process reads, never the
//     test binary's own: an orphan holding go test's stdout open would keep
//     go test from returning after the test binary is gone.
type helperProcess struct {
	cmd      *exec.Cmd
	lines    chan string   // its stdout, line by line; closed at EOF
	exited   chan struct{} // closed once Wait returned
	stop     chan struct{} // closed by kill: nobody reads lines any more
	stopOnce sync.Once
	stderr   lockedBuffer
}

// helperTimeout bounds the helper's life.
const helperTimeout = 3 * time.Minute

// startHelper runs the helper process with env added to the environment.
func startHelper(t *testing.T, env ...string) *helperProcess {
	t.Helper()
	h := &helperProcess{lines: make(chan string), exited: make(chan struct{}), stop: make(chan struct{})}
	// No test would run should TestMain not see the variable.
	h.cmd = exec.Command(os.Args[0], "-test.run=^$")
	h.cmd.Env = append(os.Environ(), env...)
	h.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// Not *os.File writers: os/exec copies from pipes of its own, and Wait
	// returns only once all output is copied (or WaitDelay after the exit,
	// should something else hold the pipes open).
	pr, pw := io.Pipe()
	h.cmd.Stdout = pw
	h.cmd.Stderr = &h.stderr
	h.cmd.WaitDelay = 5 * time.Second
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start the helper process: %v", err)
	}
	go func() {
		_ = h.cmd.Wait()
		_ = pw.Close()
		close(h.exited)
	}()
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case h.lines <- sc.Text():
			case <-h.stop: // drain, so that the helper never blocks on a write
			}
		}
	}()
	t.Cleanup(func() {
		h.kill(t)
		if t.Failed() {
			t.Logf("helper process: stderr:\n%s", h.stderr.String())
		}
	})
	return h
}

// expect waits for a line of the helper's stdout that starts with word and
// returns its fields. It fails the test on a line starting with ERROR, when
// the helper exits first, or after within.
func (h *helperProcess) expect(t *testing.T, word string, within time.Duration) []string {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	var seen []string
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				t.Fatalf("the helper process ended before printing %s; its output:\n%s\nstderr:\n%s", word, strings.Join(seen, "\n"), h.stderr.String())
			}
			seen = append(seen, line)
			f := strings.Fields(line)
			if len(f) > 0 && f[0] == word {
				return f
			}
			if len(f) > 0 && f[0] == "ERROR" {
				t.Fatalf("the helper process failed: %s", line)
			}
		case <-deadline.C:
			t.Fatalf("the helper process printed no %s line within %v; its output:\n%s\nstderr:\n%s", word, within, strings.Join(seen, "\n"), h.stderr.String())
		}
	}
}

// kill sends SIGKILL and waits until the process is gone. It can be called
// more than once.
func (h *helperProcess) kill(t *testing.T) {
	t.Helper()
	h.stopOnce.Do(func() { close(h.stop) })
	select {
	case <-h.exited:
		return
	default:
	}
	_ = h.cmd.Process.Signal(syscall.SIGKILL)
	testwait.Recv(t, h.exited, 30*time.Second, "the end of the killed helper process")
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
