package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The shell command on a real terminal: tmux runs the demo in a pane of its
// own server, the test types with send-keys and reads the screen with
// capture-pane. A screen announces nothing: the test polls it, with a
// deadline.

// TestDemoShellInTmux checks that the shell sees the window's size, follows
// a resize, passes Ctrl-C, and that exit and Ctrl-D come back to the
// prompt, after which the demo quits cleanly.
func TestDemoShellInTmux(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (Debian: apt-get install tmux)")
	}
	bin := buildDemo(t)
	for _, path := range []struct {
		name string
		args []string
	}{{"docker-exec", nil}, {"agent", []string{"-agent"}}} {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			testTmuxShell(t, bin, path.args)
		})
	}
}

func testTmuxShell(t *testing.T, bin string, args []string) {
	cli := dockerpooltest.Client(t) // skips without a daemon
	args = append(imageArgs(t, false), args...)
	name := uniqueName()
	t.Cleanup(func() { dockerpooltest.SweepPool(cli, name) }) // last: after the server is gone
	p := startTmux(t, bin, append([]string{"-name", name, "-min-idle", "1", "-max-idle", "2"}, args...))
	p.waitFor(`dockerpool>`)
	p.keys("shell", "Enter")
	p.waitFor(`Ctrl-D to come back`)
	p.waitFor(`(?m)^/ #`)

	p.keys("stty size", "Enter")
	p.waitFor(`(?m)^` + p.size() + `$`)
	p.run("resize-window", "-t", "demo", "-x", "117", "-y", "37")
	want := p.size()
	// SIGWINCH reaches the demo, which resizes the container's terminal, on
	// its own time: ask until the shell sees it.
	p.retry(want, func() { p.keys("stty size", "Enter") }, `(?m)^`+want+`$`)

	p.keys("sleep 3600", "Enter")
	p.waitFor(`sleep 3600`)
	p.keys("C-c") // to the shell's program, not to the demo
	p.keys("echo $((6*7))", "Enter")
	p.waitFor(`(?m)^42$`)
	p.keys("exit", "Enter")
	p.waitFor(`shell exited with code 0; back in the demo\s+dockerpool>`)

	p.keys("shell", "Enter")
	p.waitFor(`(?s)back in the demo.*Ctrl-D to come back.*\n/ #`)
	p.keys("C-d")
	p.waitFor(`(?s)back in the demo.*back in the demo\s+dockerpool>`)
	p.keys("quit", "Enter")
	p.waitFor(`is left; bye\s+DEMO-EXIT=0`)
	dockerpooltest.AssertClean(t, cli, name)
}

// tmuxPane is the demo running in a tmux server of the test's own.
type tmuxPane struct {
	t      *testing.T
	socket string
}

// startTmux starts a tmux server with one window, 100x30, running the demo;
// the pane stays when the demo exits and shows its exit code. The cleanup
// kills the server.
func startTmux(t *testing.T, bin string, args []string) *tmuxPane {
	t.Helper()
	p := &tmuxPane{t: t, socket: "dockerpool-" + uniqueName()}
	dir, err := os.Getwd() // the agent is built from this module
	if err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("%q %s; echo DEMO-EXIT=$?; exec sleep 3600", bin, strings.Join(args, " "))
	p.run("-f", "/dev/null", "new-session", "-d", "-s", "demo", "-x", "100", "-y", "30", "-c", dir, script)
	t.Cleanup(func() {
		t.Logf("tmux screen at the end:\n%s", p.screen())
		socket := strings.TrimSpace(p.run("display-message", "-p", "#{socket_path}"))
		p.run("kill-server")
		_ = os.Remove(socket) // tmux 3.3 leaves it
	})
	return p
}

func (p *tmuxPane) run(args ...string) string {
	p.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", p.socket}, args...)...).CombinedOutput()
	if err != nil {
		p.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func (p *tmuxPane) keys(keys ...string) {
	p.t.Helper()
	p.run(append([]string{"send-keys", "-t", "demo"}, keys...)...)
}

// screen is what the pane shows, and its history.
func (p *tmuxPane) screen() string {
	p.t.Helper()
	return p.run("capture-pane", "-p", "-J", "-S", "-1000", "-t", "demo")
}

// size is the pane's size as stty size prints it: "rows cols".
func (p *tmuxPane) size() string {
	p.t.Helper()
	return strings.TrimSpace(p.run("display-message", "-p", "-t", "demo", "#{pane_height} #{pane_width}"))
}

// waitFor polls the screen until it matches re, and fails the test after a
// minute (the first warm-up of a pool, the agent's build).
func (p *tmuxPane) waitFor(re string) {
	p.t.Helper()
	if !p.within(time.Minute, re) {
		p.t.Fatalf("the screen did not show %s within a minute:\n%s", re, p.screen())
	}
}

// within polls the screen for up to d.
func (p *tmuxPane) within(d time.Duration, re string) bool {
	p.t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(d)
	for !rx.MatchString(p.screen()) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return true
}

// retry does act until the screen matches re, up to ten times a second
// apart.
func (p *tmuxPane) retry(what string, act func(), re string) {
	p.t.Helper()
	for range 10 {
		act()
		if p.within(time.Second, re) {
			return
		}
	}
	p.t.Fatalf("the screen did not show %s (%s):\n%s", re, what, p.screen())
}
