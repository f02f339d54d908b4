package dockerpool

import (
	"bytes"
	"context"
	"io"
	"runtime"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// Benchmarks of the hot paths of the core, from the innermost out:
//
//	BenchmarkCoreAcquireReturn       the pure core: acquire and release on a bare core
//	BenchmarkChanRoundTrip           the floor of one request/reply to a goroutine
//	BenchmarkPoolStatsRoundTrip      one round trip through the owner's select
//	BenchmarkPoolAcquireReturnFake   the whole pool on the in-memory fake Docker
//	BenchmarkPoolExecFake            Acquire + Exec + Return on the fake
//	BenchmarkLimitedWriter, BenchmarkOCISniffer   the exec output path
//
// Run them with: go test -run XXX -bench . -benchmem .
// The whole-pool numbers need debugChecks off (TestMain turns it on for the
// tests; it costs a stack dump per public call): benchPool does that.

// benchNoDebug turns the debug checks off for one benchmark. Benchmarks run
// after the tests, one at a time, and every pool a benchmark starts is shut
// down before the flag is restored.
func benchNoDebug(b *testing.B) {
	old := debugChecks
	debugChecks = false
	b.Cleanup(func() { debugChecks = old })
}

// benchCore returns a harness whose core has two idle containers and
// MinIdle 1, so that taking one does not start a refill: the steady state of
// a warm pool.
func benchCore(b *testing.B) *harness {
	h := newHarness(b, limits{
		minIdle: 1, maxIdle: 2,
		workers:        [numLanes]int{DefaultMaxConcurrentDockerOps, DefaultMaxConcurrentAcquire},
		refillInterval: DefaultRefillInterval,
		suspectIdle:    DefaultCheckIdleAfter,
	})
	h.finishAll(taskCreate) // one container idle
	c := mustReceive(b, h.acquire()).c
	h.finishAll(taskCreate) // the refill makes a second one
	if err := h.release(c, false); err != nil || len(h.c.idle) != 2 {
		b.Fatalf("setup: %v, %d idle", err, len(h.c.idle))
	}
	return h
}

// mustReceive takes the reply the owner must have sent already.
func mustReceive[T any](b *testing.B, ch chan T) T {
	select {
	case v := <-ch:
		return v
	default:
		b.Fatal("the owner sent no reply")
		panic("unreachable")
	}
}

// BenchmarkCoreAcquireReturn measures the core as the owner drives it: an
// acquire and a release message through owner.handle (step, balance, the
// effects carried out), with no goroutine hand-off or Docker call. It is the
// part of a pool round trip that the owner spends on its own.
func BenchmarkCoreAcquireReturn(b *testing.B) {
	benchNoDebug(b)
	h := benchCore(b)
	reply := make(chan acquireReply, 1)
	rel := make(chan error, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		h.send(acquireReq{reply: reply})
		c := mustReceive(b, reply).c
		state, _ := c.markReleased()
		h.send(c.releaseReq(state, false, rel))
		if err := mustReceive(b, rel); err != nil || len(h.running) != 0 {
			b.Fatalf("release: %v, %d tasks", err, len(h.running))
		}
	}
}

// BenchmarkChanRoundTrip is the floor of an actor's call: an unbuffered
// send to a goroutine blocked in a two-case select, and a reply on a fresh
// buffered channel, as Acquire does.
func BenchmarkChanRoundTrip(b *testing.B) {
	req := make(chan chan int)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case r := <-req:
				r <- 1
			case <-done:
				return
			}
		}
	}()
	defer close(done)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r := make(chan int, 1)
		req <- r
		<-r
	}
}

// benchPool starts a pool on the in-memory fake Docker, waits for minIdle
// idle containers and shuts it down when the benchmark ends.
func benchPool(b *testing.B, minIdle int) *Pool {
	b.Helper()
	benchNoDebug(b)
	const image = "busybox:bench"
	p, err := New(context.Background(), Config{
		Name:    "bench",
		Network: NetworkConfig{Name: "none"},
		Image:   ImageConfig{Name: image},
		MinIdle: minIdle, MaxIdle: 2 * minIdle,
		OnError: func(err error) { b.Logf("pool: %v", err) },
		Client:  fakedocker.New(image),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := p.Shutdown(ctx); err != nil {
			b.Errorf("Shutdown: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitIdle(ctx, minIdle); err != nil {
		b.Fatal(err)
	}
	return p
}

// BenchmarkPoolStatsRoundTrip measures one round trip through the real
// owner loop (its select over every channel of the pool) with the least
// work behind it: a Stats snapshot.
func BenchmarkPoolStatsRoundTrip(b *testing.B) {
	p := benchPool(b, 1)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		_ = p.Stats()
	}
}

// BenchmarkPoolAcquireReturnFake measures a warm Acquire + Return pair on
// the whole pool (owner goroutine, core, handles) against the fake Docker:
// no Docker call happens on this path. One caller, and GOMAXPROCS callers.
func BenchmarkPoolAcquireReturnFake(b *testing.B) {
	b.Run("callers=1", func(b *testing.B) {
		p := benchPool(b, 1)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		for range b.N {
			c, err := p.Acquire(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := p.Return(ctx, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("callers=GOMAXPROCS", func(b *testing.B) {
		p := benchPool(b, runtime.GOMAXPROCS(0))
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				c, err := p.Acquire(ctx)
				if err != nil {
					b.Error(err)
					return
				}
				if err := p.Return(ctx, c); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// BenchmarkPoolExecFake measures Acquire + Exec(echo hi) + Return against
// the fake Docker: what the library adds to a command, short of the daemon
// (the fake answers in-process, over a net.Pipe for the output).
func BenchmarkPoolExecFake(b *testing.B) {
	p := benchPool(b, 1)
	ctx := context.Background()
	cmd := []string{"echo", "hi"}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := p.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		res, err := c.Exec(ctx, cmd)
		if err != nil || string(res.Stdout) != "hi\n" {
			b.Fatalf("exec: %q, %v", res.Stdout, err)
		}
		if err := p.Return(ctx, c); err != nil {
			b.Fatal(err)
		}
	}
}

// benchChunk is what stdcopy hands the writers at most per frame.
var benchChunk = bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB

// BenchmarkLimitedWriter measures the output limit on the stdout path, with
// a limit that is never reached.
func BenchmarkLimitedWriter(b *testing.B) {
	b.SetBytes(int64(len(benchChunk)))
	b.ReportAllocs()
	w := newLimiter(1 << 62).wrap(io.Discard)
	for range b.N {
		if _, err := w.Write(benchChunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOCISniffer measures the stdout path as Exec builds it: the
// sniffer (which looks at the first bytes only) over the limited writer.
func BenchmarkOCISniffer(b *testing.B) {
	b.SetBytes(int64(len(benchChunk)))
	b.ReportAllocs()
	s := &ociSniffer{w: newLimiter(0).wrap(io.Discard)}
	for range b.N {
		if _, err := s.Write(benchChunk); err != nil {
			b.Fatal(err)
		}
	}
	code := 0
	if err := s.finish(&code, io.Discard); err != nil {
		b.Fatal(err)
	}
}
