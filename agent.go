package dockerpool

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sync"
	"time"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// AgentConfig turns on the agent path: dockerpool-agent (cmd/dockerpool-agent,
// a static program of the standard library alone) runs as each container's
// main process, and Exec sends it the command over the container's attach
// stream instead of creating a Docker exec. A command then costs about a
// millisecond instead of tens: the daemon and runc are out of the way. It
// needs no network (it works with NetworkMode "none" and a remote daemon).
//
// Exec, ExecStd and ExecStream keep every promise of the Docker exec path. In
// addition the agent knows every process its commands start (it is their
// subreaper), so a timeout kills exactly the command's processes, even in an
// image without a shell and while other commands run; and Return can reset
// the container (see ResetOnReturn).
//
// Getting the agent into the container: either the image has it at Path
// (Dockerfile: COPY dockerpool-agent /dockerpool-agent), or set Binary and
// the pool copies it into each container before starting it.
type AgentConfig struct {
	// Path of the agent in the container. Default "/dockerpool-agent".
	Path string
	// Binary, when set, is the path on this machine of a static agent
	// (CGO_ENABLED=0 go build github.com/dockerpool/dockerpool/cmd/dockerpool-agent).
	// New reads it, and the pool copies it to Path in every container before
	// starting it.
	Binary string
	// HandshakeTimeout bounds the wait for the agent's hello when a container
	// starts. Default 10s.
	HandshakeTimeout time.Duration
	// ResetOnReturn makes every Return reset the container in the
	// background before reuse: the agent kills every process the commands
	// left and verifies it, and empties ResetDirs.
	ResetOnReturn bool
	// ResetDirs are emptied by a reset (for example "/tmp").
	ResetDirs []string
}

// DefaultAgentPath is where the agent is in the container by default.
const DefaultAgentPath = "/dockerpool-agent"

// ErrAgent is wrapped by errors of the agent path: an agent that does not
// answer, speaks another protocol version or garbage, or whose connection
// broke. The container is then tainted (Return removes it).
var ErrAgent = errors.New("dockerpool: agent")

const (
	agentKillGrace = 3 * time.Second // after a Kill, how long the agent has to answer
	agentChunk     = 32 << 10        // stdin is sent in frames of at most this size
)

// agentConn is the pool's side of one container's agent session. It belongs
// to the container, not to the pool's state: the owner only carries the
// pointer from the creation to the handles and to the removal.
type agentConn struct {
	container string
	att       types.HijackedResponse

	wmu sync.Mutex // one frame at a time on the connection

	mu    sync.Mutex // guards the fields below
	execs map[uint32]chan agentproto.Frame
	next  uint32
	err   error // why the session ended

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
		execs:     map[uint32]chan agentproto.Frame{},
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
	}()
	return a, nil
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

// read dispatches the agent's frames to the execs waiting for them.
func (a *agentConn) read(r io.Reader) {
	for {
		f, err := agentproto.ReadWith(r, payloadBuf)
		if err != nil {
			a.fail(fmt.Errorf("%w: session with container %s ended: %w", ErrAgent, shortID(a.container), err))
			return
		}
		if f.Type == agentproto.Hello {
			var h agentproto.HelloMsg
			if err := f.Decode(&h); err != nil {
				a.fail(fmt.Errorf("%w: bad hello: %w", ErrAgent, err))
				return
			}
			select {
			case a.hello <- h:
			default:
			}
			continue
		}
		a.mu.Lock()
		ch := a.execs[f.ID]
		a.mu.Unlock()
		if ch == nil {
			continue // an exec that gave up; its frames are dropped
		}
		select {
		case ch <- f:
		case <-a.done:
			return
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
}

// close ends the session and waits for its goroutines.
func (a *agentConn) close() {
	if a == nil {
		return
	}
	a.fail(fmt.Errorf("%w: session closed", ErrAgent))
	a.readers.Wait()
}

func (a *agentConn) broken() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.err
}

// handshake waits for the agent's hello and answers it.
func (a *agentConn) handshake(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case h := <-a.hello:
		if h.Version != agentproto.Version {
			return fmt.Errorf("%w: container %s runs agent protocol version %d, this pool speaks %d", ErrAgent, shortID(a.container), h.Version, agentproto.Version)
		}
		return a.send(agentproto.Hello, 0, agentproto.HelloMsg{Version: agentproto.Version, Agent: "dockerpool"})
	case <-a.done:
		return a.broken()
	case <-t.C:
		return fmt.Errorf("%w: no hello from the agent of container %s within %v (is the agent at the configured Path?)", ErrAgent, shortID(a.container), timeout)
	}
}

// ping checks that an agent answers, for containers adopted from an earlier
// process (their hello is long gone).
func (a *agentConn) ping(timeout time.Duration) error {
	id, ch := a.register()
	defer a.unregister(id)
	if err := a.write(agentproto.Ping, id, nil); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-ch:
		if f.Type != agentproto.Pong {
			return fmt.Errorf("%w: answered ping with %q", ErrAgent, f.Type)
		}
		return nil
	case <-a.done:
		return a.broken()
	case <-t.C:
		return fmt.Errorf("%w: no answer to ping within %v", ErrAgent, timeout)
	}
}

func (a *agentConn) register() (uint32, chan agentproto.Frame) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.next++
	ch := make(chan agentproto.Frame, 64)
	a.execs[a.next] = ch
	return a.next, ch
}

func (a *agentConn) unregister(id uint32) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.execs, id)
}

func (a *agentConn) write(t agentproto.Type, id uint32, payload []byte) error {
	a.wmu.Lock()
	defer a.wmu.Unlock()
	if err := a.broken(); err != nil {
		return err
	}
	if err := agentproto.Write(a.att.Conn, t, id, payload); err != nil {
		err = fmt.Errorf("%w: write to container %s: %w", ErrAgent, shortID(a.container), err)
		a.fail(err)
		return err
	}
	return nil
}

func (a *agentConn) send(t agentproto.Type, id uint32, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("%w: encode %c: %w", ErrAgent, t, err)
	}
	return a.write(t, id, payload)
}

// agentExec runs a command through the agent. It keeps the promises of
// ExecStream: the agent kills and verifies on timeout, limit and cancel; a
// command it cannot vouch for taints the handle.
func (c *Container) agentExec(ctx context.Context, cmd []string, stdout, stderr io.Writer, opts ExecOptions) (int, error) {
	a := c.agent
	what := fmt.Sprintf("exec %q in container %s (agent)", cmd[0], shortID(c.id))
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, opts.Timeout, ErrExecTimeout)
		defer cancel()
	}
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("dockerpool: %s: %w", what, context.Cause(ctx))
	}
	if c.needMark && c.state.Load()&handleMarked == 0 {
		if err := c.markUsed(); err != nil {
			return -1, c.execFailed(what, err)
		}
	}
	if err := a.broken(); err != nil {
		return -1, c.agentBroken(what, err)
	}
	id, frames := a.register()
	defer a.unregister(id)
	err := a.send(agentproto.Exec, id, agentproto.ExecMsg{
		Argv:      cmd,
		Env:       opts.Env,
		Dir:       opts.WorkingDir,
		User:      opts.User,
		TimeoutMS: opts.Timeout.Milliseconds(),
		Limit:     int64(opts.Limit),
		Stdin:     opts.Stdin != nil,
	})
	if err != nil {
		return -1, c.agentBroken(what, err)
	}

	stdinErr := make(chan error, 1)
	if opts.Stdin != nil {
		go func() { stdinErr <- c.agentStdin(a, id, opts.Stdin) }()
	}

	lim := &limiter{on: opts.Limit > 0, left: opts.Limit}
	outw := &limitedWriter{l: lim, w: stdout}
	errw := &limitedWriter{l: lim, w: stderr}
	var (
		killed   bool
		killedAt time.Time
		cause    error // why we asked for the kill
		writeErr error
	)
	kill := func(why error) {
		if killed {
			return
		}
		killed, killedAt, cause = true, time.Now(), why
		if c.state.Load()&execMask > 1 {
			// Other commands run on this handle: the agent kills what it
			// can attribute to this one, which cannot be proven complete
			// (an orphan that left its group and cleared its environment
			// within one scan). Same rule as the Docker exec path.
			c.state.Or(handleTainted)
		}
		_ = a.write(agentproto.Kill, id, nil)
	}
	grace := time.NewTimer(time.Hour)
	grace.Stop()
	defer grace.Stop()
	for {
		var ctxDone <-chan struct{}
		if !killed {
			ctxDone = ctx.Done()
		}
		select {
		case f := <-frames:
			switch f.Type {
			case agentproto.Stdout, agentproto.Stderr:
				w := outw
				if f.Type == agentproto.Stderr {
					w = errw
				}
				_, err := w.Write(f.Payload)
				recycle(f.Payload)
				if err != nil && !killed {
					if !lim.hit {
						writeErr = err
					}
					kill(err)
					grace.Reset(agentKillGrace)
				}
			case agentproto.Exit:
				var x agentproto.ExitMsg
				if err := f.Decode(&x); err != nil {
					c.state.Or(handleTainted)
					return -1, fmt.Errorf("dockerpool: %s: %w: %w", what, ErrAgent, err)
				}
				return c.agentResult(ctx, what, x, cause, lim, writeErr, killedAt, opts)
			}
		case err := <-stdinErr:
			if err != nil {
				kill(fmt.Errorf("%w: %w", errStdinFailed, err))
				grace.Reset(agentKillGrace)
			}
		case <-ctxDone:
			kill(context.Cause(ctx))
			grace.Reset(agentKillGrace)
		case <-grace.C:
			c.state.Or(handleTainted)
			return -1, fmt.Errorf("dockerpool: %s: %w: no answer %v after the kill (container tainted, it will be removed on Return)", what, ErrAgent, agentKillGrace)
		case <-a.done:
			return -1, c.agentBroken(what, a.broken())
		}
	}
}

// agentBroken reports a session that ended: the container died (the agent is
// its main process), or the agent failed. Either way the container is not
// reused.
func (c *Container) agentBroken(what string, err error) error {
	c.state.Or(handleTainted)
	if cerr := c.pool.checkContainer(c.id); errors.Is(cerr, ErrContainerDead) {
		c.state.Or(handleDead)
		return fmt.Errorf("dockerpool: %s: %w: %w", what, ErrContainerDead, err)
	}
	return fmt.Errorf("dockerpool: %s: %w (container tainted, it will be removed on Return)", what, err)
}

// agentResult turns the agent's Exit into ExecStream's result.
func (c *Container) agentResult(ctx context.Context, what string, x agentproto.ExitMsg, cause error, lim *limiter, writeErr error, killedAt time.Time, opts ExecOptions) (int, error) {
	var err error
	switch {
	case x.Error != "":
		err = fmt.Errorf("dockerpool: %s: %w: %s", what, ErrAgent, x.Error)
	case x.Limited || lim.hit:
		err = fmt.Errorf("%w: %s wrote more than %d bytes", ErrOutputLimitExceeded, what, opts.Limit)
	case x.TimedOut || errors.Is(cause, ErrExecTimeout):
		err = fmt.Errorf("%w: %s after %v", ErrExecTimeout, what, opts.Timeout)
	case writeErr != nil:
		err = fmt.Errorf("dockerpool: %s: write output: %w", what, writeErr)
	case cause != nil:
		err = fmt.Errorf("dockerpool: %s: %w", what, cause)
	case x.Killed:
		err = fmt.Errorf("dockerpool: %s: killed: %w", what, context.Cause(ctx))
	}
	if x.Survivors > 0 {
		c.state.Or(handleTainted)
		err = fmt.Errorf("%w (container tainted, it will be removed on Return: %d process(es) survived the kill)", err, x.Survivors)
	}
	if err != nil {
		return -1, err
	}
	return x.Code, nil
}

// agentStdin copies the caller's reader to the agent in Stdin frames, then
// closes the command's stdin.
func (c *Container) agentStdin(a *agentConn, id uint32, r io.Reader) error {
	buf := make([]byte, agentChunk)
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if werr := a.write(agentproto.Stdin, id, buf[:n]); werr != nil {
				return nil // the session broke: the exec learns it from done
			}
		}
		if err == io.EOF {
			_ = a.write(agentproto.StdinEOF, id, nil)
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// agentReset asks the agent to kill every process the commands left and to
// empty the reset directories.
func (a *agentConn) reset(timeout time.Duration, dirs []string) error {
	id, ch := a.register()
	defer a.unregister(id)
	if err := a.send(agentproto.Reset, id, agentproto.ResetMsg{EmptyDirs: dirs}); err != nil {
		return err
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case f := <-ch:
		var d agentproto.ResetDoneMsg
		if f.Type != agentproto.ResetDone || f.Decode(&d) != nil {
			return fmt.Errorf("%w: bad answer to reset", ErrAgent)
		}
		if d.Error != "" || d.Survivors > 0 {
			return fmt.Errorf("%w: reset: %d survivor(s) %s", ErrAgent, d.Survivors, d.Error)
		}
		return nil
	case <-a.done:
		return a.broken()
	case <-t.C:
		return fmt.Errorf("%w: no answer to reset within %v", ErrAgent, timeout)
	}
}

// agentTar is the tar archive CopyToContainer needs to put the agent binary
// at path.
func agentTar(binaryPath, inContainer string) ([]byte, error) {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, fmt.Errorf("%w: read agent binary: %w", ErrInvalidConfig, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: path.Base(inContainer), Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
