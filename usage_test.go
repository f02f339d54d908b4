package dockerpool_test

import (
	"context"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
)

// Judge-grade runs: usage, per-command limits, out-of-memory and signals,
// on the real daemon. The agent path measures and enforces everything; the
// Docker exec path measures Wall, tells out-of-memory, and refuses limits.

func agentPool(t *testing.T, cfg dockerpool.Config) *dockerpool.Pool {
	t.Helper()
	cfg.MinIdle = max(cfg.MinIdle, 1)
	return warm(t, execPaths[1].config(t, cfg))
}

func TestUsageACPUTimeLimitKillsABusyLoopAndSaysWhatItUsed(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, agentPool(t, dockerpool.Config{}))
	start := time.Now()
	res, err := c.ExecStd(bg(t), []string{"sh", "-c", "while :; do :; done"}, dockerpool.ExecOptions{CPUTime: 500 * time.Millisecond, Timeout: 10 * time.Second})
	took := time.Since(start)
	cpu := res.Usage.User + res.Usage.System
	t.Logf("%v after %v; used %v (user %v, system %v)", err, took, cpu, res.Usage.User, res.Usage.System)
	is.True(errors.Is(err, dockerpool.ErrCPUTimeExceeded))
	bound := 1500 * time.Millisecond // the bound: about 0.5s on a machine not busy with other work
	if underGVisor() {
		bound = 3 * time.Second // the sentry's CPU accounting on a busy machine: 1.68 s seen in CI, at 520 ms of CPU
	}
	is.True(took < bound)
	is.True(cpu >= 500*time.Millisecond && cpu <= 800*time.Millisecond)
	is.True(!c.Tainted()) // killed and verified
}

func TestUsageACPUTimeLimitHoldsForEveryProcessTogether(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, agentPool(t, dockerpool.Config{}))
	script := "for i in 1 2 3; do sh -c 'while :; do :; done' busy-loop & done; wait"
	start := time.Now()
	res, err := c.ExecStd(bg(t), []string{"sh", "-c", script}, dockerpool.ExecOptions{CPUTime: time.Second, Timeout: 20 * time.Second})
	took := time.Since(start)
	cpu := res.Usage.User + res.Usage.System
	t.Logf("%v after %v of wall time; the three used %v together", err, took, cpu)
	is.True(errors.Is(err, dockerpool.ErrCPUTimeExceeded))
	// About 0.5s on 2 cores not busy with other work; the kill comes when
	// the three have had 1s of CPU, which beside the whole suite can take
	// longer (1.62s seen in CI, with 1.046s used): what shows the limit
	// holds is the CPU below, and this bound that it did not wait for the
	// 20s timeout.
	is.True(took < 3*time.Second)
	// The three together, not each: one limit per process would let them
	// use about 3s before the last one is killed.
	is.True(cpu >= time.Second && cpu < 1500*time.Millisecond)
	is.Equal(len(strays(t, c, "busy-loop")), 0) // all three gone, verified
}

func TestUsageOfASleepAndOfAMemoryHog(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, agentPool(t, dockerpool.Config{}))
	res, err := c.Exec(bg(t), []string{"sleep", "1"})
	is.NoErr(err)
	t.Logf("sleep 1: %+v", res.Usage)
	// A sleep is not charged its wall time. Under gVisor the start of the
	// program itself costs the task CPU time in the sentry (ptrace
	// platform): 70ms was seen on a busy machine, so the bound is looser.
	cpuBound := 50 * time.Millisecond
	if underGVisor() {
		cpuBound = 250 * time.Millisecond
	}
	is.True(res.Usage.User+res.Usage.System < cpuBound)
	is.True(res.Usage.Wall >= time.Second && res.Usage.Wall <= 1300*time.Millisecond)
	res, err = c.Exec(bg(t), []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"})
	is.NoErr(err)
	t.Logf("dd bs=64M: MaxRSS %d MiB", res.Usage.MaxRSS>>20)
	is.True(res.Usage.MaxRSS >= 64<<20)
	res, err = c.Exec(bg(t), []string{"true"})
	is.NoErr(err)
	t.Logf("true: MaxRSS %d KiB", res.Usage.MaxRSS>>10)
	small := int64(8 << 20)
	if underGVisor() {
		small = 32 << 20 // gVisor's sentry reports about 16 MiB for true
	}
	is.True(res.Usage.MaxRSS > 0 && res.Usage.MaxRSS < small)
	// ExecStream's callers get the same, with an error too.
	var rep dockerpool.ExecReport
	_, err = c.ExecStream(bg(t), []string{"sleep", "5"}, nil, nil, dockerpool.ExecOptions{Timeout: 300 * time.Millisecond, Report: &rep})
	is.True(errors.Is(err, dockerpool.ErrExecTimeout))
	is.Equal(rep.ExitCode, -1)
	// The timeout runs from the call, the wall time from the process's
	// start: a little under 300ms is right; much less or much more is not.
	is.True(rep.Usage.Wall >= 200*time.Millisecond && rep.Usage.Wall < 2*time.Second)
}

func TestUsageMaxFileSizeAndMaxOpenFilesHoldForTheCommand(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, agentPool(t, dockerpool.Config{}))
	res, err := c.ExecStd(bg(t), []string{"dd", "if=/dev/zero", "of=/tmp/big", "bs=1M", "count=2"}, dockerpool.ExecOptions{MaxFileSize: 1 << 20})
	is.NoErr(err)
	t.Logf("2 MiB write with MaxFileSize 1 MiB: exit %d, signal %v, %q", res.ExitCode, res.Signal, res.Stderr)
	is.True(res.ExitCode != 0)                                                              // SIGXFSZ, or EFBIG
	is.True(res.Signal == syscall.SIGXFSZ || strings.Contains(string(res.Stderr), "large")) // as the tool tells it
	size := shOut(t, c, "stat -c %s /tmp/big")
	is.True(size == "1048576" || size < "1048576")
	// The limit holds for what the command starts, and cannot be raised.
	is.Equal(strings.TrimSpace(string(mustExec(t, c, []string{"sh", "-c", "ulimit -n; sh -c 'ulimit -n'"}, dockerpool.ExecOptions{MaxOpenFiles: 64}).Stdout)), "64\n64")
	res = mustExec(t, c, []string{"sh", "-c", "ulimit -n 1000 && echo raised"}, dockerpool.ExecOptions{MaxOpenFiles: 64})
	is.True(res.ExitCode != 0 && !strings.Contains(string(res.Stdout), "raised"))
	// The Docker exec path says it cannot, before running anything.
	d := held(t, warm(t, dockerpool.Config{MinIdle: 1}))
	for _, opts := range []dockerpool.ExecOptions{{CPUTime: time.Second}, {MaxFileSize: 1}, {MaxOpenFiles: 8}} {
		_, err := d.ExecStd(bg(t), []string{"touch", "/tmp/ran"}, opts)
		is.True(errors.Is(err, dockerpool.ErrLimitUnsupported))
	}
	is.Equal(shOut(t, d, "ls /tmp/ran 2>/dev/null | wc -l"), "0")
	_, err = c.ExecStd(bg(t), []string{"true"}, dockerpool.ExecOptions{CPUTime: -1})
	is.True(errors.Is(err, dockerpool.ErrInvalidConfig))
}

func mustExec(t *testing.T, c *dockerpool.Container, cmd []string, opts dockerpool.ExecOptions) dockerpool.ExecResult {
	t.Helper()
	res, err := c.ExecStd(bg(t), cmd, opts)
	if err != nil {
		t.Fatalf("%v: %v", cmd, err)
	}
	return res
}

func TestUsageASignalDeathIsToldApartFromAnExit(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, agentPool(t, dockerpool.Config{}))
	res := mustExec(t, c, []string{"sh", "-c", "kill -9 $$"}, dockerpool.ExecOptions{})
	is.Equal(res.ExitCode, 137)
	is.Equal(res.Signal, syscall.SIGKILL)
	res = mustExec(t, c, []string{"sh", "-c", "exit 137"}, dockerpool.ExecOptions{})
	is.Equal(res.ExitCode, 137)
	is.Equal(res.Signal, syscall.Signal(0))
}

func TestUsageOutOfMemoryIsAnErrorAndTheContainerIsNotReused(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		host := &container.HostConfig{NetworkMode: "none", Resources: container.Resources{Memory: 128 << 20, MemorySwap: 128 << 20}}
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, MaxIdle: 2, HostConfig: host}))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		res, err := c.ExecStd(bg(t), []string{"sh", "-c", "echo before; exec dd if=/dev/zero of=/dev/null bs=300M count=1"}, dockerpool.ExecOptions{Timeout: time.Minute})
		t.Logf("dd bs=300M in 128 MiB: %v; stdout %q", err, res.Stdout)
		is.True(errors.Is(err, dockerpool.ErrOutOfMemory))
		is.Equal(string(res.Stdout), "before\n") // the output so far
		is.NoErr(p.Return(bg(t), c))
		next, err := p.Acquire(bg(t))
		is.NoErr(err)
		is.True(next.ID() != c.ID()) // another container
		is.NoErr(p.Return(bg(t), next))
		eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonOutOfMemory] == 1 })
	})
}

func TestUsageTheDockerPathMeasuresWallTime(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	c := held(t, warm(t, dockerpool.Config{MinIdle: 1}))
	res, err := c.Exec(context.Background(), []string{"sleep", "0.3"})
	is.NoErr(err)
	is.True(res.Usage.Wall >= 300*time.Millisecond && res.Usage.Wall < 2*time.Second)
	is.Equal(res.Usage.User, time.Duration(0)) // not measured there, and the docs say so
	is.Equal(res.Signal, syscall.Signal(0))
}
