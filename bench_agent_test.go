package dockerpool_test

import (
	"context"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// BenchmarkAgentExecReal measures Acquire + Exec("true") + Return on the
// agent path against the real daemon: the path whose cost the telemetry
// must not raise by more than 2% (BENCHMARKS.md, telemetry).
func BenchmarkAgentExecReal(b *testing.B) {
	dockerpool.BenchNoDebug(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	ref, err := dockerpooltest.AgentImage(ctx, dockerpooltest.Client(b), dockerpooltest.Agent(b), dockerpooltest.ImageOptions{})
	if err != nil {
		b.Fatal(err)
	}
	p := dockerpooltest.NewPool(b, dockerpool.Config{MinIdle: 1, Image: dockerpool.ImageConfig{Name: ref}, Agent: &dockerpool.AgentConfig{}})
	if err := p.WaitIdle(ctx, 1); err != nil {
		b.Fatal(err)
	}
	cmd := []string{"true"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := p.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if res, err := c.Exec(ctx, cmd); err != nil || res.ExitCode != 0 {
			b.Fatalf("exec: %d, %v", res.ExitCode, err)
		}
		if err := p.Return(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}
