package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The examples run in the test suite against the real daemon. They use the
// tiny busybox image that dockerpooltest builds offline; in your program,
// name your own image (for example "python:3.12-alpine").

func exampleImage() string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	image, err := dockerpooltest.LocalImage(ctx)
	if err != nil {
		log.Fatal(err)
	}
	return image
}

func ExampleNew() {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:    "example-new",
		Network: dockerpool.NetworkConfig{Name: "none"}, // no network at all
		Image:   dockerpool.ImageConfig{Name: exampleImage()},
		HostConfig: &container.HostConfig{
			NetworkMode: "none",
			Resources:   container.Resources{Memory: 128 << 20, NanoCPUs: 500_000_000},
		},
		MinIdle: 2,
		MaxIdle: 4,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx)

	// Wait for the pool to warm up before taking traffic.
	if err := pool.WaitIdle(ctx, 2); err != nil {
		log.Fatal(err)
	}
	fmt.Println("idle containers:", pool.IdleCount())
	// Output: idle containers: 2
}

func ExamplePool_Acquire() {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:       "example-acquire",
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
		Image:      dockerpool.ImageConfig{Name: exampleImage()},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx)

	c, err := pool.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	// The container is ours until Return: run as many commands as needed.
	res, err := c.ExecStd(ctx, []string{"sh", "-c", "echo hello from busybox; exit 3"},
		dockerpool.ExecOptions{Timeout: 5 * time.Second})
	if err != nil {
		log.Fatal(err) // Docker failed, or the timeout killed the command
	}
	fmt.Printf("exit %d: %s", res.ExitCode, res.Stdout)

	// Return puts it back on the idle stack for the next caller.
	if err := pool.Return(ctx, c); err != nil {
		log.Fatal(err)
	}
	// Output: exit 3: hello from busybox
}

func ExampleContainer_ExecStream() {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:       "example-stream",
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
		Image:      dockerpool.ImageConfig{Name: exampleImage()},
		MinIdle:    1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx)

	c, err := pool.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Return(ctx, c)

	// Stdin is fed to the command and closed at EOF; stdout is written to
	// os.Stdout as it arrives; stderr is discarded (nil writer).
	input := strings.NewReader("banana\napple\ncherry\n")
	code, err := c.ExecStream(ctx, []string{"sort"}, os.Stdout, nil, dockerpool.ExecOptions{Stdin: input})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("exit code:", code)
	// Output:
	// apple
	// banana
	// cherry
	// exit code: 0
}

func ExamplePool_Shutdown() {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:       "example-shutdown",
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
		Image:      dockerpool.ImageConfig{Name: exampleImage()},
		MinIdle:    3,
	})
	if err != nil {
		log.Fatal(err)
	}
	if err := pool.WaitIdle(ctx, 3); err != nil {
		log.Fatal(err)
	}
	held, err := pool.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		// A holder finishing its work while Shutdown waits for it.
		_, _ = held.Exec(ctx, []string{"true"})
		_ = pool.Return(ctx, held)
	}()

	// Shutdown waits for containers in use until its ctx ends, then removes
	// them anyway. Either way nothing of the pool is left.
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := pool.Shutdown(sctx); err != nil {
		log.Fatal(err)
	}
	_, err = pool.Acquire(ctx)
	fmt.Println(err)
	fmt.Println("removed at shutdown:", pool.Stats().RemovedBy[dockerpool.ReasonShutdown] > 0)
	// Output:
	// dockerpool: pool is shut down
	// removed at shutdown: true
}

// A judge's round: the submission and its input go into the sandbox's /tmp
// (a tmpfs on a read-only root, where docker cp cannot write), the program
// runs as nobody, and its answer comes back.
func ExampleContainer_WriteFile() {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:            "example-files",
		Network:         dockerpool.NetworkConfig{Name: "none"},
		Image:           dockerpool.ImageConfig{Name: exampleImage()},
		HostConfig:      dockerpool.SandboxHostConfig(dockerpool.SandboxOptions{}),
		ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		MinIdle:         1,
		MaxUses:         1,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx)
	c, err := pool.Acquire(ctx)
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Return(ctx, c)

	if err := c.WriteFile(ctx, "/tmp/solve.sh", []byte("read a b < /tmp/input; echo $((a + b)) > /tmp/answer\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if err := c.WriteFile(ctx, "/tmp/input", []byte("40 2\n"), 0o644); err != nil {
		log.Fatal(err)
	}
	if _, err := c.ExecStd(ctx, []string{"sh", "/tmp/solve.sh"}, dockerpool.ExecOptions{Timeout: 5 * time.Second}); err != nil {
		log.Fatal(err)
	}
	answer, err := c.ReadFile(ctx, "/tmp/answer", 1<<10)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Print(string(answer))
	// Output: 42
}

// verdict maps a run to the statuses judges use (isolate's TO, SG, RE, XX,
// and the memory and output limits): see the README's table.
func verdict(res dockerpool.ExecResult, err error) string {
	switch {
	case errors.Is(err, dockerpool.ErrCPUTimeExceeded), errors.Is(err, dockerpool.ErrExecTimeout):
		return "TO (time limit)"
	case errors.Is(err, dockerpool.ErrOutOfMemory):
		return "ML (memory limit)"
	case errors.Is(err, dockerpool.ErrOutputLimitExceeded):
		return "OL (output limit)"
	case err != nil:
		return "XX (internal error: " + err.Error() + ")"
	case res.Signal != 0:
		return "SG (killed by " + res.Signal.String() + ")"
	case res.ExitCode != 0:
		return fmt.Sprintf("RE (exit code %d)", res.ExitCode)
	}
	return "OK " + strings.TrimSpace(string(res.Stdout))
}

// A judge: each submission runs as nobody in a fresh sandboxed container,
// on the agent path, with limits on CPU time (all its processes together),
// memory, output and the size of the files it writes, and gets a verdict.
func Example_judge() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "judge-agent-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	agent, err := dockerpooltest.BuildAgent(ctx, dir) // or ship it in your image
	if err != nil {
		log.Fatal(err)
	}
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:            "example-judge",
		Network:         dockerpool.NetworkConfig{Name: "none"},
		Image:           dockerpool.ImageConfig{Name: exampleImage()},
		HostConfig:      dockerpool.SandboxHostConfig(dockerpool.SandboxOptions{Memory: 64 << 20}),
		ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		Agent:           &dockerpool.AgentConfig{Binary: agent},
		MinIdle:         2,
		MaxUses:         1, // nobody sees what an earlier submission left
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx)
	limits := dockerpool.ExecOptions{
		CPUTime:     time.Second,
		Timeout:     5 * time.Second, // wall time, for a program that sleeps
		Limit:       4 << 10,         // output bytes
		MaxFileSize: 1 << 20,
	}
	for _, submission := range []string{
		"echo 42",
		"while :; do :; done",
		"head -c 100m /dev/zero | tail",
		"yes",
		"kill -SEGV $$",
		"exit 3",
	} {
		c, err := pool.Acquire(ctx)
		if err != nil {
			log.Fatal(err)
		}
		res, err := c.ExecStd(ctx, []string{"sh", "-c", submission}, limits)
		fmt.Printf("%-32s %s\n", submission, verdict(res, err))
		pool.Return(ctx, c)
	}
	// Output:
	// echo 42                          OK 42
	// while :; do :; done              TO (time limit)
	// head -c 100m /dev/zero | tail    ML (memory limit)
	// yes                              OL (output limit)
	// kill -SEGV $$                    SG (killed by segmentation fault)
	// exit 3                           RE (exit code 3)
}
