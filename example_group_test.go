package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// Two templates of one image, which differ by their environment, share a
// budget of three containers.
func ExampleNewGroup() {
	ctx := context.Background()
	template := func(name, lang string) dockerpool.Config {
		return dockerpool.Config{
			Name:            "example-group-" + name,
			Network:         dockerpool.NetworkConfig{Name: "none"},
			Image:           dockerpool.ImageConfig{Name: exampleImage()},
			HostConfig:      &container.HostConfig{NetworkMode: "none"},
			ContainerConfig: &container.Config{Env: []string{"LANG_NAME=" + lang}},
			MinIdle:         1,
			MaxIdle:         2,
		}
	}
	g, err := dockerpool.NewGroup(ctx, dockerpool.GroupConfig{
		MaxSize: 3, // all templates together
		Templates: map[string]dockerpool.Config{
			"python": template("python", "Python"),
			"go":     template("go", "Go"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Shutdown(ctx)

	for _, name := range []string{"go", "python"} {
		c, err := g.Acquire(ctx, name)
		if err != nil {
			log.Fatal(err)
		}
		r, err := c.Exec(ctx, []string{"sh", "-c", "echo $LANG_NAME"})
		if err != nil {
			log.Fatal(err)
		}
		fmt.Print(name, ": ", string(r.Stdout))
		if err := g.Return(ctx, c); err != nil {
			log.Fatal(err)
		}
	}
	_, err = g.Acquire(ctx, "rust")
	fmt.Println(errors.Is(err, dockerpool.ErrUnknownTemplate), strings.Contains(err.Error(), "go, python"))
	// Output:
	// go: Go
	// python: Python
	// true true
}

// A Group spread over two Docker daemons (GroupConfig.Hosts), each capped at
// ten containers: an Acquire takes an idle container of the template on any
// healthy host, else one made on the healthy host with the most room; a
// host whose pings fail or stall is out of placement within about two
// seconds, and the commands on its containers fail with ErrContainerDead
// and ErrHostDown. (Not run: it needs the two daemons.)
func ExampleNewGroup_hosts() {
	ctx := context.Background()
	connect := func(host string) *client.Client {
		cli, err := client.NewClientWithOpts(client.WithHost(host), client.WithAPIVersionNegotiation())
		if err != nil {
			log.Fatal(err)
		}
		return cli
	}
	a, b := connect("unix:///var/run/docker.sock"), connect("tcp://10.0.0.2:2375")
	defer a.Close()
	defer b.Close()
	g, err := dockerpool.NewGroup(ctx, dockerpool.GroupConfig{
		Hosts: []dockerpool.Host{ // never two entries for the same daemon
			{Name: "local", Client: a, MaxSize: 10},
			{Name: "big", Client: b, MaxSize: 10},
		},
		Templates: map[string]dockerpool.Config{
			"python": {Image: dockerpool.ImageConfig{Name: "python:3.12-alpine"}, MinIdle: 2}, // per host
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Shutdown(ctx)

	c, err := g.Acquire(ctx, "python")
	if err != nil {
		log.Fatal(err)
	}
	r, err := c.Exec(ctx, []string{"python3", "-c", "print(6*7)"})
	switch {
	case errors.Is(err, dockerpool.ErrHostDown):
		fmt.Println("host", c.Host(), "went out: run it again on another")
	case err != nil:
		log.Fatal(err)
	default:
		fmt.Printf("%s on %s", r.Stdout, c.Host())
	}
	_ = g.Return(ctx, c)
	for name, h := range g.Stats().Hosts {
		fmt.Println(name, h.Healthy, h.Used, "of", h.MaxSize, "outages:", h.Outages)
	}
}
