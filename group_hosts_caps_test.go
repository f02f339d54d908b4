package dockerpool

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// A template's own MaxSize counts per host (GroupConfig.Hosts), and the
// group's placement keeps to it: a caller never waits at a host where its
// template's pool is full while another host has room for it.

func TestGroupHostsPlaceACallerWhereItsTemplateHasRoomOfItsOwn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		gates := map[string]*createGate{}
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1, MaxSize: 2}, map[string]int{"a": 10, "b": 4}, func(name string, f *fakedocker.Fake) {
			gateCreates(t, gates)(name, f)
			gates[name].close()
		})
		synctest.Wait() // each host's warm creation hangs: 1 of the template's 2 on each
		creates := func(name string) int { return fh.fakes[name].Calls(fakedocker.OpCreate) }
		got := make(chan *Container, 2)
		go func() { got <- fh.acquire(t, "the first caller") }()
		synctest.Wait()
		is.Equal(creates("a"), 2) // a has the most room: the template's pool there is now full (2)
		is.Equal(creates("b"), 1)
		go func() { got <- fh.acquire(t, "the second caller") }()
		synctest.Wait()
		// a still has the most room of the hosts (8 against 3), but none
		// for this template: the caller goes to b, which makes one for it.
		is.Equal(creates("a"), 2)
		is.Equal(creates("b"), 2)
		is.Equal(fh.g.Stats().Hosts["b"].Used, 2)
		for _, g := range gates {
			g.open()
		}
		hosts := map[string]int{}
		for range 2 {
			c := testwait.Recv(t, got, 5*time.Second, "a caller served")
			hosts[c.Host()]++
			defer func() { is.NoErr(fh.g.Return(context.Background(), c)) }()
		}
		is.Equal(hosts, map[string]int{"a": 1, "b": 1})
	})
}

// startTwoTemplateHosts starts a group of templates "t" and "u" over two
// fake hosts a and b of capacity n each.
func startTwoTemplateHosts(t *testing.T, tc, uc Config, n int) (*Group, map[string]*fakedocker.Fake) {
	t.Helper()
	fakes := map[string]*fakedocker.Fake{"a": fakedocker.New(fakeImage), "b": fakedocker.New(fakeImage)}
	tc.Name, uc.Name = "t", "u"
	// startFakeGroup's Client is replaced by each host's.
	g := startFakeGroup(t, fakes["a"], GroupConfig{StaticWarmth: true,
		Hosts:     []Host{{Name: "a", Client: fakes["a"], MaxSize: n}, {Name: "b", Client: fakes["b"], MaxSize: n}},
		Templates: map[string]Config{"t": tc, "u": uc}})
	return g, fakes
}

func TestGroupHostsQueueACallerWhoseTemplateIsFullEverywhereWithoutHoldingUpOthers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		g, _ := startTwoTemplateHosts(t, Config{MinIdle: 1, MaxIdle: 1, MaxSize: 1}, Config{MinIdle: 1, MaxIdle: 1}, 3)
		is.NoErr(g.WaitIdle(ctx, "t", 1))
		is.NoErr(g.WaitIdle(ctx, "u", 1))
		acquire := func(template, what string) *Container {
			ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := g.Acquire(ctx, template)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			return c
		}
		byHost := map[string]*Container{}
		for range 2 {
			synctest.Wait()
			c := acquire("t", "an idle t")
			byHost[c.Host()] = c
		}
		is.Equal(len(byHost), 2) // one t on each host: t is full on both, and each host has room for 1 more
		got := make(chan *Container, 1)
		go func() { got <- acquire("t", "the t caller waiting for a t on any host") }()
		synctest.Wait()
		// u is not held up behind it: its idle ones, then a creation.
		var us []*Container
		for i := range 3 {
			synctest.Wait()
			us = append(us, acquire("u", "a u caller"))
			_ = i
		}
		// A t comes back on b: the waiting t caller gets it, wherever it
		// came from.
		is.NoErr(g.Return(ctx, byHost["b"]))
		c := testwait.Recv(t, got, 5*time.Second, "the t caller served by a Return on b")
		is.Equal(c.Host(), "b")
		is.Equal(c.ID(), byHost["b"].ID())
		for _, x := range append(us, c, byHost["a"]) {
			is.NoErr(g.Return(ctx, x))
		}
	})
}

func TestGroupHostsCountTheCallersQueuedInTheGroupAsWaiting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1}, map[string]int{"a": 1, "b": 1})
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		x, y := fh.acquire(t, "first"), fh.acquire(t, "second")
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		errs := make(chan error, 2)
		for range 2 {
			go func() {
				c, err := fh.g.Acquire(cctx, "t")
				if err == nil {
					err = fh.g.Return(ctx, c)
				}
				errs <- err
			}()
		}
		synctest.Wait() // both wait in the group's queue: neither host has room
		st := fh.g.Stats()
		is.Equal(st.Templates["t"].Waiting, 2)
		is.Equal(st.Waiting, 2)
		is.Equal(st.Hosts["a"].InUse+st.Hosts["b"].InUse, 2)
		cancel()
		for range 2 {
			err := testwait.Recv(t, errs, 5*time.Second, "a queued caller whose ctx ended")
			is.True(errors.Is(err, context.Canceled))
		}
		synctest.Wait()
		st = fh.g.Stats()
		is.Equal(st.Templates["t"].Waiting, 0)
		is.Equal(st.Waiting, 0)
		is.NoErr(fh.g.Return(ctx, x))
		is.NoErr(fh.g.Return(ctx, y))
	})
}

// TestGroupHostsCountACreationHeldBackByMaxCreatingAgainstTheRoom: a
// waiting caller's creation that MaxCreating holds back has no permit yet,
// but it takes the host's room all the same. Counted nowhere, it let the
// group place a fourth caller on a host of three while the other had room:
// that caller then waited at a full host (found in the owner-cost
// simulation: 2 of 400 Acquires waited out their minute).
func TestGroupHostsCountACreationHeldBackByMaxCreatingAgainstTheRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		gates := map[string]*createGate{}
		fakes := map[string]*fakedocker.Fake{}
		for _, name := range []string{"a", "b"} {
			fakes[name] = fakedocker.New(fakeImage)
			gateCreates(t, gates)(name, fakes[name])
			gates[name].close()
		}
		g := startFakeGroup(t, fakes["a"], GroupConfig{StaticWarmth: true, MaxCreating: 1,
			Hosts:     []Host{{Name: "a", Client: fakes["a"], MaxSize: 3}, {Name: "b", Client: fakes["b"], MaxSize: 3}},
			Templates: map[string]Config{"t": {MinIdle: 1, MaxIdle: 1}}})
		synctest.Wait() // each host's warm creation hangs, and takes its one creation at a time
		got := make(chan *Container, 4)
		for i := range 4 {
			// Each caller's creation is held back: 1 to a (a tie: the
			// first host), 2 to b, 3 to a, 4 to b, the host with room
			// left (a's last is 3's).
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				c, err := g.Acquire(ctx, "t")
				if err != nil {
					t.Errorf("caller %d: %v", i+1, err)
				}
				got <- c
			}()
			synctest.Wait()
		}
		is.Equal(fakes["a"].Calls(fakedocker.OpCreate), 1) // MaxCreating: one at a time on each
		is.Equal(fakes["b"].Calls(fakedocker.OpCreate), 1)
		for _, gt := range gates {
			gt.open()
		}
		hosts := map[string]int{}
		for range 4 {
			c := testwait.Recv(t, got, 10*time.Second, "a caller served")
			if c == nil {
				continue
			}
			hosts[c.Host()]++
			defer func() { is.NoErr(g.Return(context.Background(), c)) }()
		}
		is.Equal(hosts, map[string]int{"a": 2, "b": 2})
	})
}
