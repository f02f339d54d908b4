package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"

	"github.com/docker/docker/api/types/container"

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
