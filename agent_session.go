package dockerpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// agentConn is the pool's side of one container's agent session: the
// container's attach stream, on which frames of the agent protocol
// (internal/agentproto) go both ways, or the agent's socket
// (AgentConfig.Socket, agent_socket.go), the attach stream then carrying
// the agent's log and saying when it died. It belongs to the container, not to
// the pool's state: the owner keeps it beside the core (owner.sessions) and
// hands it to the handles, the resets and the removal. Many commands share
// one session; each has its own frame ID.
type agentConn struct {
	container string
	att       types.HijackedResponse
	gone      func() // called once when the session ends by itself (not by close)

	wmu sync.Mutex // one frame at a time on the connection
	// sock is the agent's socket while the session runs there (frames go
	// there, not to the attach stream): set under wmu and mu, so read under
	// either.
	sock net.Conn
	// sockDir is the socket's directory on this machine (AgentConfig.Socket),
	// bind-mounted into the container, and its lock: it stays as long as
	// the container (Docker's archive API mounts it again), and close
	// removes it.
	sockDir socketDir

	mu      sync.Mutex // guards the fields below
	streams map[uint32]*stream
	next    uint32
	err     error // why the session ended

	closing atomic.Bool // close was called: the pool ended the session itself
	hello   chan agentproto.HelloMsg
	done    chan struct{} // closed when the session ended
	readers sync.WaitGroup
}

// attachAgent attaches to the container's main process. Call it before the
// container starts, so that the agent's hello is not missed.
func (p *Pool) attachAgent(ctx context.Context, id string) (*agentConn, error) {
	att, err := p.api.ContainerAttach(ctx, id, container.AttachOptions{Stream: true, Stdin: true, Stdout: true, Stderr: true})
	if err != nil {
		return nil, fmt.Errorf("%w: attach to container %s: %w", ErrAgent, shortID(id), err)
	}
	a := &agentConn{
		container: id,
		att:       att,
		gone:      func() { go p.post(eventMsg{id: id, action: actionAgentGone}) },
		streams:   map[uint32]*stream{},
		hello:     make(chan agentproto.HelloMsg, 1),
		done:      make(chan struct{}),
	}
	pr, pw := io.Pipe()
	a.readers.Add(2)
	go func() { // Docker's stream: stdout is the protocol, stderr the agent's log
		defer a.readers.Done()
		_, err := stdcopy.StdCopy(pw, io.Discard, att.Reader)
		if err == nil {
			err = io.EOF
		}
		pw.CloseWithError(err)
	}()
	go func() {
		defer a.readers.Done()
		// Once the frames stop being read, writes into the pipe must fail,
		// or the goroutine above would block there forever.
		defer pr.Close()
		a.read(pr)
		if !a.closing.Load() {
			a.gone()
		}
	}()
	return a, nil
}

// useSocket moves the session onto the agent's socket: frames go there
// from now on, and come from r (a reader of conn).
func (a *agentConn) useSocket(conn net.Conn, r io.Reader) {
	a.wmu.Lock()
	a.mu.Lock()
	a.sock = conn
	ended := a.err != nil
	a.mu.Unlock()
	a.wmu.Unlock()
	if ended {
		conn.Close()
		return
	}
	a.readers.Add(1)
	go func() {
		defer a.readers.Done()
		a.readSocket(conn, r)
	}()
}

// readSocket reads the session's frames from the agent's socket. When the
// socket ends, the session goes back to the attach stream, as the agent's
// output does: whether the agent died is for the attach stream to say (it
// ends when the daemon has seen the container's main process exit; the
// socket ends when the kernel closes the agent's files, before that).
func (a *agentConn) readSocket(conn net.Conn, r io.Reader) {
	ended, fatal := a.readFrames(r)
	if fatal == nil && !socketEnded(ended) {
		fatal = fmt.Errorf("%w: the socket of container %s: %w", ErrAgent, shortID(a.container), ended)
	}
	if fatal != nil {
		a.fail(fatal) // garbage from the agent: as on the attach stream
		return
	}
	a.wmu.Lock()
	a.leaveSocket()
	a.wmu.Unlock()
}

// socketEnded says whether a read error is the socket's end (closed, reset)
// rather than a broken frame.
func socketEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, syscall.ECONNRESET)
}

// leaveSocket sends the frames to the attach stream again; wmu held.
func (a *agentConn) leaveSocket() {
	a.mu.Lock()
	conn := a.sock
	a.sock = nil
	a.mu.Unlock()
	if conn != nil {
		conn.Close()
	}
}

// dest is where frames go: the agent's socket, or the attach stream; wmu
// held.
func (a *agentConn) dest() io.Writer {
	if a.sock != nil {
		return a.sock
	}
	return a.att.Conn
}

// againOnAttach, after a write that failed with err, says whether to write
// again on the attach stream: the socket broke (the agent died, or closed
// it), the agent reads its stdin too, and whether it died is the attach
// stream's to say. wmu held.
func (a *agentConn) againOnAttach(err error) bool {
	if err == nil || a.sock == nil {
		return false
	}
	a.leaveSocket()
	return true
}

// wrote ends a write: a failed one ends the session. wmu held.
func (a *agentConn) wrote(err error) error {
	if err == nil {
		return nil
	}
	err = fmt.Errorf("%w: write to container %s: %w", ErrAgent, shortID(a.container), err)
	a.fail(err)
	return err
}

// payloads recycles the buffers of output frames: a stream of megabytes
// passes through a few of them instead of one allocation per frame.
var payloads = sync.Pool{New: func() any { b := make([]byte, 0, 64<<10); return &b }}

func payloadBuf(n int) []byte {
	bp := payloads.Get().(*[]byte)
	if cap(*bp) < n {
		payloads.Put(bp)
		return make([]byte, n)
	}
	return (*bp)[:n]
}

func recycle(b []byte) {
	if cap(b) >= 64<<10 {
		b = b[:0]
		payloads.Put(&b)
	}
}

// read dispatches the agent's frames to the streams they belong to. It
// never waits for a stream's reader: a stream holds at most a window of
// data (the agent keeps to it, or the session fails), so one slow caller
// stalls its own command only.
func (a *agentConn) read(r io.Reader) {
	ended, fatal := a.readFrames(r)
	if fatal == nil {
		fatal = fmt.Errorf("%w: session with container %s ended: %w", ErrAgent, shortID(a.container), ended)
	}
	a.fail(fatal)
}

// readFrames dispatches frames until r ends (ended: why) or the agent
// breaks the protocol (fatal).
func (a *agentConn) readFrames(r io.Reader) (ended, fatal error) {
	for {
		f, err := agentproto.ReadWith(r, payloadBuf)
		if err != nil {
			return err, nil
		}
		if f.Type == agentproto.Hello {
			var h agentproto.HelloMsg
			if err := f.Decode(&h); err != nil {
				return nil, fmt.Errorf("%w: bad hello: %w", ErrAgent, err)
			}
			select {
			case a.hello <- h:
			default:
			}
			continue
		}
		a.mu.Lock()
		s := a.streams[f.ID]
		a.mu.Unlock()
		if s == nil {
			recycle(f.Payload) // a stream that gave up; its frames are dropped
			continue
		}
		if err := s.deliver(f); err != nil {
			return nil, fmt.Errorf("%w: container %s: %w", ErrAgent, shortID(a.container), err)
		}
	}
}

// fail ends the session with err; every exec waiting learns of it.
func (a *agentConn) fail(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return
	}
	a.err = err
	close(a.done)
	a.att.Close()
	if a.sock != nil {
		a.sock.Close()
	}
}

// close ends the session and waits for its goroutines. The agent's socket
// directory goes with it: the container is being removed.
func (a *agentConn) close() {
	if a == nil {
		return
	}
	a.closing.Store(true)
	a.fail(fmt.Errorf("%w: session closed", ErrAgent))
	a.readers.Wait()
	a.sockDir.remove()
}

func (a *agentConn) broken() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// handshake waits for the agent's hello and answers it: on the agent's
// socket when sock is set and the agent connected to it (the session moves
// there: onSocket), else on the attach stream.
func (a *agentConn) handshake(timeout time.Duration, sock *agentSocket) (onSocket bool, err error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case h := <-a.hello:
		if h.Version != agentproto.Version {
			return false, fmt.Errorf("%w: container %s runs agent protocol version %d, this pool speaks %d", ErrAgent, shortID(a.container), h.Version, agentproto.Version)
		}
		if h.Socket && sock != nil {
			// It is connected already: the accept and its hello are at hand.
			if conn, r, err := sock.accept(min(timeout, time.Second)); err == nil {
				a.useSocket(conn, r)
				onSocket = true
			}
			// Else the session stays on the attach stream, as it began.
		}
		return onSocket, a.send(agentproto.Hello, 0, agentproto.HelloMsg{Version: agentproto.Version, Agent: "dockerpool"})
	case <-a.done:
		return false, a.broken()
	case <-t.C:
		return false, fmt.Errorf("%w: no hello from the agent of container %s within %v (is the agent at the configured Path?)", ErrAgent, shortID(a.container), timeout)
	}
}

// ping checks that an agent answers, for containers adopted from an earlier
// process (their hello is long gone).
func (a *agentConn) ping(timeout time.Duration) error {
	s := a.register()
	defer a.unregister(s)
	if err := a.write(agentproto.Ping, s.id, nil); err != nil {
		return err
	}
	f, err := s.await(timeout, "ping")
	if err != nil {
		return err
	}
	if f.Type != agentproto.Pong {
		return fmt.Errorf("%w: answered ping with %q", ErrAgent, f.Type)
	}
	return nil
}

// register opens a stream for a new request.
func (a *agentConn) register() *stream {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	s := newStream(a, a.next)
	a.streams[a.next] = s
	return s
}

// unregister closes a stream: its frames are dropped from now on.
func (a *agentConn) unregister(s *stream) {
	a.mu.Lock()
	delete(a.streams, s.id)
	a.mu.Unlock()
	s.close()
}

func (a *agentConn) write(t agentproto.Type, id uint32, payload []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if err := a.broken(); err != nil {
		return err
	}
	err := agentproto.Write(a.dest(), t, id, payload)
	if a.againOnAttach(err) {
		err = agentproto.Write(a.att.Conn, t, id, payload)
	}
	return a.wrote(err)
}

// writeFrames writes frames that agentproto.Append encoded, in one write.
func (a *agentConn) writeFrames(frames []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if err := a.broken(); err != nil {
		return err
	}
	_, err := a.dest().Write(frames)
	if a.againOnAttach(err) {
		_, err = a.att.Conn.Write(frames)
	}
	return a.wrote(err)
}

func (a *agentConn) send(t agentproto.Type, id uint32, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: encode %c: %w", ErrAgent, t, err)
	}
	return a.write(t, id, payload)
}

// reset asks the agent to kill every process the commands left and to
// empty the reset directories.
func (a *agentConn) reset(timeout time.Duration, dirs []string) error {
	d, err := a.resetWith(timeout, agentproto.ResetMsg{EmptyDirs: dirs})
	if err != nil {
		return err
	}
	if d.Error != "" || d.Survivors > 0 {
		return fmt.Errorf("%w: reset: %d survivor(s) %s", ErrAgent, d.Survivors, d.Error)
	}
	return nil
}

// resetVerified asks for the verified reset, and returns what it left.
func (a *agentConn) resetVerified(timeout time.Duration, dirs []string) ([]string, error) {
	d, err := a.resetWith(timeout, agentproto.ResetMsg{EmptyDirs: dirs, Verify: true})
	if err != nil {
		return nil, err
	}
	left := d.Left
	if d.Survivors > 0 {
		left = append(left, fmt.Sprintf("%d process(es) survived the kill", d.Survivors))
	}
	if d.Error != "" {
		left = append(left, d.Error)
	}
	return left, nil
}

func (a *agentConn) resetWith(timeout time.Duration, m agentproto.ResetMsg) (agentproto.ResetDoneMsg, error) {
	var d agentproto.ResetDoneMsg
	s := a.register()
	defer a.unregister(s)
	if err := a.send(agentproto.Reset, s.id, m); err != nil {
		return d, err
	}
	f, err := s.await(timeout, "reset")
	if err != nil {
		return d, err
	}
	if f.Type != agentproto.ResetDone || f.Decode(&d) != nil {
		return d, fmt.Errorf("%w: bad answer to reset", ErrAgent)
	}
	return d, nil
}
