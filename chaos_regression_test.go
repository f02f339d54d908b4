package dockerpool_test

// Regression tests for faults the chaos tests found (all fixed). Each comment
// describes the fault as it was; the test checks that it no longer happens.

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// Fault 1 (isolation, fixed). When the hijacked connection of an exec is cut between
// two frames, StdCopy sees a clean EOF and exec() takes it for the end of the
// command. exitCode() then polls ContainerExecInspect, which says "running",
// for inspectBudget (5s) and exec returns an error, but without calling
// abandon(): the command is neither killed nor is the handle tainted. Return
// puts the container back on the idle stack with the command still running,
// and the next holder gets it.
func TestChaosRegressionACutExecIsKilledBeforeTheNextHolderGetsTheContainer(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	fp := newFaultProxy(t)
	p, _, _ := newChaosPool(t, fp, dockerpool.Config{MinIdle: 1, MaxIdle: 2})
	is.NoErr(p.WaitIdle(bg(t), 1))
	c, err := p.Acquire(bg(t))
	is.NoErr(err)
	started := make(chan struct{})
	var once sync.Once
	w := writerFunc(func(b []byte) (int, error) { once.Do(func() { close(started) }); return len(b), nil })
	execErr := make(chan error, 1)
	go func() {
		_, err := c.ExecStream(bg(t), []string{"sh", "-c", "echo started; sleep 1031"}, w, nil, dockerpool.ExecOptions{})
		execErr <- err
	}()
	testwait.Recv(t, started, time.Minute, "the command's first output")
	cutAt := time.Now()
	fp.Cut()
	err = testwait.Recv(t, execErr, time.Minute, "ExecStream's return after the cut")
	took := time.Since(cutAt)
	left := strays(t, c, "sleep 1031")
	t.Logf("Exec returned %v after the cut: %v; tainted: %v; its processes still running: %q", took, err, c.Tainted(), left)
	is.True(err != nil)
	is.NoErr(p.Return(bg(t), c))
	next, err := p.Acquire(bg(t))
	is.NoErr(err)
	defer p.Return(context.Background(), next)
	if next.ID() == c.ID() {
		seen := strays(t, next, "sleep 1031")
		if len(seen) > 0 {
			t.Errorf("the next holder of container %s sees the previous holder's command: %q", c.ID()[:12], seen)
		}
	}
	if len(left) > 0 && !c.Tainted() {
		t.Errorf("the cut exec left %q running and the handle is not tainted", left)
	}
	if took > 3*time.Second {
		t.Errorf("Exec took %v to give up on a cut stream", took)
	}
}

// Fault 2 (stall detection, fixed). The ping that detects a stalled daemon is a task
// of the ops lane (taskProbe, laneOps). When stalled calls hold every ops
// worker (MinIdle >= MaxConcurrentDockerOps is enough: the refill fills the
// lane), the probe waits in the queue behind them until DockerTimeout (30s by
// default) frees a worker. Meanwhile Acquire on an empty pool waits out its
// deadline instead of getting ErrDaemonUnavailable after ~2s, and Stats says
// the daemon is healthy.
func TestChaosRegressionAStallIsDetectedEvenWhenStalledCallsFillTheOpsLane(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	fp := newFaultProxy(t)
	const minIdle = 3
	p, _, _ := newChaosPool(t, fp, dockerpool.Config{MinIdle: minIdle, MaxIdle: minIdle, MaxConcurrentDockerOps: 2})
	is.NoErr(p.WaitIdle(bg(t), minIdle))
	held := emptyAndHold(t, p, minIdle)
	fp.Stall()
	c, lat, err := timedAcquire(p, 5*time.Second)
	t.Logf("Acquire (5s deadline) while stalled, ops lane full: %v after %v; DaemonHealthy %v", err, lat, p.Stats().DaemonHealthy)
	is.True(c == nil)
	fp.Pass()
	for _, c := range held {
		_ = p.Return(bg(t), c)
	}
	if !errors.Is(err, dockerpool.ErrDaemonUnavailable) || lat > 3500*time.Millisecond {
		t.Errorf("want ErrDaemonUnavailable within ~2s (one stallAfter plus one probeTimeout), got %v after %v", err, lat)
	}
}

// Fault 3 (leak while the pool runs, fixed). A creation whose ContainerCreate reached
// the daemon but whose answer was lost (the call timed out, the connection
// broke) returns no ID, so the pool never learns of the container the daemon
// made. It carries the pool's label but stays on the daemon, in state
// "created", until Shutdown's final sweep: resync lists running containers
// only and ignores unknown ones.
func TestChaosRegressionCreationsWhoseAnswerIsLostAreRemovedWhileThePoolRuns(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	fp := newFaultProxy(t)
	realCli := dockerpooltest.Client(t)
	const minIdle = 2
	p, cfg, _ := newChaosPool(t, fp, dockerpool.Config{MinIdle: minIdle, MaxIdle: minIdle, DockerTimeout: 2 * time.Second})
	is.NoErr(p.WaitIdle(bg(t), minIdle))
	held := emptyAndHold(t, p, minIdle)
	fp.Stall() // the creations in flight time out; their requests reach the daemon when it passes again
	eventuallyWithin(t, 10*time.Second, "the stalled creations give up", func() bool { return p.Stats().CreateErrors >= 1 })
	fp.Pass()
	is.NoErr(p.WaitIdle(bg(t), minIdle))
	deadline := time.Now().Add(10 * time.Second)
	for {
		settle(t, p, minIdle)
		total := p.Stats().Total
		left, err := dockerpooltest.Leftovers(realCli, cfg.Name)
		is.NoErr(err)
		if len(left) == total {
			break
		}
		if time.Now().After(deadline) {
			var states []string
			for _, c := range left {
				states = append(states, c.ID[:12]+" "+c.State)
			}
			t.Errorf("the pool counts %d containers, the daemon holds %d of its label: %s", total, len(left), strings.Join(states, ", "))
			break
		}
		time.Sleep(100 * time.Millisecond) // polling the daemon's list
	}
	for _, c := range held {
		_ = p.Return(bg(t), c)
	}
}

// Fault 4 (fixed). An idle container older than suspectIdle is inspected before
// it is handed out (taskCheck). When the inspect fails because the daemon
// cannot be reached, the container is removed as ReasonDied although it is
// healthy: each Acquire during an outage destroys one warm container (the
// removal is retried until the daemon is back, then it goes through), and the
// caller gets ErrCreateFailed from the creation that replaces it rather than
// ErrDaemonUnavailable.
func TestChaosRegressionAnIdleContainerCheckedDuringAnOutageIsKept(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	fp := newFaultProxy(t)
	const minIdle = 2
	p, _, _ := newChaosPool(t, fp, dockerpool.Config{MinIdle: minIdle, MaxIdle: minIdle, OnError: func(error) {}})
	is.NoErr(p.WaitIdle(bg(t), minIdle))
	time.Sleep(1100 * time.Millisecond) // idle long enough to be inspected before it is handed out
	fp.Refuse()
	_, lat, err := timedAcquire(p, 5*time.Second)
	t.Logf("first Acquire after the refusal: %v after %v", err, lat)
	fp.Pass()
	is.NoErr(p.WaitIdle(bg(t), minIdle))
	died := p.Stats().RemovedBy[dockerpool.ReasonDied]
	if !errors.Is(err, dockerpool.ErrDaemonUnavailable) {
		t.Errorf("want ErrDaemonUnavailable, got %v", err)
	}
	if died != 0 {
		t.Errorf("%d healthy idle container(s) removed as dead because an inspect could not reach the daemon", died)
	}
}

// Fault 5 (fixed). A forced shutdown cancels the creations in flight
// (cancelCreate). core.done counts each as a failed creation and calls
// markFailing, so OnError reports "cannot make containers, refill backs off
// until it can: ... context canceled" and Stats().CreateErrors grows, though
// the daemon is fine and the pool caused the cancellation itself.
func TestChaosRegressionAForcedShutdownDoesNotBlameTheDaemonForItsOwnCancellations(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	fp := newFaultProxy(t)
	rec := &errRecorder{t: t}
	p, _, _ := newChaosPool(t, fp, dockerpool.Config{MinIdle: 1, MaxIdle: 1, MaxConcurrentAcquire: 4, OnError: rec.record})
	is.NoErr(p.WaitIdle(bg(t), 1))
	holder, err := p.Acquire(bg(t))
	is.NoErr(err)
	_ = holder
	fp.Stall() // creations in flight at the forced end, for sure
	for range 4 {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = p.Acquire(ctx)
		}()
	}
	eventuallyWithin(t, 5*time.Second, "the callers wait", func() bool { return p.Stats().Waiting == 4 })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go func() {
		<-ctx.Done()
		fp.Cut() // after the force; the held requests are dropped, not sent late
	}()
	err = p.Shutdown(ctx)
	is.True(errors.Is(err, context.DeadlineExceeded))
	st := p.Stats()
	t.Logf("after a forced shutdown: CreateErrors %d, OnError calls %d", st.CreateErrors, rec.count())
	if st.CreateErrors != 0 || rec.count() != 0 {
		t.Errorf("the pool's own cancellation was reported as %d failed creation(s) and %d OnError call(s)", st.CreateErrors, rec.count())
	}
}
