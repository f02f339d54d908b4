package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// Integration tests: the pool against the Docker daemon of this machine, on
// the busybox image that dockerpooltest builds offline. Every pool has a
// unique name and is shut down and checked for leftovers by its cleanup.

func bg(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// warmUpTimeout bounds the warm-up of a test's pool: containers start in a
// second or two, so a pool still cold after it will stay so (a daemon
// that cannot start them, say).
const warmUpTimeout = time.Minute

// warm starts a pool and waits until MinIdle containers are idle. A pool
// that does not get there fails the test with the pool's last error.
func warm(t *testing.T, cfg dockerpool.Config) *dockerpool.Pool {
	t.Helper()
	var last atomic.Value // error
	if onError := cfg.OnError; onError != nil {
		cfg.OnError = func(err error) { last.Store(err); onError(err) }
	} else {
		cfg.OnError = func(err error) { last.Store(err); t.Logf("pool: %v", err) }
	}
	p := dockerpooltest.NewPool(t, cfg)
	ctx, cancel := context.WithTimeout(bg(t), warmUpTimeout)
	defer cancel()
	n := cfg.MinIdle
	if n == 0 {
		n = 1 // dockerpooltest.Config's default
	}
	if err := p.WaitIdle(ctx, n); err != nil {
		t.Fatalf("warm up: %d container(s) idle after %v (%v); the pool's last error: %v", p.IdleCount(), warmUpTimeout, err, last.Load())
	}
	return p
}

func inspect(t *testing.T, id string) (container.InspectResponse, bool) {
	t.Helper()
	info, err := dockerpooltest.Client(t).ContainerInspect(bg(t), id)
	if err != nil {
		return info, false
	}
	return info, true
}

// waitGone waits until the container is removed. Docker's ContainerWait for
// the removed condition is the signal, but on Docker 20.10 it can miss a
// removal that completes while the wait is being set up and never return; an
// inspect every 100ms settles it then.
func waitGone(t *testing.T, id string, within time.Duration) time.Duration {
	t.Helper()
	if underGVisor() {
		// runsc's kill and delete of a sandbox took over 10 s in CI with
		// both cores busy: the bound is for the pool's part, not runsc's.
		within *= 3
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	cli := dockerpooltest.Client(t)
	okc, errc := cli.ContainerWait(ctx, id, container.WaitConditionRemoved)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-okc:
			return time.Since(start)
		case err := <-errc:
			// Not found: removed before we started waiting.
			if !cerrdefs.IsNotFound(err) {
				state := "unknown"
				ictx, icancel := context.WithTimeout(context.Background(), 5*time.Second)
				if info, ierr := cli.ContainerInspect(ictx, id); ierr == nil && info.State != nil {
					state = fmt.Sprintf("%s (running %v, error %q), named %s", info.State.Status, info.State.Running, info.State.Error, info.Name)
				} else if ierr != nil {
					state = ierr.Error()
				}
				icancel()
				t.Fatalf("container %s was not removed within %v (%v); it is %s", id[:12], within, err, state)
			}
			return time.Since(start)
		case <-tick.C:
			if _, err := cli.ContainerInspect(ctx, id); cerrdefs.IsNotFound(err) {
				took := time.Since(start)
				cancel() // the wait's goroutine answers once: take it
				select {
				case <-okc:
				case <-errc:
				}
				return took
			}
		}
	}
}

func TestIntegrationAcquireExecReturnOnTheRealDaemon(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 2})
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	is.Equal(p.InUse(), 1)
	res, err := c.Exec(ctx, []string{"sh", "-c", "echo out; echo err >&2; exit 3"})
	is.NoErr(err)
	is.Equal(res.ExitCode, 3)
	is.Equal(string(res.Stdout), "out\n")
	is.Equal(string(res.Stderr), "err\n")
	is.NoErr(p.Return(ctx, c))
	is.Equal(p.InUse(), 0)
}

func TestIntegrationContainersCarryLabelsInitAndNoNetwork(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, Labels: map[string]string{"app": "judge"}})
	c, err := p.Acquire(bg(t))
	is.NoErr(err)
	defer p.Return(bg(t), c)
	info, ok := inspect(t, c.ID())
	is.True(ok)
	is.Equal(info.Config.Labels["app"], "judge")
	is.True(strings.HasPrefix(info.Config.Labels[dockerpool.LabelPool], "dptest-"))
	is.True(info.Config.Labels[dockerpool.LabelConfig] != "")
	is.Equal(string(info.HostConfig.NetworkMode), "none")
	is.True(info.HostConfig.Init != nil && *info.HostConfig.Init)
	// No interface but loopback inside.
	res, err := c.Exec(bg(t), []string{"ls", "/sys/class/net"})
	is.NoErr(err)
	is.Equal(strings.Fields(string(res.Stdout)), []string{"lo"})
}

func TestIntegrationIdleStackIsLastInFirstOut(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: 4})
	ctx := bg(t)
	a, err := p.Acquire(ctx)
	is.NoErr(err)
	b, err := p.Acquire(ctx)
	is.NoErr(err)
	// Of the refill's creation and b's, the one b did not get goes idle:
	// wait for it, so that no creation lands on top of the stack after
	// the returns.
	is.NoErr(p.WaitIdle(ctx, 1))
	is.NoErr(p.Return(ctx, a))
	is.NoErr(p.Return(ctx, b))
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	is.Equal(c.ID(), b.ID())
	d, err := p.Acquire(ctx)
	is.NoErr(err)
	is.Equal(d.ID(), a.ID())
	is.NoErr(p.Return(ctx, c))
	is.NoErr(p.Return(ctx, d))
}

func TestIntegrationReturnAboveMaxIdleRemovesWithoutWaitingForAStopTimeout(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: 1})
	ctx := bg(t)
	a, err := p.Acquire(ctx)
	is.NoErr(err)
	b, err := p.Acquire(ctx)
	is.NoErr(err)
	is.NoErr(p.Return(ctx, a))
	is.NoErr(p.Return(ctx, b)) // one above MaxIdle: removed
	took := waitGone(t, b.ID(), 10*time.Second)
	t.Logf("removed in %v", took)
	if took > 5*time.Second { // Docker's stop timeout is 10s; a forced removal takes well under 1s, more under load
		t.Fatalf("removal took %v: it must not wait out a stop timeout", took)
	}
	eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonTrim] >= 1 })
}

// eventually polls cond until it holds, for figures that the pool updates in
// the background and announces no event for.
func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestIntegrationRemoveDeletesTheContainerPromptly(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1})
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	start := time.Now()
	is.NoErr(p.Remove(ctx, c))
	waitGone(t, c.ID(), 10*time.Second)
	took := time.Since(start)
	t.Logf("Remove to gone: %v", took)
	if took > time.Second {
		t.Fatalf("removal took %v", took)
	}
	is.True(errors.Is(p.Return(ctx, c), dockerpool.ErrContainerReleased))
	_, err = c.Exec(ctx, []string{"true"})
	is.True(errors.Is(err, dockerpool.ErrContainerReleased))
}

func TestIntegrationMisusedHandlesAreErrorsThatChangeNothing(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p1 := warm(t, dockerpool.Config{MinIdle: 1})
	p2 := warm(t, dockerpool.Config{MinIdle: 1})
	ctx := bg(t)
	c, err := p1.Acquire(ctx)
	is.NoErr(err)
	is.True(errors.Is(p2.Return(ctx, c), dockerpool.ErrInvalidContainer))
	is.True(errors.Is(p1.Return(ctx, nil), dockerpool.ErrInvalidContainer))
	is.NoErr(p1.Return(ctx, c))
	before := p1.Stats()
	is.True(errors.Is(p1.Return(ctx, c), dockerpool.ErrContainerReleased))
	is.True(errors.Is(p1.Remove(ctx, c), dockerpool.ErrContainerReleased))
	after := p1.Stats()
	is.Equal(after.Idle, before.Idle)
	is.Equal(after.Removed, before.Removed)
}

func TestIntegrationCancelledAcquireKeepsTheContainerBeingCreated(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: 5})
	ctx := bg(t)
	held, err := p.Acquire(ctx) // nothing idle now; refill starts
	is.NoErr(err)
	short, cancel := context.WithTimeout(ctx, time.Millisecond)
	defer cancel()
	_, err = p.Acquire(short)
	is.True(errors.Is(err, context.DeadlineExceeded))
	// Both the refill's creation and the one made for the caller end idle.
	is.NoErr(p.WaitIdle(ctx, 2))
	is.Equal(p.Stats().CanceledAcquireCount, int64(1))
	is.NoErr(p.Return(ctx, held))
}

func TestIntegrationBurstOfCallersEachGetTheirOwnContainer(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: 8, MaxConcurrentAcquire: 4})
	ctx := bg(t)
	const n = 8
	type got struct {
		c   *dockerpool.Container
		err error
	}
	results := make(chan got, n)
	for range n {
		go func() {
			c, err := p.Acquire(ctx)
			results <- got{c, err}
		}()
	}
	seen := map[string]bool{}
	var held []*dockerpool.Container
	for i := range n {
		r := testwait.Recv(t, results, time.Minute, fmt.Sprintf("answer %d of %d to the burst of Acquires", i+1, n))
		is.NoErr(r.err)
		is.True(!seen[r.c.ID()]) // never one container for two callers
		seen[r.c.ID()] = true
		held = append(held, r.c)
	}
	for _, c := range held {
		is.NoErr(p.Return(ctx, c))
	}
}

func TestIntegrationShutdownWaitsForContainersInUseThenRemovesEverything(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	cfg := dockerpooltest.Config(t, dockerpool.Config{MinIdle: 3})
	p, err := dockerpool.New(bg(t), cfg)
	is.NoErr(err)
	cli := dockerpooltest.Client(t)
	t.Cleanup(func() { dockerpooltest.AssertClean(t, cli, cfg.Name) })
	ctx := bg(t)
	is.NoErr(p.WaitIdle(ctx, 3))
	held, err := p.Acquire(ctx)
	is.NoErr(err)
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- p.Shutdown(ctx) }()
	for { // admission closes at once; an Acquire racing Shutdown's start may still win
		c, err := p.Acquire(ctx)
		if err != nil {
			is.True(errors.Is(err, dockerpool.ErrPoolShutdown))
			break
		}
		is.NoErr(p.Return(ctx, c))
	}
	res, err := held.Exec(ctx, []string{"echo", "still mine"})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "still mine\n")
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while a container was in use", err)
	default:
	}
	is.NoErr(p.Return(ctx, held))
	is.NoErr(testwait.Recv(t, done, time.Minute, "Shutdown's return after the last container came back"))
	t.Logf("shutdown took %v", time.Since(start))
	left, err := dockerpooltest.Leftovers(cli, cfg.Name)
	is.NoErr(err)
	is.Equal(len(left), 0)
	is.NoErr(p.Shutdown(ctx)) // harmless
}

func TestIntegrationShutdownWhoseDeadlinePassesRemovesContainersInUse(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	cfg := dockerpooltest.Config(t, dockerpool.Config{MinIdle: 2})
	p, err := dockerpool.New(bg(t), cfg)
	is.NoErr(err)
	cli := dockerpooltest.Client(t)
	t.Cleanup(func() { dockerpooltest.AssertClean(t, cli, cfg.Name) })
	is.NoErr(p.WaitIdle(bg(t), 2))
	held, err := p.Acquire(bg(t))
	is.NoErr(err)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err = p.Shutdown(ctx)
	is.True(errors.Is(err, context.DeadlineExceeded))
	t.Logf("forced shutdown took %v", time.Since(start))
	left, lerr := dockerpooltest.Leftovers(cli, cfg.Name)
	is.NoErr(lerr)
	is.Equal(len(left), 0)
	_, err = held.Exec(bg(t), []string{"true"})
	is.True(errors.Is(err, dockerpool.ErrPoolShutdown))
}

func TestIntegrationNewCreatesReusesAndRemovesTheNetwork(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	cli := dockerpooltest.Client(t)
	netName := dockerpooltest.Name(t)
	t.Cleanup(func() { _ = cli.NetworkRemove(context.Background(), netName) })
	base := dockerpool.Config{MinIdle: 1, Network: dockerpool.NetworkConfig{
		Name: netName, NeedsCreate: true, NeedsRemove: true, Labels: map[string]string{"purpose": "test"},
	}}
	p1 := dockerpooltest.NewPool(t, base)
	nw, err := cli.NetworkInspect(bg(t), netName, network.InspectOptions{})
	is.NoErr(err)
	is.Equal(nw.Labels["purpose"], "test")
	// The containers join it.
	is.NoErr(p1.WaitIdle(bg(t), 1))
	c, err := p1.Acquire(bg(t))
	is.NoErr(err)
	info, _ := inspect(t, c.ID())
	_, joined := info.NetworkSettings.Networks[netName]
	is.True(joined)
	is.NoErr(p1.Return(bg(t), c))

	// A second pool reuses the network rather than failing.
	reuse := base
	reuse.Network.NeedsRemove = false
	p2, err := dockerpool.New(bg(t), dockerpooltest.Config(t, reuse))
	is.NoErr(err)
	is.NoErr(p2.Shutdown(bg(t)))

	is.NoErr(p1.Shutdown(bg(t)))
	_, err = cli.NetworkInspect(bg(t), netName, network.InspectOptions{})
	is.True(err != nil) // NeedsRemove removed it
}

func TestIntegrationNewNamesAMissingImageAndANetworkThatDoesNotExist(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	dockerpooltest.Client(t)
	_, err := dockerpool.New(bg(t), dockerpooltest.Config(t, dockerpool.Config{
		Image: dockerpool.ImageConfig{Name: "dockerpool-no-such-image:1", NeedsPull: true},
	}))
	is.True(errors.Is(err, dockerpool.ErrImageNotFound))
	is.True(strings.Contains(err.Error(), "dockerpool-no-such-image:1"))
	t.Logf("missing image: %v", err)

	_, err = dockerpool.New(bg(t), dockerpooltest.Config(t, dockerpool.Config{
		Network: dockerpool.NetworkConfig{Name: "dockerpool-no-such-network"},
	}))
	is.True(errors.Is(err, dockerpool.ErrNetworkNotFound))
}

func TestIntegrationNewFailsWithinSecondsWhenTheDaemonCannotBeReached(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	image := dockerpooltest.Image(t)
	dir := t.TempDir()

	// Nobody listening.
	cli, err := client.NewClientWithOpts(client.WithHost("unix://"+filepath.Join(dir, "nobody.sock")), client.WithAPIVersionNegotiation())
	is.NoErr(err)
	defer cli.Close()
	start := time.Now()
	_, err = dockerpool.New(bg(t), dockerpool.Config{Name: "unreachable", Network: dockerpool.NetworkConfig{Name: "none"}, Image: dockerpool.ImageConfig{Name: image}, Client: cli})
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "cannot reach the Docker daemon"))
	is.True(time.Since(start) < 2*time.Second)

	// Listening, but never answering.
	sock := filepath.Join(dir, "mute.sock")
	ln, err := net.Listen("unix", sock)
	is.NoErr(err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	mute, err := client.NewClientWithOpts(client.WithHost("unix://"+sock), client.WithAPIVersionNegotiation())
	is.NoErr(err)
	defer mute.Close()
	start = time.Now()
	_, err = dockerpool.New(bg(t), dockerpool.Config{Name: "mute", Network: dockerpool.NetworkConfig{Name: "none"}, Image: dockerpool.ImageConfig{Name: image}, Client: mute})
	is.True(errors.Is(err, context.DeadlineExceeded))
	took := time.Since(start)
	t.Logf("mute daemon: %v after %v", err, took)
	is.True(took < 7*time.Second)
}

// ---- recovery after a crash ------------------------------------------------

// holdAPool is the process that TestIntegrationNewAdoptsWhatACrashedProcessLeft
// starts and kills: the test binary run again with DOCKERPOOL_HELPER_POOL
// set, which TestMain sends here instead of to the tests. It prints READY
// and the IDs of the two containers it ran commands in, or ERROR and why,
// and waits to be killed (at most helperTimeout).
func holdAPool(name, image string) int {
	time.AfterFunc(helperTimeout, func() {
		fmt.Println("ERROR the helper process was not killed within", helperTimeout)
		os.Exit(2)
	})
	// Bounded, so that a daemon that cannot start containers is an ERROR
	// line for the parent, not a helper waiting forever.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := dockerpool.New(ctx, helperConfig(name, image))
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	if err := p.WaitIdle(ctx, 3); err != nil {
		fmt.Println("ERROR warm up:", err)
		return 1
	}
	used, err := p.Acquire(ctx) // held, and used: must not be adopted
	if err == nil {
		_, err = used.Exec(ctx, []string{"true"})
	}
	returned, err2 := p.Acquire(ctx) // used then returned: idle but not clean
	if err2 == nil {
		_, err2 = returned.Exec(ctx, []string{"touch", "/tmp/secret"})
	}
	if err := errors.Join(err, err2); err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	_ = p.Return(ctx, returned)
	for range 3 { // creations in flight when the process dies
		go func() { _, _ = p.Acquire(ctx) }()
	}
	fmt.Println("READY", used.ID(), returned.ID())
	select {} // wait for SIGKILL
}

func helperConfig(name, image string) dockerpool.Config {
	return dockerpool.Config{
		Name:       name,
		Network:    dockerpool.NetworkConfig{Name: "none"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
		Image:      dockerpool.ImageConfig{Name: image},
		MinIdle:    3,
		MaxIdle:    6,
		Labels:     map[string]string{dockerpooltest.LabelTest: "crash", dockerpooltest.LabelRun: dockerpooltest.RunID()},
		OnError:    func(error) {},
	}
}

func TestIntegrationNewAdoptsWhatACrashedProcessLeft(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	cli := dockerpooltest.Client(t)
	image := dockerpooltest.Image(t)
	name := dockerpooltest.Name(t)
	t.Cleanup(func() {
		dockerpooltest.SweepPool(cli, name)
	})

	helper := startHelper(t, "DOCKERPOOL_HELPER_POOL="+name, "DOCKERPOOL_HELPER_IMAGE="+image)
	f := helper.expect(t, "READY", 90*time.Second)
	is.Equal(len(f), 3)
	usedID, returnedID := f[1], f[2]
	helper.kill(t) // the crash

	// What a trustworthy adoption may take: running, never exec'd. The two
	// containers the helper ran commands in must not be among them.
	left, err := dockerpooltest.Leftovers(cli, name)
	is.NoErr(err)
	clean := map[string]bool{}
	for _, c := range left {
		if c.ID != usedID && c.ID != returnedID && c.State == "running" {
			clean[c.ID] = true
		}
		t.Logf("left: %s %s %v %s", c.ID[:12], c.State, c.Names, c.Status)
	}
	t.Logf("left by the crashed process: %d containers, %d clean", len(left), len(clean))
	is.True(len(clean) >= 1)

	// The pool of the next process says what it adopted, and why it
	// removes the rest.
	var log syncBuffer
	cfg := helperConfig(name, image)
	cfg.Logger = newTestLogger(&log)
	cfg.OnError = func(err error) { t.Logf("OnError: %v", err) }
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the new pool's log:\n%s", log.String())
		}
	})
	p, err := dockerpool.New(bg(t), cfg)
	is.NoErr(err)
	t.Cleanup(func() { _ = p.Shutdown(context.Background()) }) // before the sweep: cleanups run last-in first-out
	adopted := map[string]bool{}
	for _, m := range regexp.MustCompile(`msg="container adopted" id=([0-9a-f]{12})`).FindAllStringSubmatch(log.String(), -1) {
		adopted[m[1]] = true
	}
	is.Equal(p.Stats().Adopted, int64(len(adopted)))
	// The used and the returned-after-use containers are gone, not adopted.
	is.True(!adopted[usedID[:12]] && !adopted[returnedID[:12]])
	waitGone(t, usedID, 10*time.Second)
	waitGone(t, returnedID, 10*time.Second)
	for _, c := range left {
		switch {
		case c.ID == usedID || c.ID == returnedID:
			// waited for above
		case clean[c.ID]:
			// Running and clean when the crash was seen: adopted, and alive.
			if !adopted[c.ID[:12]] {
				t.Errorf("container %s, clean and running after the crash, was not adopted", c.ID[:12])
			} else if info, ok := inspect(t, c.ID); !ok || !info.State.Running {
				t.Errorf("adopted container %s is gone", c.ID[:12])
			}
		case adopted[c.ID[:12]]:
			// A creation the crashed process had in flight, whose start the
			// daemon finished after the crash: running and never used, so
			// adopted too.
			t.Logf("container %s (%s when the crash was seen) was adopted: its start finished after the crash", c.ID[:12], c.State)
		default:
			// A creation that was still in flight, not started: removed.
			waitGone(t, c.ID, 10*time.Second)
		}
	}
	is.NoErr(p.Shutdown(bg(t)))
	rest, err := dockerpooltest.Leftovers(cli, name)
	is.NoErr(err)
	is.Equal(len(rest), 0)
}

func TestIntegrationACmdThatExitsAtOnceIsReportedAndBackedOff(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	errs := make(chan error, 16)
	p := dockerpooltest.NewPool(t, dockerpool.Config{
		MinIdle: 1,
		Cmd:     []string{"sh", "-c", "exit 3"},
		OnError: func(err error) {
			select {
			case errs <- err:
			default:
			}
		},
	})
	select {
	case err := <-errs:
		t.Logf("OnError: %v", err)
		is.True(strings.Contains(err.Error(), "exited with code 3"))
	case <-time.After(10 * time.Second):
		t.Fatal("no error reported for a container that exits at once")
	}
	// Backoff: a handful of attempts in two seconds, not a hot loop.
	before := p.Stats().Created
	time.Sleep(2 * time.Second) // measuring a rate over a wall-clock window
	made := p.Stats().Created - before
	t.Logf("%d creations in 2s while failing", made)
	is.True(made <= 6)
	is.True(!p.Stats().DaemonHealthy)
}

func TestIntegrationACmdThatExitsAtOnceGivesClearErrorsNotADaemonFailure(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := dockerpooltest.NewPool(t, dockerpool.Config{MinIdle: 1, Cmd: []string{"sh", "-c", "sleep 0.2; exit 0"}, CheckIdleAfter: -1})
	deadline := time.Now().Add(30 * time.Second)
	acquire := func() (*dockerpool.Container, error) {
		ctx, cancel := context.WithTimeout(bg(t), 3*time.Second)
		defer cancel()
		return p.Acquire(ctx)
	}
	// A container handed out exits under its holder: its Exec says so.
	var c *dockerpool.Container
	for c == nil {
		if time.Now().After(deadline) {
			t.Fatal("no container handed out within 30s")
		}
		got, err := acquire()
		is.True(err == nil || errors.Is(err, dockerpool.ErrCrashLoop) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dockerpool.ErrCreateFailed))
		c = got
	}
	eventually(t, func() bool { // let it exit: the case under test
		info, ok := inspect(t, c.ID())
		return !ok || !info.State.Running
	})
	_, err := c.Exec(bg(t), []string{"true"})
	t.Logf("exec in a container that exited: %v", err)
	is.True(errors.Is(err, dockerpool.ErrContainerDead))
	is.NoErr(p.Return(bg(t), c))
	// Left alone, the idle ones exit right after they start, unused: a
	// crash loop (counted as a failed creation), not a daemon failure.
	for p.Stats().CreateErrors == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no idle container was seen to exit right after its start within 30s")
		}
		time.Sleep(20 * time.Millisecond) // the count comes from the owner: nothing to block on
	}
	for {
		if time.Now().After(deadline) {
			t.Fatal("no ErrCrashLoop within 30s")
		}
		got, err := acquire()
		if errors.Is(err, dockerpool.ErrCrashLoop) {
			is.True(!errors.Is(err, dockerpool.ErrDaemonUnavailable)) // the daemon is fine
			is.True(strings.Contains(err.Error(), "right after it started"))
			return
		}
		if err == nil {
			is.NoErr(p.Remove(bg(t), got))
			continue
		}
		is.True(errors.Is(err, context.DeadlineExceeded) || errors.Is(err, dockerpool.ErrCreateFailed))
	}
}
