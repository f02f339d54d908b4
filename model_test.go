package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// The model test: rapid drives a whole pool (owner, workers, event watcher)
// on the fake daemon through long random sequences of Acquire, Return,
// Remove, cancelled Acquire, container deaths and removals behind the pool's
// back, failing and slow Docker calls, a broken event stream, time passing,
// and finally Shutdown. Virtual time (synctest) makes each step fast. After
// every step it checks what must always hold:
//
//   - the core's invariants (debugChecks: no container in two states, counts
//     that add up) — checked by the owner after every message;
//   - one container never has two holders;
//   - InUse is exactly the number of handles the test holds;
//   - when no Docker work is in flight, the pool and the fake daemon agree on
//     how many containers there are;
//
// and after Shutdown, that the fake daemon holds nothing of the pool.

// minModelSteps is how many steps a run must take in all.
const minModelSteps = 10_000

func TestModelPoolKeepsItsPromisesUnderRandomOperations(t *testing.T) {
	t.Parallel() // in memory, in its own bubble: nothing shared with the others
	var steps atomic.Int64
	synctest.Test(t, func(t *testing.T) {
		rapid.Check(inBubble{t}, func(rt *rapid.T) {
			m := newModel(rt)
			n := rapid.IntRange(minModelSteps/100, minModelSteps/50).Draw(rt, "steps") // 100 cases: at least minModelSteps
			for range n {
				m.step(rt)
				steps.Add(1)
				synctest.Wait()
				m.check(rt)
			}
			m.shutdown(rt)
		})
	})
	t.Logf("%d model steps", steps.Load())
	if steps.Load() < minModelSteps {
		t.Fatalf("only %d steps ran; want at least %d", steps.Load(), minModelSteps)
	}
}

// inBubble hides from rapid that it runs on a *testing.T: rapid asks for the
// test's deadline, which testing forbids inside a synctest bubble.
type inBubble struct{ *testing.T }

type model struct {
	f    *fakedocker.Fake
	p    *Pool
	cfg  Config
	held []*Container
	ids  map[string]bool // containers held by the test

	// Faults, read by the fake's hook on the pool's goroutines.
	mu       sync.Mutex
	failNext int           // Docker calls of failOps to fail
	failOps  fakedocker.Op // "" means create, start and remove
	slow     time.Duration // every Docker call takes this long
	rnd      *rand.Rand

	eventsBroken bool // until time passes, the pool may not know of deaths
	released     []*Container
	goneHeld     map[string]bool // held containers deleted behind the pool's back
	uses         map[string]int  // hand-outs per container, against MaxUses
}

func newModel(rt *rapid.T) *model {
	minIdle := rapid.IntRange(1, 3).Draw(rt, "minIdle")
	cfg := Config{
		MinIdle:                minIdle,
		MaxIdle:                minIdle + rapid.IntRange(0, 3).Draw(rt, "extraIdle"),
		MaxSize:                rapid.SampledFrom([]int{0, 0, minIdle + 1, minIdle + 3}).Draw(rt, "maxSize"),
		MaxUses:                rapid.IntRange(0, 3).Draw(rt, "maxUses"),
		MaxConcurrentDockerOps: rapid.IntRange(1, 3).Draw(rt, "opsWorkers"),
		MaxConcurrentAcquire:   rapid.IntRange(1, 3).Draw(rt, "acquireWorkers"),
		MaxIdleTime:            rapid.SampledFrom([]time.Duration{0, 5 * time.Second}).Draw(rt, "maxIdleTime"),
		MaxLifetime:            rapid.SampledFrom([]time.Duration{0, 20 * time.Second}).Draw(rt, "maxLifetime"),
		DockerTimeout:          10 * time.Second,
	}
	m := &model{f: fakedocker.New(fakeImage), cfg: cfg, ids: map[string]bool{}, goneHeld: map[string]bool{}, uses: map[string]int{}, rnd: rand.New(rand.NewPCG(1, 2))}
	m.f.Hook = m.hook
	cfg.Client = m.f
	p, err := New(context.Background(), testConfig(cfg))
	if err != nil {
		rt.Fatalf("New: %v", err)
	}
	m.p = p
	rt.Cleanup(func() { // a failed case must not leave goroutines in the bubble
		m.mu.Lock()
		m.failNext, m.slow = 0, 0
		m.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = p.Shutdown(ctx)
	})
	return m
}

// hook plays a slow or failing daemon, as the current step set it up.
func (m *model) hook(ctx context.Context, op fakedocker.Op, _ string) error {
	m.mu.Lock()
	slow := m.slow
	fail := m.failNext > 0 && (op == m.failOps || (m.failOps == "" && (op == fakedocker.OpCreate || op == fakedocker.OpStart || op == fakedocker.OpRemove)))
	if fail {
		m.failNext--
	}
	m.mu.Unlock()
	if slow > 0 {
		t := time.NewTimer(slow)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if fail {
		return fmt.Errorf("injected failure of %s: %w", op, fakedocker.ErrDown)
	}
	return nil
}

func (m *model) step(rt *rapid.T) {
	ctx := context.Background()
	switch op := rapid.IntRange(0, 13).Draw(rt, "op"); op {
	case 0, 1, 2: // Acquire, with a deadline so that nothing waits forever
		wait := rapid.SampledFrom([]time.Duration{time.Millisecond, 100 * time.Millisecond, 5 * time.Second}).Draw(rt, "deadline")
		actx, cancel := context.WithTimeout(ctx, wait)
		c, err := m.p.Acquire(actx)
		cancel()
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, ErrDaemonUnavailable) && !errors.Is(err, ErrCreateFailed) {
				rt.Fatalf("Acquire: unexpected error %v", err)
			}
			return
		}
		if m.ids[c.ID()] {
			rt.Fatalf("container %s handed to a second holder", c.ID())
		}
		m.uses[c.ID()]++
		if m.cfg.MaxUses > 0 && m.uses[c.ID()] > m.cfg.MaxUses {
			rt.Fatalf("container %s handed out %d times, MaxUses %d", c.ID(), m.uses[c.ID()], m.cfg.MaxUses)
		}
		m.ids[c.ID()] = true
		m.held = append(m.held, c)

	case 3, 4: // Return
		if c := m.take(rt); c != nil {
			if err := m.p.Return(ctx, c); err != nil {
				rt.Fatalf("Return: %v", err)
			}
		}

	case 5: // Remove
		if c := m.take(rt); c != nil {
			if err := m.p.Remove(ctx, c); err != nil {
				rt.Fatalf("Remove: %v", err)
			}
		}

	case 6: // misuse: a handle returned before must be refused, harmlessly
		if len(m.released) > 0 {
			c := m.released[rapid.IntRange(0, len(m.released)-1).Draw(rt, "stale")]
			if err := m.p.Return(ctx, c); !errors.Is(err, ErrContainerReleased) {
				rt.Fatalf("second Return: %v", err)
			}
			if _, err := c.Exec(ctx, []string{"echo"}); !errors.Is(err, ErrContainerReleased) {
				rt.Fatalf("Exec after Return: %v", err)
			}
		}

	case 7: // a container dies or vanishes behind the pool's back
		all := m.f.Containers()
		if len(all) > 0 {
			victim := all[rapid.IntRange(0, len(all)-1).Draw(rt, "victim")].ID
			if rapid.Bool().Draw(rt, "delete") {
				m.f.Delete(victim)
				if m.ids[victim] {
					m.goneHeld[victim] = true // still in use until its holder lets go
				}
			} else {
				m.f.Kill(victim)
			}
		}

	case 8: // Docker starts failing
		m.mu.Lock()
		m.failNext = rapid.IntRange(1, 6).Draw(rt, "failures")
		m.failOps = rapid.SampledFrom([]fakedocker.Op{"", fakedocker.OpCreate, fakedocker.OpRemove, fakedocker.OpInspect}).Draw(rt, "failOps")
		m.mu.Unlock()

	case 9: // Docker gets slow, or fast again
		m.mu.Lock()
		m.slow = rapid.SampledFrom([]time.Duration{0, 0, 50 * time.Millisecond, 2 * time.Second}).Draw(rt, "slow")
		m.mu.Unlock()

	case 10: // the event stream breaks
		m.f.BreakEvents(errors.New("daemon restarted"))
		m.eventsBroken = true

	case 11, 12: // time passes
		time.Sleep(rapid.SampledFrom([]time.Duration{10 * time.Millisecond, 500 * time.Millisecond, 3 * time.Second, 8 * time.Second}).Draw(rt, "sleep"))

	case 13: // a burst of callers at once, each returning at once
		k := rapid.IntRange(2, 8).Draw(rt, "burst")
		var wg sync.WaitGroup
		var twice atomic.Bool
		var mu sync.Mutex
		holding := map[string]bool{}
		for range k {
			wg.Go(func() {
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				c, err := m.p.Acquire(actx)
				if err != nil {
					return
				}
				mu.Lock()
				if holding[c.ID()] || m.ids[c.ID()] {
					twice.Store(true)
				}
				holding[c.ID()] = true
				mu.Unlock()
				time.Sleep(time.Millisecond)
				mu.Lock()
				delete(holding, c.ID())
				mu.Unlock()
				_ = m.p.Return(ctx, c)
			})
		}
		wg.Wait()
		if twice.Load() {
			rt.Fatalf("a container had two holders during a burst")
		}
	}
	if m.eventsBroken {
		// Let the watcher subscribe again and re-list (its backoff is capped
		// at 5s) before the pool's picture is compared with the daemon's.
		time.Sleep(6 * time.Second)
		m.eventsBroken = false
	}
}

// take removes a random handle from the held ones.
func (m *model) take(rt *rapid.T) *Container {
	if len(m.held) == 0 {
		return nil
	}
	i := rapid.IntRange(0, len(m.held)-1).Draw(rt, "which")
	c := m.held[i]
	m.held = append(m.held[:i], m.held[i+1:]...)
	delete(m.ids, c.ID())
	delete(m.goneHeld, c.ID())
	m.released = append(m.released, c)
	return c
}

func (m *model) check(rt *rapid.T) {
	st := m.p.Stats()
	if st.InUse != len(m.held) {
		rt.Fatalf("InUse %d, but the test holds %d", st.InUse, len(m.held))
	}
	if st.Total != st.Idle+st.InUse+st.Creating+st.Removing+st.Checking {
		rt.Fatalf("inconsistent stats %+v", st)
	}
	if m.cfg.MaxSize > 0 && st.Idle+st.InUse+st.Creating+st.Checking > m.cfg.MaxSize {
		rt.Fatalf("%d containers above MaxSize %d: %+v", st.Idle+st.InUse+st.Creating+st.Checking, m.cfg.MaxSize, st)
	}
	if st.Creating == 0 && st.Removing == 0 && st.Checking == 0 {
		// Quiet: the pool and the daemon must agree.
		n := 0
		for _, c := range m.f.Containers() {
			if c.Labels[LabelPool] == "t" {
				n++
			}
		}
		if n+len(m.goneHeld) != st.Idle+st.InUse {
			var on []string
			for _, c := range m.f.Containers() {
				on = append(on, fmt.Sprintf("%s(%s running=%v held=%v)", c.ID[60:], c.Name, c.Running, m.ids[c.ID]))
			}
			// The owner is idle (synctest.Wait) and Stats synchronised with
			// it: its state can be read for the report.
			var known, early []string
			for id, sl := range m.p.owner.core.known {
				known = append(known, fmt.Sprintf("%s:%d", id[60:], sl.state))
			}
			for id := range m.p.owner.core.early {
				early = append(early, id[60:])
			}
			rt.Logf("known %v early %v", known, early)
			rt.Fatalf("known %v early %v; the daemon has %d containers %v (and %d held ones were deleted), the pool %d idle + %d in use (%+v); calls: create %d start %d remove %d", known, early, n, on, len(m.goneHeld), st.Idle, st.InUse, st,
				m.f.Calls(fakedocker.OpCreate), m.f.Calls(fakedocker.OpStart), m.f.Calls(fakedocker.OpRemove))
		}
	}
}

func (m *model) shutdown(rt *rapid.T) {
	m.mu.Lock()
	m.failNext, m.slow = 0, 0
	m.mu.Unlock()
	ctx := context.Background()
	if len(m.held) > 0 && rapid.Bool().Draw(rt, "returnFirst") {
		for len(m.held) > 0 {
			_ = m.p.Return(ctx, m.take(rt))
		}
	}
	// With nothing held, Shutdown must finish on its own (virtual time: a
	// generous bound costs nothing); with containers held, a short deadline
	// makes it force.
	wait := time.Minute
	if len(m.held) > 0 {
		wait = 2 * time.Second
	}
	sctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	err := m.p.Shutdown(sctx)
	if len(m.held) > 0 {
		if !errors.Is(err, context.DeadlineExceeded) {
			rt.Fatalf("Shutdown with containers in use: %v", err)
		}
		for _, c := range m.held {
			if _, err := c.Exec(ctx, []string{"echo"}); !errors.Is(err, ErrPoolShutdown) {
				rt.Fatalf("Exec after forced Shutdown: %v", err)
			}
		}
	} else if err != nil {
		rt.Fatalf("Shutdown: %v", err)
	}
	if left := m.f.Containers(); len(left) > 0 {
		rt.Fatalf("%d containers left on the daemon after Shutdown", len(left))
	}
}
