// Command bench measures where the time goes in dockerpool: what the Docker
// daemon costs, what the pool adds on top, and what a cold container costs
// without a pool. It measures side by side in one run, interleaving the
// alternatives round-robin so that machine noise hits all of them alike.
//
// Usage (from the bench module):
//
//	go run ./cmd/bench                  # exec, acquire, burst, core, size: ~3 minutes
//	go run ./cmd/bench -mode exec -n 400
//	go run ./cmd/bench -mode soak       # 10,000 acquire/exec/return cycles
//	go run ./cmd/bench -json > results/run.json
//
// Modes:
//
//	exec      (a) bare exec round trip, (b) pool Acquire+Exec+Return,
//	          (c) cold create+start+exec+remove, (c2) docker run --rm
//	acquire   (d) warm Acquire, Return and pairs on a real-daemon pool
//	burst     (e) N callers at once on a pool that must create, against N bare
//	          create+start; and (f) Shutdown of N idle against N bare removes
//	shutdown  same as burst (the two share their trials)
//	core      (g) the pool on the in-memory fake Docker against puddle and a
//	          bare channel round trip
//	size      MaxSize queueing and MaxUses=1 against reuse
//	files     WriteFile+ReadFile of 1 KiB on both paths beside (a); CopyTo and
//	          CopyFrom of a tar against the raw archive API, and into a tmpfs
//	limits    agent Acquire+Exec+Return with and without ExecOptions limits
//	untrusted sustained untrusted runs/s: MaxUses 1 against VerifiedReset
//	gvisor    on a private dockerd with runsc: runc against runsc (needs
//	          runsc and root)
//	terminal  the keystroke echo round trip of a terminal on both paths
//	soak      leaks over many cycles
//	group     a Group of templates against independent pools on a shifting
//	          trace, on the fake daemon with -g-create per creation (or
//	          -g-real; -g-agent: the templates on the agent path); -phase
//	          sets how long a template stays hot
//	all       exec, acquire, burst, core, size (not files, limits,
//	          untrusted, gvisor, terminal, soak, group: run those on their own)
//
// Every container carries the label dockerpool.bench=<run id>; pools are
// named dpbench-<run id>-<what>. Whatever happens (an error, Ctrl-C), the
// pools are shut down and both labels are swept at the end.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// params are the knobs of a run, from the flags.
type params struct {
	Mode      string        `json:"mode"`
	N         int           `json:"n"`                 // exec rounds: (a) and (b) samples each
	Cold      int           `json:"cold"`              // (c) and (c2) samples each
	Pairs     int           `json:"pairs"`             // (d) acquire/return pairs
	CoreTime  time.Duration `json:"core_time"`         // (g) length of one timed window
	CoreRound int           `json:"core_round"`        // (g) windows per contender
	Burst     int           `json:"burst"`             // (e)/(f) N
	Trials    int           `json:"trials"`            // (e)/(f) trials
	Settle    time.Duration `json:"settle"`            // (e)/(f) pause before each burst
	Gap       time.Duration `json:"gap"`               // (e)/(f) from the end of a burst to the removals
	Callers   int           `json:"callers"`           // size: callers
	MaxSize   int           `json:"max_size"`          // size: MaxSize
	Hold      time.Duration `json:"hold"`              // size: hold time
	UsesN     int           `json:"uses_n"`            // size: MaxUses comparison rounds
	Soak      int           `json:"soak"`              // soak cycles
	TarMiB    int           `json:"tar_mib"`           // files: size of the tar of CopyTo/CopyFrom
	CopyN     int           `json:"copy_n"`            // files: CopyTo/CopyFrom rounds
	UTime     time.Duration `json:"untrusted_time"`    // untrusted: length of each pool's run
	UCallers  int           `json:"untrusted_callers"` // untrusted: callers
	UDocker   bool          `json:"untrusted_docker"`  // untrusted: the Docker exec path too
	GVisorN   int           `json:"gvisor_n"`          // gvisor: create+start+remove rounds
	Runsc     string        `json:"runsc,omitempty"`   // gvisor: runsc binary
	Image     string        `json:"image"`
	Group     groupParams   `json:"-"`
	Plot      string        `json:"-"`
	JSON      bool          `json:"-"`
}

func main() {
	var p params
	flag.StringVar(&p.Mode, "mode", "all", "what to measure: all|exec|acquire|burst|shutdown|core|size|files|limits|untrusted|gvisor|terminal|soak|group")
	flag.IntVar(&p.N, "n", 200, "exec rounds: samples of (a) and (b); the MaxUses comparison runs n/8")
	flag.IntVar(&p.Cold, "cold", 0, "samples of (c) and (c2); default n/8, at least 10")
	flag.IntVar(&p.Pairs, "pairs", 20000, "(d) warm Acquire/Return pairs")
	flag.DurationVar(&p.CoreTime, "core-time", 300*time.Millisecond, "(g) length of one timed window")
	flag.IntVar(&p.CoreRound, "core-rounds", 5, "(g) windows per contender, interleaved")
	flag.IntVar(&p.Burst, "burst", 20, "(e)/(f) number of callers and of containers")
	flag.IntVar(&p.Trials, "trials", 3, "(e)/(f) trials, pool and bare interleaved")
	flag.DurationVar(&p.Settle, "settle", time.Second, "(e)/(f) pause before each burst, on both sides, to let the daemon finish earlier work")
	flag.DurationVar(&p.Gap, "gap", 1500*time.Millisecond, "(e)/(f) time from the end of a burst to the start of the removals, on both sides")
	flag.IntVar(&p.Callers, "callers", 50, "size: callers holding a container at MaxSize")
	flag.IntVar(&p.MaxSize, "maxsize", 5, "size: MaxSize")
	flag.DurationVar(&p.Hold, "hold", 100*time.Millisecond, "size: how long each caller holds its container")
	flag.IntVar(&p.Soak, "soak", 10000, "soak: acquire/exec/return cycles")
	flag.IntVar(&p.TarMiB, "tar-mib", 64, "files: size of the tar of CopyTo/CopyFrom, in MiB (4 files of random content)")
	flag.IntVar(&p.CopyN, "copy-n", 5, "files: CopyTo/CopyFrom rounds, each side")
	flag.DurationVar(&p.UTime, "untrusted-time", 30*time.Second, "untrusted: how long each of the two pools runs")
	flag.IntVar(&p.UCallers, "untrusted-callers", 10, "untrusted: callers running at once")
	flag.BoolVar(&p.UDocker, "untrusted-docker", false, "untrusted: also run the two pools on the Docker exec path")
	flag.IntVar(&p.GVisorN, "gvisor-n", 20, "gvisor: create+start+remove rounds per runtime (the agent cycles use -n)")
	flag.StringVar(&p.Runsc, "runsc", "", "gvisor: the runsc binary (default: runsc in PATH)")
	flag.StringVar(&p.Image, "image", "", "image to run (default: build the busybox image with dockerpooltest.BuildImage)")
	flag.StringVar(&p.Plot, "plot", "results/latency.png", "write the latency CDF plot of (a), (b), (c), (c2) here (empty: no plot)")
	flag.BoolVar(&p.JSON, "json", false, "print the report as JSON on stdout (the table goes to stderr)")
	flag.IntVar(&p.Group.Ops, "g-ops", 3000, "group: Acquire+Exec+Return operations of the trace")
	flag.IntVar(&p.Group.Templates, "g-templates", 8, "group: templates")
	flag.IntVar(&p.Group.MaxSize, "g-maxsize", 16, "group: MaxSize of the group (independent pools get MaxSize/templates each)")
	flag.IntVar(&p.Group.MaxIdle, "g-maxidle", 8, "group: MaxIdle of each template in the group")
	flag.DurationVar(&p.Group.Phase, "phase", 30*time.Second, "group: how long one template stays the hot one")
	flag.Float64Var(&p.Group.Rate, "g-rate", 10, "group: arrivals per second (Poisson)")
	flag.DurationVar(&p.Group.Hold, "g-hold", 500*time.Millisecond, "group: how long a caller keeps its container after the Exec")
	flag.DurationVar(&p.Group.CreateDelay, "g-create", 200*time.Millisecond, "group: creation time of the fake daemon")
	flag.IntVar(&p.Group.MaxCreating, "g-maxcreating", 0, "group: GroupConfig.MaxCreating of the Groups (0: the default)")
	flag.Float64Var(&p.Group.Zipf, "g-zipf", 1.1, "group: Zipf exponent of the templates' popularity")
	flag.BoolVar(&p.Group.Real, "g-real", false, "group: run the trace on the real daemon instead of the fake")
	flag.BoolVar(&p.Group.Agent, "g-agent", false, "group: the templates on the agent path (Config.Agent, the agent image; with -g-real)")
	flag.BoolVar(&p.Group.Sequential, "g-sequential", false, "group: run the designs one after another, each alone on the daemon (start, warm up, trace, shut down)")
	flag.StringVar(&p.Group.Only, "g-only", "", "group: run only this design (independent, group-static, group-adaptive); default all three at once")
	flag.Parse()
	if p.Cold == 0 {
		p.Cold = max(p.N/8, 10)
	}
	p.UsesN = max(p.N/8, 10)
	if !slices.Contains([]string{"all", "exec", "acquire", "burst", "shutdown", "core", "size", "files", "limits", "untrusted", "gvisor", "terminal", "soak", "group"}, p.Mode) {
		fmt.Fprintf(os.Stderr, "bench: unknown -mode %q\n", p.Mode)
		os.Exit(2)
	}
	if err := run(p); err != nil {
		fmt.Fprintf(os.Stderr, "bench: %v\n", err)
		os.Exit(1)
	}
}

// notInAll are the modes that -mode all leaves out: the soak is long, gvisor
// needs runsc and root, and the others were added after the published run
// (BENCHMARKS.md) and are run on their own.
var notInAll = []string{"soak", "files", "limits", "untrusted", "gvisor", "terminal", "group"}

// env is what every mode shares: the Docker client, the image, the run's ID,
// the pools to shut down at the end, and the report being built.
type env struct {
	ctx   context.Context
	cli   *client.Client
	p     params
	image string
	runID string
	bare  *bare
	log   io.Writer // progress

	mu    sync.Mutex
	pools map[string]*dockerpool.Pool // live pools by name
	names []string                    // every pool name used, for the sweep

	bgErrors atomic.Int64 // errors the pools reported through OnError
	rep      report

	agentOnce  sync.Once // the agent image, built on first use
	agentBin   string    // the dockerpool-agent binary
	agentDir   string    // where it was built: removed at the end of the run
	agentImage string
	agentErr   error
}

func run(p params) (err error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		stop() // a second Ctrl-C kills at once
	}()

	out, logw := io.Writer(os.Stdout), io.Writer(os.Stderr)
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return err
	}
	defer cli.Close()
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	_, err = cli.Ping(pctx)
	cancel()
	if err != nil {
		return fmt.Errorf("no Docker daemon: %w", err)
	}

	var idb [4]byte
	_, _ = rand.Read(idb[:])
	e := &env{ctx: ctx, cli: cli, p: p, runID: hex.EncodeToString(idb[:]), log: logw, pools: map[string]*dockerpool.Pool{}}
	defer func() {
		if cerr := e.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
		if e.agentDir != "" {
			_ = os.RemoveAll(e.agentDir)
		}
	}()

	e.image = p.Image
	if e.image == "" {
		bctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		e.image, err = dockerpooltest.BuildImage(bctx, cli, dockerpooltest.ImageOptions{})
		cancel()
		if err != nil {
			return fmt.Errorf("build image: %w", err)
		}
	}
	e.bare = &bare{cli: cli, image: e.image, runID: e.runID}
	e.rep.Params = p
	e.rep.Params.Image = e.image
	e.rep.Machine = machineInfo(ctx, cli)
	e.logf("run %s: image %s, mode %s, %d cores, GOMAXPROCS %d", e.runID, e.image, p.Mode, runtime.NumCPU(), runtime.GOMAXPROCS(0))

	start := time.Now()
	modes := []struct {
		name string
		f    func() error
	}{
		{"exec", e.runExec},
		{"acquire", e.runAcquire},
		{"burst", e.runLifecycle},
		{"core", e.runCore},
		{"size", e.runSize},
		{"files", e.runFiles},
		{"limits", e.runLimits},
		{"untrusted", e.runUntrusted},
		{"gvisor", e.runGVisor},
		{"terminal", e.runTerminal},
		{"soak", e.runSoak},
		{"group", e.runGroup},
	}
	for _, m := range modes {
		selected := p.Mode == m.name || (p.Mode == "all" && !slices.Contains(notInAll, m.name)) ||
			(p.Mode == "shutdown" && m.name == "burst")
		if !selected {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		if err := m.f(); err != nil {
			return fmt.Errorf("mode %s: %w", m.name, err)
		}
		e.logf("mode %s done in %v", m.name, time.Since(t0).Round(time.Millisecond))
	}
	e.rep.Elapsed = time.Since(start).Round(time.Millisecond).String()
	e.rep.Machine.LoadEnd = loadAvg()
	e.rep.BackgroundErrors = e.bgErrors.Load()
	e.rep.evaluate()

	if p.Plot != "" && e.rep.find("a") != nil {
		if err := writePlot(p.Plot, &e.rep); err != nil {
			return fmt.Errorf("plot: %w", err)
		}
		e.logf("plot written to %s", p.Plot)
	}
	if p.JSON {
		e.rep.printTable(logw)
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(&e.rep)
	}
	e.rep.printTable(out)
	return nil
}

// logf prints progress on stderr.
func (e *env) logf(format string, args ...any) {
	fmt.Fprintf(e.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, args...)...)
}

// poolConfig fills in what every pool of the run shares: a unique name, the
// image, no network, the bench label, and OnError counting background errors.
// A HostConfig the mode set is kept, with its network forced to none.
func (e *env) poolConfig(what string, cfg dockerpool.Config) dockerpool.Config {
	cfg.Name = "dpbench-" + e.runID + "-" + what
	cfg.Image.Name = e.image
	cfg.Network.Name = "none"
	if cfg.HostConfig == nil {
		cfg.HostConfig = &container.HostConfig{}
	}
	cfg.HostConfig.NetworkMode = "none"
	cfg.Labels = map[string]string{labelBench: e.runID, labelBench + ".kind": "pool"}
	cfg.OnError = func(err error) {
		e.bgErrors.Add(1)
		if !errors.Is(err, context.Canceled) {
			e.logf("pool %s: %v", what, err)
		}
	}
	return cfg
}

// newAgentPool starts a pool on the agent path: it builds dockerpool-agent
// (once per run) and the busybox image with the agent in it.
func (e *env) newAgentPool(what string, cfg dockerpool.Config, opts ...func(*dockerpool.AgentConfig)) (*dockerpool.Pool, error) {
	if err := e.ensureAgent(); err != nil {
		return nil, err
	}
	cfg.Agent = &dockerpool.AgentConfig{}
	for _, o := range opts {
		o(cfg.Agent)
	}
	p, err := e.newPoolImage(what, cfg, e.agentImage)
	return p, err
}

// ensureAgent builds dockerpool-agent and the agent image on the run's
// daemon, once per run.
func (e *env) ensureAgent() error {
	e.agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dpbench-agent-")
		if err != nil {
			e.agentErr = err
			return
		}
		e.agentDir = dir
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Minute)
		defer cancel()
		bin, err := dockerpooltest.BuildAgent(ctx, dir)
		if err != nil {
			e.agentErr = err
			return
		}
		e.agentBin = bin
		e.agentImage, e.agentErr = dockerpooltest.AgentImage(ctx, e.cli, bin, dockerpooltest.ImageOptions{})
	})
	if e.agentErr != nil {
		return fmt.Errorf("agent image: %w", e.agentErr)
	}
	return nil
}

// newPool starts a real-daemon pool and registers it for the final cleanup.
func (e *env) newPool(what string, cfg dockerpool.Config) (*dockerpool.Pool, error) {
	return e.newPoolImage(what, cfg, "")
}

// newPoolImage is newPool with another image than the run's, when not empty.
func (e *env) newPoolImage(what string, cfg dockerpool.Config, image string) (*dockerpool.Pool, error) {
	cfg = e.poolConfig(what, cfg)
	if image != "" {
		cfg.Image.Name = image
	}
	e.mu.Lock()
	e.names = append(e.names, cfg.Name)
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	p, err := dockerpool.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("new pool %s: %w", what, err)
	}
	e.mu.Lock()
	e.pools[cfg.Name] = p
	e.mu.Unlock()
	return p, nil
}

// closePool shuts a pool down (at most a minute, even when the run's context
// is over) and forgets it. It returns how long Shutdown took.
func (e *env) closePool(p *dockerpool.Pool) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(e.ctx), time.Minute)
	defer cancel()
	t0 := time.Now()
	err := p.Shutdown(ctx)
	d := time.Since(t0)
	e.mu.Lock()
	for name, q := range e.pools {
		if q == p {
			delete(e.pools, name)
		}
	}
	e.mu.Unlock()
	return d, err
}

// waitIdle waits for n idle containers, at most a minute.
func (e *env) waitIdle(p *dockerpool.Pool, n int) error {
	ctx, cancel := context.WithTimeout(e.ctx, time.Minute)
	defer cancel()
	return p.WaitIdle(ctx, n)
}

// cleanup shuts down the pools still alive and sweeps every container of
// the run, by pool name and by the bench label.
func (e *env) cleanup() error {
	e.mu.Lock()
	live := make([]*dockerpool.Pool, 0, len(e.pools))
	for _, p := range e.pools {
		live = append(live, p)
	}
	names := slices.Clone(e.names)
	e.mu.Unlock()
	var errs []error
	for _, p := range live {
		if _, err := e.closePool(p); err != nil {
			errs = append(errs, err)
		}
	}
	left := 0
	for _, name := range names {
		n, err := sweep(e.cli, dockerpool.LabelPool, name)
		left += n
		errs = append(errs, err)
	}
	n, err := sweep(e.cli, labelBench, e.runID)
	left += n
	errs = append(errs, err)
	if e.ctx.Err() != nil {
		// Interrupted: a create the daemon was still working on when its
		// call was cancelled may land after the first sweep.
		time.Sleep(time.Second)
		n, err := sweep(e.cli, labelBench, e.runID)
		left += n
		errs = append(errs, err)
	}
	if left > 0 {
		e.logf("cleanup: swept %d leftover container(s)", left)
	}
	return errors.Join(errs...)
}

// machineInfo describes the machine and the daemon for the report.
func machineInfo(ctx context.Context, cli *client.Client) machine {
	m := machine{
		CPUs:       runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		Go:         runtime.Version(),
		OS:         runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.LoadStart = loadAvg()
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if v, err := cli.ServerVersion(ctx); err == nil {
		m.Docker = v.Version
		m.DockerAPI = v.APIVersion
	}
	if info, err := cli.Info(ctx); err == nil {
		m.StorageDriver = info.Driver
		m.CgroupDriver = info.CgroupDriver
		m.Runtime = info.DefaultRuntime
		m.MemoryGiB = float64(info.MemTotal) / (1 << 30)
	}
	return m
}

// loadAvg returns the 1, 5 and 15 minute load averages, or "?".
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
