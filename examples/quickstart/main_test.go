package main

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"

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
	out, err := exec.Command("go", "run", ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go run: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), `exit 0, "hello from Linux\n"`) {
		t.Fatalf("unexpected output: %s", out)
	}
	t.Logf("%s", out)
	dockerpooltest.AssertClean(t, dockerpooltest.Client(t), "quickstart")
}
