package main

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/puddle/v2"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// contender is one implementation of an Acquire+Return pair for (g).
type contender struct {
	name  string
	label string
	pair  func(ctx context.Context) error
}

// runCore measures (g): Acquire+Return pairs per second of the whole pool
// (owner goroutine, core, handles) on the in-memory fake Docker, with one
// caller and with GOMAXPROCS callers, beside github.com/jackc/puddle/v2
// doing the same with a trivial constructor, and beside bare channel round
// trips to a server goroutine (the floor of an actor design: a pair is two
// request/reply round trips). Each contender runs in timed windows,
// interleaved; the rate reported is the median window.
func (e *env) runCore() error {
	ctx := e.ctx
	procs := runtime.GOMAXPROCS(0)
	e.logf("core: %d windows of %v per contender, 1 and %d callers", e.p.CoreRound, e.p.CoreTime, procs)

	fakePool := func(callers int) (*dockerpool.Pool, error) {
		cfg := e.poolConfig(fmt.Sprintf("fake%d", callers), dockerpool.Config{MinIdle: callers, MaxIdle: 2 * callers})
		cfg.HostConfig = nil // the fake knows the "none" network
		cfg.Client = fakedocker.New(e.image)
		p, err := dockerpool.New(ctx, cfg)
		if err != nil {
			return nil, err
		}
		e.mu.Lock()
		e.pools[cfg.Name] = p
		e.mu.Unlock()
		if err := e.waitIdle(p, callers); err != nil {
			return nil, err
		}
		return p, nil
	}
	pud := func(callers int) (*puddle.Pool[int], error) {
		return puddle.NewPool(&puddle.Config[int]{
			Constructor: func(context.Context) (int, error) { return 1, nil },
			Destructor:  func(int) {},
			MaxSize:     int32(2 * callers),
		})
	}

	for _, callers := range []int{1, procs} {
		suffix := "1"
		if callers > 1 {
			suffix = "N"
		}
		pool, err := fakePool(callers)
		if err != nil {
			return fmt.Errorf("fake pool: %w", err)
		}
		pp, err := pud(callers)
		if err != nil {
			return err
		}
		srv1 := newChanServer(2)
		srv4 := newChanServer(4)
		cs := []contender{
			{"g.pool." + suffix, "dockerpool on fake Docker: Acquire + Return", func(ctx context.Context) error {
				c, err := pool.Acquire(ctx)
				if err != nil {
					return err
				}
				return pool.Return(ctx, c)
			}},
			{"g.puddle." + suffix, "puddle/v2: Acquire + Release (trivial constructor)", func(ctx context.Context) error {
				r, err := pp.Acquire(ctx)
				if err != nil {
					return err
				}
				r.Release()
				return nil
			}},
			{"g.chan." + suffix, "2 bare chan round trips (unbuffered request, new buffered reply)", func(context.Context) error {
				srv1.roundTrip()
				srv1.roundTrip()
				return nil
			}},
			{"g.chan4." + suffix, "2 round trips to a 4-case select loop with a clock read (the owner's shape)", func(context.Context) error {
				srv4.roundTrip()
				srv4.roundTrip()
				return nil
			}},
		}
		rates := make([][]float64, len(cs))
		allocs := make([]float64, len(cs))
		for _, c := range cs { // warm-up
			if _, _, err := window(ctx, c, callers, e.p.CoreTime/4); err != nil {
				return fmt.Errorf("%s: %w", c.name, err)
			}
		}
		for range e.p.CoreRound {
			for i, c := range cs {
				r, a, err := window(ctx, c, callers, e.p.CoreTime)
				if err != nil {
					return fmt.Errorf("%s: %w", c.name, err)
				}
				rates[i] = append(rates[i], r)
				allocs[i] += a / float64(e.p.CoreRound)
			}
		}
		for i, c := range cs {
			m := median(rates[i])
			label := c.label
			if callers > 1 {
				label += fmt.Sprintf(", %d callers", callers)
			}
			e.rep.addRate(rate{Name: c.name, Label: label, PerSec: m, Windows: rates[i], NsPerOp: 1e9 / m})
			e.rep.addFact(fact{Name: c.name + ".allocs", Label: c.name + ": heap allocations per pair (whole process)", Value: allocs[i], Unit: "allocs"})
		}
		srv1.close()
		srv4.close()
		pp.Close()
		if _, err := e.closePool(pool); err != nil {
			return err
		}
	}
	return nil
}

// window runs c with the given number of callers for d and returns pairs per
// second and heap allocations per pair.
func window(ctx context.Context, c contender, callers int, d time.Duration) (perSec, allocsPerPair float64, err error) {
	var stop atomic.Bool
	var total atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, callers)
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	t0 := time.Now()
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for !stop.Load() {
				if err := c.pair(ctx); err != nil {
					errs[i] = err
					break
				}
				n++
			}
			total.Add(n)
		}()
	}
	time.Sleep(d)
	stop.Store(true)
	wg.Wait()
	elapsed := time.Since(t0)
	runtime.ReadMemStats(&m1)
	for _, err := range errs {
		if err != nil {
			return 0, 0, err
		}
	}
	n := float64(total.Load())
	return n / elapsed.Seconds(), float64(m1.Mallocs-m0.Mallocs) / n, nil
}

// chanServer is the skeleton of an actor: one goroutine answering requests
// on their own buffered reply channel, as the pool's owner does.
type chanServer struct {
	req  chan chanReq
	idle [2]chan chanReq // never used: they only widen the select
	done chan struct{}
	wg   sync.WaitGroup
}

type chanReq struct {
	reply chan int
	start time.Time
}

// newChanServer starts a server whose select has 2 or 4 cases.
func newChanServer(cases int) *chanServer {
	s := &chanServer{req: make(chan chanReq), done: make(chan struct{})}
	for i := range s.idle {
		s.idle[i] = make(chan chanReq)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if cases == 2 {
			s.serve()
			return
		}
		s.serveOwner()
	}()
	return s
}

func (s *chanServer) serve() {
	n := 0
	for {
		select {
		case r := <-s.req:
			n++
			r.reply <- n
		case <-s.done:
			return
		}
	}
}

// serveOwner has the shape of the pool's owner: four channels (acquire,
// release, worker results, the rare requests) and a clock read per message.
func (s *chanServer) serveOwner() {
	n := 0
	var now time.Time
	for {
		select {
		case r := <-s.req:
			now = time.Now()
			n++
			r.reply <- n
		case r := <-s.idle[0]:
			r.reply <- 0
		case r := <-s.idle[1]:
			r.reply <- 0
		case <-s.done:
			return
		}
		_ = now
	}
}

// roundTrip sends one request and waits for its reply.
func (s *chanServer) roundTrip() int {
	r := chanReq{reply: make(chan int, 1), start: time.Now()}
	s.req <- r
	return <-r.reply
}

func (s *chanServer) close() {
	close(s.done)
	s.wg.Wait()
}
