package dockerpool_test

import (
	"context"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

func TestSmoke(t *testing.T) {
	p := dockerpooltest.NewPool(t, dockerpool.Config{MinIdle: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := p.WaitIdle(ctx, 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("warm in %v", time.Since(start))
	c, err := p.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Exec(ctx, []string{"sh", "-c", "echo hi; echo err >&2; exit 3"})
	t.Logf("res=%+v err=%v", res, err)
	res, err = c.Exec(ctx, []string{"nosuch"})
	t.Logf("res=%d out=%q errout=%q err=%v", res.ExitCode, res.Stdout, res.Stderr, err)
	res, err = c.ExecStd(ctx, []string{"sleep", "10"}, dockerpool.ExecOptions{Timeout: 500 * time.Millisecond})
	t.Logf("timeout: res=%d err=%v tainted=%v", res.ExitCode, err, c.Tainted())
	res, err = c.ExecStd(ctx, []string{"yes"}, dockerpool.ExecOptions{Limit: 100000})
	t.Logf("limit: res=%d len=%d err=%v tainted=%v", res.ExitCode, len(res.Stdout), err, c.Tainted())
	res, err = c.Exec(ctx, []string{"ps", "-o", "pid,ppid,stat,comm"})
	t.Logf("ps: %s", res.Stdout)
	if err := p.Return(ctx, c); err != nil {
		t.Fatal(err)
	}
	t.Logf("stats %+v", p.Stats())
}
