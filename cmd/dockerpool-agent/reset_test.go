package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

func TestReset(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sub", "deeper"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"a", ".hidden", "sub/b", "sub/deeper/c"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("/etc", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}

	// An exec that ends normally but leaves a process behind (its output
	// redirected: one that held the pipes would keep the exec open).
	r := c.run(sh("sleep 7400 >/dev/null 2>&1 &"), nil)
	if r.exit.Code != 0 || len(live("sleep", "7400")) != 1 {
		t.Fatalf("exit %+v, leftover %v", r.exit, live("sleep", "7400"))
	}
	// And one still running: the reset kills it too.
	running := c.start(sh("echo started; exec sleep 7401"))
	c.waitFor(running, "started")

	id := c.id()
	c.sendJSON(agentproto.Reset, id, agentproto.ResetMsg{EmptyDirs: []string{dir, filepath.Join(dir, "missing")}})
	// The running exec's Exit comes before the ResetDone.
	x := c.wait(running)
	if !x.exit.Killed || x.exit.Code != -1 || !strings.Contains(x.exit.Error, "reset") {
		t.Errorf("running exec: %+v", x.exit)
	}
	f := c.next(id)
	var d agentproto.ResetDoneMsg
	if f.Type != agentproto.ResetDone || f.Decode(&d) != nil {
		t.Fatalf("got %q %s", byte(f.Type), f.Payload)
	}
	if d.Killed < 2 || d.Survivors != 0 || d.Error != "" {
		t.Errorf("reset: %+v", d)
	}
	assertGone(t, "sleep", "7400")
	assertGone(t, "sleep", "7401")
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("dir not emptied: %v %v", entries, err)
	}
	if _, err := os.Stat("/etc/passwd"); err != nil {
		t.Errorf("the symlink's target suffered: %v", err)
	}

	// A reset with nothing to do, and one with a bad directory.
	id = c.id()
	c.sendJSON(agentproto.Reset, id, agentproto.ResetMsg{EmptyDirs: []string{"relative", "/"}})
	f = c.next(id)
	d = agentproto.ResetDoneMsg{}
	if err := f.Decode(&d); err != nil || d.Killed != 0 || d.Survivors != 0 || !strings.Contains(d.Error, "absolute") {
		t.Errorf("reset: %+v", d)
	}
	// The agent still runs commands.
	if r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "ok"}}, nil); string(r.stdout) != "ok\n" {
		t.Errorf("after reset: %q %+v", r.stdout, r.exit)
	}
}
