package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// The demo's -templates mode: a dockerpool.Group of two templates made from
// the same image, "en" and "fr", which differ by their Env (GREETING), under
// one budget of four containers. Commands: run <template> <command>, stats,
// templates, help, quit.

// groupTemplates are the demo's templates: name and greeting.
var groupTemplates = [][2]string{{"en", "hello"}, {"fr", "bonjour"}}

// startGroup starts the group of the -templates mode.
// With hosts (the -hosts mode) it spreads over them and cli is not used.
func startGroup(ctx context.Context, cli *client.Client, o options, img dockerpool.ImageConfig, stderr io.Writer, hosts []dockerpool.Host) (*dockerpool.Group, error) {
	netCfg, hostCfg := networkConfig(o.network)
	cfg := dockerpool.GroupConfig{MaxSize: 4, Templates: map[string]dockerpool.Config{}, Hosts: hosts}
	var api dockerpool.DockerAPI = cli
	if hosts != nil {
		cfg.MaxSize, api = 0, nil // each host's cap; each host's client
	}
	for _, t := range groupTemplates {
		cfg.Templates[t[0]] = dockerpool.Config{
			Name: o.name + "-" + t[0], Network: netCfg, HostConfig: hostCfg, Image: img,
			MinIdle: 1, MaxIdle: 3, Client: api,
			ContainerConfig: &container.Config{Env: []string{"GREETING=" + t[1]}},
			OnError:         func(err error) { fmt.Fprintf(stderr, "pool error: %v\n", oneLine(err)) },
		}
	}
	nctx, cancel := context.WithTimeout(ctx, newTimeout)
	defer cancel()
	return dockerpool.NewGroup(nctx, cfg)
}

// groupLoop reads commands until quit, end of input or ctx's end, and
// shuts the group down.
func groupLoop(ctx context.Context, g *dockerpool.Group, o options, stdin io.Reader, stdout io.Writer) int {
	if st := g.Stats(); len(st.Hosts) > 0 {
		fmt.Fprintf(stdout, "group: templates en and fr (GREETING=hello, bonjour) on %d host(s), %d containers each. Try: run fr sh -c 'echo $GREETING'\n", len(st.Hosts), hostMaxSize)
	} else {
		fmt.Fprintln(stdout, `group: templates en and fr (GREETING=hello, bonjour), MaxSize 4. Try: run fr sh -c 'echo $GREETING'`)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdin)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	for done := false; !done; {
		fmt.Fprint(stdout, prompt)
		select {
		case <-ctx.Done():
			done = true
		case line, ok := <-lines:
			done = !ok || groupCommand(ctx, g, o, line, stdout)
		}
	}
	sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := g.Shutdown(sctx); err != nil {
		fmt.Fprintf(stdout, "shutdown: %v\n", oneLine(err))
		return 1
	}
	fmt.Fprintln(stdout, "\ngroup shut down: no container left")
	return 0
}

// groupCommand runs one command line; it says whether to stop.
func groupCommand(ctx context.Context, g *dockerpool.Group, o options, line string, stdout io.Writer) bool {
	words, err := tokenize(line)
	if err != nil {
		fmt.Fprintf(stdout, "%v\n", err)
		return false
	}
	if len(words) == 0 {
		return false
	}
	switch words[0] {
	case "quit", "exit":
		return true
	case "templates":
		fmt.Fprintln(stdout, strings.Join(g.Templates(), " "))
	case "stats":
		printGroupStats(g.Stats(), stdout)
	case "run":
		if len(words) < 3 {
			fmt.Fprintln(stdout, "usage: run <template> <command>")
			return false
		}
		groupRun(ctx, g, o, words[1], words[2:], stdout)
	default:
		fmt.Fprintln(stdout, "commands: run <template> <command>, stats, templates, quit")
	}
	return false
}

func groupRun(ctx context.Context, g *dockerpool.Group, o options, template string, cmd []string, stdout io.Writer) {
	start := time.Now()
	c, err := g.Acquire(ctx, template)
	if err != nil {
		fmt.Fprintf(stdout, "%v\n", oneLine(err))
		return
	}
	acquired := time.Since(start)
	ectx, cancel := ctx, context.CancelFunc(func() {})
	if o.timeout > 0 {
		ectx, cancel = context.WithTimeout(ctx, o.timeout)
	}
	r, err := c.Exec(ectx, cmd)
	cancel()
	fmt.Fprintf(stdout, "%s", r.Stdout)
	fmt.Fprintf(stdout, "%s", r.Stderr)
	if err != nil {
		fmt.Fprintf(stdout, "error: %v\n", oneLine(err))
	}
	on := ""
	if c.Host() != "" {
		on = " on " + c.Host()
	}
	fmt.Fprintf(stdout, "[%s %s%s: exit %d, acquire %v, total %v]\n", template, shortName(c), on, r.ExitCode, acquired.Round(time.Microsecond), time.Since(start).Round(time.Millisecond))
	if err := g.Return(ctx, c); err != nil {
		fmt.Fprintf(stdout, "return: %v\n", oneLine(err))
	}
}

func shortName(c *dockerpool.Container) string {
	id := c.ID()
	if len(id) < 12 {
		return id
	}
	return id[:12]
}

func printGroupStats(st dockerpool.GroupStats, stdout io.Writer) {
	fmt.Fprintf(stdout, "group: %d of %d containers, hits %d, misses %d, evicted %d for waiters, %d for warmth\n",
		st.Used, st.MaxSize, st.Hits, st.Misses, st.EvictedForWaiter, st.EvictedForWarmth)
	for _, name := range slices.Sorted(maps.Keys(st.Templates)) {
		ts := st.Templates[name]
		fmt.Fprintf(stdout, "  %-4s idle %d, in use %d, warm target %d, hits %d, misses %d, evicted %d\n",
			name, ts.Idle, ts.InUse, ts.WarmTarget, ts.Hits, ts.Misses, ts.Evicted)
	}
	printHostStats(st, stdout)
}
