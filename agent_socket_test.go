package dockerpool_test

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The agent's socket (AgentConfig.Socket), beside the attach stream: the
// rest of the agent tests run on the socket on this machine's daemons and
// on the attach stream under gVisor (agentSocketHere).

func TestAgentSocketCarriesTheSessionOfASandboxAndLeavesNothingOnTheHost(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{
		MinIdle:         1,
		HostConfig:      sandboxHost(dockerpool.SandboxOptions{}),
		ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		Agent:           &dockerpool.AgentConfig{Binary: dockerpooltest.Agent(t), Socket: true},
	})
	c := held(t, p)
	if underGVisor() {
		// A sandbox does not reach the host's sockets: the pool keeps the
		// attach stream, whatever Socket says.
		is.True(!dockerpool.OnAgentSocket(c))
		res, err := c.Exec(bg(t), []string{"sh", "-c", "echo on the attach stream"})
		is.NoErr(err)
		is.Equal(string(res.Stdout), "on the attach stream\n")
		return
	}
	is.True(dockerpool.OnAgentSocket(c))
	// The commands see neither the socket's path nor the token, and the
	// mount is empty and read-only: the socket is gone once the agent is
	// connected; the empty directory goes with the container.
	res, err := c.Exec(bg(t), []string{"sh", "-c", `echo "[$DOCKERPOOL_AGENT_SOCKET$DOCKERPOOL_AGENT_TOKEN]"; ls -A /.dockerpool-socket; touch /.dockerpool-socket/x 2>/dev/null || echo read-only`})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "[]\nread-only\n")
	is.NoErr(c.WriteFile(bg(t), "/tmp/in", []byte("through the socket"), 0o644))
	got, err := c.ReadFile(bg(t), "/tmp/in", 1<<10)
	is.NoErr(err)
	is.Equal(string(got), "through the socket")
	// Nor is anything of it left on this machine.
	info, ok := inspect(t, c.ID())
	is.True(ok)
	source := ""
	for _, m := range info.Mounts {
		if m.Destination == "/.dockerpool-socket" {
			source = m.Source
		}
	}
	is.True(source != "")
	left, err := os.ReadDir(source)
	is.NoErr(err)
	is.Equal(len(left), 0) // no socket on the host either
	// Docker's archive API mounts the directory again for a copy (a
	// CopyFrom of the read-only root goes that way).
	var tarball bytes.Buffer
	is.NoErr(c.CopyFrom(bg(t), "/etc/passwd", &tarball, 1<<20))
	is.True(tarball.Len() > 0)
	is.NoErr(p.Remove(bg(t), c))
	waitGone(t, c.ID(), 10*time.Second)
	_, err = os.Stat(source)
	is.True(errors.Is(err, os.ErrNotExist)) // gone with the container
}

func TestAgentSocketOffOrUnreachableKeepsTheAttachStream(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		socket bool
		env    []string
	}{
		{"off", false, nil},
		// Docker keeps the last of two settings of a variable: this one,
		// after the pool's, where no socket is.
		{"unreachable", true, []string{"DOCKERPOOL_AGENT_SOCKET=/.dockerpool-socket/none.sock"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			cfg := execPaths[1].config(t, dockerpool.Config{MinIdle: 1, ContainerConfig: &container.Config{Env: tc.env}})
			cfg.Agent.Socket = tc.socket && agentSocketHere()
			c := held(t, warm(t, cfg))
			is.True(!dockerpool.OnAgentSocket(c))
			res, err := c.Exec(bg(t), []string{"sh", "-c", "echo on the attach stream"})
			is.NoErr(err)
			is.Equal(string(res.Stdout), "on the attach stream\n")
		})
	}
}
