package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// maxBurst caps burst: each run may need a container of its own.
const maxBurst = 100

// session is the state of the prompt: the pool, and the containers the user
// holds by number. Commands run one at a time, on the prompt's goroutine.
type session struct {
	agent   bool // commands go through dockerpool-agent
	pool    *dockerpool.Pool
	cli     *client.Client // for kill-idle and the final check, as a user would
	name    string
	minIdle int
	maxIdle int
	network string
	timeout time.Duration // of each exec
	out     io.Writer
	in      *input  // the user's keystrokes: lines at the prompt, bytes in a shell
	console console // the user's terminal, when stdin is one (shell.go)

	held     map[int]heldContainer
	next     int // number of the next acquired container
	commands []command
}

// heldContainer is a container acquired with the acquire command.
type heldContainer struct {
	c     *dockerpool.Container
	since time.Time
}

// command is one command of the prompt.
type command struct {
	name string
	args string // shown after the name in help and usage messages
	help string
	run  func(s *session, ctx context.Context, args []string) error
}

// errUsage makes execute print the command's usage.
var errUsage = errors.New("usage")

// errQuit ends the prompt.
var errQuit = errors.New("quit")

// commandTable lists the commands in the order help shows them.
func commandTable() []command {
	return []command{
		{"help", "", "list the commands", (*session).cmdHelp},
		{"run", "<command...>", "acquire, exec, return; show the output, exit code and time of each step", (*session).cmdRun},
		{"acquire", "", "acquire a container and hold it; prints its number n", (*session).cmdAcquire},
		{"exec", "<n> <command...>", "run a command in held container n", (*session).cmdExec},
		{"return", "<n>", "give held container n back to the pool, for reuse", (*session).cmdReturn},
		{"remove", "<n>", "remove held container n for good; the pool makes a new one", (*session).cmdRemove},
		{"put", "<local-file> <container-path>", "write a file into the last container you acquired (acquires one if you hold none)", (*session).cmdPut},
		{"get", "<container-path>", "print a file of the last container you acquired", (*session).cmdGet},
		{"shell", "[n]", "an interactive shell in a warm container (or in held container n), in this terminal; exit or Ctrl-D comes back", (*session).cmdShell},
		{"held", "", "list the containers you hold", (*session).cmdHeld},
		{"stats", "", "show the pool's counters (Pool.Stats)", (*session).cmdStats},
		{"burst", "<N> <command...>", fmt.Sprintf("run the command N times at once (N <= %d) and show p50/p95/max latency", maxBurst), (*session).cmdBurst},
		{"kill-idle", "", "SIGKILL the idle containers behind the pool's back, and watch it heal", (*session).cmdKillIdle},
		{"quit", "", "return held containers, shut the pool down and exit (also: exit, Ctrl-D, Ctrl-C)", (*session).cmdQuit},
	}
}

// newSession prepares the prompt's state for a started pool.
func newSession(pool *dockerpool.Pool, cli *client.Client, o options, out io.Writer) *session {
	return &session{
		pool:     pool,
		cli:      cli,
		name:     o.name,
		minIdle:  o.minIdle,
		maxIdle:  o.maxIdle,
		network:  o.network,
		timeout:  o.timeout,
		agent:    o.agent,
		out:      out,
		held:     map[int]heldContainer{},
		next:     1,
		commands: commandTable(),
	}
}

// execute runs one command line and prints any error on one line. It reports
// whether the user asked to quit.
func (s *session) execute(ctx context.Context, line string) (quit bool) {
	words, err := tokenize(line)
	if err != nil {
		fmt.Fprintf(s.out, "error: %v\n", err)
		return false
	}
	if len(words) == 0 {
		return false
	}
	name := words[0]
	if name == "exit" {
		name = "quit"
	}
	i := slices.IndexFunc(s.commands, func(c command) bool { return c.name == name })
	if i < 0 {
		fmt.Fprintf(s.out, "error: unknown command %q (type help for the list)\n", words[0])
		return false
	}
	cmd := s.commands[i]
	switch err := cmd.run(s, ctx, words[1:]); {
	case errors.Is(err, errQuit):
		return true
	case errors.Is(err, errUsage):
		fmt.Fprintf(s.out, "error: usage: %s\n", strings.TrimSpace(cmd.name+" "+cmd.args))
	case err != nil:
		fmt.Fprintf(s.out, "error: %s\n", oneLine(err))
	}
	return false
}

// cmdHelp lists the commands.
func (s *session) cmdHelp(ctx context.Context, args []string) error {
	for _, c := range s.commands {
		fmt.Fprintf(s.out, "  %-28s %s\n", strings.TrimSpace(c.name+" "+c.args), c.help)
	}
	fmt.Fprintln(s.out, `Words are split as by a shell: quote with '...' or "...", e.g. run sh -c 'echo hi; exit 3'`)
	return nil
}

// cmdQuit ends the prompt; the shutdown follows.
func (s *session) cmdQuit(ctx context.Context, args []string) error {
	return errQuit
}

// timings are the durations of the steps of one run.
type timings struct {
	acquire, exec, release time.Duration
}

// total is the time of the whole run.
func (t timings) total() time.Duration { return t.acquire + t.exec + t.release }

// cmdRun acquires a container, runs the command, returns the container, and
// prints the result with the time of each step.
func (s *session) cmdRun(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errUsage
	}
	res, tm, err := s.runOnce(ctx, args)
	s.printOutput(res)
	fmt.Fprintf(s.out, "%s  (acquire %s, exec %s, return %s)\n",
		describeExit(res, err), ms(tm.acquire), ms(tm.exec), ms(tm.release))
	fmt.Fprintln(s.out, s.describeUsage(res.Usage))
	return err
}

// describeUsage says what a command used: CPU time and peak memory on the
// agent path, which measures them; the wall time on Docker exec.
func (s *session) describeUsage(u dockerpool.Usage) string {
	if !s.agent {
		return fmt.Sprintf("wall %s (CPU time and peak memory are measured on the agent path: -agent)", ms(u.Wall))
	}
	return fmt.Sprintf("cpu %s (user %s, system %s), peak memory %.1f MiB, wall %s",
		ms(u.User+u.System), ms(u.User), ms(u.System), float64(u.MaxRSS)/(1<<20), ms(u.Wall))
}

// runOnce is the library's basic cycle: Acquire, Exec, Return. The container
// is returned whatever the exec did; a container an exec may have damaged
// (timeout, output limit) is tainted, and Return then removes it.
func (s *session) runOnce(ctx context.Context, cmd []string) (dockerpool.ExecResult, timings, error) {
	var tm timings
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, acquireTimeout)
	c, err := s.pool.Acquire(actx)
	cancel()
	tm.acquire = time.Since(start)
	if err != nil {
		return dockerpool.ExecResult{ExitCode: -1}, tm, fmt.Errorf("acquire: %w", err)
	}

	start = time.Now()
	res, execErr := c.ExecStd(ctx, cmd, dockerpool.ExecOptions{Timeout: s.timeout})
	tm.exec = time.Since(start)

	start = time.Now()
	// Return even when ctx ended during the exec (Ctrl-C).
	retErr := s.pool.Return(context.WithoutCancel(ctx), c)
	tm.release = time.Since(start)

	if execErr != nil {
		return res, tm, execErr
	}
	if retErr != nil {
		return res, tm, fmt.Errorf("return: %w", retErr)
	}
	return res, tm, nil
}

// cmdAcquire acquires a container and keeps it under a number.
func (s *session) cmdAcquire(ctx context.Context, args []string) error {
	if len(args) != 0 {
		return errUsage
	}
	start := time.Now()
	actx, cancel := context.WithTimeout(ctx, acquireTimeout)
	defer cancel()
	c, err := s.pool.Acquire(actx)
	if err != nil {
		return fmt.Errorf("acquire: %w", err)
	}
	n := s.next
	s.next++
	s.held[n] = heldContainer{c: c, since: time.Now()}
	fmt.Fprintf(s.out, "acquired #%d: container %s in %s (return %d or remove %d when done)\n",
		n, shortID(c.ID()), ms(time.Since(start)), n, n)
	return nil
}

// cmdExec runs a command in a held container.
func (s *session) cmdExec(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return errUsage
	}
	n, h, err := s.lookup(args[0])
	if err != nil {
		return err
	}
	start := time.Now()
	res, err := h.c.ExecStd(ctx, args[1:], dockerpool.ExecOptions{Timeout: s.timeout})
	took := time.Since(start)
	s.printOutput(res)
	fmt.Fprintf(s.out, "%s  (exec %s in #%d)\n", describeExit(res, err), ms(took), n)
	if errors.Is(err, dockerpool.ErrContainerDead) {
		return fmt.Errorf("%w; remove %d to let the pool replace it", err, n)
	}
	return err
}

// cmdReturn gives a held container back to the pool.
func (s *session) cmdReturn(ctx context.Context, args []string) error {
	return s.release(ctx, args, false)
}

// cmdRemove removes a held container for good.
func (s *session) cmdRemove(ctx context.Context, args []string) error {
	return s.release(ctx, args, true)
}

// release returns or removes the held container named by args. The handle is
// dead afterwards whatever the outcome, so it is forgotten either way.
func (s *session) release(ctx context.Context, args []string, remove bool) error {
	if len(args) != 1 {
		return errUsage
	}
	n, h, err := s.lookup(args[0])
	if err != nil {
		return err
	}
	delete(s.held, n)
	verb := "returned"
	if remove {
		verb = "removed"
		err = s.pool.Remove(ctx, h.c)
	} else {
		err = s.pool.Return(ctx, h.c)
	}
	if err != nil {
		return fmt.Errorf("#%d: %w", n, err)
	}
	fmt.Fprintf(s.out, "%s #%d (container %s, held %s)\n", verb, n, shortID(h.c.ID()), ms(time.Since(h.since)))
	return nil
}

// returnAll returns every held container, before shutdown.
func (s *session) returnAll() {
	for _, n := range slices.Sorted(maps.Keys(s.held)) {
		if err := s.release(context.Background(), []string{strconv.Itoa(n)}, false); err != nil {
			fmt.Fprintf(s.out, "error: %s\n", oneLine(err))
		}
	}
}

// lookup parses a container number and finds the held container.
func (s *session) lookup(arg string) (int, heldContainer, error) {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		return 0, heldContainer{}, fmt.Errorf("%q is not a container number (acquire prints one)", arg)
	}
	h, ok := s.held[n]
	if !ok {
		return 0, heldContainer{}, fmt.Errorf("no container #%d is held (see held)", n)
	}
	return n, h, nil
}

// cmdHeld lists the held containers.
func (s *session) cmdHeld(ctx context.Context, args []string) error {
	if len(s.held) == 0 {
		fmt.Fprintln(s.out, "no container held (acquire holds one)")
		return nil
	}
	for _, n := range slices.Sorted(maps.Keys(s.held)) {
		h := s.held[n]
		fmt.Fprintf(s.out, "#%d: container %s, held %s\n", n, shortID(h.c.ID()), ms(time.Since(h.since)))
	}
	return nil
}

// cmdStats prints the pool's figures.
func (s *session) cmdStats(ctx context.Context, args []string) error {
	for _, line := range formatStats(s.pool.Stats()) {
		fmt.Fprintln(s.out, line)
	}
	return nil
}

// formatStats renders a Stats snapshot as a few lines.
func formatStats(st dockerpool.Stats) []string {
	lines := []string{
		fmt.Sprintf("idle %d, in use %d, creating %d, checking %d, removing %d, waiting %d, total %d",
			st.Idle, st.InUse, st.Creating, st.Checking, st.Removing, st.Waiting, st.Total),
		fmt.Sprintf("acquires %d (mean %s), waits %d, created %d, create errors %d, adopted %d",
			st.AcquireCount, ms(mean(st.AcquireDuration, st.AcquireCount)), st.WaitCount, st.Created, st.CreateErrors, st.Adopted),
		fmt.Sprintf("removed %d%s", st.Removed, reasonsSince(dockerpool.Stats{}, st)),
	}
	if st.RemoveErrors > 0 {
		lines[2] += fmt.Sprintf(", remove errors %d (retried)", st.RemoveErrors)
	}
	health := "healthy"
	if !st.DaemonHealthy {
		health = "failing (Acquire fails fast when nothing is idle)"
	}
	return append(lines, "docker daemon: "+health)
}

// reasonsSince lists the removals by reason between two snapshots, only the
// reasons that moved: " (died 2, shutdown 3)", or "" when none did.
func reasonsSince(before, after dockerpool.Stats) string {
	var parts []string
	for _, r := range dockerpool.RemoveReasons() {
		if d := after.RemovedBy[r] - before.RemovedBy[r]; d != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", r, d))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

// burstResult is the outcome of one run of a burst.
type burstResult struct {
	took time.Duration
	code int
	err  error
}

// cmdBurst runs the command N times at once and summarizes the latencies.
func (s *session) cmdBurst(ctx context.Context, args []string) error {
	if len(args) < 2 {
		return errUsage
	}
	n, err := strconv.Atoi(args[0])
	if err != nil || n < 1 || n > maxBurst {
		return fmt.Errorf("burst size must be a number from 1 to %d, not %q", maxBurst, args[0])
	}
	results := make([]burstResult, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			res, tm, err := s.runOnce(ctx, args[1:])
			results[i] = burstResult{took: tm.total(), code: res.ExitCode, err: err}
		})
	}
	wg.Wait()
	s.printBurst(results, time.Since(start))
	return nil
}

// printBurst prints the summary of a burst: counts, then the latency
// percentiles of the runs that worked.
func (s *session) printBurst(results []burstResult, wall time.Duration) {
	var ok []time.Duration
	var errs, nonZero int
	var firstErr error
	for _, r := range results {
		switch {
		case r.err != nil:
			errs++
			if firstErr == nil {
				firstErr = r.err
			}
		default:
			ok = append(ok, r.took)
			if r.code != 0 {
				nonZero++
			}
		}
	}
	slices.Sort(ok)
	fmt.Fprintf(s.out, "burst of %d: %d ok (%d with a non-zero exit code), %d errors, wall %s\n",
		len(results), len(ok), nonZero, errs, ms(wall))
	if len(ok) > 0 {
		fmt.Fprintf(s.out, "latency of acquire+exec+return: p50 %s, p95 %s, max %s\n",
			ms(percentile(ok, 0.50)), ms(percentile(ok, 0.95)), ms(ok[len(ok)-1]))
	}
	if firstErr != nil {
		fmt.Fprintf(s.out, "first error: %s\n", oneLine(firstErr))
	}
}

// percentile returns the p-th percentile (0 < p <= 1) of sorted durations,
// by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// cmdKillIdle kills the pool's idle containers with the Docker API, without
// telling the pool, then watches the pool notice and replace them.
func (s *session) cmdKillIdle(ctx context.Context, args []string) error {
	diedBefore := s.pool.Stats().RemovedBy[dockerpool.ReasonDied]
	ids, err := s.idleContainerIDs(ctx)
	if err != nil {
		return err
	}
	killed := 0
	for _, id := range ids {
		kctx, cancel := context.WithTimeout(ctx, dockerTimeout)
		err := s.cli.ContainerKill(kctx, id, "SIGKILL")
		cancel()
		switch {
		case err == nil:
			killed++
		case cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err):
			// already gone or stopped: the pool got there first
		default:
			fmt.Fprintf(s.out, "error: kill %s: %s\n", shortID(id), oneLine(err))
		}
	}
	fmt.Fprintf(s.out, "killed %d idle container(s) behind the pool's back\n", killed)
	if killed == 0 {
		return nil
	}
	return s.watchHealing(ctx, killed, diedBefore)
}

// idleContainerIDs lists the running containers of the pool that the demo
// does not hold: idle ones (and any being created at this moment).
func (s *session) idleContainerIDs(ctx context.Context) ([]string, error) {
	lctx, cancel := context.WithTimeout(ctx, dockerTimeout)
	defer cancel()
	list, err := s.cli.ContainerList(lctx, container.ListOptions{
		Filters: filters.NewArgs(
			filters.Arg("label", dockerpool.LabelPool+"="+s.name),
			filters.Arg("status", "running"),
		),
	})
	if err != nil {
		return nil, fmt.Errorf("list containers: %w", err)
	}
	held := map[string]bool{}
	for _, h := range s.held {
		held[h.c.ID()] = true
	}
	var ids []string
	for _, c := range list {
		if !held[c.ID] {
			ids = append(ids, c.ID)
		}
	}
	return ids, nil
}

// watchHealing polls the pool's stats until it has removed the killed
// containers as died and is back to MinIdle idle, or healTimeout passes.
func (s *session) watchHealing(ctx context.Context, killed int, diedBefore int64) error {
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, healTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		st := s.pool.Stats()
		died := st.RemovedBy[dockerpool.ReasonDied] - diedBefore
		if died >= int64(killed) && st.Idle >= s.minIdle {
			fmt.Fprintf(s.out, "pool healed in %s: %d removed as died, idle %d again (min %d); see stats\n",
				ms(time.Since(start)), died, st.Idle, s.minIdle)
			return nil
		}
		select {
		case <-tick.C:
		case <-wctx.Done():
			if ctx.Err() != nil {
				return ctx.Err()
			}
			fmt.Fprintf(s.out, "pool not healed after %s: %d of %d removed as died, idle %d (min %d); see stats\n",
				ms(time.Since(start)), died, killed, st.Idle, s.minIdle)
			return nil
		}
	}
}

// printOutput prints what a command wrote: stdout as is, stderr with each
// line marked.
func (s *session) printOutput(res dockerpool.ExecResult) {
	if len(res.Stdout) > 0 {
		out := string(res.Stdout)
		if !strings.HasSuffix(out, "\n") {
			out += "\n"
		}
		fmt.Fprint(s.out, out)
	}
	if len(res.Stderr) > 0 {
		for line := range strings.Lines(strings.TrimSuffix(string(res.Stderr), "\n")) {
			fmt.Fprintf(s.out, "[stderr] %s\n", strings.TrimSuffix(line, "\n"))
		}
	}
}

// describeExit names the outcome of an exec: its exit code, explained when
// Docker gives it a meaning, or the fact that it did not finish.
func describeExit(res dockerpool.ExecResult, err error) string {
	switch {
	case err != nil:
		return "no exit code"
	case res.ExitCode == 126:
		return "exit code 126 (not executable)"
	case res.ExitCode == 127:
		return "exit code 127 (command not found)"
	case res.Signal != 0:
		return fmt.Sprintf("exit code %d (killed by signal %d: %v)", res.ExitCode, int(res.Signal), res.Signal)
	}
	return fmt.Sprintf("exit code %d", res.ExitCode)
}

// ms formats a duration in milliseconds, or seconds from one second on.
func ms(d time.Duration) string {
	if d >= time.Second {
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// mean divides a total duration by a count, or returns 0 for no count.
func mean(total time.Duration, n int64) time.Duration {
	if n == 0 {
		return 0
	}
	return total / time.Duration(n)
}

// shortID shortens a container ID as the docker CLI does.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
