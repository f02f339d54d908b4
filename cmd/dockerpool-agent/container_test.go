package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// TestInContainer runs the agent as the main process of a container, as the
// pool does, and talks to it over docker run's stdin and stdout. It needs
// Docker's CLI and daemon (local: the agent is bind-mounted) and an image
// with a shell: dockerpooltest's busybox image, or DOCKERPOOL_AGENT_IMAGE.
// Without a daemon it is skipped, or fails under CI.
func TestInContainer(t *testing.T) {
	image := os.Getenv("DOCKERPOOL_AGENT_IMAGE")
	if image == "" {
		image = dockerpooltest.Image(t)
	}
	// As PID 1, and under docker-init as the pool runs it (HostConfig.Init):
	// there the agent is the subreaper of its commands' orphans.
	for _, init := range []bool{false, true} {
		t.Run(fmt.Sprintf("init=%v", init), func(t *testing.T) {
			t.Parallel()
			name := "dockerpool-agent-test-" + newToken()[:12]
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				_ = exec.CommandContext(ctx, "docker", "rm", "-f", name).Run()
			})
			args := []string{"run", "--rm", "-i", "--name", name, "--log-driver", "none",
				"--label", dockerpooltest.LabelRun + "=" + dockerpooltest.RunID(),
				"-v", agentBin + ":/dockerpool-agent:ro"}
			if init {
				args = append(args, "--init")
			}
			c := startClient(t, exec.Command("docker", append(args, image, "/dockerpool-agent")...))
			t.Logf("hello: %+v", c.hello)
			if (c.hello.PID == 1) == init || c.hello.Version != agentproto.Version {
				t.Errorf("hello %+v", c.hello)
			}
			inContainer(t, c)
		})
	}
}

func inContainer(t *testing.T, c *client) {

	// No Hello from us: the agent runs commands anyway.
	r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "hi"}}, nil)
	t.Logf("echo hi: stdout %q, exit %+v", r.stdout, r.exit)
	if string(r.stdout) != "hi\n" || r.exit.Code != 0 {
		t.Errorf("echo: %q %+v", r.stdout, r.exit)
	}
	r = c.run(agentproto.ExecMsg{Argv: []string{"nosuchcommand"}}, nil)
	t.Logf("nosuchcommand: stderr %q, exit %+v", r.stderr, r.exit)
	if r.exit.Code != 127 {
		t.Errorf("not found: %+v", r.exit)
	}
	r = c.run(agentproto.ExecMsg{Argv: []string{"id"}, User: "nobody"}, nil)
	t.Logf("id as nobody: %q %+v", r.stdout, r.exit)

	r = c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "sleep 7800 & setsid sleep 7801 & (setsid sleep 7803 >/dev/null 2>&1 &); sleep 7802"}, TimeoutMS: 300}, nil)
	t.Logf("timeout: exit %+v", r.exit)
	if !r.exit.TimedOut || r.exit.Survivors != 0 {
		t.Errorf("timeout: %+v", r.exit)
	}
	// An orphan that dies later becomes the agent's zombie, and is reaped.
	c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "sleep 0.1 >/dev/null 2>&1 &"}}, nil)
	c.run(agentproto.ExecMsg{Argv: []string{"sleep", "0.5"}}, nil)
	r = c.run(agentproto.ExecMsg{Argv: []string{"ps", "-o", "pid,ppid,stat,args"}}, nil)
	t.Logf("ps after the timeout and an orphan:\n%s", r.stdout)
	if strings.Contains(string(r.stdout), "sleep") || strings.Contains(string(r.stdout), "Z ") {
		t.Errorf("leftovers or zombies")
	}

	c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "touch /tmp/a /tmp/b; mkdir -p /tmp/d/e; sleep 7804 >/dev/null 2>&1 &"}}, nil)
	id := c.id()
	c.sendJSON(agentproto.Reset, id, agentproto.ResetMsg{EmptyDirs: []string{"/tmp"}})
	f := c.next(id)
	t.Logf("reset: %s", f.Payload)
	r = c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "ls -A /tmp; ps -o pid,stat,args"}}, nil)
	t.Logf("after reset:\n%s", r.stdout)
	if strings.Contains(string(r.stdout), "sleep") || strings.Contains(string(r.stdout), "\na\n") {
		t.Errorf("reset left something")
	}
}
