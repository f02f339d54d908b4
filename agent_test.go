package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// The agent path beyond what the exec tests (run on both paths) cover:
// getting the agent in, an agent that misbehaves, resets, and load.

func TestAgentIsCopiedIntoAPlainImageWhenBinaryIsSet(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, Agent: &dockerpool.AgentConfig{Binary: dockerpooltest.Agent(t)}})
	c := held(t, p)
	res, err := c.Exec(bg(t), []string{"sh", "-c", "echo via the agent; exit 5"})
	is.NoErr(err)
	is.Equal(res.ExitCode, 5)
	is.Equal(string(res.Stdout), "via the agent\n")
	is.True(slices.ContainsFunc(processes(t, c), func(p string) bool { return strings.HasPrefix(p, dockerpool.DefaultAgentPath) }))
}

func TestAgentIsCopiedOntoAVolumeOfAReadOnlySandbox(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{
		MinIdle:         1,
		HostConfig:      sandboxHost(dockerpool.SandboxOptions{}),
		ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		Agent:           &dockerpool.AgentConfig{Binary: dockerpooltest.Agent(t)},
	})
	c := held(t, p)
	res, err := c.Exec(bg(t), []string{"sh", "-c", "id -u; touch /x 2>/dev/null || echo read-only"})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "65534\nread-only\n") // the sandbox holds
	is.True(slices.ContainsFunc(processes(t, c), func(p string) bool { return strings.HasPrefix(p, dockerpool.DefaultReadOnlyAgentPath) }))
	is.NoErr(c.WriteFile(bg(t), "/tmp/in", []byte("x"), 0o644))
	// The agent's volume goes with the container.
	info, ok := inspect(t, c.ID())
	is.True(ok)
	var volume string
	for _, m := range info.Mounts {
		if m.Destination == path.Dir(dockerpool.DefaultReadOnlyAgentPath) {
			volume = m.Name
		}
	}
	is.True(volume != "")
	is.NoErr(p.Remove(bg(t), c))
	waitGone(t, c.ID(), 10*time.Second)
	_, err = dockerpooltest.Client(t).VolumeInspect(bg(t), volume)
	is.True(cerrdefs.IsNotFound(err))
	// A Path in the root cannot become a volume: New says so.
	_, err = dockerpool.New(bg(t), dockerpooltest.Config(t, dockerpool.Config{
		HostConfig: sandboxHost(dockerpool.SandboxOptions{}),
		Agent:      &dockerpool.AgentConfig{Binary: dockerpooltest.Agent(t), Path: "/agent"},
	}))
	is.True(errors.Is(err, dockerpool.ErrInvalidConfig))
}

// fakeAgent builds the busybox image with a script in the agent's place.
func fakeAgent(t *testing.T, script string) string {
	t.Helper()
	ref, err := dockerpooltest.BuildImage(bg(t), dockerpooltest.Client(t), dockerpooltest.ImageOptions{
		Files: map[string][]byte{dockerpool.DefaultAgentPath: []byte("#!/bin/sh\n" + script + "\n")},
	})
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func TestAgentThatMisbehavesAtStartIsAClearErrorAndNothingIsLeft(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, script, want string
	}{
		{"hangs", "exec sleep infinity", "no hello"},
		{"speaks garbage", "echo 'this is not the protocol'; exec sleep infinity", "session with container"},
		{"speaks another version", `printf 'H\000\000\000\000\000\000\000\016{"version":99}'; exec sleep infinity`, "protocol version 99"},
		{"crashes", "exit 3", "container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			is := is.New(t)
			errs := make(chan error, 8)
			p := dockerpooltest.NewPool(t, dockerpool.Config{
				MinIdle: 1,
				Image:   dockerpool.ImageConfig{Name: fakeAgent(t, tc.script)},
				Agent:   &dockerpool.AgentConfig{HandshakeTimeout: time.Second},
				OnError: func(err error) {
					select {
					case errs <- err:
					default:
					}
				},
			})
			select {
			case err := <-errs:
				t.Logf("OnError: %v", err)
				is.True(strings.Contains(err.Error(), tc.want))
			case <-time.After(15 * time.Second):
				t.Fatal("the failing agent was not reported")
			}
			ctx, cancel := context.WithTimeout(bg(t), 5*time.Second)
			defer cancel()
			_, err := p.Acquire(ctx)
			t.Logf("Acquire: %v", err)
			is.True(err != nil) // a clear error, not a container that cannot run anything
			is.True(errors.Is(err, dockerpool.ErrDaemonUnavailable) || errors.Is(err, dockerpool.ErrCreateFailed) || errors.Is(err, context.DeadlineExceeded))
			// NewPool's cleanup checks that no container is left.
		})
	}
}

func TestAgentThatDiesDuringAnExecTakesItsContainerOutOfThePool(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, execPaths[1].config(t, dockerpool.Config{MinIdle: 1}))
	c, err := p.Acquire(bg(t))
	is.NoErr(err)
	errc := make(chan error, 1)
	started := make(chan struct{})
	go func() {
		_, err := c.ExecStream(bg(t), []string{"sh", "-c", "echo up; sleep 1020"}, writerFunc(func(b []byte) (int, error) {
			select {
			case <-started:
			default:
				close(started)
			}
			return len(b), nil
		}), nil, dockerpool.ExecOptions{})
		errc <- err
	}()
	testwait.Recv(t, started, time.Minute, "the command's first output")
	// Kill the agent (the container's main process) from outside.
	is.NoErr(dockerpooltest.Client(t).ContainerKill(bg(t), c.ID(), "SIGKILL"))
	select {
	case err := <-errc:
		t.Logf("Exec: %v", err)
		is.True(errors.Is(err, dockerpool.ErrContainerDead))
	case <-time.After(10 * time.Second):
		t.Fatal("Exec hung after its agent died")
	}
	is.NoErr(p.Return(bg(t), c))
	waitGone(t, c.ID(), 10*time.Second)
	is.NoErr(p.WaitIdle(bg(t), 1)) // replaced
}

func TestAgentResetOnReturnKillsLeftoversAndEmptiesDirectories(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	// MaxIdle 2: room for the refill's container and ours.
	cfg := execPaths[1].config(t, dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	cfg.Agent.ResetOnReturn = true
	cfg.Agent.ResetDirs = []string{"/tmp"}
	p := warm(t, cfg)
	c, err := p.Acquire(bg(t))
	is.NoErr(err)
	// The refill's replacement first: were it still being made when ours
	// comes back from the reset, it would land on top of the idle stack.
	is.NoErr(p.WaitIdle(bg(t), 1))
	// A command that ends normally but leaves a process and a file behind.
	res, err := c.Exec(bg(t), []string{"sh", "-c", "sleep 1021 >/dev/null 2>&1 & touch /tmp/secret"})
	is.NoErr(err)
	is.Equal(res.ExitCode, 0)
	is.Equal(len(strays(t, c, "sleep 1021")), 1)
	is.NoErr(p.Return(bg(t), c))
	is.NoErr(p.WaitIdle(bg(t), 2)) // ours is back, on top
	next, err := p.Acquire(bg(t))
	is.NoErr(err)
	defer p.Return(bg(t), next)
	is.Equal(next.ID(), c.ID()) // kept warm...
	is.Equal(strays(t, next, "sleep 1021"), []string(nil))
	res, err = next.Exec(bg(t), []string{"ls", "-A", "/tmp"})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "") // ...and clean
}

func TestAgentRunsAThousandConcurrentExecsOnTenContainers(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const containers, execs = 10, 1000
	p := warm(t, execPaths[1].config(t, dockerpool.Config{MinIdle: containers, MaxIdle: containers}))
	var held []*dockerpool.Container
	for range containers {
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		held = append(held, c)
	}
	lat := make([]time.Duration, execs)
	var wg sync.WaitGroup
	var failed sync.Map
	start := time.Now()
	for i := range execs {
		wg.Go(func() {
			c := held[i%containers]
			t0 := time.Now()
			res, err := c.Exec(bg(t), []string{"echo", fmt.Sprint(i)})
			lat[i] = time.Since(t0)
			if err != nil || string(res.Stdout) != fmt.Sprintf("%d\n", i) || res.ExitCode != 0 {
				failed.Store(i, fmt.Sprintf("%q %v", res.Stdout, err))
			}
		})
	}
	testwait.Group(t, &wg, 2*time.Minute, "the end of the 1000 concurrent execs")
	wall := time.Since(start)
	failed.Range(func(k, v any) bool {
		t.Errorf("exec %v: %v", k, v)
		return true
	})
	slices.Sort(lat)
	t.Logf("%d concurrent execs on %d containers in %v: p50 %v, p99 %v, max %v", execs, containers, wall.Round(time.Millisecond),
		lat[execs/2].Round(time.Microsecond), lat[execs*99/100].Round(time.Microsecond), lat[execs-1].Round(time.Microsecond))
	for _, c := range held {
		is.True(!c.Tainted())
		is.NoErr(p.Return(bg(t), c))
	}
}
