package dockerpool

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"pgregory.net/rapid"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// A rapid model test of the Group on the fake daemon: random acquires (with
// deadlines), returns, removals and time, with after every step:
// the permits out and the containers on the daemon within MaxSize, no
// container held twice, and no container of a configuration replaced by
// Update handed to an Acquire that started after Update returned.
//
// It found a race of Pool.Return: the last Return of a draining pool ends
// the pool at once, and the caller could see the end before the answer.

type groupModel struct {
	f        *fakedocker.Fake
	g        *Group
	max      int
	names    []string
	held     map[string]*Container
	got      chan groupGot
	retired  map[*Pool]bool // pools replaced by Update
	outcomes atomic.Int64
	log      []string
}

type groupGot struct {
	c      *Container
	err    error
	before map[*Pool]bool // retired when the Acquire started
}

func TestModelGroupKeepsTheBudgetAndItsPromises(t *testing.T) {
	t.Parallel() // in memory, in its own bubble: nothing shared with the others
	var steps atomic.Int64
	synctest.Test(t, func(t *testing.T) {
		rapid.Check(inBubble{t}, func(rt *rapid.T) {
			m := newGroupModel(rt)
			defer m.stop() // a failed case still ends its goroutines
			for range rapid.IntRange(20, 60).Draw(rt, "steps") {
				m.step(rt)
				steps.Add(1)
				synctest.Wait()
				m.collect(rt)
				m.check(rt)
			}
			m.end(rt)
		})
	})
	t.Logf("%d group model steps", steps.Load())
}

func newGroupModel(rt *rapid.T) *groupModel {
	m := &groupModel{f: fakedocker.New(fakeImage), held: map[string]*Container{}, got: make(chan groupGot, 64), retired: map[*Pool]bool{}}
	m.max = rapid.IntRange(1, 6).Draw(rt, "maxSize")
	cfg := GroupConfig{MaxSize: m.max, StaticWarmth: rapid.Bool().Draw(rt, "static"), Templates: map[string]Config{}}
	for i := range rapid.IntRange(1, 4).Draw(rt, "templates") {
		name := fmt.Sprint("t", i)
		m.names = append(m.names, name)
		cfg.Templates[name] = m.template(rt, name)
	}
	g, err := NewGroup(context.Background(), cfg)
	if err != nil {
		rt.Fatal(err)
	}
	m.g = g
	return m
}

func (m *groupModel) template(rt *rapid.T, name string) Config {
	minIdle := rapid.IntRange(1, min(2, m.max)).Draw(rt, "minIdle")
	return testConfig(Config{Name: "gm-" + name, Client: m.f, MinIdle: minIdle,
		MaxIdle: minIdle + rapid.IntRange(0, 2).Draw(rt, "extraIdle"), MaxUses: rapid.IntRange(0, 2).Draw(rt, "maxUses")})
}

func (m *groupModel) step(rt *rapid.T) {
	switch rapid.IntRange(0, 6).Draw(rt, "op") {
	case 0, 1, 2:
		name := rapid.SampledFrom(m.names).Draw(rt, "template")
		wait := rapid.SampledFrom([]time.Duration{time.Millisecond, time.Second, 10 * time.Second}).Draw(rt, "deadline")
		before := make(map[*Pool]bool, len(m.retired))
		for p := range m.retired {
			before[p] = true
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, err := m.g.Acquire(ctx, name)
			m.got <- groupGot{c: c, err: err, before: before}
		}()
	case 3, 4:
		for id, c := range m.held {
			var err error
			if rapid.Bool().Draw(rt, "remove") {
				err = m.g.Remove(context.Background(), c)
			} else {
				err = m.g.Return(context.Background(), c)
			}
			if err != nil {
				rt.Fatalf("release %s (of a replaced pool: %v): %v\n%s", id, m.retired[c.pool], err, strings.Join(m.log, "\n"))
			}
			delete(m.held, id)
			m.log = append(m.log, fmt.Sprintf("released %s lease %d", id, c.lease))
			break
		}
	case 5:
		name := rapid.SampledFrom(m.names).Draw(rt, "update")
		old := m.g.set.Load().byName[name][0].pool
		if err := m.g.Update(context.Background(), name, m.template(rt, name)); err != nil {
			rt.Fatalf("Update: %v", err)
		}
		m.retired[old] = true
	case 6:
		time.Sleep(rapid.SampledFrom([]time.Duration{10 * time.Millisecond, 300 * time.Millisecond, 2 * time.Second}).Draw(rt, "sleep"))
	}
}

// collect takes the answers of the acquires that ended.
func (m *groupModel) collect(rt *rapid.T) {
	for {
		select {
		case r := <-m.got:
			m.outcomes.Add(1)
			if r.err != nil {
				continue // a deadline: fine
			}
			id := r.c.id
			if m.held[id] != nil {
				rt.Fatalf("container %s handed out twice", id)
			}
			if r.before[r.c.pool] {
				rt.Fatalf("container %s of a configuration replaced before the Acquire started", id)
			}
			m.held[id] = r.c
			m.log = append(m.log, fmt.Sprintf("got %s lease %d pool %p", id, r.c.lease, r.c.pool))
		default:
			return
		}
	}
}

func (m *groupModel) check(rt *rapid.T) {
	if st := m.g.Stats(); st.Used > m.max {
		rt.Fatalf("%d permits out of %d", st.Used, m.max)
	}
	if n := m.f.Running(); n > m.max {
		rt.Fatalf("%d containers running on the daemon, MaxSize %d", n, m.max)
	}
}

// stop ends the group whatever state it is in: containers still held are
// removed when the deadline forces the shutdown.
func (m *groupModel) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_ = m.g.Shutdown(ctx)
	time.Sleep(time.Minute) // the Acquires still out end by their deadlines
	synctest.Wait()
}

func (m *groupModel) end(rt *rapid.T) {
	time.Sleep(time.Minute) // every Acquire still out ends, by its deadline at the latest
	synctest.Wait()
	m.collect(rt)
	for _, c := range m.held {
		if err := m.g.Return(context.Background(), c); err != nil {
			rt.Fatal(err)
		}
	}
	if err := m.g.Shutdown(context.Background()); err != nil {
		rt.Fatal(err)
	}
	if n := len(m.f.Containers()); n != 0 {
		rt.Fatalf("%d containers left after Shutdown", n)
	}
}
