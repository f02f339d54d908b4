package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// The Group over several hosts, each a fake daemon, under testing/synctest
// (virtual time: the 2-second bounds below are measured, not slept).

type fakeHosts struct {
	g     *Group
	fakes map[string]*fakedocker.Fake
}

// startHostGroup starts a group of one template "t" over hosts named by
// caps' keys, each a fake daemon with that MaxSize; prepare, if given, is
// called for each fake before the group starts.
func startHostGroup(t *testing.T, tmpl Config, caps map[string]int, prepare ...func(name string, f *fakedocker.Fake)) fakeHosts {
	t.Helper()
	fh := fakeHosts{fakes: map[string]*fakedocker.Fake{}}
	var hosts []Host
	for _, name := range []string{"a", "b", "c", "d"} {
		if n, ok := caps[name]; ok {
			f := fakedocker.New(fakeImage)
			for _, p := range prepare {
				p(name, f)
			}
			fh.fakes[name] = f
			hosts = append(hosts, Host{Name: name, Client: f, MaxSize: n})
		}
	}
	tmpl.Name = "h"
	// MaxCreating 4: a host's room (at most 4 here) can all be under
	// creation at once, so these tests see placement, not the creation bound.
	g, err := NewGroup(context.Background(), GroupConfig{StaticWarmth: true, MaxCreating: 4, Hosts: hosts, Templates: map[string]Config{"t": testConfig(tmpl)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range fh.fakes {
			f.Heal()
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	fh.g = g
	return fh
}

// within polls cond (a background state that announces nothing) for up to
// d of virtual time, and returns how long it took.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(10 * time.Millisecond) // virtual time: a poll, not a synchronisation
	}
	return time.Since(start)
}

func (fh fakeHosts) healthy(name string) bool { return fh.g.Stats().Hosts[name].Healthy }

// acquire is Acquire with a deadline (virtual time) that says what hung.
func (fh fakeHosts) acquire(t *testing.T, what string) *Container {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := fh.g.Acquire(ctx, "t")
	if err != nil {
		t.Fatalf("%s: Acquire: %v", what, err)
	}
	return c
}

func TestGroupHostsPlaceOnAnIdleContainerOfAnyHostFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, map[string]int{"a": 1, "b": 3})
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		hosts := map[string]int{}
		var held []*Container
		for range 4 {
			synctest.Wait() // the refill and the reports settle
			c, err := fh.g.Acquire(ctx, "t")
			is.NoErr(err)
			hosts[c.Host()]++
			held = append(held, c)
		}
		st := fh.g.Stats()
		is.Equal(st.Misses, int64(0)) // every one was idle somewhere
		is.Equal(hosts, map[string]int{"a": 1, "b": 3})
		is.Equal(st.MaxSize, 4)
		is.Equal(st.Hosts["a"].InUse, 1)
		is.Equal(st.Hosts["b"].InUse, 3)
		for _, c := range held {
			is.NoErr(fh.g.Return(ctx, c))
		}
	})
}

func TestGroupHostsKeepEachHostWithinItsCapAndNeverHandOutAContainerTwice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, map[string]int{"a": 2, "b": 3})
		seen := map[string]bool{}
		var held []*Container
		for i := range 5 {
			c := fh.acquire(t, fmt.Sprintf("Acquire %d of 5 with room for 5 on two hosts", i+1))
			is.True(!seen[c.Host()+c.ID()]) // no double hand-out (the fakes' IDs repeat across hosts)
			seen[c.Host()+c.ID()] = true
			held = append(held, c)
		}
		is.Equal(fh.fakes["a"].Running(), 2)
		is.Equal(fh.fakes["b"].Running(), 3)
		short, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := fh.g.Acquire(short, "t") // both hosts full, all in use
		is.True(errors.Is(err, context.DeadlineExceeded))
		for _, c := range held {
			is.NoErr(fh.g.Return(ctx, c))
		}
		is.True(fh.fakes["a"].Running() <= 2)
	})
}

// usedOnA starts a group over hosts a (4) and b (2) and returns a
// container of host a on which a command ran (it carries the used mark:
// it must not be adopted later).
func usedOnA(t *testing.T) (fakeHosts, *Container) {
	t.Helper()
	fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, map[string]int{"a": 4, "b": 2})
	c := fh.acquire(t, "a container of host a")
	if c.Host() != "a" {
		t.Fatalf("the first container is on host %q, want a (the most room)", c.Host())
	}
	if _, err := c.Exec(context.Background(), []string{"true"}); err != nil {
		t.Fatalf("the first Exec: %v", err)
	}
	return fh, c
}

func TestGroupHostThatStallsIsOutWithin2sAndItsContainersFailPromptly(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh, c := usedOnA(t)
		fh.fakes["a"].Stall()
		start := time.Now()
		_, err := c.Exec(ctx, []string{"true"}) // blocks on the stalled host until it is out
		took := time.Since(start)
		t.Logf("Exec on the stalled host after %v: %v", took, err)
		is.True(errors.Is(err, ErrContainerDead))
		is.True(errors.Is(err, ErrHostDown))
		is.True(strings.Contains(err.Error(), `"a"`))
		if took > 2*time.Second {
			t.Fatalf("Exec on a stalled host returned after %v, want within 2s", took)
		}
		st := fh.g.Stats().Hosts["a"]
		is.True(!st.Healthy)
		is.Equal(st.Outages, 1)
		is.True(st.LastError != "")
		// A second Exec fails at once.
		start = time.Now()
		_, err = c.Exec(ctx, []string{"true"})
		is.True(errors.Is(err, ErrHostDown) && errors.Is(err, ErrContainerDead))
		is.Equal(time.Since(start), time.Duration(0))
		// Acquire does not wait on a: b has room.
		d, err := fh.g.Acquire(ctx, "t")
		is.NoErr(err)
		is.Equal(d.Host(), "b")
		is.Equal(time.Since(start), time.Duration(0))
		// Return of the dead one succeeds at once.
		is.NoErr(fh.g.Return(ctx, c))
		is.Equal(time.Since(start), time.Duration(0))
		is.NoErr(fh.g.Return(ctx, d))
		// Back in when it answers, and what c left is removed then.
		fh.fakes["a"].Heal()
		within(t, 3*time.Second, "host a back in placement", func() bool { return fh.healthy("a") })
		within(t, 10*time.Second, "the dead host's leftover removed when it is back", func() bool {
			for _, x := range fh.fakes["a"].Containers() {
				if x.ID == c.ID() {
					return false
				}
			}
			return true
		})
	})
}

// A host that stops answering between a command's end and the inspect
// that tells its exit code: the inspect runs into its own deadline before
// the host is out, and the Exec still ends with the host's error, as every
// other operation cut by it (seen in the fault test: a plain "context
// deadline exceeded").
func TestGroupHostThatStallsUnderTheExitCodesInspectEndsTheExecWithTheHostsError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh, c := usedOnA(t)
		f := fh.fakes["a"]
		var once sync.Once
		f.SetHook(func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op != fakedocker.OpExecInspect {
				return nil
			}
			once.Do(func() { go f.Stall() }) // from now on the host answers nothing
			<-ctx.Done()
			return ctx.Err()
		})
		_, err := c.Exec(ctx, []string{"true"})
		t.Logf("Exec: %v", err)
		is.True(errors.Is(err, ErrContainerDead))
		is.True(errors.Is(err, ErrHostDown))
		is.NoErr(fh.g.Return(ctx, c))
	})
}

func TestGroupHostThatFailsIsOutWithin2sProbedWithBackoffAndBackWhenItAnswers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, map[string]int{"a": 2, "b": 2})
		fh.fakes["a"].Fail(errors.New("connection refused"))
		pings := fh.fakes["a"].Calls(fakedocker.OpPing)
		took := within(t, 2*time.Second, "host a out", func() bool { return !fh.healthy("a") })
		t.Logf("out after %v", took)
		is.True(strings.Contains(fh.g.Stats().Hosts["a"].LastError, "connection refused"))
		// Probed with backoff: 250ms, 500ms, 1s, 2s, 2s... about 6 pings in 8s, not 16.
		outPings := fh.fakes["a"].Calls(fakedocker.OpPing)
		time.Sleep(8 * time.Second) // virtual: let the prober run
		probes := fh.fakes["a"].Calls(fakedocker.OpPing) - outPings
		if probes < 3 || probes > 8 {
			t.Fatalf("%d probes in 8s while out (%d pings before), want backoff (3 to 8)", probes, outPings-pings)
		}
		fh.fakes["a"].Heal()
		within(t, 2500*time.Millisecond, "host a back in", func() bool { return fh.healthy("a") })
		is.Equal(fh.g.Stats().Hosts["a"].Outages, 1)
		c, err := fh.g.Acquire(context.Background(), "t")
		is.NoErr(err)
		is.NoErr(fh.g.Return(context.Background(), c))
	})
}

func TestGroupHostsMoveACallerWaitingOnAHostThatGoesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		gates := map[string]*createGate{}
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, map[string]int{"a": 3, "b": 2}, gateCreates(t, gates))
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		gates["a"].close()
		gates["b"].close()
		releaseA, releaseB := gates["a"].open, gates["b"].open
		x := fh.acquire(t, "the first idle container")
		synctest.Wait()
		y := fh.acquire(t, "the second idle container")
		is.True(x.Host() != y.Host()) // both warm ones are held; the refills hang on both hosts
		synctest.Wait()
		createsA, createsB := fh.fakes["a"].Calls(fakedocker.OpCreate), fh.fakes["b"].Calls(fakedocker.OpCreate)
		got := make(chan *Container, 1)
		go func() { got <- fh.acquire(t, "the caller moved off a stalled host") }()
		synctest.Wait()
		// The premise: the caller waits on a (1 left there, none on b),
		// behind a creation stuck there; nothing more was asked of b.
		is.Equal(fh.fakes["a"].Calls(fakedocker.OpCreate), createsA+1)
		is.Equal(fh.fakes["b"].Calls(fakedocker.OpCreate), createsB)
		is.Equal(fh.g.Stats().Templates["t"].Waiting, 1)
		// b's refill finishes: an idle container there, but the caller
		// stays where it was placed, waiting on a's creation.
		releaseB()
		synctest.Wait()
		is.Equal(fh.g.Stats().Hosts["b"].Idle, 1)
		is.Equal(fh.g.Stats().Templates["t"].Waiting, 1)
		is.True(fh.healthy("a"))
		fh.fakes["a"].Stall()
		start := time.Now()
		c := testwait.Recv(t, got, 5*time.Second, "the caller waiting on a stalled host moved to another")
		is.Equal(c.Host(), "b")
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("the waiting caller was served after %v, want within 2s", d)
		}
		within(t, 2*time.Second, "host a out", func() bool { return !fh.healthy("a") })
		releaseA()
		for _, h := range []*Container{x, y} {
			is.NoErr(fh.g.Remove(ctx, h)) // at once, though a is out
		}
		is.NoErr(fh.g.Return(ctx, c))
	})
}

// createGate holds a fake host's container creations while it is closed.
type createGate struct {
	mu   sync.Mutex
	gate chan struct{} // nil while open
}

func (g *createGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate == nil {
		g.gate = make(chan struct{})
	}
}

func (g *createGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

// gateCreates gives every fake host a createGate (open), recorded in
// gates; they are opened when the test ends.
func gateCreates(t *testing.T, gates map[string]*createGate) func(string, *fakedocker.Fake) {
	return func(name string, f *fakedocker.Fake) {
		g := &createGate{}
		gates[name] = g
		t.Cleanup(g.open)
		f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
			g.mu.Lock()
			gate := g.gate
			g.mu.Unlock()
			if op != fakedocker.OpCreate || gate == nil {
				return nil
			}
			select {
			case <-gate:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

func TestGroupHostsCreateOnTheHostWithTheMostRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		caps := map[string]int{"a": 2, "b": 3, "c": 4}
		gates := map[string]*createGate{}
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 4}, caps, func(name string, f *fakedocker.Fake) {
			gateCreates(t, gates)(name, f)
			gates[name].close()
		})
		synctest.Wait() // each host's warm creation hangs: nothing is idle, 1 used on each
		room := map[string]int{"a": 1, "b": 2, "c": 3}
		creates := func(name string) int { return fh.fakes[name].Calls(fakedocker.OpCreate) }
		got := make(chan *Container, 7)
		for i := range 6 {
			most := ""
			for _, name := range []string{"a", "b", "c"} { // ties go to the first
				if most == "" || room[name] > room[most] {
					most = name
				}
			}
			before := map[string]int{"a": creates("a"), "b": creates("b"), "c": creates("c")}
			go func() { got <- fh.acquire(t, fmt.Sprintf("Acquire %d", i+1)) }()
			synctest.Wait()
			for _, name := range []string{"a", "b", "c"} {
				want := before[name]
				if name == most {
					want++
				}
				if n := creates(name); n != want {
					t.Fatalf("Acquire %d: host %q got %d creations, want %d (the most room was on %q: %v)", i+1, name, n-before[name], want-before[name], most, room)
				}
			}
			room[most]--
		}
		st := fh.g.Stats()
		for name, n := range caps {
			is.Equal(st.Hosts[name].Used, n) // all full
		}
		for _, g := range gates {
			g.open()
		}
		var held []*Container
		for i := range 6 {
			held = append(held, testwait.Recv(t, got, 5*time.Second, fmt.Sprintf("hand-out %d of 6", i+1)))
		}
		for name, n := range caps {
			is.True(fh.fakes[name].Running() <= n)
		}
		for _, c := range held {
			is.NoErr(fh.g.Return(ctx, c))
		}
	})
}

func TestGroupHostsQueueACallerWhenEveryHostIsFullAndServeItOnAReturn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1}, map[string]int{"a": 1, "b": 1})
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		x, y := fh.acquire(t, "first"), fh.acquire(t, "second")
		is.True(x.Host() != y.Host())
		got := make(chan *Container, 1)
		go func() { got <- fh.acquire(t, "the third, served by a Return") }()
		synctest.Wait()                                  // it waits in the group's queue: neither host has room
		is.Equal(fh.g.Stats().Templates["t"].Waiting, 1) // counted though in no pool yet
		is.NoErr(fh.g.Return(ctx, y))
		c := testwait.Recv(t, got, 5*time.Second, "the queued caller served by a Return")
		is.Equal(c.Host(), y.Host())
		is.Equal(c.ID(), y.ID()) // the returned container, not a new one
		is.NoErr(fh.g.Return(ctx, c))
		is.NoErr(fh.g.Return(ctx, x))
	})
}

func TestGroupHostsWaitIdleCountsOnlyHealthyHosts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 2}, map[string]int{"a": 2, "b": 2})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		fh.fakes["b"].Fail(errors.New("connection refused"))
		within(t, 2*time.Second, "host b out", func() bool { return !fh.healthy("b") })
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1)) // a only
		fh.fakes["a"].Fail(errors.New("connection refused"))
		within(t, 2*time.Second, "host a out", func() bool { return !fh.healthy("a") })
		err := fh.g.WaitIdle(ctx, "t", 1)
		is.True(errors.Is(err, ErrHostDown))
		is.True(ctx.Err() == nil) // at once, not at the deadline
	})
}

func TestGroupShutdownNamesTheHostItCouldNotReach(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 2}, map[string]int{"a": 2, "b": 2})
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		fh.fakes["b"].Stall()
		within(t, 2*time.Second, "host b out", func() bool { return !fh.healthy("b") })
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		err := fh.g.Shutdown(sctx)
		is.True(errors.Is(err, ErrHostDown))
		is.True(strings.Contains(err.Error(), `host "b"`))
		is.True(!strings.Contains(err.Error(), `host "a"`))
		is.True(time.Since(start) < 5*time.Second)
		is.Equal(len(fh.fakes["a"].Containers()), 0) // everything removed on the reachable host
	})
}

func TestGroupShutdownIsBoundedByItsCtxWhenAHostStallsUnnoticed(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 2}, map[string]int{"a": 2, "b": 2})
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		fh.fakes["b"].Stall() // and Shutdown at once, before the prober notices
		sctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := fh.g.Shutdown(sctx)
		is.True(errors.Is(err, ErrHostDown))
		is.True(strings.Contains(err.Error(), `host "b"`))
		if d := time.Since(start); d > time.Second {
			t.Fatalf("Shutdown took %v with a ctx of 300ms", d)
		}
	})
}

func TestNewGroupRefusesBadHosts(t *testing.T) {
	f := fakedocker.New(fakeImage)
	tmpl := map[string]Config{"t": testConfig(Config{})}
	for _, tc := range []struct {
		hosts []Host
		want  string
	}{
		{[]Host{{Name: "", Client: f, MaxSize: 1}}, "Hosts[0] has no Name"},
		{[]Host{{Name: "a", Client: f, MaxSize: 1}, {Name: "a", Client: f, MaxSize: 1}}, `host "a" appears twice`},
		{[]Host{{Name: "a", MaxSize: 1}}, `host "a" has no Client`},
		{[]Host{{Name: "a", Client: f}}, `host "a": MaxSize must be positive`},
	} {
		_, err := NewGroup(context.Background(), GroupConfig{Hosts: tc.hosts, Templates: tmpl})
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("hosts %v: got %v, want ErrInvalidConfig saying %q", fmt.Sprint(len(tc.hosts)), err, tc.want)
		}
	}
}

// A daemon killed under a command: the Exec's own call fails with a cut
// connection before the group's prober takes the host out (seen in the
// fault test: "connection reset by peer" from a SIGKILLed daemon), and the
// Exec still ends with the host's error, ErrContainerDead wrapping
// ErrHostDown, as the operations the host's outage cuts do.
func TestGroupHostKilledUnderAnExecEndsItWithTheHostsError(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh, c := usedOnA(t)
		f := fh.fakes["a"]
		reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
		f.SetHook(func(ctx context.Context, op fakedocker.Op, _ string) error {
			if op != fakedocker.OpExecCreate {
				return nil
			}
			f.Fail(errors.New("connection refused")) // gone: every call from now on, the prober's pings too
			return fmt.Errorf("error during connect: %w", reset)
		})
		start := time.Now()
		_, err := c.Exec(ctx, []string{"true"})
		took := time.Since(start)
		t.Logf("Exec after %v: %v", took, err)
		is.True(errors.Is(err, ErrContainerDead))
		is.True(errors.Is(err, ErrHostDown))
		is.True(errors.Is(err, syscall.ECONNRESET)) // what the call saw is kept
		is.True(strings.Contains(err.Error(), `"a"`))
		if took > 2*time.Second+500*time.Millisecond {
			t.Fatalf("Exec returned after %v, want within the host's verdict (2 s) and its margin", took)
		}
		is.NoErr(fh.g.Return(ctx, c))
	})
}
