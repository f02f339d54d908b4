package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The README shows this program; the test keeps the two identical and runs
// it as a user would.
func TestQuickstartIsTheREADMEsAndRuns(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile("main.go")
	if err != nil {
		t.Fatal(err)
	}
	// The README quotes main.go from "package main" on.
	body := src[bytes.Index(src, []byte("package main")):]
	if !bytes.Contains(readme, body) {
		t.Fatal("README.md's quick start differs from examples/quickstart/main.go: copy main.go (from `package main`) into the README")
	}
	dockerpooltest.Client(t) // skip (or, under CI, fail) without a daemon
	dockerpooltest.Image(t)  // the same: the program builds this image too
	bin := filepath.Join(t.TempDir(), "quickstart")
	// Built, then run, rather than go run: a deadline that kills "go run"
	// would leave the program itself running.
	run(t, 3*time.Minute, "go", "build", "-o", bin, ".")
	out := run(t, time.Minute, bin)
	if !strings.Contains(out, `exit 0, "hello from Linux\n"`) {
		t.Fatalf("unexpected output: %s", out)
	}
	t.Logf("%s", out)
	dockerpooltest.AssertClean(t, dockerpooltest.Client(t), "quickstart")
}

// run runs a command and returns its output. The command is killed after
// within, and if the test binary dies first (Pdeathsig); the test fails when
// it does not succeed.
func run(t *testing.T, within time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second // even if something holds its output open
	out, err := cmd.CombinedOutput()
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("%s %s did not finish within %v (killed); output:\n%s", name, strings.Join(args, " "), within, out)
	}
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
