package dockerpool

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
	"github.com/dockerpool/dockerpool/internal/oteltest"
	"github.com/matryer/is"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
)

// The pool's telemetry on the fake daemon, through the in-memory providers:
// every metric of the README's Monitoring section agrees with Stats, and
// the spans carry the caller's context, the pool's name and the errors.
func TestTelemetryMetricsAndSpansAgreeWithStats(t *testing.T) {
	is := is.New(t)
	rec := oteltest.New()
	f := fakedocker.New(fakeImage)
	p := startFake(t, f, Config{
		Name: "otel", MinIdle: 1, MaxIdle: 1,
		MeterProvider: rec, TracerProvider: rec.Tracers(),
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	is.NoErr(p.WaitIdle(ctx, 1))

	// The caller's span is the parent of the pool's.
	parentCtx, parent := rec.Tracers().Tracer("test").Start(ctx, "caller")
	// One warm hit, then a miss for certain: the refill's creation waits
	// until the second Acquire waits. The third is either.
	gate := make(chan struct{})
	f.SetHook(func(ctx context.Context, op fakedocker.Op, _ string) error {
		if op == fakedocker.OpCreate {
			select {
			case <-gate:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	var held []*Container
	c, err := p.Acquire(parentCtx)
	is.NoErr(err)
	held = append(held, c)
	second := make(chan *Container, 1)
	go func() {
		c, err := p.Acquire(parentCtx)
		if err != nil {
			t.Error(err)
		}
		second <- c
	}()
	for deadline := time.Now().Add(10 * time.Second); p.Stats().Waiting == 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the second Acquire did not wait within 10s")
		}
	}
	close(gate)
	select {
	case c := <-second:
		is.True(c != nil)
		held = append(held, c)
	case <-time.After(10 * time.Second):
		t.Fatal("the second Acquire did not end within 10s of the creation")
	}
	c, err = p.Acquire(parentCtx)
	is.NoErr(err)
	held = append(held, c)
	res, err := held[0].Exec(parentCtx, []string{"echo", "hi"})
	is.NoErr(err)
	is.Equal(string(res.Stdout), "hi\n")
	_, err = held[0].Exec(parentCtx, []string{"/no/such/prog", "arg"})
	is.NoErr(err) // exit 127 is not an error

	pool := keyPool.String("otel")
	got, callbacks := rec.Observe(ctx)
	is.Equal(callbacks, 1)
	is.Equal(got[oteltest.Key("dockerpool.containers", attribute.NewSet(pool, keyState.String("in_use")))], int64(3))
	is.Equal(got[oteltest.Key("dockerpool.waiters", attribute.NewSet(pool))], int64(0))
	is.Equal(got[oteltest.Key("dockerpool.daemon.healthy", attribute.NewSet(pool))], int64(1))

	for _, c := range held {
		is.NoErr(p.Return(ctx, c)) // two are trimmed: MaxIdle 1
	}
	got, _ = rec.Observe(ctx)
	st := p.Stats() // after the observation: counters only grow
	trimmed := got[oteltest.Key("dockerpool.container.removals", attribute.NewSet(pool, keyReason.String("trim")))]
	is.True(trimmed <= st.RemovedBy[ReasonTrim])
	is.True(got[oteltest.Key("dockerpool.container.creations", attribute.NewSet(pool))] <= st.Created)
	is.True(got[oteltest.Key("dockerpool.container.creations", attribute.NewSet(pool))] >= 3)
	shutdown(t, p)
	final := p.Stats()

	hits := rec.Sum("dockerpool.acquires", pool, keyResult.String("hit"))
	misses := rec.Sum("dockerpool.acquires", pool, keyResult.String("miss"))
	is.Equal(hits+misses, 3.0)
	is.Equal(int64(misses), st.EmptyAcquireCount)
	is.True(misses >= 1)
	is.Equal(rec.Count("dockerpool.acquire.duration", pool, keyResult.String("miss")), int(misses))
	is.Equal(rec.Count("dockerpool.exec.duration", pool, keyPath.String("docker")), 2)
	is.Equal(rec.Unit("dockerpool.exec.duration"), "s")
	is.Equal(int64(rec.Count("dockerpool.container.creation.duration", pool)), final.Created)
	is.Equal(int64(rec.Count("dockerpool.container.removal.duration", pool)), final.Removed)
	is.True(final.RemovedBy[ReasonTrim] >= 2 && final.RemovedBy[ReasonShutdown] >= 1)

	// After Shutdown the callback is gone, and the spans are all ended.
	_, callbacks = rec.Observe(ctx)
	is.Equal(callbacks, 0)
	names := map[string]int{}
	for _, s := range rec.Spans() {
		if s.Name == "caller" {
			continue
		}
		names[s.Name]++
		is.True(s.Ended())
		v, _ := s.Attr(keyPool)
		is.Equal(v.AsString(), "otel")
		switch s.Name {
		case "dockerpool.Acquire", "dockerpool.Exec":
			is.Equal(s.Parent, parent)
		case "dockerpool.container.remove":
			r, ok := s.Attr(keyReason)
			is.True(ok && (r.AsString() == "trim" || r.AsString() == "shutdown"))
		}
	}
	is.Equal(names["dockerpool.Acquire"], 3)
	is.Equal(names["dockerpool.Exec"], 2)
	is.Equal(int64(names["dockerpool.container.create"]), final.Created)
	is.Equal(int64(names["dockerpool.container.remove"]), final.Removed)
}

// An Acquire that fails records the error on its span and counts nothing.
func TestTelemetryFailedAcquireRecordsTheError(t *testing.T) {
	is := is.New(t)
	rec := oteltest.New()
	p := startFake(t, fakedocker.New(fakeImage), Config{MinIdle: 1, MeterProvider: rec, TracerProvider: rec.Tracers()})
	shutdown(t, p)
	_, err := p.Acquire(context.Background())
	is.True(err != nil)
	is.Equal(rec.Sum("dockerpool.acquires", keyPool.String("t"), keyResult.String("hit")), 0.0)
	var found bool
	for _, s := range rec.Spans() {
		if s.Name == "dockerpool.Acquire" {
			found = true
			is.Equal(s.Status, codes.Error)
			is.True(strings.Contains(s.Text(), "shut down"))
		}
	}
	is.True(found)
}

// With the no-op providers, and with the global placeholder before a
// program installs a provider, the instrumentation allocates nothing.
func TestTelemetryAllocatesNothingWithoutAProvider(t *testing.T) {
	for name, cfg := range map[string]Config{
		"global": {Name: "a"},
		"noop":   {Name: "a", MeterProvider: metricnoop.NewMeterProvider(), TracerProvider: tracenoop.NewTracerProvider()},
	} {
		t.Run(name, func(t *testing.T) {
			tel, err := newTelemetry(settings{Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			h := &Container{id: "0123456789abcdef", runner: dockerRunner{}}
			ctx := context.Background()
			allocs := testing.AllocsPerRun(1000, func() {
				actx, m := tel.begin(ctx, "dockerpool.Acquire", tel.acquireTime)
				tel.acquired(actx, m, h, false, nil)
				ectx, m := tel.beginExec(ctx, h, "echo")
				m.end(ectx, tel.execTime, tel.execOptsOf(h), nil)
			})
			if allocs != 0 {
				t.Fatalf("%v allocations per Acquire and Exec", allocs)
			}
		})
	}
}

// The pool's base attributes leave room for a Group's template and host.
func TestTelemetryBaseAttributesTakeExtras(t *testing.T) {
	is := is.New(t)
	rec := oteltest.New()
	tel, err := newTelemetry(settings{Config: Config{Name: "g", MeterProvider: rec}}, attribute.String("dockerpool.template", "py"))
	is.NoErr(err)
	tel.acquired(context.Background(), measure{}, &Container{id: "c"}, true, nil)
	is.Equal(rec.Sum("dockerpool.acquires", keyPool.String("g"), attribute.String("dockerpool.template", "py"), keyResult.String("miss")), 1.0)
}

// Shutdown's unregistering never deadlocks against a collection that
// waits for Stats, whichever comes first.
func TestTelemetryCollectionDuringShutdown(t *testing.T) {
	rec := oteltest.New()
	p := startFake(t, fakedocker.New(fakeImage), Config{MinIdle: 1, MeterProvider: rec})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for range 50 {
			rec.Observe(context.Background())
		}
	}()
	shutdown(t, p)
	wg.Wait()
	if _, n := rec.Observe(context.Background()); n != 0 {
		t.Fatalf("%d callbacks left after Shutdown", n)
	}
}

// BenchmarkTelemetryNoop is what the instrumentation adds to one Acquire
// and one Exec when no provider is installed (the global placeholder): the
// bound on its share of the warm cycle, which the side-by-side runs of
// BENCHMARKS.md cannot resolve on a loaded machine.
func BenchmarkTelemetryNoop(b *testing.B) {
	tel, err := newTelemetry(settings{Config: Config{Name: "a"}})
	if err != nil {
		b.Fatal(err)
	}
	h := &Container{id: "0123456789abcdef", runner: dockerRunner{}}
	ctx := context.Background()
	b.Run("acquire", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			actx, m := tel.begin(ctx, "dockerpool.Acquire", tel.acquireTime)
			tel.acquired(actx, m, h, false, nil)
		}
	})
	b.Run("exec", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			ectx, m := tel.beginExec(ctx, h, "echo")
			m.end(ectx, tel.execTime, tel.execOptsOf(h), nil)
		}
	})
}
