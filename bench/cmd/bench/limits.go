package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/dockerpool/dockerpool"
)

// runLimits measures what ExecOptions' limits cost on the agent path (issue
// 15), interleaved round-robin on one warm agent pool (MinIdle 1, MaxIdle 2):
// Acquire + ExecStd(echo hi) + Return with
//
//	limits.none    no limit;
//	limits.cpu     CPUTime only: the agent accounts the command's CPU time;
//	limits.rlimit  MaxFileSize and MaxOpenFiles: the launcher's extra execve;
//	limits.all     the three together.
//
// Output and exit code are checked on every sample.
func (e *env) runLimits() error {
	ctx := e.ctx
	n := e.p.N
	e.logf("limits: %d rounds of 4 variants on the agent path", n)
	pool, err := e.newAgentPool("limits", dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	if err != nil {
		return err
	}
	defer e.closePool(pool)
	if err := e.waitIdle(pool, 1); err != nil {
		return err
	}
	if err := e.checkLimits(pool); err != nil {
		return err
	}
	rl := dockerpool.ExecOptions{MaxFileSize: 1 << 20, MaxOpenFiles: 64}
	all := rl
	all.CPUTime = 10 * time.Second
	variants := []struct {
		name, label string
		opts        dockerpool.ExecOptions
		samples     []time.Duration
	}{
		{"limits.none", "agent Acquire + ExecStd(echo hi) + Return, no limit", dockerpool.ExecOptions{}, nil},
		{"limits.cpu", "  same with CPUTime 10s (accounting)", dockerpool.ExecOptions{CPUTime: 10 * time.Second}, nil},
		{"limits.rlimit", "  same with MaxFileSize 1 MiB + MaxOpenFiles 64 (launcher)", rl, nil},
		{"limits.all", "  same with CPUTime + MaxFileSize + MaxOpenFiles", all, nil},
	}
	for r := range n + 10 { // 10 rounds of warm-up
		for i := range variants {
			v := &variants[(i+r)%len(variants)]
			d, err := e.cycle(pool, func(c *dockerpool.Container) error {
				res, err := c.ExecStd(ctx, hi, v.opts)
				if err != nil {
					return err
				}
				if string(res.Stdout) != "hi\n" || res.ExitCode != 0 {
					return fmt.Errorf("got %q, exit %d", res.Stdout, res.ExitCode)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("%s: %w", v.name, err)
			}
			if r >= 10 {
				v.samples = append(v.samples, d)
			}
		}
	}
	for _, v := range variants {
		e.rep.add(summarize(v.name, v.label, v.samples))
	}
	none, rlim := e.rep.find("limits.none"), e.rep.find("limits.rlimit")
	e.rep.addFact(fact{Name: "limits.launcher", Label: "rlimits: p50(limits.rlimit) - p50(limits.none), the launcher's execve", Value: float64(rlim.P50-none.P50) / float64(time.Microsecond), Unit: "µs"})
	return nil
}

// checkLimits checks, untimed, that the limits measured hold, so that a
// limit silently ignored cannot look cheap: the rlimits are what the command
// sees, and a busy loop past CPUTime is killed with ErrCPUTimeExceeded.
func (e *env) checkLimits(pool *dockerpool.Pool) error {
	ctx := e.ctx
	_, err := e.cycle(pool, func(c *dockerpool.Container) error {
		res, err := c.ExecStd(ctx, []string{"sh", "-c", "ulimit -n; ulimit -f"}, dockerpool.ExecOptions{MaxFileSize: 1 << 20, MaxOpenFiles: 64})
		if err != nil {
			return err
		}
		if got := string(res.Stdout); got != "64\n2048\n" {
			return fmt.Errorf("rlimits seen by the command: %q, want 64 open files and 2048 blocks", got)
		}
		_, err = c.ExecStd(ctx, []string{"sh", "-c", "while :; do :; done"}, dockerpool.ExecOptions{CPUTime: 100 * time.Millisecond, Timeout: 20 * time.Second})
		if !errors.Is(err, dockerpool.ErrCPUTimeExceeded) {
			return fmt.Errorf("a busy loop with CPUTime 100ms: %v, want ErrCPUTimeExceeded", err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("limits check: %w", err)
	}
	return nil
}

// cycle times Acquire + f + Return on pool; the error of f, or of Return,
// is returned (wrapped).
func (e *env) cycle(pool *dockerpool.Pool, f func(c *dockerpool.Container) error) (time.Duration, error) {
	t0 := time.Now()
	c, err := pool.Acquire(e.ctx)
	if err != nil {
		return 0, fmt.Errorf("acquire: %w", err)
	}
	err = f(c)
	if rerr := pool.Return(e.ctx, c); rerr != nil && err == nil {
		err = fmt.Errorf("return: %w", rerr)
	}
	return time.Since(t0), err
}

// evaluateLimits adds the goals of -mode limits.
func (r *report) evaluateLimits() {
	none := r.find("limits.none")
	if none == nil {
		return
	}
	for _, k := range []struct {
		name, label, target string
		max                 float64
	}{
		{"limits.cpu", "limits: CPUTime (accounting) over no limit, p50", "≤ 1.05", 1.05},
		{"limits.rlimit", "limits: MaxFileSize+MaxOpenFiles (launcher) over no limit, p50 (information)", "", 0},
		{"limits.all", "limits: all limits over no limit, p50 (information)", "", 0},
	} {
		s := r.find(k.name)
		if s == nil {
			continue
		}
		v := ratio(s.P50, none.P50)
		g := goal{Name: k.name + "/none", Label: k.label, Value: v, Display: fmt.Sprintf("%.3f×", v), Target: k.target, Pass: k.max == 0 || v <= k.max}
		r.addGoal(g)
	}
	if cpu := r.find("limits.cpu"); cpu != nil {
		v := ratio(cpu.P99, none.P99)
		r.addGoal(goal{Name: "limits.cpu/none.p99", Label: "limits: CPUTime over no limit, p99 (information)", Value: v, Display: fmt.Sprintf("%.3f×", v)})
	}
}
