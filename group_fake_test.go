package dockerpool

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The Group on the fake daemon, under testing/synctest.

// startFakeGroup starts a group of templates on f and shuts it down at the
// end of the test.
func startFakeGroup(t *testing.T, f *fakedocker.Fake, cfg GroupConfig) *Group {
	t.Helper()
	for name, c := range cfg.Templates {
		c.Client = f
		if c.Name == "" {
			c.Name = "g-" + name
		}
		cfg.Templates[name] = testConfig(c)
	}
	g, err := NewGroup(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = g.Shutdown(ctx)
	})
	return g
}

func shutdownGroup(t *testing.T, g *Group) {
	t.Helper()
	if err := g.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

func TestGroupEvictsTheLeastRecentlyUsedIdleContainerAtTheCap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		f := fakedocker.New(fakeImage)
		g := startFakeGroup(t, f, GroupConfig{MaxSize: 3, StaticWarmth: true, Templates: map[string]Config{
			"a": {MinIdle: 1, MaxIdle: 3}, "b": {MinIdle: 1, MaxIdle: 3}, "c": {MinIdle: 1, MaxIdle: 3},
		}})
		for _, name := range []string{"a", "b", "c"} {
			is.NoErr(g.WaitIdle(ctx, name, 1))
		}
		// b's idle container is the least recently used: touch a and c.
		time.Sleep(time.Second)
		for _, name := range []string{"c", "a"} {
			x, err := g.Acquire(ctx, name)
			is.NoErr(err)
			is.NoErr(g.Return(ctx, x))
			time.Sleep(time.Second)
		}
		x, err := g.Acquire(ctx, "a")
		is.NoErr(err)
		y, err := g.Acquire(ctx, "a") // nothing idle for a, at the cap: b's goes
		is.NoErr(err)
		synctest.Wait() // b's removal runs beside a's creation and may end after it
		st := g.Stats()
		is.Equal(st.EvictedForWaiter, int64(1))
		is.Equal(st.Templates["b"].RemovedBy[ReasonEvicted], int64(1))
		is.Equal(st.Templates["c"].Idle, 1)
		is.True(st.Used <= 3)
		is.NoErr(g.Return(ctx, x))
		is.NoErr(g.Return(ctx, y))
		synctest.Wait()
		is.True(g.Stats().Used <= 3)
		is.True(f.Running() <= 3)
		shutdownGroup(t, g)
		is.Equal(len(f.Containers()), 0)
	})
}

func TestGroupServesWaitersOfAllTemplatesInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		f := fakedocker.New(fakeImage)
		g := startFakeGroup(t, f, GroupConfig{MaxSize: 1, StaticWarmth: true, Templates: map[string]Config{
			"a": {MinIdle: 1, MaxIdle: 1}, "b": {MinIdle: 1, MaxIdle: 1}, "c": {MinIdle: 1, MaxIdle: 1},
		}})
		held, err := g.Acquire(ctx, "a")
		is.NoErr(err)
		order := make(chan string, 3)
		got := make(chan *Container, 3)
		for _, name := range []string{"c", "b", "c"} {
			go func() {
				x, err := g.Acquire(ctx, name)
				if err != nil {
					t.Error(err)
					return
				}
				order <- name
				got <- x
			}()
			synctest.Wait()              // it waits...
			time.Sleep(time.Millisecond) // ...and the next one comes later
		}
		is.NoErr(g.Return(ctx, held))
		var seen []string
		for range 3 {
			synctest.Wait()
			seen = append(seen, <-order)
			is.True(g.Stats().Used <= 1)
			// Removed, it makes room, which goes to the oldest waiter of
			// any template. (Returned, it would go to the next waiter of
			// its own template at once: no creation needed.)
			is.NoErr(g.Remove(ctx, <-got))
		}
		is.Equal(strings.Join(seen, ","), "c,b,c")
		shutdownGroup(t, g)
	})
}

func TestGroupUpdateNeverHandsOutTheOldConfigurationAfterItReturns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		f := fakedocker.New(fakeImage)
		g := startFakeGroup(t, f, GroupConfig{MaxSize: 4, Templates: map[string]Config{
			"py": {MinIdle: 2, MaxIdle: 2, ContainerConfig: &container.Config{Env: []string{"V=1"}}}, "go": {MinIdle: 1, MaxIdle: 1},
		}})
		is.NoErr(g.WaitIdle(ctx, "py", 2))
		old, err := g.Acquire(ctx, "py")
		is.NoErr(err)
		oldPool := old.pool
		is.NoErr(g.Update(ctx, "py", testConfig(Config{Name: "g-py", Client: f, MinIdle: 2, MaxIdle: 2, ContainerConfig: &container.Config{Env: []string{"V=2"}}})))
		for range 3 {
			c, err := g.Acquire(ctx, "py")
			is.NoErr(err)
			is.True(c.pool != oldPool)
			is.NoErr(g.Return(ctx, c))
		}
		_, err = old.Exec(ctx, []string{"true"})
		is.NoErr(err)                // a leased one goes on working
		is.NoErr(g.Return(ctx, old)) // and is removed
		synctest.Wait()
		select {
		case <-oldPool.done:
		default:
			t.Fatal("the old configuration's pool did not stop after its last container came back")
		}
		is.True(g.Stats().Used <= 4)
		shutdownGroup(t, g)
		is.Equal(len(f.Containers()), 0)
	})
}

func TestGroupUnknownTemplateNamesTheKnownOnes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		f := fakedocker.New(fakeImage)
		g := startFakeGroup(t, f, GroupConfig{MaxSize: 2, Templates: map[string]Config{"py": {MinIdle: 1}, "go": {MinIdle: 1}}})
		_, err := g.Acquire(context.Background(), "rust")
		is.True(errors.Is(err, ErrUnknownTemplate))
		is.True(strings.Contains(err.Error(), `"rust"`) && strings.Contains(err.Error(), "go, py"))
		is.True(errors.Is(g.Update(context.Background(), "rust", testConfig(Config{Client: f})), ErrUnknownTemplate))
		is.True(errors.Is(g.RemoveTemplate(context.Background(), "rust"), ErrUnknownTemplate))
		is.True(errors.Is(g.Return(context.Background(), nil), ErrInvalidContainer))
		shutdownGroup(t, g)
		_, err = g.Acquire(context.Background(), "py")
		is.True(errors.Is(err, ErrPoolShutdown))
	})
}

func TestGroupTemplateWithAMissingImage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		f := fakedocker.New(fakeImage)
		tpl := func() map[string]Config {
			return map[string]Config{
				"ok":     testConfig(Config{Name: "g-ok", Client: f, MinIdle: 1}),
				"absent": testConfig(Config{Name: "g-absent", Client: f, MinIdle: 1, Image: ImageConfig{Name: "absent:1"}}),
			}
		}
		_, err := NewGroup(ctx, GroupConfig{MaxSize: 2, Templates: tpl()})
		is.True(errors.Is(err, ErrImageNotFound))
		is.True(strings.Contains(err.Error(), `template "absent"`))
		synctest.Wait()
		is.Equal(len(f.Containers()), 0) // nothing left of the one that started

		g, err := NewGroup(ctx, GroupConfig{MaxSize: 2, Templates: tpl(), KeepGoing: true})
		is.NoErr(err)
		t.Cleanup(func() { _ = g.Shutdown(context.Background()) })
		is.True(errors.Is(g.Unavailable()["absent"], ErrImageNotFound))
		_, err = g.Acquire(ctx, "absent")
		is.True(errors.Is(err, ErrTemplateUnavailable) && errors.Is(err, ErrImageNotFound))
		c, err := g.Acquire(ctx, "ok")
		is.NoErr(err)
		is.NoErr(g.Return(ctx, c))
		err = g.Update(ctx, "ok", testConfig(Config{Name: "g-ok", Client: f, MinIdle: 1, Image: ImageConfig{Name: "absent:2"}}))
		is.True(errors.Is(err, ErrImageNotFound))
		is.True(strings.Contains(err.Error(), `template "ok"`))
		c, err = g.Acquire(ctx, "ok") // the old configuration stays
		is.NoErr(err)
		is.NoErr(g.Return(ctx, c))
		// Update brings a template that could not start in.
		is.NoErr(g.Update(ctx, "absent", testConfig(Config{Name: "g-absent", Client: f, MinIdle: 1})))
		is.Equal(len(g.Unavailable()), 0)
		c, err = g.Acquire(ctx, "absent")
		is.NoErr(err)
		is.NoErr(g.Return(ctx, c))
		shutdownGroup(t, g)
	})
}
