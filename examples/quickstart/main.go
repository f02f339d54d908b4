// Command quickstart is the README's quick start: start a pool, run a
// command in a warm container, give it back, shut down.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

func main() {
	ctx := context.Background()

	// A tiny busybox image built locally, so that this runs without a
	// registry. In your program, name your own image: "python:3.12-alpine".
	image, err := dockerpooltest.LocalImage(ctx)
	if err != nil {
		log.Fatal(err)
	}

	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name:       "quickstart",
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"}, // no network inside
		Image:      dockerpool.ImageConfig{Name: image},
		MinIdle:    2,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Shutdown(ctx) // removes every container the pool made

	if err := pool.WaitIdle(ctx, 2); err != nil { // warm up
		log.Fatal(err)
	}

	start := time.Now()
	c, err := pool.Acquire(ctx) // a warm container, for us alone
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.ExecStd(ctx, []string{"sh", "-c", "echo hello from $(uname -s)"},
		dockerpool.ExecOptions{Timeout: 5 * time.Second, Limit: 64 << 10})
	if err != nil {
		log.Fatal(err)
	}
	if err := pool.Return(ctx, c); err != nil { // back on the idle stack
		log.Fatal(err)
	}
	fmt.Printf("exit %d, %q in %v\n", res.ExitCode, res.Stdout, time.Since(start).Round(time.Millisecond))
}
