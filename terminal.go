package dockerpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
)

// TerminalOptions configures a terminal (Container.Terminal).
type TerminalOptions struct {
	// Rows and Cols are the terminal's size in characters. Both are
	// required, from 1 to 65535; Terminal.Resize changes them.
	Rows, Cols int
	// Env adds KEY=value variables to the container's environment. TERM is
	// xterm unless set here or by the image.
	Env []string
	// WorkingDir is the directory the program starts in. Default: the
	// image's working directory.
	WorkingDir string
	// User runs the program as this user (name or uid[:gid]). Default: the
	// container's user.
	User string
}

// Errors of a terminal's methods.
var (
	// ErrTerminalClosed: Write, Read or Resize after Close.
	ErrTerminalClosed = errors.New("dockerpool: terminal closed")
	// ErrTerminalEnded: Write or Resize after the terminal's program
	// ended (it exited, or was killed when ctx ended).
	ErrTerminalEnded = errors.New("dockerpool: the terminal's program has ended")
)

// maxTermSize is the largest row or column count: a terminal's size holds
// 16 bits each.
const maxTermSize = 1<<16 - 1

// termBuffer is how much output of a terminal waits for Read at most.
const termBuffer = 64 << 10

// Terminal is a program running on a pseudo-terminal in a container, as
// with docker exec -it: what it writes to its terminal is read with Read,
// and what is written with Write is typed on it (keystrokes: "\r" is Enter,
// "\x03" Ctrl-C, "\x04" Ctrl-D at the start of a line). It is an
// io.ReadWriteCloser; its methods may be called from several goroutines
// (writes do not interleave).
type Terminal struct {
	op     *operation
	conn   terminalConn
	out    *termOutput
	cancel context.CancelCauseFunc

	wmu    sync.Mutex // one Write at a time
	closed atomic.Bool
	done   chan struct{} // closed when the terminal is over and its operation ended

	// Set before done is closed.
	code    int
	err     error
	vouched bool // nothing the terminal started runs on, as far as the pool can tell
}

// Terminal starts cmd on a pseudo-terminal of opts.Rows by opts.Cols in the
// container, the leader of its own session with the terminal as its
// controlling terminal, and returns once it started. Read the terminal to
// see what the program writes (the terminal's echo of what is typed
// included), Write to type, Resize to change its size (the program gets
// SIGWINCH), Wait for its exit code, Close to end it.
//
// The terminal keeps the promises of ExecStream. It is an operation on the
// container until it is over: ctx bounds its whole life, and when ctx ends
// or Close is called while the program runs, the program and every process
// it started are killed and the kill verified, as after an Exec's timeout
// (the container is tainted when that cannot be done, or other operations
// run on the handle). Return or Remove while it runs removes the container,
// as with a running Exec: the terminal's Read and Wait then fail, and
// everything it ran goes with the container. Output is never held without
// bound: when Read is not called, at most 64 KiB (and, on the agent path, a
// window of the session's flow control, 1 MiB) waits here, and then the
// program waits in its writes to the terminal, alone: other commands on the
// container go on.
//
// The terminal is over when its program exits, as with Docker's exec: what
// it left that still holds the terminal is hung up (SIGHUP), and what it
// left running is left as an Exec's background processes are (see
// KillProcesses, Config.OnReturn). A program that does not exist gives exit
// code 127 (126: not executable), with the reason on the terminal.
//
// On the Docker exec path, Docker Engines before API 1.42 cannot create an
// exec with its size: the size is set right after the program started
// (moby#35407), so a program that reads it in its first milliseconds may
// see 0x0, and then gets SIGWINCH. The agent sets the size before the
// program starts.
func (c *Container) Terminal(ctx context.Context, cmd []string, opts TerminalOptions) (*Terminal, error) {
	if len(cmd) == 0 {
		return nil, ErrEmptyCommand
	}
	if err := checkTermSize(opts.Rows, opts.Cols); err != nil {
		return nil, err
	}
	op, err := c.begin(ctx, fmt.Sprintf("terminal %q", cmd[0]), 0)
	if err != nil {
		return nil, err
	}
	tctx, cancel := context.WithCancelCause(op.ctx)
	s := &termSpec{
		cmd: cmd, env: opts.Env, dir: opts.WorkingDir, user: opts.User,
		rows: uint16(opts.Rows), cols: uint16(opts.Cols), out: newTermOutput(), op: op,
	}
	conn, o := c.runner.terminal(tctx, c, s)
	if conn == nil {
		cancel(nil)
		err := op.finish(o, 0)
		op.end()
		if err == nil {
			err = fmt.Errorf("dockerpool: %s: not started", op.what)
		}
		return nil, err
	}
	t := &Terminal{op: op, conn: conn, out: s.out, cancel: cancel, done: make(chan struct{})}
	go t.run()
	return t, nil
}

// checkTermSize refuses a size no terminal has.
func checkTermSize(rows, cols int) error {
	if rows < 1 || cols < 1 || rows > maxTermSize || cols > maxTermSize {
		return fmt.Errorf("%w: terminal size %d rows by %d columns: each must be 1 to %d", ErrInvalidConfig, rows, cols, maxTermSize)
	}
	return nil
}

// run follows the terminal until it is over, maps its outcome as the exec
// frame does (the taint rule included), and ends the operation.
func (t *Terminal) run() {
	o := t.conn.wait()
	t.cancel(nil)
	err := t.op.finish(o, 0)
	if err != nil {
		t.out.end(err)
		t.code = -1
	} else {
		t.out.end(io.EOF)
		t.code = o.code
	}
	t.err = err
	t.vouched = o.err == nil && o.left == nil && !(t.op.partial && o.cause != nil)
	t.op.end() // before done: once Wait or Close returns, the handle is free
	close(t.done)
}

// Read reads what the program wrote to its terminal. Once the terminal is
// over and everything was read, it returns io.EOF if the program ended by
// itself, else Wait's error (ctx ended, the container was lost); after
// Close, ErrTerminalClosed.
func (t *Terminal) Read(p []byte) (int, error) { return t.out.read(p) }

// Write types p on the terminal. It waits while the program does not read
// what was typed before (a bounded amount waits in the container), and
// fails with ErrTerminalEnded once the program ended, ErrTerminalClosed
// after Close, and ErrContainerReleased after Return or Remove (or
// ErrPoolShutdown once a forced Shutdown removed the container).
func (t *Terminal) Write(p []byte) (int, error) {
	if err := t.refuse("write to"); err != nil {
		return 0, err
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	n, err := t.conn.write(p)
	if err != nil {
		if why := t.refuse("write to"); why != nil {
			return n, why
		}
		return n, fmt.Errorf("%w: write to %s: %v", ErrTerminalEnded, t.op.what, err)
	}
	return n, nil
}

// Resize changes the terminal's size; the program gets SIGWINCH. It fails
// as Write does once the terminal is over, and with ErrInvalidConfig for a
// size out of range.
func (t *Terminal) Resize(ctx context.Context, rows, cols int) error {
	if err := checkTermSize(rows, cols); err != nil {
		return err
	}
	if err := t.refuse("resize"); err != nil {
		return err
	}
	if err := t.conn.resize(ctx, uint16(rows), uint16(cols)); err != nil {
		if why := t.refuse("resize"); why != nil {
			return why
		}
		return fmt.Errorf("dockerpool: resize %s: %w", t.op.what, err)
	}
	return nil
}

// refuse says why the terminal takes nothing more, or nil.
func (t *Terminal) refuse(verb string) error {
	state := t.op.c.state.Load()
	switch {
	case t.closed.Load():
		return fmt.Errorf("%w: %s %s", ErrTerminalClosed, verb, t.op.what)
	case state&handleRevoked != 0:
		return fmt.Errorf("%w: %s %s: the container was removed", ErrPoolShutdown, verb, t.op.what)
	case state&handleReleased != 0:
		return fmt.Errorf("%w: %s %s", ErrContainerReleased, verb, t.op.what)
	}
	select {
	case <-t.done:
		return fmt.Errorf("%w: %s %s", ErrTerminalEnded, verb, t.op.what)
	default:
		return nil
	}
}

// Wait waits until the terminal is over and returns the program's exit code
// (128+n for a program killed by signal n), or -1 and why it did not end by
// itself: ctx's end, Close (ErrTerminalClosed), a lost container. Output
// that nobody reads can make it wait: past what the terminal holds (see
// Terminal), the program waits in its writes and cannot end.
func (t *Terminal) Wait() (int, error) {
	<-t.done
	return t.code, t.err
}

// Close ends the terminal: when its program still runs, it and every
// process it started are killed and the kill verified, and what it wrote
// and was not read is dropped. It returns once that is done; the error is
// nil unless the pool cannot vouch that nothing the terminal started runs
// on (then it is Wait's error, and the container is tainted unless it is
// dead). Close may be called more than once, and from any goroutine.
func (t *Terminal) Close() error {
	t.closed.Store(true)
	t.cancel(ErrTerminalClosed)
	t.out.close()
	<-t.done
	if t.vouched {
		return nil
	}
	return t.err
}

// termSpec is one terminal as the frame hands it to a runner.
type termSpec struct {
	cmd        []string
	env        []string
	dir        string
	user       string
	rows, cols uint16
	out        *termOutput // where the program's output goes: out.writer
	op         *operation
}

// terminalConn is a runner's side of a started terminal.
type terminalConn interface {
	// wait moves the terminal's output until its program ended, or ctx
	// (given to runner.terminal) ended and the kill is done, and says how.
	// It writes the output through s.out's writer from one goroutine.
	wait() outcome
	// write types p on the terminal: it waits while the program does not
	// read, and fails once the terminal is over.
	write(p []byte) (int, error)
	resize(ctx context.Context, rows, cols uint16) error
}

// termOutput is a terminal's output on its way from the runner to Read. It
// holds about termBuffer bytes at most: past that the runner's writes wait,
// and with them its stream from the container, so that a program whose
// output is not read waits in its own writes and nothing piles up here.
type termOutput struct {
	mu      sync.Mutex
	chunks  [][]byte
	size    int
	ended   error         // the output is over: Read returns it after the chunks
	closed  bool          // Close: dropped, Read fails
	changed chan struct{} // closed and replaced at every change
}

func newTermOutput() *termOutput { return &termOutput{changed: make(chan struct{})} }

// notify wakes everyone waiting for a change. Call it with mu held.
func (o *termOutput) notify() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// writer is the runner's side: each Write queues a copy of its bytes,
// waiting while termBuffer bytes are unread, unless stop closes (the
// terminal is being killed: its output is dropped then). It never fails.
func (o *termOutput) writer(stop <-chan struct{}) io.Writer {
	return termWriter{o: o, stop: stop}
}

type termWriter struct {
	o    *termOutput
	stop <-chan struct{}
}

func (w termWriter) Write(b []byte) (int, error) {
	o := w.o
	o.mu.Lock()
	defer o.mu.Unlock()
	for o.size >= termBuffer && !o.closed && o.ended == nil {
		changed := o.changed
		o.mu.Unlock()
		select {
		case <-changed:
		case <-w.stop:
			o.mu.Lock()
			return len(b), nil
		}
		o.mu.Lock()
	}
	if !o.closed && o.ended == nil && len(b) > 0 {
		o.chunks = append(o.chunks, bytes.Clone(b))
		o.size += len(b)
		o.notify()
	}
	return len(b), nil
}

func (o *termOutput) read(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for {
		switch {
		case o.closed:
			return 0, ErrTerminalClosed
		case len(o.chunks) > 0:
			n := copy(p, o.chunks[0])
			if o.chunks[0] = o.chunks[0][n:]; len(o.chunks[0]) == 0 {
				o.chunks[0] = nil
				o.chunks = o.chunks[1:]
			}
			o.size -= n
			o.notify()
			return n, nil
		case o.ended != nil:
			return 0, o.ended
		case len(p) == 0:
			return 0, nil
		}
		changed := o.changed
		o.mu.Unlock()
		<-changed
		o.mu.Lock()
	}
}

// end ends the output: Read returns err once the chunks are read.
func (o *termOutput) end(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended == nil {
		o.ended = err
		o.notify()
	}
}

// close drops the output: Read fails from now on, and the runner's writes
// no longer wait.
func (o *termOutput) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.closed, o.chunks, o.size = true, nil, 0
	o.notify()
}
