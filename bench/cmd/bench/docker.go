package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dockerpool/dockerpool"
)

// labelBench is put on every container this program creates, pooled or bare,
// with the run's ID as value, so that the final sweep finds them all.
const labelBench = "dockerpool.bench"

// bare makes containers with the Docker API directly, configured like the
// pool's (same image, main process, init and network), so that the two
// differ only by what the pool adds.
type bare struct {
	cli   *client.Client
	image string
	runID string
}

// config is what every bare container is created from.
func (b *bare) config() (*container.Config, *container.HostConfig) {
	yes := true
	return &container.Config{
			Image:  b.image,
			Cmd:    dockerpool.DefaultCmd(),
			Labels: map[string]string{labelBench: b.runID, labelBench + ".kind": "bare"},
		}, &container.HostConfig{
			NetworkMode: "none",
			Init:        &yes,
		}
}

// createStart creates and starts one container and returns its ID. A
// container that was created but failed to start is removed.
func (b *bare) createStart(ctx context.Context) (string, error) {
	cc, hc := b.config()
	resp, err := b.cli.ContainerCreate(ctx, cc, hc, nil, nil, "")
	if err != nil {
		return "", fmt.Errorf("create: %w", err)
	}
	if err := b.cli.ContainerStart(ctx, resp.ID, container.StartOptions{}); err != nil {
		_ = b.remove(context.WithoutCancel(ctx), resp.ID)
		return "", fmt.Errorf("start: %w", err)
	}
	return resp.ID, nil
}

// remove force-removes a container, as the pool does.
func (b *bare) remove(ctx context.Context, id string) error {
	return b.cli.ContainerRemove(ctx, id, container.RemoveOptions{Force: true, RemoveVolumes: true})
}

// execResult is what bareExec learned about one exec.
type execResult struct {
	stdout   string
	code     int
	inspects int // ContainerExecInspect calls until the exec was reported ended
	// How long each phase took.
	create, attach, stream, inspect time.Duration
}

// bareExec is the floor of a command round trip with the Docker API:
// ContainerExecCreate, ContainerExecAttach, the output demultiplexed with
// stdcopy until EOF, then ContainerExecInspect until the exec is no longer
// running, waiting 1ms, 2ms, ... (at most 50ms) between inspects, as the
// pool's Exec does.
func bareExec(ctx context.Context, cli *client.Client, id string, cmd []string) (execResult, error) {
	r := execResult{code: -1}
	t0 := time.Now()
	created, err := cli.ContainerExecCreate(ctx, id, container.ExecOptions{Cmd: cmd, AttachStdout: true, AttachStderr: true})
	if err != nil {
		return r, fmt.Errorf("exec create: %w", err)
	}
	t1 := time.Now()
	r.create = t1.Sub(t0)
	att, err := cli.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return r, fmt.Errorf("exec attach: %w", err)
	}
	t2 := time.Now()
	r.attach = t2.Sub(t1)
	var stdout, stderr bytes.Buffer
	_, err = stdcopy.StdCopy(&stdout, &stderr, att.Reader)
	att.Close()
	if err != nil {
		return r, fmt.Errorf("exec read: %w", err)
	}
	t3 := time.Now()
	r.stream = t3.Sub(t2)
	r.stdout = stdout.String()
	wait := time.Millisecond
	for {
		info, err := cli.ContainerExecInspect(ctx, created.ID)
		r.inspects++
		if err != nil {
			return r, fmt.Errorf("exec inspect: %w", err)
		}
		if !info.Running {
			r.code = info.ExitCode
			r.inspect = time.Since(t3)
			return r, nil
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return r, ctx.Err()
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// dockerRun runs `docker run --rm` through the CLI, with the bare
// containers' settings, and checks that it printed "hi".
func (b *bare) dockerRun(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, "docker", "run", "--rm", "--init", "--network", "none",
		"--label", labelBench+"="+b.runID, "--label", labelBench+".kind=cli",
		b.image, "echo", "hi")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("docker run: %w: %s", err, strings.TrimSpace(string(out)))
	}
	if string(out) != "hi\n" {
		return fmt.Errorf("docker run printed %q", out)
	}
	return nil
}

// parallel runs f(i) for i in [0, n) with at most width running at once, and
// returns the first error.
func parallel(n, width int, f func(i int) error) error {
	sem := make(chan struct{}, width)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for i := range n {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := f(i); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return first
}

// sweep force-removes every container that carries label=value, and
// returns how many it found.
func sweep(cli *client.Client, label, value string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	list, err := cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", label+"="+value)),
	})
	if err != nil {
		return 0, err
	}
	err = parallel(len(list), 8, func(i int) error {
		err := cli.ContainerRemove(ctx, list[i].ID, container.RemoveOptions{Force: true, RemoveVolumes: true})
		if err != nil && !strings.Contains(err.Error(), "No such container") {
			return err
		}
		return nil
	})
	return len(list), err
}
