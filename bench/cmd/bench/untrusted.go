package main

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool"
)

// untrustedSize is MinIdle, MaxIdle and MaxSize of the two pools of -mode
// untrusted: room for the 10 callers and a little refill ahead.
const (
	untrustedMinIdle = 10
	untrustedMaxIdle = 12
	untrustedMaxSize = 12
)

// runUntrusted measures sustained untrusted runs per second (issue 16, point
// 3): UCallers callers loop for UTime, each run being Acquire + WriteFile of
// a small file in /tmp + Exec(sh -c 'cat /tmp/in') (output checked) +
// Return. Two pools on the agent path with the sandbox preset
// (SandboxHostConfig, User SandboxUser), one after the other (they would
// share the daemon): MaxUses 1 (a fresh container per run) and
// VerifiedReset (reuse after a verified reset); with -untrusted-docker, the
// same two on the Docker exec path after them. Each pool is full (WaitIdle)
// before its run starts, and shut down before the next one is made.
func (e *env) runUntrusted() error {
	e.logf("untrusted: %d callers, %v per pool, MinIdle %d MaxIdle %d MaxSize %d", e.p.UCallers, e.p.UTime, untrustedMinIdle, untrustedMaxIdle, untrustedMaxSize)
	kinds := []struct {
		name, label   string
		single, agent bool
	}{
		{"untrusted.single", "MaxUses 1", true, true},
		{"untrusted.reset", "VerifiedReset", false, true},
	}
	if e.p.UDocker {
		kinds = append(kinds,
			struct {
				name, label   string
				single, agent bool
			}{"untrusted.docker.single", "Docker exec path, MaxUses 1", true, false},
			struct {
				name, label   string
				single, agent bool
			}{"untrusted.docker.reset", "Docker exec path, VerifiedReset", false, false})
	}
	for _, k := range kinds {
		cfg := dockerpool.Config{
			MinIdle: untrustedMinIdle, MaxIdle: untrustedMaxIdle, MaxSize: untrustedMaxSize,
			HostConfig:      dockerpool.SandboxHostConfig(dockerpool.SandboxOptions{}),
			ContainerConfig: &container.Config{User: dockerpool.SandboxUser},
		}
		if k.single {
			cfg.MaxUses = 1
		} else {
			cfg.VerifiedReset = true
		}
		if err := e.untrustedRun(k.name, k.label, cfg, k.agent); err != nil {
			return err
		}
	}
	return nil
}

// untrustedRun runs one pool of runUntrusted and adds its rows.
func (e *env) untrustedRun(name, label string, cfg dockerpool.Config, agent bool) error {
	what := strings.ReplaceAll(name, ".", "-")
	var pool *dockerpool.Pool
	var err error
	if agent {
		pool, err = e.newAgentPool(what, cfg)
	} else {
		pool, err = e.newPool(what, cfg)
	}
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, untrustedMinIdle); err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		lat     []time.Duration
		errs    int
		lastErr error
	)
	ctx, cancel := context.WithTimeout(e.ctx, e.p.UTime)
	defer cancel()
	before := pool.Stats()
	e.logf("untrusted: %s: %d idle, %d total at the start", name, before.Idle, before.Total)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range e.p.UCallers {
		wg.Go(func() {
			for run := 0; ctx.Err() == nil; run++ {
				d, err := e.untrustedOnce(ctx, pool, fmt.Sprintf("caller %d run %d\n", i, run))
				if ctx.Err() != nil {
					return // the window closed during this run: not counted
				}
				mu.Lock()
				if err != nil {
					errs++
					lastErr = err
				} else {
					lat = append(lat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	// Runs that ended after the window closed are not counted: the rate is
	// over the window itself.
	wall := min(time.Since(start), e.p.UTime)
	after := pool.Stats()
	if err := e.ctx.Err(); err != nil {
		return err
	}
	e.rep.add(summarize(name, label+": untrusted run (Acquire + WriteFile + Exec cat + Return), "+fmt.Sprint(e.p.UCallers)+" callers", lat))
	e.rep.addFact(fact{Name: name + ".rate", Label: label + ": untrusted runs per second, sustained", Value: float64(len(lat)) / wall.Seconds(), Unit: "runs/s"})
	e.rep.addFact(fact{Name: name + ".errors", Label: label + ": runs that failed", Value: float64(errs), Unit: "runs"})
	e.rep.addFact(fact{Name: name + ".created", Label: label + ": containers the pool created during the run", Value: float64(after.Created - before.Created), Unit: "containers"})
	var removed []string
	for _, reason := range dockerpool.RemoveReasons() {
		if n := after.RemovedBy[reason] - before.RemovedBy[reason]; n > 0 {
			removed = append(removed, fmt.Sprintf("%s %d", reason, n))
		}
	}
	e.rep.addFact(fact{Name: name + ".removed", Label: label + ": containers removed during the run (" + strings.Join(removed, ", ") + ")", Value: float64(after.Removed - before.Removed), Unit: "containers"})
	e.rep.addFact(fact{Name: name + ".waited", Label: label + ": successful Acquires that found nothing idle (Stats.EmptyAcquireCount)", Value: float64(after.EmptyAcquireCount - before.EmptyAcquireCount), Unit: "of " + fmt.Sprint(after.AcquireCount-before.AcquireCount)})
	if lastErr != nil {
		e.rep.notef("%s: %d run(s) failed, the last: %v", name, errs, lastErr)
	}
	if len(lat) == 0 {
		return fmt.Errorf("%s: no run succeeded: %w", name, lastErr)
	}
	return nil
}

// untrustedOnce is one untrusted run; it checks that the command printed
// what was written.
func (e *env) untrustedOnce(ctx context.Context, pool *dockerpool.Pool, in string) (time.Duration, error) {
	t0 := time.Now()
	c, err := pool.Acquire(ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	err = c.WriteFile(ctx, "/tmp/in", []byte(in), 0o644)
	if err == nil {
		var res dockerpool.ExecResult
		res, err = c.Exec(ctx, []string{"sh", "-c", "cat /tmp/in"})
		if err == nil && (string(res.Stdout) != in || res.ExitCode != 0) {
			err = fmt.Errorf("got %q, exit %d, want %q", res.Stdout, res.ExitCode, in)
		}
	}
	if rerr := pool.Return(context.WithoutCancel(ctx), c); rerr != nil && err == nil {
		err = fmt.Errorf("return: %w", rerr)
	}
	return time.Since(t0), err
}

// evaluateUntrusted adds the goal of -mode untrusted.
func (r *report) evaluateUntrusted() {
	for _, path := range []struct{ key, label string }{{"untrusted.", "agent path"}, {"untrusted.docker.", "Docker exec path"}} {
		single, reset := r.findFact(path.key+"single.rate"), r.findFact(path.key+"reset.rate")
		if single == nil || reset == nil || single.Value == 0 {
			continue
		}
		v := reset.Value / single.Value
		r.addGoal(goal{Name: path.key + "reset/single", Label: "untrusted runs/s: VerifiedReset over MaxUses 1, " + path.label, Value: v, Display: fmt.Sprintf("%.2f×", v), Target: "≥ 10", Pass: v >= 10})
	}
}
