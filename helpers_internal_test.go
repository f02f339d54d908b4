package dockerpool

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The helpers of the package's internal tests (core_test.go, routing_test.go,
// pool_fake_test.go, model_test.go, bench_test.go). The external tests have
// theirs in helpers_test.go.

// ---- level 1: the core, driven as the owner drives it -------------------------

// harness drives a bare core through the same owner.handle as the pool's
// owner goroutine, with the test playing the workers: tasks the owner
// starts appear in h.running, and finish completes them.
type harness struct {
	t       testing.TB
	c       *core
	o       *owner
	now     time.Time
	running []task
	notes   []error // what OnError would have heard
	closed  bool    // admission closed
	seq     int
}

func newHarness(t testing.TB, lim limits) *harness {
	t.Helper()
	if lim.workers == [numLanes]int{} {
		lim.workers = [numLanes]int{10, 10}
	}
	if lim.refillInterval == 0 {
		lim.refillInterval = 100 * time.Millisecond
	}
	h := &harness{t: t, c: newCore(lim, 1, nil), now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h.o = newOwner(h.c, h, nil)
	h.send(adoptReq{}) // the first message: nothing found from an earlier process
	return h
}

// The harness is the owner's world.
func (h *harness) publish(int, int)               {}
func (h *harness) startTask(t task, _ *agentConn) { h.running = append(h.running, t) }
func (h *harness) notify(err error)               { h.notes = append(h.notes, err) }
func (h *harness) closeAdmission()                { h.closed = true }
func (h *harness) cancelCreations()               {}
func (h *harness) send(m message)                 { h.t.Helper(); h.o.handle(m, h.now) }
func (h *harness) step()                          { h.t.Helper(); h.send(nudge{}) }
func (h *harness) finish(kind taskKind, err error) finished {
	h.t.Helper()
	return h.finishWhere(func(t task) bool { return t.kind() == kind }, kind.String(), err)
}

// nudge is a message that changes nothing: the balance after it runs, as
// after any message (for a test that moved the clock).
type nudge struct{}

func (nudge) apply(*core, time.Time) {}

// finished is what a test may want to know of a task it completed.
type finished struct {
	id     string
	reason RemoveReason
	lane   lane
}

// finishWhere completes the oldest running task that match selects, with
// err; a creation that succeeds makes container "c<n>".
func (h *harness) finishWhere(match func(task) bool, what string, err error) finished {
	h.t.Helper()
	for i, t := range h.running {
		if !match(t) {
			continue
		}
		h.running = append(h.running[:i], h.running[i+1:]...)
		m := t.done(err)
		var f finished
		f.lane = t.lane()
		switch t := t.(type) {
		case createTask:
			if err == nil {
				h.seq++
				m = createdMsg{task: t, id: fmt.Sprintf("c%d", h.seq)}
			}
		case removeTask:
			f.id, f.reason = t.id, t.reason
		case checkTask:
			f.id = t.id
		case resetTask:
			f.id = t.id
		}
		h.send(m)
		return f
	}
	h.t.Fatalf("no running %s task; running: %v", what, h.running)
	return finished{}
}

// finishAll completes every running task of that kind, including the ones
// they cause, until none is left.
func (h *harness) finishAll(kind taskKind) {
	h.t.Helper()
	for h.count(kind) > 0 {
		h.finish(kind, nil)
	}
}

func (h *harness) count(kind taskKind) int {
	n := 0
	for _, t := range h.running {
		if t.kind() == kind {
			n++
		}
	}
	return n
}

func (h *harness) acquire() chan acquireReply {
	reply := make(chan acquireReply, 1)
	h.send(acquireReq{reply: reply})
	return reply
}

func (h *harness) release(c *Container, remove bool) error {
	h.t.Helper()
	state, err := c.markReleased()
	if err != nil {
		return err
	}
	reply := make(chan error, 1)
	h.send(c.releaseReq(state, remove, reply))
	select { // the core answers within the step, or never
	case err := <-reply:
		return err
	default:
		h.t.Fatal("no reply to the release")
		return nil
	}
}

func got(t testing.TB, reply chan acquireReply) acquireReply {
	t.Helper()
	select {
	case r := <-reply:
		return r
	default:
		t.Fatal("no reply")
		return acquireReply{}
	}
}

func pending(reply chan acquireReply) bool { return len(reply) == 0 }

// ---- level 2: the public methods, with no owner ---------------------------------

// bareTestPool is a Pool with its channels but no owner: the test reads what
// the public methods send.
func bareTestPool() *Pool {
	p := &Pool{
		acquireCh: make(chan acquireReq),
		releaseCh: make(chan releaseReq),
		ctrlCh:    make(chan message),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
	}
	p.acquireReplies.New = func() any { return make(chan acquireReply, 1) }
	p.releaseReplies.New = func() any { return make(chan error, 1) }
	var err error
	if p.tel, err = newTelemetry(settings{Config: Config{Name: "bare"}}); err != nil {
		panic(err)
	}
	return p
}

// ---- level 3: the whole pool on the fake daemon -----------------------------------

const fakeImage = "busybox:test"

// testConfig is a valid Config for the fake daemon.
func testConfig(cfg Config) Config {
	if cfg.Name == "" {
		cfg.Name = "t"
	}
	if cfg.Network.Name == "" {
		cfg.Network.Name = "none"
	}
	if cfg.Image.Name == "" {
		cfg.Image.Name = fakeImage
	}
	if cfg.OnError == nil {
		cfg.OnError = func(error) {}
	}
	return cfg
}

// startFake starts a pool on the fake daemon, through the public API, and
// shuts it down at the end of the test.
func startFake(t *testing.T, f *fakedocker.Fake, cfg Config) *Pool {
	t.Helper()
	cfg.Client = f
	p, err := New(context.Background(), testConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	// Inside a synctest bubble, cleanups run in the bubble: a failed test
	// still stops the pool's goroutines.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return p
}

func shutdown(t *testing.T, p *Pool) {
	t.Helper()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// gate makes a fake Docker call block until the test lets it through.
type gate struct {
	op      fakedocker.Op
	release chan struct{}
	waiting atomic.Int32
}

func newGate(op fakedocker.Op) *gate { return &gate{op: op, release: make(chan struct{})} }

func (g *gate) hook(ctx context.Context, op fakedocker.Op, _ string) error {
	if op != g.op {
		return nil
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
