package dockerpool_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/client"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// A fault-injecting proxy for the Docker socket: it listens on a unix socket
// of its own and forwards every connection to the real daemon, byte for byte
// in both directions, so hijacked exec streams and the event stream pass
// through. Its mode can be switched at any time, from any goroutine, to make
// the daemon look stalled, gone or flaky to a client that talks to the proxy,
// while the tests keep their own client on the real socket.

type faultMode int32

const (
	// faultPass forwards everything.
	faultPass faultMode = iota
	// faultStall accepts new connections but forwards nothing and answers
	// nothing, on new and open connections alike: a daemon that hangs.
	faultStall
	// faultRefuse closes new connections at once: a daemon that went away.
	faultRefuse
)

func (m faultMode) String() string {
	return [...]string{"pass", "stall", "refuse"}[m]
}

type faultProxy struct {
	t      testing.TB
	sock   string // where the proxy listens
	target string // the real daemon's socket

	mu      sync.Mutex
	mode    faultMode
	changed chan struct{}     // closed and replaced at every mode change
	ln      *net.UnixListener // nil while the proxy is down
	conns   map[*proxyConn]struct{}
	closed  bool
	wg      sync.WaitGroup // accept loops and pumps

	accepted atomic.Int64 // connections accepted, refused ones included
	refused  atomic.Int64 // connections closed at once by faultRefuse
	cut      atomic.Int64 // connections closed by Cut, Refuse or Down

	reqMu    sync.Mutex
	requests []string // request lines seen going to the daemon, in order
}

// proxyConn is one client connection and its twin to the daemon.
type proxyConn struct {
	client, daemon net.Conn
	once           sync.Once
	done           chan struct{} // closed when both sides are closed
	halfClosed     atomic.Int32  // directions that ended with EOF
}

// daemonSocket is the path of the real daemon's unix socket.
func daemonSocket(t testing.TB) string {
	if h := os.Getenv("DOCKER_HOST"); h != "" {
		if path, ok := strings.CutPrefix(h, "unix://"); ok {
			return path
		}
		if os.Getenv("CI") != "" { // no skipped integration test under CI
			t.Fatalf("fault proxy: DOCKER_HOST=%s is not a unix socket (CI is set: this is a failure, not a skip)", h)
		}
		t.Skipf("fault proxy: DOCKER_HOST=%s is not a unix socket", h)
	}
	return "/var/run/docker.sock"
}

// newFaultProxy starts a proxy in pass mode. It is closed at cleanup, with
// every connection it holds.
func newFaultProxy(t testing.TB) *faultProxy {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // sun_path holds 108 bytes
		var err error
		if dir, err = os.MkdirTemp("", "fp"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
	}
	p := &faultProxy{
		t:       t,
		sock:    filepath.Join(dir, "docker.sock"),
		target:  daemonSocket(t),
		changed: make(chan struct{}),
		conns:   map[*proxyConn]struct{}{},
	}
	p.mu.Lock()
	err := p.listenLocked()
	p.mu.Unlock()
	if err != nil {
		t.Fatalf("fault proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

// Client returns a new Docker client that talks to the daemon through the
// proxy; it is closed at cleanup.
func (p *faultProxy) Client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost("unix://"+p.sock), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("fault proxy client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func (p *faultProxy) listenLocked() error {
	_ = os.Remove(p.sock) // left by Down
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: p.sock, Net: "unix"})
	if err != nil {
		return err
	}
	// Down leaves the socket file behind, as a daemon that died does:
	// clients then get "connection refused", not "no such file".
	ln.SetUnlinkOnClose(false)
	p.ln = ln
	p.wg.Add(1)
	go p.serve(ln)
	return nil
}

// Mode returns the current mode.
func (p *faultProxy) Mode() faultMode {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode
}

func (p *faultProxy) setModeLocked(m faultMode) {
	if p.mode != m {
		p.mode = m
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// Pass forwards everything again; held bytes of stalled connections flow
// on. A proxy that is down listens again.
func (p *faultProxy) Pass() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	p.setModeLocked(faultPass)
	if p.ln == nil {
		if err := p.listenLocked(); err != nil {
			p.t.Errorf("fault proxy: listen again: %v", err)
		}
	}
}

// Stall stops all forwarding: new connections are accepted and hang, open
// ones stop moving bytes, in both directions, until Pass or Cut.
func (p *faultProxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setModeLocked(faultStall)
}

// Refuse makes the daemon look gone: the open connections are closed, and
// every new one is closed as soon as it is accepted (the client sees EOF or
// a reset).
func (p *faultProxy) Refuse() {
	p.mu.Lock()
	p.setModeLocked(faultRefuse)
	p.mu.Unlock()
	p.closeAll()
}

// Down is Refuse with the listener closed too: connecting fails with
// "connection refused" until Pass listens again.
func (p *faultProxy) Down() {
	p.mu.Lock()
	p.setModeLocked(faultRefuse)
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.closeAll()
}

// Cut closes every open connection now, then passes again. What a stalled
// connection held is dropped with it, never sent late.
func (p *faultProxy) Cut() {
	p.closeAll()
	p.mu.Lock()
	if !p.closed {
		p.setModeLocked(faultPass)
	}
	p.mu.Unlock()
}

// Open returns the number of connections being forwarded.
func (p *faultProxy) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops the proxy: the listener and every connection are closed, and
// its goroutines have ended when it returns. It is idempotent.
func (p *faultProxy) Close() {
	p.mu.Lock()
	p.closed = true
	if p.ln != nil {
		_ = p.ln.Close()
		p.ln = nil
	}
	p.mu.Unlock()
	p.closeAll()
	p.wg.Wait()
	_ = os.Remove(p.sock)
}

func (p *faultProxy) closeAll() {
	p.mu.Lock()
	all := make([]*proxyConn, 0, len(p.conns))
	for pc := range p.conns {
		all = append(all, pc)
	}
	p.mu.Unlock()
	for _, pc := range all {
		if p.drop(pc) {
			p.cut.Add(1)
		}
	}
}

// drop closes both sides of a connection once; it reports whether this call
// closed it.
func (p *faultProxy) drop(pc *proxyConn) bool {
	first := false
	pc.once.Do(func() {
		first = true
		_ = pc.client.Close()
		_ = pc.daemon.Close()
		close(pc.done)
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	})
	return first
}

func (p *faultProxy) serve(ln *net.UnixListener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return // closed by Down or Close
		}
		p.accepted.Add(1)
		p.mu.Lock()
		refuse := p.closed || p.mode == faultRefuse
		p.mu.Unlock()
		if refuse {
			p.refused.Add(1)
			_ = c.Close()
			continue
		}
		d, err := net.Dial("unix", p.target)
		if err != nil {
			p.t.Logf("fault proxy: dial the daemon: %v", err)
			_ = c.Close()
			continue
		}
		pc := &proxyConn{client: c, daemon: d, done: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			_ = d.Close()
			continue
		}
		p.conns[pc] = struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pump(pc, c, d, true)
		go p.pump(pc, d, c, false)
	}
}

// gate blocks unless the proxy passes: while it stalls, and while Refuse or
// Down are closing the connections (so that bytes a stall held are not
// released by the switch to refuse). It returns false when the connection
// was closed meanwhile.
func (p *faultProxy) gate(pc *proxyConn) bool {
	for {
		p.mu.Lock()
		passing, changed := p.mode == faultPass, p.changed
		p.mu.Unlock()
		if passing {
			return true
		}
		select {
		case <-changed:
		case <-pc.done:
			return false
		}
	}
}

// note records the request line a chunk going to the daemon starts with,
// if it starts with one. Requests are small and written in one piece by the
// Docker client; the proxy only looks, it changes nothing.
func (p *faultProxy) note(b []byte) {
	i := bytes.IndexByte(b, ' ')
	if i < 3 || i > 7 || !bytes.Contains(b[:min(len(b), 512)], []byte(" HTTP/1.")) {
		return
	}
	for _, c := range b[:i] {
		if c < 'A' || c > 'Z' {
			return
		}
	}
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	p.reqMu.Lock()
	p.requests = append(p.requests, string(line))
	p.reqMu.Unlock()
}

// Requests counts the requests seen so far whose line contains s, such as
// "/events?" or "POST /containers/create".
func (p *faultProxy) Requests(s string) int {
	p.reqMu.Lock()
	defer p.reqMu.Unlock()
	n := 0
	for _, r := range p.requests {
		if strings.Contains(r, s) {
			n++
		}
	}
	return n
}

// pump copies src to dst. Bytes read while the proxy stalls are held (not
// dropped) until it passes again, so a stream resumes intact. An EOF is
// passed on as a half close, as the hijacked exec streams need; any other
// end closes both sides.
func (p *faultProxy) pump(pc *proxyConn, src, dst net.Conn, toDaemon bool) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate(pc) {
				return
			}
			if toDaemon {
				p.note(buf[:n])
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				p.drop(pc)
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) && p.gate(pc) {
				if cw, ok := dst.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
				if pc.halfClosed.Add(1) == 2 {
					p.drop(pc)
				}
				return
			}
			p.drop(pc)
			return
		}
	}
}

// ---- the proxy's own tests ---------------------------------------------------

func TestFaultProxyPassesRefusesStallsAndCutsOnDemand(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	dockerpooltest.Client(t) // a daemon that answers: skip without one, or fail under CI
	daemonSocket(t)
	fp := newFaultProxy(t)
	cli := fp.Client(t)
	ping := func(d time.Duration) (time.Duration, error) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		start := time.Now()
		_, err := cli.Ping(ctx)
		return time.Since(start), err
	}

	took, err := ping(5 * time.Second)
	is.NoErr(err) // pass: the real daemon answers
	t.Logf("pass: ping in %v", took)

	fp.Refuse()
	took, err = ping(5 * time.Second)
	t.Logf("refuse: %v after %v", err, took)
	is.True(err != nil)
	is.True(!errors.Is(err, context.DeadlineExceeded)) // failed, not timed out
	is.True(took < time.Second)
	is.True(fp.refused.Load() >= 1)

	fp.Pass()
	_, err = ping(5 * time.Second)
	is.NoErr(err)

	fp.Stall()
	took, err = ping(500 * time.Millisecond)
	t.Logf("stall: %v after %v", err, took)
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.True(took >= 500*time.Millisecond)

	fp.Pass()
	_, err = ping(5 * time.Second)
	is.NoErr(err)

	fp.Down()
	took, err = ping(5 * time.Second)
	t.Logf("down: %v after %v", err, took)
	is.True(err != nil)
	is.True(strings.Contains(err.Error(), "connection refused") || client.IsErrConnectionFailed(err))
	is.True(took < time.Second)

	fp.Pass() // listens again
	_, err = ping(5 * time.Second)
	is.NoErr(err)
	is.True(fp.Open() >= 1) // the client keeps its connection alive
	fp.Cut()
	is.Equal(fp.Open(), 0)
	_, err = ping(5 * time.Second) // a new connection
	is.NoErr(err)
}

func TestFaultProxyCarriesTheEventStreamAndCutsIt(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	dockerpooltest.Client(t) // a daemon that answers: skip without one, or fail under CI
	daemonSocket(t)
	fp := newFaultProxy(t)
	cli := fp.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, errs := cli.Events(ctx, eventsOptionsForNothing())
	eventuallyWithin(t, 5*time.Second, "the subscription reaches the daemon", func() bool { return fp.Requests("/events?") == 1 })
	select {
	case err := <-errs:
		t.Fatalf("stream ended early: %v", err)
	default:
	}
	start := time.Now()
	fp.Cut()
	select {
	case err := <-errs:
		t.Logf("stream ended %v after the cut: %v", time.Since(start), err)
		is.True(err != nil)
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream survived a cut")
	}
}

// eventsOptionsForNothing subscribes to the events of a label nobody uses.
func eventsOptionsForNothing() events.ListOptions {
	return events.ListOptions{Filters: filters.NewArgs(filters.Arg("label", "dockerpool.faultproxy=nothing"))}
}

// eventuallyWithin polls cond on a short ticker until it holds, for figures
// the pool or the proxy update in the background without announcing it.
func eventuallyWithin(t testing.TB, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		<-tick.C
	}
	return time.Since(start)
}
