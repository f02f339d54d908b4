package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The group's owner over many hosts (issue 18, point 6): a simulation on
// the in-memory fake, each host capped at 50 containers with 40 of them
// held for the whole run, callers acquiring and returning the rest, and
// (from 10 hosts) a tenth of the hosts failing and coming back meanwhile.
// What is measured is the group owner's own time per message (a member's
// report read, a caller's request, a tick: ownerMeter), not the fake
// daemon's nor the pools': it must not grow with the hosts.
//
//	go test -run XXX -bench BenchmarkGroupHostsOwner -benchtime 400000x .
//
// (b.N pairs: give it enough for a few seconds, or no host fails.)

// hostsRun is the outcome of one simulation.
type hostsRun struct {
	nsPerMsg float64
	msgs     int64
	outages  int
	errs     int64 // Acquires that failed (a host went out under them)
}

const (
	simCap     = 50 // each host's MaxSize
	simHeld    = 40 // containers held on each host for the whole run
	simCallers = 32 // callers acquiring and returning
)

// simulateHosts runs pairs Acquire+Return pairs over hosts fake hosts, and
// goes on until at least minDur has passed (for the hosts to fail and come
// back: the prober sees a failure within about a second).
func simulateHosts(tb testing.TB, hosts, pairs int, minDur time.Duration) hostsRun {
	fakes := make([]*fakedocker.Fake, hosts)
	hs := make([]Host, hosts)
	for i := range hs {
		fakes[i] = fakedocker.New(fakeImage)
		hs[i] = Host{Name: fmt.Sprintf("h%03d", i), Client: fakes[i], MaxSize: simCap}
	}
	meter := &ownerMeter{}
	ctx := context.Background()
	g, err := NewGroup(ctx, GroupConfig{StaticWarmth: true, Hosts: hs, meter: meter,
		Templates: map[string]Config{"t": testConfig(Config{Name: "sim", MinIdle: 2, MaxIdle: simCap})}})
	if err != nil {
		tb.Fatal(err)
	}
	held := holdOnEveryHost(tb, g, hosts*simHeld)
	stop := make(chan struct{})
	var faults sync.WaitGroup
	if hosts >= 10 {
		faults.Go(func() { injectHostFaults(fakes, stop) })
	}
	var errs atomic.Int64
	var left atomic.Int64
	left.Store(int64(pairs))
	until := time.Now().Add(minDur)
	var callers sync.WaitGroup
	for range simCallers {
		callers.Go(func() {
			for left.Add(-1) >= 0 || time.Now().Before(until) {
				actx, cancel := context.WithTimeout(ctx, 10*time.Second)
				c, err := g.Acquire(actx, "t")
				cancel()
				if err != nil {
					errs.Add(1)
					continue
				}
				_ = g.Return(ctx, c)
			}
		})
	}
	callers.Wait()
	close(stop)
	faults.Wait()
	for _, f := range fakes {
		f.Heal()
	}
	outages := 0
	for _, h := range g.Stats().Hosts {
		outages += h.Outages
	}
	for _, c := range held {
		_ = g.Return(ctx, c)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	if err := g.Shutdown(sctx); err != nil && !errors.Is(err, ErrHostDown) {
		tb.Fatalf("Shutdown: %v", err)
	}
	return hostsRun{nsPerMsg: float64(meter.busy.Nanoseconds()) / float64(max(1, meter.msgs)), msgs: meter.msgs, outages: outages, errs: errs.Load()}
}

// holdOnEveryHost acquires n containers (placement spreads them: the most
// room first) and keeps them.
func holdOnEveryHost(tb testing.TB, g *Group, n int) []*Container {
	held := make([]*Container, n)
	var wg sync.WaitGroup
	var failed atomic.Int64
	for w := range 64 {
		wg.Go(func() {
			for i := w; i < n; i += 64 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				c, err := g.Acquire(ctx, "t")
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				held[i] = c
			}
		})
	}
	wg.Wait()
	if failed.Load() > 0 {
		tb.Fatalf("%d of %d Acquires to fill the hosts failed", failed.Load(), n)
	}
	return held
}

// injectHostFaults keeps about a tenth of the hosts failing, each for
// 1.2s (long enough for the prober to see it), until stop is closed.
func injectHostFaults(fakes []*fakedocker.Fake, stop chan struct{}) {
	down := map[int]time.Time{}
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for i, since := range down {
				if now.Sub(since) > 1200*time.Millisecond {
					fakes[i].Heal()
					delete(down, i)
				}
			}
			if len(down) < len(fakes)/10 {
				i := rand.IntN(len(fakes))
				if _, ok := down[i]; !ok {
					fakes[i].Fail(errors.New("connection refused"))
					down[i] = now
				}
			}
		}
	}
}

func BenchmarkGroupHostsOwner(b *testing.B) {
	for _, hosts := range []int{1, 10, 100} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			benchNoDebug(b)
			r := simulateHosts(b, hosts, b.N, 0)
			b.ReportMetric(r.nsPerMsg, "ns/msg")
			b.ReportMetric(float64(r.msgs)/float64(b.N), "msgs/op")
			b.ReportMetric(float64(r.outages), "outages")
			b.ReportMetric(float64(r.errs), "errs")
		})
	}
}

// raceBuild is set by race_internal_test.go under -race.
var raceBuild bool

// TestGroupHostsOwnerCostDoesNotGrowWithHosts: the group owner's time per
// message at 100 hosts is within 3 times that at 10 (generous: the
// placement is indexed, so it should be about the same). Short windows of
// hosts failing and coming back, alternated between the two sizes, and the
// best window of each compared: the test runs beside the whole suite, whose
// load comes and goes, and a busy machine only ever adds time.
//
// Under the race detector the bound is 8 times: there every
// synchronisation costs more as the process holds more goroutines and
// memory (100 hosts' pools and 4,000 held containers), which is the
// detector's cost, not the owner's: 1.25 times without it (1,645 against
// 2,050 ns a message), 2 to 3 times with it on a quiet machine and 4.7
// times in CI beside the other packages' tests; and two windows of each
// size, not three. .ci/run runs this test once more without -race, where
// the bound is 3.
func TestGroupHostsOwnerCostDoesNotGrowWithHosts(t *testing.T) {
	if testing.Short() {
		t.Skip("a few seconds of simulation")
	}
	bound, rounds := 3.0, 3
	if raceBuild {
		bound, rounds = 8, 2
	}
	best := map[int]float64{}
	for round := range rounds {
		for _, hosts := range []int{10, 100} {
			r := simulateHosts(t, hosts, 1000, time.Second)
			t.Logf("round %d, %d hosts: %.0f ns/msg over %d messages, %d outages", round, hosts, r.nsPerMsg, r.msgs, r.outages)
			if b, ok := best[hosts]; !ok || r.nsPerMsg < b {
				best[hosts] = r.nsPerMsg
			}
		}
	}
	t.Logf("100 hosts against 10: %.2f times the cost per message (bound %v, race detector %v)", best[100]/best[10], bound, raceBuild)
	if best[100] > bound*best[10] {
		t.Fatalf("the group owner's cost per message grew with the hosts: %.0f ns at 100 hosts, %.0f at 10 (best of %d windows each; bound %v times)", best[100], best[10], rounds, bound)
	}
}
