package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// raceEnabled is set by race_test.go when the tests run with -race; the demo
// binary is then built with -race too, and a data race in it makes it exit
// with a non-zero code, which the tests check.
var raceEnabled bool

// testTimeout bounds each end-to-end test: every wait for output, and for the
// process to exit, ends at the latest then.
const testTimeout = 3 * time.Minute

// TestDemo builds the demo once and drives it as a person would: through its
// standard input and output, then checks with the Docker API that it left
// nothing behind.
func TestDemo(t *testing.T) {
	t.Parallel()
	bin := buildDemo(t)
	t.Run("Help", func(t *testing.T) {
		t.Parallel()
		testHelp(t, bin)
	})
	t.Run("Session", func(t *testing.T) {
		t.Parallel()
		testSession(t, bin)
	})
	t.Run("EndOfInput", func(t *testing.T) {
		t.Parallel()
		testEndOfInput(t, bin)
	})
	t.Run("Interrupt", func(t *testing.T) {
		t.Parallel()
		testInterrupt(t, bin)
	})
	t.Run("Agent", func(t *testing.T) {
		t.Parallel()
		testAgent(t, bin)
	})
	t.Run("Shell", func(t *testing.T) {
		t.Parallel()
		testShell(t, bin)
	})
	t.Run("ShellAgent", func(t *testing.T) {
		t.Parallel()
		testShell(t, bin, "-agent")
	})
}

// testShell runs the shell command on a pipe (a terminal of the default
// size; tmux drives it on a real one, see README): a command in the shell,
// exit, the prompt again, quit.
func testShell(t *testing.T, bin string, args ...string) {
	d := startDemo(t, bin, append(imageArgs(t, false), args...)...)
	d.expect(prompt)
	d.send("shell")
	wantContains(t, "shell", d.expect("Ctrl-D to come back\n"), "shell in warm container ", ", 80x24, started in ")
	d.send("stty size; echo $((6*7))")
	wantContains(t, "stty size", d.expect("42\r\n"), "24 80\r\n")
	d.send("exit 7")
	wantContains(t, "exit", d.expect(prompt), "shell exited with code 7; back in the demo")
	wantContains(t, "stats", d.do("stats"), "in use 0")
	// On a held container, which stays held.
	n := d.acquire()
	d.send("shell " + n)
	wantContains(t, "shell n", d.expect("Ctrl-D to come back\n"), "shell in #"+n+" (container ")
	d.send("exit")
	wantContains(t, "exit", d.expect(prompt), "shell exited with code 0")
	wantContains(t, "held", d.do("held"), "#"+n+": container ")
	d.send("quit")
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d after quit, want 0", code)
	}
	dockerpooltest.AssertClean(t, d.cli, d.name)
}

// testAgent runs commands on the agent path (-agent).
func testAgent(t *testing.T, bin string) {
	d := startDemo(t, bin, append(imageArgs(t, false), "-agent", "-timeout", "2s")...)
	wantContains(t, "banner", d.expect(prompt), "commands via dockerpool-agent")
	wantContains(t, "run echo hi", d.do("run echo hi"), "hi\n", "exit code 0", "cpu ", "peak memory ", " MiB")
	wantContains(t, "run kill -9", d.do("run sh -c 'kill -9 $$'"), "exit code 137 (killed by signal 9: killed)")
	wantContains(t, "run missing command", d.do("run nosuchcommand"), "exit code 127")
	wantError(t, "exec timeout", d.do("run sleep 60"), "timed out")
	wantContains(t, "burst", d.do("burst 10 echo x"), "burst of 10: 10 ok", " 0 errors")
	d.send("quit")
	if code := d.wait(); code != 0 {
		t.Errorf("demo -agent exited with code %d after quit, want 0", code)
	}
	dockerpooltest.AssertClean(t, d.cli, d.name)
}

// testHelp checks -h and a bad flag; it needs no Docker daemon.
func testHelp(t *testing.T, bin string) {
	out, err := boundedCommand(t, time.Minute, bin, "-h").CombinedOutput()
	if err != nil {
		t.Fatalf("demo -h: %v\n%s", err, out)
	}
	wantContains(t, "demo -h", string(out), "Usage:", "interactive prompt",
		"-image", "-name", "-min-idle", "-max-idle", "-network", "-timeout", "-agent")

	out, err = boundedCommand(t, time.Minute, bin, "-min-idle", "4", "-max-idle", "2").CombinedOutput()
	if code := exitCode(err); code != 2 {
		t.Errorf("demo with -min-idle above -max-idle: exit code %d, want 2\n%s", code, out)
	}
	wantContains(t, "demo -min-idle 4 -max-idle 2", string(out), "-max-idle (2) must be at least -min-idle (4)")
}

// testSession types the commands of a whole tour, then quit.
func testSession(t *testing.T, bin string) {
	d := startDemo(t, bin, append(imageArgs(t, true), "-timeout", "2s")...)
	banner := d.expect(prompt)
	wantContains(t, "banner", banner, "image: ", `pool "`+d.name+`"`, "pool warm: idle 2 of 2")
	if !d.customImage {
		wantContains(t, "banner", banner, "dockerpool-busybox", "built offline")
	}

	wantContains(t, "help", d.do("help"), "run <command...>", "acquire", "exec <n> <command...>",
		"return <n>", "remove <n>", "stats", "burst <N> <command...>", "kill-idle", "quit")

	out := d.do("run echo hi")
	wantContains(t, "run echo hi", out, "hi\n", "exit code 0", "(acquire ", ", exec ", ", return ", "wall ", "measured on the agent path")

	wantContains(t, "run exit 3", d.do("run sh -c 'exit 3'"), "exit code 3 ")
	out = d.do(`run sh -c "echo out; echo oops >&2; exit 4"`)
	wantContains(t, "run with stderr", out, "out\n", "[stderr] oops\n", "exit code 4 ")
	wantContains(t, "run missing command", d.do("run nosuchcommand"), "exit code 127 (command not found)")

	n := d.acquire()
	wantContains(t, "exec", d.do("exec "+n+" echo held"), "held\n", "exit code 0")
	wantContains(t, "return", d.do("return "+n), "returned #"+n+" ")
	wantError(t, "return twice", d.do("return "+n), "no container #"+n+" is held")

	// Files: put acquires a container and holds it; get reads it back.
	local := filepath.Join(t.TempDir(), "input.txt")
	if err := os.WriteFile(local, []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wantError(t, "get with nothing held", d.do("get /tmp/x"), "no container held")
	wantContains(t, "put", d.do("put "+local+" /tmp/input.txt"), "acquired #", "wrote 14 bytes to /tmp/input.txt")
	wantContains(t, "get", d.do("get /tmp/input.txt"), "from the host\n", "read 14 bytes")
	wantContains(t, "a program reads it", d.do("exec 2 cat /tmp/input.txt"), "from the host\n", "exit code 0")
	wantError(t, "get of nothing", d.do("get /tmp/nope"), `read file "/tmp/nope"`)
	wantError(t, "put usage", d.do("put onlyone"), "usage: put <local-file> <container-path>")
	wantContains(t, "return the file's container", d.do("return 2"), "returned #2 ")

	wantError(t, "bad command", d.do("frobnicate now"), `unknown command "frobnicate"`)
	wantError(t, "bad number", d.do("exec x echo"), `"x" is not a container number`)
	wantError(t, "bad burst", d.do("burst lots echo"), "burst size must be a number")
	wantError(t, "bad quoting", d.do("run echo 'oops"), "unterminated single quote")
	wantError(t, "usage", d.do("exec"), "usage: exec <n> <command...>")
	wantError(t, "exec timeout", d.do("run sleep 60"), "timed out")

	wantContains(t, "stats", d.do("stats"), "idle ", "in use ", "creating ", "waiting ", "total ",
		"acquires ", "waits ", "created ", "create errors ", "adopted ", "removed ", "docker daemon: healthy")

	out = d.do("burst 5 echo x")
	wantContains(t, "burst", out, "burst of 5: 5 ok", " 0 errors", "p50 ", "p95 ", "max ")

	out = d.do("kill-idle")
	if m := regexp.MustCompile(`killed (\d+) idle`).FindStringSubmatch(out); m == nil || m[1] == "0" {
		t.Errorf("kill-idle killed nothing:\n%s", out)
	}
	wantContains(t, "kill-idle", out, "pool healed in ")
	if !regexp.MustCompile(`removed \d+ \(.*died [1-9]`).MatchString(d.do("stats")) {
		t.Errorf("stats after kill-idle shows no container removed as died")
	}

	d.send("quit")
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d after quit, want 0", code)
	}
	wantContains(t, "quit", d.stdout.unread(), "quit: shutting down", "removed ", "is left; bye")
	dockerpooltest.AssertClean(t, d.cli, d.name)
}

// testEndOfInput closes the input (Ctrl-D) while a container is held.
func testEndOfInput(t *testing.T, bin string) {
	d := startDemo(t, bin, imageArgs(t, false)...)
	d.expect(prompt)
	n := d.acquire()
	if err := d.stdin.Close(); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d at the end of input, want 0", code)
	}
	wantContains(t, "end of input", d.stdout.unread(),
		"end of input: shutting down", "returned #"+n+" ", "removed ", "is left; bye")
	dockerpooltest.AssertClean(t, d.cli, d.name)
}

// testInterrupt sends SIGINT (Ctrl-C) while the prompt waits.
func testInterrupt(t *testing.T, bin string) {
	d := startDemo(t, bin, imageArgs(t, false)...)
	d.expect(prompt)
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(); code != 0 {
		t.Errorf("demo exited with code %d after SIGINT, want 0", code)
	}
	wantContains(t, "SIGINT", d.stdout.unread(), "interrupted: shutting down", "removed ", "is left; bye")
	dockerpooltest.AssertClean(t, d.cli, d.name)
}

// buildDemo builds the demo binary into a temporary directory.
func buildDemo(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "demo")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, ".")
	out, err := boundedCommand(t, 3*time.Minute, "go", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	t.Logf("go %s", strings.Join(args, " "))
	return bin
}

// imageArgs returns the -image flag the demo should get. It skips the test
// when no test image can be had (or fails under CI). With useDefault the demo
// picks its image itself, as it does for a person, unless the environment
// names another test image.
func imageArgs(t *testing.T, useDefault bool) []string {
	img := dockerpooltest.Image(t) // also builds the busybox image the demo will find
	if useDefault && os.Getenv("DOCKERPOOL_TEST_IMAGE") == "" {
		return nil
	}
	return []string{"-image", img}
}

// demo is a running demo process and what it printed.
type demo struct {
	t           *testing.T
	cli         *client.Client
	name        string // the pool's name, unique to the test
	customImage bool   // -image was given
	cmd         *exec.Cmd
	stdin       io.WriteCloser
	stdout      *transcript
	stderr      *transcript
	exited      chan struct{} // closed when the process has exited
	deadline    time.Time
}

// startDemo starts the demo with a pool name unique to the test, MinIdle 2
// and MaxIdle 4, plus args. The pool's containers are removed when the test
// ends, whatever happened.
func startDemo(t *testing.T, bin string, args ...string) *demo {
	t.Helper()
	d := &demo{
		t:        t,
		cli:      dockerpooltest.Client(t), // skips without a daemon, fails under CI
		name:     uniqueName(),
		stdout:   newTranscript(),
		stderr:   newTranscript(),
		exited:   make(chan struct{}),
		deadline: time.Now().Add(testTimeout),
	}
	if dl, ok := t.Deadline(); ok && dl.Add(-10*time.Second).Before(d.deadline) {
		d.deadline = dl.Add(-10 * time.Second)
	}
	for _, a := range args {
		d.customImage = d.customImage || a == "-image"
	}
	// Registered first, so it runs last: after the process is gone.
	t.Cleanup(func() { dockerpooltest.SweepPool(d.cli, d.name) })

	all := append([]string{"-name", d.name, "-min-idle", "2", "-max-idle", "4"}, args...)
	d.cmd = exec.Command(bin, all...)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	d.cmd.WaitDelay = 5 * time.Second                                    // Wait returns even if its pipes stay open
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	stdin, err := d.cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	d.stdin = stdin
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start demo: %v", err)
	}
	go func() {
		_ = d.cmd.Wait() // the exit code is read from ProcessState
		close(d.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = d.cmd.Process.Kill()
			select {
			case <-d.exited:
			case <-time.After(30 * time.Second):
				t.Errorf("the demo (pid %d) did not exit within 30s of SIGKILL", d.cmd.Process.Pid)
			}
		}
		t.Logf("demo %s\nstdout:\n%s\nstderr:\n%s", strings.Join(all, " "), d.stdout, d.stderr)
	})
	return d
}

// send types one line.
func (d *demo) send(line string) {
	d.t.Helper()
	if _, err := io.WriteString(d.stdin, line+"\n"); err != nil {
		d.t.Fatalf("type %q: %v", line, err)
	}
}

// do types a command and returns what it printed before the next prompt,
// without the echo of the command itself.
func (d *demo) do(line string) string {
	d.t.Helper()
	d.send(line)
	out := d.expect(prompt)
	rest, ok := strings.CutPrefix(out, line+"\n")
	if !ok {
		d.t.Fatalf("the demo did not echo %q; it printed:\n%s", line, out)
	}
	return rest
}

// acquire runs the acquire command and returns the number it printed.
func (d *demo) acquire() string {
	d.t.Helper()
	out := d.do("acquire")
	m := regexp.MustCompile(`acquired #(\d+): container [0-9a-f]{12} `).FindStringSubmatch(out)
	if m == nil {
		d.t.Fatalf("acquire printed no number and container ID:\n%s", out)
	}
	return m[1]
}

// expect reads the output up to marker and returns what came before it. It
// fails the test when the process exits or the deadline passes first.
func (d *demo) expect(marker string) string {
	d.t.Helper()
	timer := time.NewTimer(time.Until(d.deadline))
	defer timer.Stop()
	for {
		if out, ok := d.stdout.next(marker); ok {
			return out
		}
		select {
		case <-d.stdout.written:
		case <-d.exited:
			if out, ok := d.stdout.next(marker); ok {
				return out
			}
			d.t.Fatalf("the demo exited (code %d) before printing %q; it printed:\n%s",
				d.cmd.ProcessState.ExitCode(), marker, d.stdout.unread())
		case <-timer.C:
			d.t.Fatalf("timed out waiting for %q; the demo printed:\n%s", marker, d.stdout.unread())
		}
	}
}

// wait waits for the process to exit and returns its exit code.
func (d *demo) wait() int {
	d.t.Helper()
	select {
	case <-d.exited:
		return d.cmd.ProcessState.ExitCode()
	case <-time.After(time.Until(d.deadline)):
		d.t.Fatalf("the demo did not exit; it printed:\n%s", d.stdout.unread())
		return -1
	}
}

// transcript collects what the demo writes to a stream, and lets the test
// consume it marker by marker.
type transcript struct {
	mu      sync.Mutex
	buf     strings.Builder
	read    int           // bytes consumed by next
	written chan struct{} // signalled after each write
}

func newTranscript() *transcript {
	return &transcript{written: make(chan struct{}, 1)}
}

// Write appends p and wakes up a reader.
func (tr *transcript) Write(p []byte) (int, error) {
	tr.mu.Lock()
	tr.buf.Write(p)
	tr.mu.Unlock()
	select {
	case tr.written <- struct{}{}:
	default:
	}
	return len(p), nil
}

// next consumes the output up to and including marker, and returns what
// came before marker. It reports false when marker has not been written yet.
func (tr *transcript) next(marker string) (string, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	rest := tr.buf.String()[tr.read:]
	i := strings.Index(rest, marker)
	if i < 0 {
		return "", false
	}
	tr.read += i + len(marker)
	return rest[:i], true
}

// unread returns what has not been consumed yet.
func (tr *transcript) unread() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String()[tr.read:]
}

// String returns everything written.
func (tr *transcript) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.buf.String()
}

// uniqueName returns a pool name no other test or run uses.
func uniqueName() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "demo-test-" + hex.EncodeToString(b[:])
}

// wantContains checks that out contains every one of want.
func wantContains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, out)
		}
	}
}

// wantError checks that out is exactly one error line that contains msg.
func wantError(t *testing.T, what, out, msg string) {
	t.Helper()
	var errLines []string
	for line := range strings.Lines(out) {
		if strings.HasPrefix(line, "error: ") {
			errLines = append(errLines, line)
		}
	}
	if len(errLines) != 1 || !strings.Contains(errLines[0], msg) {
		t.Errorf("%s: want one line %q containing %q, got:\n%s", what, "error: ...", msg, out)
	}
}

// exitCode returns the exit code an exec.Cmd error carries, 0 for nil.
func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// boundedCommand is exec.Command for a short-lived command: it is killed after
// within, or when the test binary dies (Pdeathsig), and its Wait returns
// even if something it started holds its output open.
func boundedCommand(t *testing.T, within time.Duration, name string, args ...string) *exec.Cmd {
	ctx, cancel := context.WithTimeout(context.Background(), within)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}
