package dockerpool_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// The Group on the real daemon: two templates from the offline busybox
// image that differ by their Env.

func envTemplate(t *testing.T, value string) dockerpool.Config {
	return dockerpooltest.Config(t, dockerpool.Config{
		MinIdle: 1, MaxIdle: 2,
		ContainerConfig: &container.Config{Env: []string{"X=" + value}},
	})
}

// newTestGroup starts a group and checks at the end that nothing of the
// test is left on the daemon (pools replaced by Update included).
func newTestGroup(t *testing.T, cfg dockerpool.GroupConfig) *dockerpool.Group {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	g, err := dockerpool.NewGroup(ctx, cfg)
	if err != nil {
		t.Fatalf("NewGroup: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), dockerpooltest.ShutdownTimeout)
		defer cancel()
		if err := g.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		left, err := dockerpooltest.Client(t).ContainerList(ctx, container.ListOptions{All: true,
			Filters: filters.NewArgs(filters.Arg("label", dockerpooltest.LabelTest+"="+t.Name()))})
		if err != nil || len(left) > 0 {
			t.Errorf("after Shutdown: %d containers of the test left (%v)", len(left), err)
		}
	})
	return g
}

func echoX(t *testing.T, g *dockerpool.Group, c *dockerpool.Container) string {
	t.Helper()
	r, err := c.Exec(context.Background(), []string{"sh", "-c", "echo $X"})
	if err != nil {
		t.Fatalf("Exec: %v", err)
	}
	return strings.TrimSpace(string(r.Stdout))
}

func TestIntegrationGroupEvictsAtTheCapAndUpdates(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := context.Background()
	g := newTestGroup(t, dockerpool.GroupConfig{MaxSize: 2, StaticWarmth: true, Templates: map[string]dockerpool.Config{
		"one": envTemplate(t, "one"), "two": envTemplate(t, "two"),
	}})
	is.NoErr(g.WaitIdle(ctx, "one", 1))
	is.NoErr(g.WaitIdle(ctx, "two", 1))
	a, err := g.Acquire(ctx, "one")
	is.NoErr(err)
	is.Equal(echoX(t, g, a), "one")
	b, err := g.Acquire(ctx, "one") // at the cap, nothing idle for one: two's idle one goes
	is.NoErr(err)
	is.Equal(echoX(t, g, b), "one")
	st := g.Stats()
	is.Equal(st.EvictedForWaiter, int64(1))
	is.True(st.Used <= 2)
	is.NoErr(g.Return(ctx, a))
	is.NoErr(g.Return(ctx, b))

	is.NoErr(g.Update(ctx, "two", envTemplate(t, "three")))
	c, err := g.Acquire(ctx, "two")
	is.NoErr(err)
	is.Equal(echoX(t, g, c), "three")
	is.NoErr(g.Return(ctx, c))

	_, err = g.Acquire(ctx, "four")
	is.True(errors.Is(err, dockerpool.ErrUnknownTemplate))
	is.True(strings.Contains(err.Error(), "one, two"))
}

func TestIntegrationGroupTemplateWithAMissingImage(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	ctx := context.Background()
	missing := func() dockerpool.Config {
		cfg := envTemplate(t, "x")
		cfg.Image.Name = "dockerpool-missing-image:nope"
		return cfg
	}
	_, err := dockerpool.NewGroup(ctx, dockerpool.GroupConfig{MaxSize: 2, Templates: map[string]dockerpool.Config{
		"ok": envTemplate(t, "ok"), "gone": missing(),
	}})
	is.True(errors.Is(err, dockerpool.ErrImageNotFound))
	is.True(strings.Contains(err.Error(), `template "gone"`))

	g := newTestGroup(t, dockerpool.GroupConfig{MaxSize: 2, KeepGoing: true, Templates: map[string]dockerpool.Config{
		"ok": envTemplate(t, "ok"), "gone": missing(),
	}})
	_, err = g.Acquire(ctx, "gone")
	is.True(errors.Is(err, dockerpool.ErrTemplateUnavailable))
	c, err := g.Acquire(ctx, "ok")
	is.NoErr(err)
	is.Equal(echoX(t, g, c), "ok")
	is.NoErr(g.Return(ctx, c))
	err = g.Update(ctx, "ok", missing())
	is.True(errors.Is(err, dockerpool.ErrImageNotFound))
	is.True(strings.Contains(err.Error(), `template "ok"`))
}
