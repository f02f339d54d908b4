package dockerpool

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

// stoppedHost is a fake daemon that can be stopped as a SIGSTOPped dockerd
// is: pings and creations hang; once it resumes, the creations it had
// received are made, whether their caller is still there or not (the
// daemon cannot know).
type stoppedHost struct {
	*fakedocker.Fake
	mu      sync.Mutex
	resumed chan struct{} // nil while it runs
}

func (s *stoppedHost) stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.resumed = make(chan struct{})
}

func (s *stoppedHost) resume() {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.resumed)
	s.resumed = nil
}

func (s *stoppedHost) stopped() chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.resumed
}

func (s *stoppedHost) Ping(ctx context.Context) (types.Ping, error) {
	if ch := s.stopped(); ch != nil {
		select {
		case <-ch:
		case <-ctx.Done():
			return types.Ping{}, ctx.Err()
		}
	}
	return s.Fake.Ping(ctx)
}

func (s *stoppedHost) ContainerCreate(ctx context.Context, cfg *container.Config, hc *container.HostConfig, nc *network.NetworkingConfig, p *ocispec.Platform, name string) (container.CreateResponse, error) {
	if ch := s.stopped(); ch != nil {
		<-ch // the request is in the daemon: it is made once the daemon runs again
		r, err := s.Fake.ContainerCreate(context.Background(), cfg, hc, nc, p, name)
		if ctx.Err() != nil {
			return container.CreateResponse{}, ctx.Err()
		}
		return r, err
	}
	return s.Fake.ContainerCreate(ctx, cfg, hc, nc, p, name)
}

// TestHostsACreationCutByAnOutageIsRemovedSoonAfterTheHostIsBack: a host
// stops (SIGSTOP) while its pool creates a container; the group takes it
// out, which cuts the creation short; the daemon makes the container when
// it resumes. Once the host is back, the pool must remove that container
// within about DockerTimeout + 2s (the age from which reconcile takes an
// unknown container of its own for a lost creation), not at the next
// periodic reconcile (reconcileEvery, 30s) — the real-host test saw 30s
// (TestHostsGroupRoutesAroundEachFault/sigstop, "clean 29797ms after back").
func TestHostsACreationCutByAnOutageIsRemovedSoonAfterTheHostIsBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		a, b := &stoppedHost{Fake: fakedocker.New(fakeImage)}, fakedocker.New(fakeImage)
		const dockerTimeout = 5 * time.Second
		g, err := NewGroup(ctx, GroupConfig{StaticWarmth: true,
			Hosts:     []Host{{Name: "a", Client: a, MaxSize: 3}, {Name: "b", Client: b, MaxSize: 3}},
			Templates: map[string]Config{"t": testConfig(Config{MinIdle: 1, MaxIdle: 2, DockerTimeout: dockerTimeout})}})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = g.Shutdown(ctx) }()
		if err := g.WaitIdle(ctx, "t", 1); err != nil {
			t.Fatal(err)
		}
		a.stop()
		// Take a's idle container: its pool makes another, which hangs.
		var held []*Container
		for range 4 {
			c, err := g.Acquire(ctx, "t")
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
			if c.Host() == "a" {
				break
			}
		}
		time.Sleep(3 * time.Second) // virtual: the group takes a out (HostPing 1s)
		if g.Stats().Hosts["a"].Healthy {
			t.Fatal("a is still healthy 3s after it stopped")
		}
		for _, c := range held {
			_ = g.Return(ctx, c)
		}
		a.resume()
		time.Sleep(3 * time.Second) // virtual: a is back (backoff ≤ 2s)
		if !g.Stats().Hosts["a"].Healthy {
			t.Fatal("a is not healthy 3s after it resumed")
		}
		back := time.Now()
		for time.Since(back) < dockerTimeout+2*time.Second+5*time.Second {
			time.Sleep(100 * time.Millisecond) // virtual time: polling costs nothing
			if unstarted(a.Fake) == 0 {
				t.Logf("the cut creation's container was removed %v after a was back", time.Since(back))
				return
			}
		}
		t.Errorf("%v after a was back, %d container(s) made by a creation cut short by the outage are still on it (never started): the pool removes them only at its next periodic reconcile", time.Since(back), unstarted(a.Fake))
	})
}

func unstarted(f *fakedocker.Fake) int {
	n := 0
	for _, c := range f.Containers() {
		if !c.Running {
			n++
		}
	}
	return n
}
