package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The SDK's side: how a program tests what the pool reports, with a
// ManualReader for the metrics and a SpanRecorder for the spans. The root
// module's tests use an in-memory fake of the API instead (no SDK in the
// library's go.mod); these check that the real SDK agrees, on the real
// daemon, secrets included.
func TestSDKRecordsThePoolsSpansAndMetricsWithoutSecrets(t *testing.T) {
	cli := dockerpooltest.Client(t)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()); _ = tp.Shutdown(context.Background()) })
	cfg := dockerpooltest.Config(t, dockerpool.Config{MinIdle: 1, MeterProvider: mp, TracerProvider: tp})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pool, err := dockerpool.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // a test that fails before its own Shutdown leaves nothing either
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = pool.Shutdown(ctx)
	})
	if err := pool.WaitIdle(ctx, 1); err != nil {
		t.Fatal(err)
	}
	ctx, parent := tp.Tracer("test").Start(ctx, "request")
	c, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const secret = "s3cr3t-token"
	res, err := c.ExecStd(ctx, []string{"sh", "-c", `read x; echo "$x $TOKEN $0" >&2; exit 2`, secret},
		dockerpool.ExecOptions{Env: []string{"TOKEN=" + secret}, Stdin: strings.NewReader(secret + "\n")})
	if err != nil || res.ExitCode != 2 {
		t.Fatalf("exec: %d, %v", res.ExitCode, err)
	}
	_, err = c.ExecStd(ctx, []string{"sh", "-c", "sleep 30", secret}, dockerpool.ExecOptions{Timeout: 200 * time.Millisecond, Env: []string{"TOKEN=" + secret}})
	if !errors.Is(err, dockerpool.ErrExecTimeout) {
		t.Fatalf("exec: %v, want a timeout", err)
	}
	if err := pool.Return(ctx, c); err != nil {
		t.Fatal(err)
	}
	parent.End()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	if err := pool.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	dockerpooltest.AssertClean(t, cli, cfg.Name)

	seen := map[string]int{}
	for _, s := range spans.Ended() {
		seen[s.Name()]++
		text := fmt.Sprintf("%s %v %v %v", s.Name(), s.Attributes(), s.Events(), s.Status())
		if strings.Contains(text, secret) {
			t.Errorf("span %q carries the secret: %s", s.Name(), text)
		}
		if s.Name() == "dockerpool.Exec" && s.Parent().SpanID() != parent.SpanContext().SpanID() {
			t.Errorf("Exec's span is not the caller's child")
		}
	}
	for name, n := range map[string]int{"dockerpool.Acquire": 1, "dockerpool.Exec": 2, "dockerpool.container.create": 1, "dockerpool.container.remove": 1} {
		if seen[name] < n {
			t.Errorf("%d spans %q, want %d at least; got %v", seen[name], name, n, seen)
		}
	}
	names := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names[m.Name] = true
			if h, ok := m.Data.(metricdata.Histogram[float64]); ok && m.Name == "dockerpool.exec.duration" {
				var timeouts uint64
				for _, dp := range h.DataPoints {
					if v, _ := dp.Attributes.Value(attribute.Key("error.type")); v.AsString() == "timeout" {
						timeouts += dp.Count
					}
				}
				if timeouts != 1 {
					t.Errorf("%d timed-out execs in dockerpool.exec.duration, want 1", timeouts)
				}
			}
		}
	}
	for _, want := range []string{"dockerpool.acquires", "dockerpool.acquire.duration", "dockerpool.exec.duration",
		"dockerpool.containers", "dockerpool.waiters", "dockerpool.container.creations", "dockerpool.container.creation.duration"} {
		if !names[want] {
			t.Errorf("no metric %s in %v", want, names)
		}
	}
}

// BenchmarkSDKAcquireReturnFake is the root module's warm cycle (with and
// without an Exec) with the SDK recording (sdk/metric with a ManualReader
// nobody reads; sdk/trace with a SpanRecorder, reset as it fills), against
// the global providers with nothing installed: telemetry none, metrics
// only, metrics and traces.
func BenchmarkSDKAcquireReturnFake(b *testing.B) {
	for _, exec := range []bool{false, true} {
		for _, mode := range []string{"none", "metrics", "metrics+traces"} {
			b.Run(fmt.Sprintf("exec=%v/sdk=%s", exec, mode), func(b *testing.B) {
				cfg := dockerpool.Config{
					Name: "bench", Network: dockerpool.NetworkConfig{Name: "none"},
					Image: dockerpool.ImageConfig{Name: "busybox:bench"}, MinIdle: 1, MaxIdle: 2,
					Client: fakedocker.New("busybox:bench"), OnError: func(error) {},
				}
				spans := tracetest.NewSpanRecorder()
				if mode != "none" {
					cfg.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
				}
				if mode == "metrics+traces" {
					cfg.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
				}
				n := 0
				benchCycle(b, cfg, exec, func() {
					if n++; n%1000 == 0 {
						spans.Reset() // the recorder would grow without bound
					}
				})
			})
		}
	}
}

func benchCycle(b *testing.B, cfg dockerpool.Config, exec bool, each func()) {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer pool.Shutdown(ctx)
	if err := pool.WaitIdle(ctx, 1); err != nil {
		b.Fatal(err)
	}
	cmd := []string{"echo", "hi"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := pool.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if exec {
			if _, err := c.Exec(ctx, cmd); err != nil {
				b.Fatal(err)
			}
		}
		if err := pool.Return(ctx, c); err != nil {
			b.Fatal(err)
		}
		each()
	}
}

// A pool made before the program installs its TracerProvider traces once
// it does: the global placeholder forwards to it, and the pool stops
// skipping spans as soon as otel.GetTracerProvider returns another provider.
func TestSDKGlobalTracerProviderInstalledAfterNew(t *testing.T) {
	ctx := context.Background()
	pool, err := dockerpool.New(ctx, dockerpool.Config{
		Name: "late", Network: dockerpool.NetworkConfig{Name: "none"},
		Image: dockerpool.ImageConfig{Name: "busybox:late"}, MinIdle: 1,
		Client: fakedocker.New("busybox:late"), OnError: func(error) {},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Shutdown(ctx)
	cycle := func() {
		c, err := pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := pool.Return(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	cycle() // nothing installed: nothing to record into
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)
	otel.SetTracerProvider(tp)
	cycle()
	var acquires int
	for _, s := range spans.Ended() {
		if s.Name() == "dockerpool.Acquire" {
			acquires++
		}
	}
	if acquires != 1 {
		t.Fatalf("%d Acquire spans after the provider was installed, want 1", acquires)
	}
}
