// Command demo is an interactive tour of dockerpool. It starts a pool, waits
// for it to warm up, and reads commands at a "dockerpool> " prompt: run a
// command in a warm container and see what each step cost, hold containers by
// number, fire bursts of concurrent runs, kill idle containers behind the
// pool's back and watch it heal, and read the pool's statistics.
//
//	go run ./cmd/demo
//	go run ./cmd/demo -min-idle 5 -network bridge -image alpine:3.20
//
// Type help at the prompt for the commands. quit, Ctrl-D and Ctrl-C shut the
// pool down: no container is left behind.
//
// The code is meant to be read as an example of the library: setup and the
// prompt loop are in this file, the commands in commands.go.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// prompt is printed before each command is read.
const prompt = "dockerpool> "

// progressWidth is the width of the warm-up progress line on a terminal,
// padded so that a shorter update hides a longer one.
const progressWidth = 50

// Time limits of the demo's own steps.
const (
	pingTimeout     = 5 * time.Second  // first contact with the daemon
	imageTimeout    = 60 * time.Second // building the busybox image
	newTimeout      = 5 * time.Minute  // New, which may pull the image
	warmTimeout     = 60 * time.Second // waiting for MinIdle containers
	acquireTimeout  = 30 * time.Second // each Acquire
	healTimeout     = 15 * time.Second // kill-idle watching the pool heal
	shutdownTimeout = 30 * time.Second // Shutdown at the end
	dockerTimeout   = 10 * time.Second // the demo's own Docker calls
)

// fallbackImage is used when no busybox image can be built offline.
const fallbackImage = "alpine:latest"

const usageText = `Usage: go run ./cmd/demo [flags]

demo starts a dockerpool pool and an interactive prompt to try it: run
commands in warm containers and see the latency of each step, hold
containers by number, fire bursts of concurrent runs, kill idle containers
behind the pool's back and watch it heal, and read the pool's statistics
(type help at the prompt). Without -image it builds a tiny busybox image
offline from the static busybox on this machine, as the library's tests do,
and falls back to alpine:latest (pulled if missing) when it cannot. quit,
Ctrl-D and Ctrl-C shut the pool down and remove every container it made.

Flags:
`

// options are the command-line flags.
type options struct {
	image     string
	name      string
	minIdle   int
	maxIdle   int
	network   string
	timeout   time.Duration
	verbose   bool
	agent     bool
	templates bool   // a Group of two templates instead of a pool
	hosts     string // -hosts: that group over these daemons (comma-separated URLs)
}

// terminal says which of the standard streams are terminals.
type terminal struct {
	in, out bool
	console console // stdin's terminal, for the shell command; nil if it is none
}

func main() {
	term := terminal{in: isTerminal(os.Stdin), out: isTerminal(os.Stdout)}
	if term.in {
		term.console = ttyConsole{fd: int(os.Stdin.Fd())}
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr, term))
}

// run is the whole program; it returns the exit code: 0 after a clean
// shutdown, 1 when the pool could not start or stop cleanly, 2 for bad flags.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer, term terminal) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // parseFlags said why
	}

	// Ctrl-C and SIGTERM cancel ctx: the prompt stops and the pool is shut
	// down. The handler stays installed until run returns, so a second
	// Ctrl-C cannot cut the shutdown short and leave containers behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if opts.hosts != "" {
		return runHosts(ctx, opts, stdin, stdout, stderr)
	}

	cli, err := connect(ctx)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v\n", err)
		return 1
	}
	defer cli.Close()

	img, why := chooseImage(ctx, cli, opts.image)
	if ctx.Err() != nil {
		fmt.Fprintln(stderr, "demo: interrupted")
		return 1
	}
	fmt.Fprintf(stdout, "image: %s (%s)\n", img.Name, why)
	if opts.templates {
		g, err := startGroup(ctx, cli, opts, img, stderr, nil)
		if err != nil {
			fmt.Fprintf(stderr, "demo: %v%s\n", oneLine(err), hint(err, opts))
			return 1
		}
		return groupLoop(ctx, g, opts, stdin, stdout)
	}

	pool, err := startPool(ctx, cli, opts, img, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v%s\n", oneLine(err), hint(err, opts))
		return 1
	}
	// From here on the pool must be shut down, whatever happens.
	s := newSession(pool, cli, opts, stdout)
	s.in, s.console = readInput(stdin), term.console
	s.printBanner()
	reason := "interrupted"
	if s.warmUp(ctx, term.out) == nil {
		reason = s.loop(ctx, !term.in)
	}
	return s.shutdown(reason)
}

// parseFlags reads the command line and reports a mistake to stderr. It
// returns flag.ErrHelp for -h.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageText)
		fs.PrintDefaults()
	}
	fs.StringVar(&o.image, "image", "", "image to run (default: a busybox image built offline, else "+fallbackImage+")")
	fs.StringVar(&o.name, "name", "dockerpool-demo", "pool name, put on every container as the label "+dockerpool.LabelPool)
	fs.IntVar(&o.minIdle, "min-idle", 3, "idle containers kept ready")
	fs.IntVar(&o.maxIdle, "max-idle", 6, "idle containers kept at most")
	fs.StringVar(&o.network, "network", "none", `network: "none" for no network, "bridge" or the name of an existing network`)
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "timeout of each command run in a container (0: none)")
	fs.BoolVar(&o.verbose, "v", false, "log the pool's events (created, removed, adopted) to stderr")
	fs.BoolVar(&o.agent, "agent", false, "run commands through dockerpool-agent (built now with the go command, copied into each container) instead of docker exec")
	fs.BoolVar(&o.templates, "templates", false, "start a Group of two templates (en, fr: the image with GREETING=hello or bonjour) under one budget instead of a pool; run <template> <command>")
	fs.StringVar(&o.hosts, "hosts", "", "comma-separated DOCKER_HOST URLs (unix:///var/run/docker.sock,tcp://10.0.0.2:2376): the -templates group spread over those daemons, 4 containers each; TLS for tcp:// URLs from DOCKER_CERT_PATH and DOCKER_TLS_VERIFY")
	if err := fs.Parse(args); err != nil {
		return o, err // the flag package has printed it, with the usage
	}
	o.templates = o.templates || o.hosts != ""
	err := o.validate()
	if fs.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err != nil {
		fmt.Fprintf(stderr, "demo: %v (see -h)\n", err)
	}
	return o, err
}

// validate rejects values the pool would not take, or would silently replace
// with a default (zero means "default" in dockerpool.Config).
func (o options) validate() error {
	switch {
	case o.name == "":
		return errors.New("-name must not be empty")
	case o.network == "":
		return errors.New("-network must not be empty")
	case o.minIdle < 1:
		return fmt.Errorf("-min-idle must be at least 1, not %d", o.minIdle)
	case o.maxIdle < o.minIdle:
		return fmt.Errorf("-max-idle (%d) must be at least -min-idle (%d)", o.maxIdle, o.minIdle)
	case o.timeout < 0:
		return fmt.Errorf("-timeout must not be negative, not %v", o.timeout)
	}
	return nil
}

// connect makes a Docker client from the environment (DOCKER_HOST and
// friends) and checks that the daemon answers.
func connect(ctx context.Context) (*client.Client, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("docker client: %w", err)
	}
	pctx, cancel := context.WithTimeout(ctx, pingTimeout)
	defer cancel()
	if _, err := cli.Ping(pctx); err != nil {
		cli.Close()
		return nil, fmt.Errorf("cannot reach the Docker daemon (is it running? is DOCKER_HOST right?): %w", err)
	}
	return cli, nil
}

// chooseImage returns the image to run and why it was chosen: the -image
// flag, else a busybox image built offline (no registry needed), else
// alpine:latest, pulled if it is not on the daemon.
func chooseImage(ctx context.Context, cli *client.Client, flagImage string) (dockerpool.ImageConfig, string) {
	if flagImage != "" {
		return dockerpool.ImageConfig{Name: flagImage, PullPolicy: dockerpool.PullIfNotPresent},
			"from -image; pulled if it is not on the daemon"
	}
	bctx, cancel := context.WithTimeout(ctx, imageTimeout)
	defer cancel()
	ref, err := dockerpooltest.BuildImage(bctx, cli, dockerpooltest.ImageOptions{})
	if err == nil {
		return dockerpool.ImageConfig{Name: ref},
			"built offline from the static busybox on this machine, as the tests do: no registry needed"
	}
	return dockerpool.ImageConfig{Name: fallbackImage, PullPolicy: dockerpool.PullIfNotPresent},
		fmt.Sprintf("no busybox image: %v; pulled if it is not on the daemon", oneLine(err))
}

// startPool starts the pool. It shares the demo's Docker client, which the
// pool then leaves open: the demo closes it.
func startPool(ctx context.Context, cli *client.Client, o options, img dockerpool.ImageConfig, stderr io.Writer) (*dockerpool.Pool, error) {
	netCfg, hostCfg := networkConfig(o.network)
	cfg := dockerpool.Config{
		Name:       o.name,
		Network:    netCfg,
		HostConfig: hostCfg,
		Image:      img,
		MinIdle:    o.minIdle,
		MaxIdle:    o.maxIdle,
		Client:     cli,
		// Background errors (a failed refill, a failed removal) would
		// otherwise go to the standard logger; say where they come from.
		OnError: func(err error) { fmt.Fprintf(stderr, "pool error: %v\n", oneLine(err)) },
	}
	if o.verbose {
		cfg.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.agent {
		dir, err := os.MkdirTemp("", "dockerpool-demo-agent-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir) // New reads the binary; the pool keeps its own copy
		bctx, cancel := context.WithTimeout(ctx, imageTimeout)
		defer cancel()
		bin, err := dockerpooltest.BuildAgent(bctx, dir)
		if err != nil {
			return nil, err
		}
		cfg.Agent = &dockerpool.AgentConfig{Binary: bin}
	}
	nctx, cancel := context.WithTimeout(ctx, newTimeout)
	defer cancel()
	return dockerpool.New(nctx, cfg)
}

// networkConfig maps the -network flag to the pool's configuration. "none"
// detaches the containers (HostConfig.NetworkMode "none"); any other name is
// a network the pool attaches them to, which must exist.
func networkConfig(name string) (dockerpool.NetworkConfig, *container.HostConfig) {
	if name == "none" {
		return dockerpool.NetworkConfig{Name: "none"}, &container.HostConfig{NetworkMode: "none"}
	}
	return dockerpool.NetworkConfig{Name: name}, nil
}

// hint suggests a way out of the errors New returns for a mistaken flag.
func hint(err error, o options) string {
	switch {
	case errors.Is(err, dockerpool.ErrNetworkNotFound):
		return fmt.Sprintf("\nhint: create it (docker network create %s), or use -network none or -network bridge", o.network)
	case errors.Is(err, dockerpool.ErrImageNotFound) && o.image != "":
		return "\nhint: without a registry, run without -image: the demo then builds a busybox image offline"
	case errors.Is(err, dockerpool.ErrImageNotFound):
		return "\nhint: install a static busybox (Debian: busybox-static) so that the demo can build its image offline"
	}
	return ""
}

// printBanner says what was started.
func (s *session) printBanner() {
	path := "docker exec"
	if s.agent {
		path = "dockerpool-agent (no docker exec)"
	}
	fmt.Fprintf(s.out, "pool %q: min idle %d, max idle %d, network %s, exec timeout %v, commands via %s\n",
		s.name, s.minIdle, s.maxIdle, s.network, s.timeout, path)
	if st := s.pool.Stats(); st.Adopted > 0 {
		fmt.Fprintf(s.out, "adopted %d idle container(s) left by an earlier run\n", st.Adopted)
	}
}

// warmUp waits until MinIdle containers are idle, showing progress. On a
// terminal the progress is one line, rewritten in place; otherwise a line is
// printed each time the count changes. It returns an error only when ctx ends
// (Ctrl-C); a pool that is slow to warm up is reported, and the prompt starts
// anyway: Acquire creates containers on demand.
func (s *session) warmUp(ctx context.Context, tty bool) error {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, warmTimeout)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- s.pool.WaitIdle(wctx, s.minIdle) }()

	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	last := -1
	for {
		select {
		case err := <-done:
			return s.warmedUp(ctx, err, time.Since(start), tty)
		case <-tick.C:
			n := s.pool.IdleCount()
			progress := fmt.Sprintf("warming up: idle %d of %d (%.1fs)", n, s.minIdle, time.Since(start).Seconds())
			if tty {
				fmt.Fprintf(s.out, "\r%-*s", progressWidth, progress)
			} else if n != last {
				fmt.Fprintln(s.out, progress)
			}
			last = n
		}
	}
}

// warmedUp reports the end of warmUp.
func (s *session) warmedUp(ctx context.Context, err error, took time.Duration, tty bool) error {
	if tty {
		fmt.Fprintf(s.out, "\r%*s\r", progressWidth, "") // clear the progress line
	}
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(s.out)
		return ctx.Err()
	case err != nil:
		fmt.Fprintf(s.out, "pool not warm after %.1fs: idle %d of %d (%v); going on, containers are created on demand\n",
			took.Seconds(), s.pool.IdleCount(), s.minIdle, oneLine(err))
	default:
		fmt.Fprintf(s.out, "pool warm: idle %d of %d in %.1fs\n", s.pool.IdleCount(), s.minIdle, took.Seconds())
	}
	fmt.Fprintln(s.out, `type "help" for the commands`)
	return nil
}

// loop prints the prompt and runs commands until quit, the end of input or
// Ctrl-C, and says which. With echo (input is not a terminal), each command
// is printed after the prompt, so that a piped session reads like a typed
// one.
func (s *session) loop(ctx context.Context, echo bool) string {
	for {
		if ctx.Err() != nil {
			fmt.Fprintln(s.out)
			return "interrupted"
		}
		fmt.Fprint(s.out, prompt)
		text, err := s.in.line(ctx)
		switch {
		case ctx.Err() != nil:
			fmt.Fprintln(s.out)
			return "interrupted"
		case err == io.EOF:
			fmt.Fprintln(s.out)
			return "end of input"
		case err != nil:
			fmt.Fprintf(s.out, "\nerror: read input: %v\n", err)
			return "input failed"
		}
		if echo {
			fmt.Fprintln(s.out, text)
		}
		if s.execute(ctx, text) {
			return "quit"
		}
	}
}

// shutdown returns the containers still held, shuts the pool down, says what
// was removed, and checks with Docker that nothing of the pool is left. It
// returns the exit code.
func (s *session) shutdown(reason string) int {
	fmt.Fprintf(s.out, "%s: shutting down the pool (at most %v)\n", reason, shutdownTimeout)
	s.returnAll()
	before := s.pool.Stats()
	// Not derived from the signal context: that one may be cancelled already,
	// and the pool needs time to remove its containers.
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	start := time.Now()
	err := s.pool.Shutdown(ctx)
	after := s.pool.Stats() // the final snapshot
	fmt.Fprintf(s.out, "removed %d containers%s in %s\n",
		after.Removed-before.Removed, reasonsSince(before, after), ms(time.Since(start)))
	code := 0
	if err != nil {
		fmt.Fprintf(s.out, "error: shutdown: %v\n", oneLine(err))
		code = 1
	}
	left, err := s.leftovers()
	switch {
	case err != nil:
		fmt.Fprintf(s.out, "error: cannot check for leftovers: %v\n", oneLine(err))
		code = 1
	case left > 0:
		fmt.Fprintf(s.out, "error: %d container(s) labelled %s=%s are still on the daemon\n", left, dockerpool.LabelPool, s.name)
		code = 1
	default:
		fmt.Fprintf(s.out, "no container labelled %s=%s is left; bye\n", dockerpool.LabelPool, s.name)
	}
	return code
}

// leftovers counts the containers of the pool still on the daemon.
func (s *session) leftovers() (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	list, err := s.cli.ContainerList(ctx, container.ListOptions{
		All:     true,
		Filters: filters.NewArgs(filters.Arg("label", dockerpool.LabelPool+"="+s.name)),
	})
	return len(list), err
}

// isTerminal reports whether f is a terminal (a character device).
func isTerminal(f *os.File) bool {
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// oneLine flattens a (possibly joined) error onto one line.
func oneLine(err error) string {
	return strings.ReplaceAll(strings.TrimSpace(err.Error()), "\n", "; ")
}
