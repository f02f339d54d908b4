package dockerpool_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// Beyond the reference API: MaxSize, recycling, reset and verify on Return,
// on the real daemon.

func TestFeatureMaxSizeCapsThePoolAndServesWaitersInArrivalOrder(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	const size = 2
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: size, MaxSize: size})
	ctx := bg(t)
	a, err := p.Acquire(ctx)
	is.NoErr(err)
	b, err := p.Acquire(ctx)
	is.NoErr(err)
	// At the cap: callers queue, in order, and nothing more is created.
	const waiting = 4
	order := make(chan int, waiting)
	var wg sync.WaitGroup
	for i := range waiting {
		wg.Go(func() {
			c, err := p.Acquire(ctx)
			if err != nil {
				t.Errorf("waiter %d: %v", i, err)
				return
			}
			order <- i
			_ = p.Return(ctx, c)
		})
		eventually(t, func() bool { return p.Stats().Waiting == i+1 }) // queue them one by one
	}
	st := p.Stats()
	is.Equal(st.Total, size)
	is.Equal(st.Creating, 0)
	is.NoErr(p.Return(ctx, a)) // each return goes to the oldest waiter, who returns it...
	testwait.Group(t, &wg, time.Minute, "every waiter served")
	close(order)
	var got []int
	for i := range order {
		got = append(got, i)
	}
	is.Equal(got, []int{0, 1, 2, 3})
	is.NoErr(p.Return(ctx, b))
	is.True(p.Stats().Created <= size)
}

func TestFeatureMaxUsesOneNeverHandsAContainerOutTwice(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 2, MaxUses: 1})
	seen := map[string]bool{}
	for range 6 {
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		is.True(!seen[c.ID()])
		seen[c.ID()] = true
		res, err := c.Exec(bg(t), []string{"sh", "-c", "ls /tmp; touch /tmp/mine"})
		is.NoErr(err)
		is.Equal(string(res.Stdout), "") // nobody was here before
		is.NoErr(p.Return(bg(t), c))
	}
	eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonMaxUses] == 6 })
}

func TestFeatureOnReturnCleansBeforeReuseAndAFailedResetRemoves(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	var calls sync.Map
	p := warm(t, dockerpool.Config{
		MinIdle: 1,
		MaxIdle: 2, // room for the refill's container and ours
		OnReturn: func(ctx context.Context, c *dockerpool.Container) error {
			calls.Store(c.ID(), true)
			// A container marked poisoned cannot be cleaned: the hook fails.
			res, err := c.Exec(ctx, []string{"sh", "-c", "[ ! -e /tmp/poison ] && rm -rf /tmp/*"})
			if err != nil {
				return err
			}
			if res.ExitCode != 0 {
				return fmt.Errorf("reset exited %d", res.ExitCode)
			}
			return nil
		},
	})
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	// The refill's replacement first: were it still being made when ours
	// comes back from OnReturn, it would land on top of the idle stack.
	is.NoErr(p.WaitIdle(ctx, 1))
	_, err = c.Exec(ctx, []string{"touch", "/tmp/leftover"})
	is.NoErr(err)
	is.NoErr(p.Return(ctx, c))
	is.NoErr(p.WaitIdle(ctx, 2)) // ours is back, on top
	_, ok := calls.Load(c.ID())
	is.True(ok)
	again, err := p.Acquire(ctx)
	is.NoErr(err)
	is.Equal(again.ID(), c.ID()) // kept warm...
	res, err := again.Exec(ctx, []string{"ls", "/tmp"})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "") // ...and clean

	// A reset that fails sends the container to removal.
	_, err = again.Exec(ctx, []string{"touch", "/tmp/poison"})
	is.NoErr(err)
	is.NoErr(p.Return(ctx, again))
	eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonResetFailed] == 1 })
}

func TestFeatureCheckOnReturnRemovesAContainerThatDiedInUse(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, CheckOnReturn: true})
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	// The main process goes: the container stops.
	_, _ = c.Exec(ctx, []string{"sh", "-c", "kill -9 $(pidof sleep)"})
	is.NoErr(p.Return(ctx, c))
	waitGone(t, c.ID(), 10*time.Second)
	eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonDied] == 1 })
	c2, err := p.Acquire(ctx)
	is.NoErr(err)
	is.True(c2.ID() != c.ID())
	is.NoErr(p.Return(ctx, c2))
}

func TestFeatureLoggerReportsCreationsRemovalsWithReasons(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	var buf syncBuffer
	p := warm(t, dockerpool.Config{MinIdle: 1, MaxIdle: 1, Logger: newTestLogger(&buf)})
	ctx := bg(t)
	a, err := p.Acquire(ctx)
	is.NoErr(err)
	is.NoErr(p.Remove(ctx, a))
	eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonUser] == 1 })
	out := buf.String()
	is.True(strings.Contains(out, "container created"))
	is.True(strings.Contains(out, "container removed"))
	is.True(strings.Contains(out, "reason=user"))
}

func TestFeaturePullPolicyNeverAndIfNotPresentUseTheLocalImage(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	for _, policy := range []dockerpool.PullPolicy{dockerpool.PullNever, dockerpool.PullIfNotPresent} {
		p := warm(t, dockerpool.Config{MinIdle: 1, Image: dockerpool.ImageConfig{Name: dockerpooltest.Image(t), PullPolicy: policy}})
		is.NoErr(p.Shutdown(bg(t)))
	}
	// A missing image with IfNotPresent is pulled, which fails here (no
	// registry): the error names the image and gives the daemon's reason.
	_, err := dockerpool.New(bg(t), dockerpooltest.Config(t, dockerpool.Config{
		Image: dockerpool.ImageConfig{Name: "dockerpool-absent:1", PullPolicy: dockerpool.PullIfNotPresent},
	}))
	is.True(errors.Is(err, dockerpool.ErrImageNotFound))
	is.True(strings.Contains(err.Error(), "dockerpool-absent:1"))
	is.True(strings.Contains(err.Error(), "pull"))
	t.Log(err)
}

func TestFeatureKillProcessesInOnReturnClearsWhatAHolderLeftRunning(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{
		MinIdle: 1,
		MaxIdle: 2, // room for the refill's container and ours
		OnReturn: func(ctx context.Context, c *dockerpool.Container) error {
			return c.KillProcesses(ctx)
		},
	})
	ctx := bg(t)
	c, err := p.Acquire(ctx)
	is.NoErr(err)
	// The refill's replacement first: were it still being made when ours
	// comes back from OnReturn, it would land on top of the idle stack.
	is.NoErr(p.WaitIdle(ctx, 1))
	// Ends normally, but leaves a process behind.
	_, err = c.Exec(ctx, []string{"sh", "-c", "sleep 1030 >/dev/null 2>&1 &"})
	is.NoErr(err)
	is.Equal(len(strays(t, c, "sleep 1030")), 1)
	is.NoErr(p.Return(ctx, c))
	is.NoErr(p.WaitIdle(ctx, 2)) // ours is back, on top
	next, err := p.Acquire(ctx)
	is.NoErr(err)
	defer p.Return(ctx, next)
	is.Equal(next.ID(), c.ID())
	is.Equal(strays(t, next, "sleep 1030"), []string(nil))
}
