package dockerpool

import (
	"context"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/internal/fakedocker"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// onPlaced makes fn run in acquireOnHosts between the owner's answer and
// the caller's Acquire reaching the member's pool, for this test.
func onPlaced(t *testing.T, fn func(host string)) {
	placedHook = fn
	t.Cleanup(func() { placedHook = nil })
}

// An idle container the owner promised a caller can vanish before the
// caller reaches its pool (it dies, expires, is evicted for another
// template). The pool then hands the caller back to the group, which
// places it again: it does not wait there for a creation while another
// host has an idle container or room.
func TestGroupHostsPlaceACallerAgainWhenItsPromisedIdleContainerVanished(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		gates := map[string]*createGate{}
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1}, map[string]int{"a": 1, "b": 1}, gateCreates(t, gates))
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1)) // one idle on each host, both full
		synctest.Wait()
		promised := ""
		onPlaced(t, func(host string) {
			if promised != "" {
				return // placed again: leave it alone
			}
			promised = host
			f := fh.fakes[host]
			gates[host].close() // its refill will hang: the host stays full
			for _, c := range f.Containers() {
				f.Kill(c.ID)
			}
			synctest.Wait() // the pool hears of the death and removes it
		})
		got := make(chan *Container, 1)
		go func() { got <- fh.acquire(t, "the caller whose promised container died") }()
		c := testwait.Recv(t, got, 5*time.Second, "the caller served by the other host's idle container")
		is.True(promised != "")
		is.True(c.Host() != promised)
		st := fh.g.Stats()
		is.Equal(st.Templates["t"].Waiting, 0)
		is.Equal(st.Misses, int64(0)) // a warm one, not a cold start
		is.NoErr(fh.g.Return(ctx, c))
		gates[promised].open()
	})
}

// What is left of the promise on a host with room: a cold start there, if
// no other host has an idle container either.
func TestGroupHostsAPromisedIdleContainerThatVanishedIsAColdStartWhereThereIsRoom(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		gates := map[string]*createGate{}
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1}, map[string]int{"a": 3}, gateCreates(t, gates))
		is.NoErr(fh.g.WaitIdle(ctx, "t", 1))
		synctest.Wait()
		killed := make(chan struct{}, 1)
		once := false // the hook runs on the caller's goroutine only
		onPlaced(t, func(host string) {
			if once {
				return // placed again: leave it alone
			}
			once = true
			gates[host].close() // no new idle container before the caller arrives
			for _, c := range fh.fakes[host].Containers() {
				fh.fakes[host].Kill(c.ID)
			}
			synctest.Wait()
			killed <- struct{}{}
		})
		got := make(chan *Container, 1)
		go func() { got <- fh.acquire(t, "the caller whose promised container died, on a host with room") }()
		testwait.Recv(t, killed, 5*time.Second, "the caller placed")
		synctest.Wait()
		is.Equal(fh.g.Stats().Templates["t"].Waiting, 1) // for a creation on a
		gates["a"].open()
		c := testwait.Recv(t, got, 5*time.Second, "the caller served by a creation")
		is.Equal(c.Host(), "a")
		st := fh.g.Stats()
		is.Equal(st.Misses, int64(1)) // made for it
		is.Equal(st.Templates["t"].Waiting, 0)
		is.NoErr(fh.g.Return(ctx, c))
	})
}

// A daemon killed while it makes a caller's container cuts the creation's
// connection before the group's prober has noticed anything: the caller is
// placed again on another host, rather than handed the cut connection.
func TestGroupHostsPlaceACallerAgainWhenItsCreationsConnectionIsCut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		is := is.New(t)
		ctx := context.Background()
		cut := &url.Error{Op: "Post", URL: "https://a:2376/v1.41/containers/create",
			Err: &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}}
		// The first creation on each host (the warm one) hangs until the
		// end, so that nothing is idle; the next one on a is cut.
		var creates sync.Map // host -> *atomic.Int32
		fh := startHostGroup(t, Config{MinIdle: 1, MaxIdle: 1}, map[string]int{"a": 3, "b": 2}, func(name string, f *fakedocker.Fake) {
			n, _ := creates.LoadOrStore(name, new(atomic.Int32))
			f.Hook = func(ctx context.Context, op fakedocker.Op, _ string) error {
				if op != fakedocker.OpCreate {
					return nil
				}
				switch k := n.(*atomic.Int32).Add(1); {
				case k == 1:
					<-ctx.Done()
					return ctx.Err()
				case name == "a":
					return cut
				}
				return nil
			}
		})
		synctest.Wait() // room: a 2, b 1
		c := fh.acquire(t, "the caller whose creation on a was cut")
		is.Equal(c.Host(), "b")
		is.Equal(fh.fakes["a"].Calls(fakedocker.OpCreate), 2) // the warm one and the caller's, cut
		is.NoErr(fh.g.Return(ctx, c))
	})
}
