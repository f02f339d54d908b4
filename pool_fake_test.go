package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// Level 3 of the actor's tests (see core_test.go): the whole pool against
// the in-memory fake Docker, under testing/synctest.

func TestPoolFillsToMinIdleAndShutsDownToNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 3, MaxIdle: 5})
		is.NoErr(p.WaitIdle(context.Background(), 3))
		is.Equal(p.IdleCount(), 3)
		is.Equal(f.Running(), 3)
		shutdown(t, p)
		is.Equal(len(f.Containers()), 0)
		is.Equal(p.IdleCount(), 0)
		st := p.Stats()
		is.Equal(st.RemovedBy[ReasonShutdown], int64(3))
	})
}

func TestPoolAcquireFromAWarmPoolMakesNoDockerCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 1, MaxIdle: 3})
		a, _ := p.Acquire(context.Background())
		b, _ := p.Acquire(context.Background())
		is.NoErr(p.Return(context.Background(), a))
		is.NoErr(p.Return(context.Background(), b))
		synctest.Wait()
		is.True(p.IdleCount() >= 2) // taking one leaves MinIdle: no refill either
		before := f.Calls(fakedocker.OpCreate) + f.Calls(fakedocker.OpInspect) + f.Calls(fakedocker.OpStart)
		c, err := p.Acquire(context.Background())
		is.NoErr(err)
		is.NoErr(p.Return(context.Background(), c))
		after := f.Calls(fakedocker.OpCreate) + f.Calls(fakedocker.OpInspect) + f.Calls(fakedocker.OpStart)
		is.Equal(after, before)
		shutdown(t, p)
	})
}

func TestPoolAcquireWhoseContextEndsDoesNotLoseTheContainerBeingCreated(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		g := newGate(fakedocker.OpCreate)
		f.Hook = g.hook
		p := startFake(t, f, Config{MinIdle: 1, MaxIdle: 3})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		_, err := p.Acquire(ctx)
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.True(errors.Is(err, ctx.Err()))
		synctest.Wait()
		is.Equal(int(g.waiting.Load()), 2) // refill's creation and the caller's, still going
		close(g.release)
		synctest.Wait()
		is.Equal(p.IdleCount(), 2) // both became idle: nothing lost
		st := p.Stats()
		is.Equal(st.CanceledAcquireCount, int64(1))
		shutdown(t, p)
		is.Equal(len(f.Containers()), 0)
	})
}

func TestPoolNeverRunsMoreDockerCallsThanItsWorkerBounds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		var now, peak atomic.Int32
		release := make(chan struct{})
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op != fakedocker.OpCreate {
				return nil
			}
			n := now.Add(1)
			for {
				p := peak.Load()
				if n <= p || peak.CompareAndSwap(p, n) {
					break
				}
			}
			defer now.Add(-1)
			<-release
			return nil
		}
		p := startFake(t, f, Config{MinIdle: 1, MaxIdle: 20, MaxConcurrentDockerOps: 2, MaxConcurrentAcquire: 3})
		var wg sync.WaitGroup
		for range 10 {
			wg.Go(func() {
				c, err := p.Acquire(context.Background())
				if err == nil {
					_ = p.Return(context.Background(), c)
				}
			})
		}
		synctest.Wait()
		is.Equal(peak.Load(), int32(1+3)) // one refill + three for callers, never more
		close(release)
		wg.Wait()
		shutdown(t, p)
	})
}

func TestPoolNeverHandsOneContainerToTwoCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 2, MaxIdle: 3, MaxSize: 4})
		var mu sync.Mutex
		holders := map[string]int{}
		var wg sync.WaitGroup
		for i := range 40 {
			wg.Go(func() {
				for j := range 20 {
					c, err := p.Acquire(context.Background())
					if err != nil {
						t.Errorf("acquire: %v", err)
						return
					}
					mu.Lock()
					holders[c.ID()]++
					if holders[c.ID()] > 1 {
						t.Errorf("container %s has %d holders", c.ID(), holders[c.ID()])
					}
					mu.Unlock()
					time.Sleep(time.Duration(i+j) * time.Millisecond) // virtual: hold it a while
					mu.Lock()
					holders[c.ID()]--
					mu.Unlock()
					if err := p.Return(context.Background(), c); err != nil {
						t.Errorf("return: %v", err)
					}
				}
			})
		}
		wg.Wait()
		shutdown(t, p)
		if n := len(f.Containers()); n != 0 {
			t.Fatalf("%d containers left", n)
		}
	})
}

func TestPoolReportsAFailingDaemonOnceAndRecoversByItself(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		var down atomic.Bool
		down.Store(true)
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op == fakedocker.OpCreate && down.Load() {
				return fakedocker.ErrDown
			}
			return nil
		}
		var reports atomic.Int32
		p := startFake(t, f, Config{MinIdle: 2, OnError: func(error) { reports.Add(1) }})
		time.Sleep(10 * time.Second) // virtual time: many backoff rounds
		synctest.Wait()
		attempts := f.Calls(fakedocker.OpCreate)
		// 100ms, 200ms, 400ms, ... capped at 5s: about 7 attempts in 10s, not 100.
		if attempts < 4 || attempts > 10 {
			t.Fatalf("%d creation attempts in 10s", attempts)
		}
		is.Equal(reports.Load(), int32(1)) // once per state change
		start := time.Now()
		_, err := p.Acquire(context.Background())
		is.True(errors.Is(err, ErrDaemonUnavailable))
		is.True(errors.Is(err, fakedocker.ErrDown))
		is.Equal(time.Since(start), time.Duration(0)) // at once
		is.True(!p.Stats().DaemonHealthy)

		down.Store(false)
		is.NoErr(p.WaitIdle(context.Background(), 2))
		if took := time.Since(start); took > 6*time.Second {
			t.Fatalf("recovered after %v", took)
		}
		is.True(p.Stats().DaemonHealthy)
		shutdown(t, p)
	})
}

func TestPoolFailsWaitersWhenTheDaemonStallsAndAPingFails(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		var stalled atomic.Bool
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if !stalled.Load() {
				return nil
			}
			if op == fakedocker.OpPing {
				return fakedocker.ErrDown
			}
			<-ctx.Done() // a daemon that accepts and never answers
			return ctx.Err()
		}
		p := startFake(t, f, Config{MinIdle: 1, DockerTimeout: time.Minute})
		is.NoErr(p.WaitIdle(context.Background(), 1))
		c1, err := p.Acquire(context.Background())
		is.NoErr(err)
		synctest.Wait() // the refill has replaced it
		stalled.Store(true)
		c2, err := p.Acquire(context.Background()) // the last idle one
		is.NoErr(err)
		start := time.Now()
		_, err = p.Acquire(context.Background())
		is.True(errors.Is(err, ErrDaemonUnavailable))
		if took := time.Since(start); took > 2*time.Second {
			t.Fatalf("Acquire took %v against a stalled daemon", took)
		}
		stalled.Store(false)
		is.NoErr(p.Return(context.Background(), c1))
		is.NoErr(p.Return(context.Background(), c2))
		shutdown(t, p)
	})
}

func TestPoolShutdownAnswersWaitersAndWaitsForLeasedContainers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		g := newGate(fakedocker.OpCreate)
		p := startFake(t, f, Config{MinIdle: 1})
		is.NoErr(p.WaitIdle(context.Background(), 1))
		f.SetHook(g.hook) // from now on, creations hang until released
		held, err := p.Acquire(context.Background())
		is.NoErr(err)
		waitErr := make(chan error, 1)
		go func() {
			_, err := p.Acquire(context.Background())
			waitErr <- err
		}()
		synctest.Wait()
		done := make(chan error, 1)
		go func() { done <- p.Shutdown(context.Background()) }()
		synctest.Wait()
		is.True(errors.Is(<-waitErr, ErrPoolShutdown))
		_, err = p.Acquire(context.Background())
		is.True(errors.Is(err, ErrPoolShutdown))
		// The holder can still exec while Shutdown waits for it.
		res, err := held.Exec(context.Background(), []string{"echo", "still", "mine"})
		is.NoErr(err)
		is.Equal(string(res.Stdout), "still mine\n")
		select {
		case <-done:
			t.Fatal("Shutdown returned while a container was in use")
		default:
		}
		close(g.release) // the creations in flight land, and are removed
		is.NoErr(p.Return(context.Background(), held))
		is.NoErr(<-done)
		is.Equal(len(f.Containers()), 0)
		is.NoErr(p.Shutdown(context.Background())) // a second call is harmless
		_, err = held.Exec(context.Background(), []string{"echo"})
		is.True(errors.Is(err, ErrContainerReleased))
	})
}

func TestPoolShutdownWhoseContextEndsRemovesContainersInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 2})
		is.NoErr(p.WaitIdle(context.Background(), 2))
		held, err := p.Acquire(context.Background())
		is.NoErr(err)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		err = p.Shutdown(ctx)
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.Equal(len(f.Containers()), 0)
		_, err = held.Exec(context.Background(), []string{"echo"})
		is.True(errors.Is(err, ErrPoolShutdown))
		is.True(errors.Is(p.Return(context.Background(), held), ErrPoolShutdown))
		// Another Shutdown waits for the same end.
		is.NoErr(p.Shutdown(context.Background()))
	})
}

func TestPoolShutdownCutsCreationsShortWhenForcedAndSweepsTheirContainers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		// Creations go through, starts hang: containers exist but never
		// reach the pool.
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op == fakedocker.OpStart {
				<-ctx.Done()
				return ctx.Err()
			}
			return nil
		}
		p := startFake(t, f, Config{MinIdle: 3})
		synctest.Wait()
		is.Equal(len(f.Containers()), 3)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		go func() {
			_, _ = p.Acquire(context.Background())
		}()
		err := p.Shutdown(ctx)
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.Equal(len(f.Containers()), 0)
	})
}

func TestPoolReplacesAnIdleContainerKilledBehindItsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 2})
		is.NoErr(p.WaitIdle(context.Background(), 2))
		for _, c := range f.Containers() {
			f.Kill(c.ID)
		}
		synctest.Wait()
		is.NoErr(p.WaitIdle(context.Background(), 2))
		is.Equal(f.Running(), 2)
		is.Equal(p.Stats().RemovedBy[ReasonDied], int64(2))
		c, err := p.Acquire(context.Background())
		is.NoErr(err)
		res, err := c.Exec(context.Background(), []string{"echo", "ok"})
		is.NoErr(err)
		is.Equal(res.ExitCode, 0)
		is.NoErr(p.Return(context.Background(), c))
		shutdown(t, p)
	})
}

// When the event stream breaks, the watcher subscribes again after a
// backoff; on a busy machine deaths come in between. The new subscription
// asks for the events since the last it saw (Docker, Podman and the fake
// replay them), so none is missed even before the re-list. (The first
// subscription is made by New itself, before it lists the containers.)
func TestPoolHearsOfDeathsThatHappenBeforeItsWatcherSubscribesAgain(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		killed := make(chan struct{})
		var subs atomic.Int32
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op == fakedocker.OpEvents && subs.Add(1) == 2 {
				select { // the second subscription waits for the kills
				case <-killed:
				case <-ctx.Done():
				}
			}
			if op == fakedocker.OpList && subs.Load() >= 2 {
				return fakedocker.ErrDown // no re-list to fall back on: only the replay tells
			}
			return nil
		}
		p := startFake(t, f, Config{MinIdle: 2, CheckIdleAfter: -1})
		is.NoErr(p.WaitIdle(context.Background(), 2))
		f.BreakEvents(errors.New("daemon restarted"))
		synctest.Wait()
		for _, c := range f.Containers() {
			f.Kill(c.ID)
		}
		close(killed)
		time.Sleep(time.Second) // the bubble's clock: the watcher's backoff passes
		synctest.Wait()
		is.Equal(p.Stats().RemovedBy[ReasonDied], int64(2))
		f.SetHook(nil)
		is.NoErr(p.WaitIdle(context.Background(), 2))
		is.Equal(f.Running(), 2)
	})
}

// listedNotFound makes f answer "No such container" to the removal of the
// containers hidden says while it still lists them, as Docker does for a
// container whose creation is still in progress.
func listedNotFound(f *fakedocker.Fake, hidden func(id string) bool) {
	f.SetHook(func(ctx context.Context, op fakedocker.Op, id string) error {
		if op == fakedocker.OpRemove && hidden(id) {
			return fmt.Errorf("No such container: %s: %w", id, cerrdefs.ErrNotFound)
		}
		return nil
	})
}

// Docker lists a container whose creation is still in progress before it
// can find it by ID: a removal in that window answers "No such container",
// and the container appears a moment later. New meets this with the
// creations a crashed process had in flight. (Found as a flake of
// TestIntegrationNewAdoptsWhatACrashedProcessLeft: such a container was
// counted as removed and stayed, created, until the next reconcile.)
func TestNewRetriesTheRemovalOfAContainerListedButNotYetFound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		// What the crashed process left: a container being created.
		inFlight := f.Add("", map[string]string{LabelPool: "t"}, false, 0)
		var notFound atomic.Int32
		listedNotFound(f, func(id string) bool { return id == inFlight && notFound.Add(1) <= 3 })
		p := startFake(t, f, Config{MinIdle: 1})
		is.NoErr(p.WaitIdle(context.Background(), 1))
		// The removal is retried on the ticks, with a backoff: let the
		// bubble's clock run until it went (a minute at most).
		gone := func() bool {
			for _, c := range f.Containers() {
				if c.ID == inFlight {
					return false
				}
			}
			return true
		}
		for deadline := time.Now().Add(time.Minute); !gone() && time.Now().Before(deadline); {
			time.Sleep(100 * time.Millisecond)
		}
		is.True(gone())
		is.True(notFound.Load() > 3)
		is.Equal(p.Stats().RemovedBy[ReasonStale], int64(1))
	})
}

// The same at Shutdown: a container the daemon lists but cannot find for
// seconds (in the fault test, 12 s after a network that dropped packets
// came back: its creation request reached the daemon late). Shutdown waits
// for it, within DockerTimeout, and removes it, instead of giving up after
// its few quick retries and leaving it.
func TestShutdownWaitsForAContainerListedButNotYetFoundAndRemovesIt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 1})
		is.NoErr(p.WaitIdle(context.Background(), 1))
		id := f.Containers()[0].ID
		until := time.Now().Add(5 * time.Second)
		listedNotFound(f, func(x string) bool { return x == id && time.Now().Before(until) })
		is.NoErr(p.Shutdown(context.Background()))
		is.True(!time.Now().Before(until))
		is.Equal(len(f.Containers()), 0)
	})
}

// ...but not forever: a container the daemon lists and never finds costs
// Shutdown stillCreatingFor, for all such containers together, and is then
// reported, while the others are removed.
func TestShutdownGivesUpOnContainersListedButNeverFoundAfterABoundAndRemovesTheRest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 3})
		is.NoErr(p.WaitIdle(context.Background(), 3))
		cs := f.Containers()
		ghosts := map[string]bool{cs[0].ID: true, cs[1].ID: true}
		listedNotFound(f, func(x string) bool { return ghosts[x] })
		start := time.Now()
		err := p.Shutdown(context.Background())
		took := time.Since(start)
		t.Logf("Shutdown after %v: %v", took, err)
		is.True(err != nil && strings.Count(err.Error(), "its creation is still in progress") == 2)
		if took < stillCreatingFor || took > stillCreatingFor+time.Second {
			t.Fatalf("Shutdown took %v, want the bound for them all, %v", took, stillCreatingFor)
		}
		is.Equal(len(f.Containers()), 2) // the ghosts: the third is removed
	})
}

func TestPoolHandlesAContainerRemovedBehindItsBackWhileInUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 1})
		is.NoErr(p.WaitIdle(context.Background(), 1))
		c, err := p.Acquire(context.Background())
		is.NoErr(err)
		is.Equal(p.InUse(), 1)
		f.Delete(c.ID())
		synctest.Wait()
		_, err = c.Exec(context.Background(), []string{"echo"})
		is.True(errors.Is(err, ErrContainerDead))
		is.NoErr(p.Return(context.Background(), c))
		is.Equal(p.InUse(), 0)
		is.NoErr(p.WaitIdle(context.Background(), 1))
		shutdown(t, p)
	})
}

func TestPoolResyncsWhenTheEventStreamBreaks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		p := startFake(t, f, Config{MinIdle: 2})
		is.NoErr(p.WaitIdle(context.Background(), 2))
		synctest.Wait()
		subs := f.Calls(fakedocker.OpEvents)
		f.BreakEvents(errors.New("daemon restarted"))
		// While nobody listens, a container dies: no event reaches the pool.
		victim := f.Containers()[0].ID
		f.Kill(victim)
		time.Sleep(time.Second)
		synctest.Wait()
		is.True(f.Calls(fakedocker.OpEvents) > subs) // subscribed again
		is.Equal(p.Stats().RemovedBy[ReasonDied], int64(1))
		is.NoErr(p.WaitIdle(context.Background(), 2))
		shutdown(t, p)
	})
}

func TestNewAdoptsOnlyUnusedRunningContainersOfTheSameConfiguration(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		cfg := testConfig(Config{Client: f, Name: "adopt", MinIdle: 2, MaxIdle: 3})
		s, err := resolve(cfg)
		is.NoErr(err)
		info, _ := f.ImageInspect(context.Background(), fakeImage)
		hash := buildSpec(s, info.ID, "").hash
		labels := func(h string) map[string]string {
			return map[string]string{LabelPool: "adopt", LabelConfig: h}
		}
		fresh1 := f.Add("eager_hopper", labels(hash), true, 0)
		fresh2 := f.Add(cleanNamePrefix+"abc", labels(hash), true, 0) // reset by OnReturn
		used := f.Add(usedNamePrefix+"def", labels(hash), true, 0)    // an exec ran in it
		running := f.Add("busy_bee", labels(hash), true, 1)           // an exec is running now
		stopped := f.Add("sleepy", labels(hash), false, 0)            // not running
		stale := f.Add("old", labels("other"), true, 0)               // another configuration
		foreign := f.Add("theirs", map[string]string{LabelPool: "someone-else"}, true, 0)

		p, err := New(context.Background(), cfg)
		is.NoErr(err)
		synctest.Wait()
		st := p.Stats()
		is.Equal(st.Adopted, int64(2))
		is.Equal(st.Created, int64(0)) // MinIdle met by adoption
		is.Equal(st.RemovedBy[ReasonStale], int64(4))
		left := map[string]bool{}
		for _, c := range f.Containers() {
			left[c.ID] = true
		}
		is.True(left[fresh1] && left[fresh2] && left[foreign])
		is.True(!left[used] && !left[running] && !left[stopped] && !left[stale])
		shutdown(t, p)
		is.Equal(len(f.Containers()), 1) // only the other pool's
	})
}

func TestNewFailsClearlyOnBadConfigAndUnreachableDaemon(t *testing.T) {
	is := is.New(t)
	ctx := context.Background()
	for _, tc := range []struct {
		cfg  Config
		want error
	}{
		{Config{}, ErrPoolNameRequired},
		{Config{Name: "x"}, ErrNetworkNameRequired},
		{Config{Name: "x", Network: NetworkConfig{Name: "n"}}, ErrImageRequired},
		{testConfig(Config{MinIdle: -1}), ErrInvalidConfig},
		{testConfig(Config{MinIdle: 5, MaxIdle: 2}), ErrInvalidConfig},
		{testConfig(Config{MinIdle: 5, MaxSize: 2}), ErrInvalidConfig},
		{testConfig(Config{Image: ImageConfig{Name: "i", PullPolicy: "sometimes"}}), ErrInvalidConfig},
	} {
		_, err := New(ctx, tc.cfg)
		is.True(errors.Is(err, tc.want))
	}

	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op == fakedocker.OpPing {
				<-ctx.Done() // never answers
				return ctx.Err()
			}
			return nil
		}
		start := time.Now()
		_, err := New(ctx, testConfig(Config{Client: f}))
		is.True(err != nil)
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.Equal(time.Since(start), pingTimeout)
	})
}

func TestNewPreparesTheNetworkAndImage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		f := fakedocker.New(fakeImage)

		_, err := New(ctx, testConfig(Config{Client: f, Network: NetworkConfig{Name: "missing"}}))
		is.True(errors.Is(err, ErrNetworkNotFound))

		_, err = New(ctx, testConfig(Config{Client: f, Image: ImageConfig{Name: "nope:1", NeedsPull: true}}))
		is.True(errors.Is(err, ErrImageNotFound))
		is.True(err != nil && strings.Contains(err.Error(), "nope:1") && strings.Contains(err.Error(), "pull access denied"))

		_, err = New(ctx, testConfig(Config{Client: f, Image: ImageConfig{Name: "nope:2"}}))
		is.True(errors.Is(err, ErrImageNotFound))

		// A pull that fails falls back to the local copy.
		p, err := New(ctx, testConfig(Config{Client: f, Image: ImageConfig{Name: fakeImage, NeedsPull: true}}))
		is.NoErr(err)
		shutdown(t, p)

		// NeedsCreate makes the network; an existing one is reused; NeedsRemove
		// removes it at the end.
		p1, err := New(ctx, testConfig(Config{Client: f, Network: NetworkConfig{Name: "pn", NeedsCreate: true, NeedsRemove: true}}))
		is.NoErr(err)
		is.True(f.Network("pn"))
		p2, err := New(ctx, testConfig(Config{Client: f, Name: "t2", Network: NetworkConfig{Name: "pn", NeedsCreate: true}}))
		is.NoErr(err)
		shutdown(t, p2)
		is.True(f.Network("pn"))
		shutdown(t, p1)
		is.True(!f.Network("pn"))
	})
}

func TestPoolContainersCarryTheLabelsAndDetachFromTheNetworkOnRequest(t *testing.T) {
	s, err := resolve(testConfig(Config{
		Name:       "lbl",
		Labels:     map[string]string{"app": "judge"},
		HostConfig: &container.HostConfig{NetworkMode: "none"},
	}))
	if err != nil {
		t.Fatal(err)
	}
	spec := buildSpec(s, "sha256:x", "inst")
	is := is.New(t)
	is.Equal(spec.config.Labels[LabelPool], "lbl")
	is.Equal(spec.config.Labels["app"], "judge")
	is.Equal(spec.config.Labels[LabelInstance], "inst")
	is.Equal(string(spec.host.NetworkMode), "none")
	is.True(*spec.host.Init)
	is.Equal([]string(spec.config.Cmd), DefaultCmd())
	// The same configuration hashes the same; another does not.
	is.Equal(buildSpec(s, "sha256:x", "other").hash, spec.hash)
	is.True(buildSpec(s, "sha256:y", "inst").hash != spec.hash)
}
