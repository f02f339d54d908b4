package dockerpool

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"syscall"
	"time"
)

// runner is how commands reach a container: Docker exec (runner_docker.go)
// or the container's agent (runner_agent.go). The exec frame (exec.go) owns
// everything that is the same on every path: validation, the timeout, the
// used mark, the output limit, error mapping and the taint rule. A runner
// only starts the command, moves its bytes, and reports how it ended.
type runner interface {
	// exec runs s.cmd until it ends or ctx ends. It writes the output to
	// s.stdout and s.stderr from one goroutine at a time (the limiter is not
	// safe for concurrent use), calls s.op.ready before anything can run in
	// the container, and, when the command must be killed, asks s.op.killAll
	// whether it may kill everything or only what it can attribute to
	// this command.
	exec(ctx context.Context, c *Container, s *execSpec) outcome
	// killAll kills every process in the container but its main one, and
	// verifies that none is left.
	killAll(ctx context.Context, c *Container) error
	// put writes into the container what t says (a file, or a tar unpacked
	// into a directory), get reads from it. They call t.op.ready first. A
	// transfer cut midway reports left unless the runner knows every file
	// to be whole or absent.
	put(ctx context.Context, c *Container, t *transferSpec) outcome
	get(ctx context.Context, c *Container, t *transferSpec) outcome
	// reset makes the container as good as new for Config.VerifiedReset:
	// every process but the main one killed, every writable place and the
	// System V IPC emptied, and all of it checked; unverifiedError says what
	// is left.
	reset(ctx context.Context, c *Container, op *operation) error
	// terminal starts s.cmd on a pseudo-terminal of s.rows by s.cols
	// (terminal.go) and returns its connection, or, when it could not start
	// it, nil and why. ctx bounds the terminal's whole life: when it ends
	// (the caller's ctx, or Close), the program is killed as an exec's is,
	// and conn.wait reports it. It calls s.op.ready before anything can run.
	terminal(ctx context.Context, c *Container, s *termSpec) (terminalConn, outcome)
	// name says which path it is, for error messages ("" for Docker exec).
	name() string
	// enforcesLimits reports whether the runner applies execSpec's limits
	// to every process of a command, and measures their usage.
	enforcesLimits() bool
}

// execSpec is one command as the frame hands it to a runner.
type execSpec struct {
	cmd    []string
	env    []string
	dir    string
	user   string
	stdin  io.Reader // nil: no input
	stdout io.Writer // limited: past ExecOptions.Limit a write fails with ErrOutputLimitExceeded
	stderr io.Writer
	// The bounds, for a runner that can also enforce them on its side of the
	// connection (the agent): the frame's ctx carries the timeout already.
	timeout time.Duration
	limit   int
	op      *operation
	// Limits of the command's processes (only for a runner that
	// enforcesLimits).
	cpuTime      time.Duration
	maxFileSize  int64
	maxOpenFiles int
}

// outcome is how a command ended, as its runner saw it.
type outcome struct {
	code int // the exit code, when the command ended by itself
	// err: the command could not be run, or the runner lost track of it, so
	// there is no exit code. suspect says that the container itself may be
	// gone, for the frame to find out.
	err     error
	suspect bool
	// cause: the command did not end by itself but was killed, and why: a
	// write to stdout or stderr failed (ErrOutputLimitExceeded, or the
	// caller's writer), ctx ended (its cause: ErrExecTimeout or the
	// caller's), stdin failed (errStdinFailed), the stream broke
	// (errStream).
	cause error
	// left: what the command may have left running could not be verified
	// gone. The container is tainted.
	left error
	// How it ended and what it used, as far as the runner can tell.
	signal   syscall.Signal
	usage    Usage
	limitCPU time.Duration // the CPUTime it was killed at, for the error
	oom      bool          // the runner saw the OOM killer kill a process of it
}

// Causes of a command ending early, besides the limit and ctx.
var (
	errStdinFailed = errors.New("stdin failed")
	errStream      = errors.New("output stream broke")
	errPartialKill = errors.New("other commands were running: the kill covers only the processes it could attribute to this one")
)

// feeder copies the caller's Stdin to a command on a goroutine of its own,
// chunk by chunk through send, then calls eof. The runner stops it when the
// command is over; stop waits for the goroutine to end, unless it is blocked
// in the caller's Read, which nothing can interrupt: then it ends when that
// Read returns, and writes nothing more (as os/exec does for a Stdin that is
// not a file).
type feeder struct {
	stopped chan struct{}
	done    chan struct{}
	inRead  atomic.Bool
	err     error // the caller's reader failed (not io.EOF); read after done
}

// feed starts a feeder. failed, when the caller's reader fails, is called on
// the feeder's goroutine with the error.
func feed(r io.Reader, chunk int, send func([]byte) error, eof func() error, failed func(error)) *feeder {
	f := &feeder{stopped: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(f.done)
		buf := make([]byte, chunk)
		for {
			f.inRead.Store(true)
			n, err := r.Read(buf)
			f.inRead.Store(false)
			select {
			case <-f.stopped:
				return
			default:
			}
			if n > 0 && send(buf[:n]) != nil {
				return // the command's input is closed: it is over, or did not want more
			}
			switch {
			case err == io.EOF:
				_ = eof()
				return
			case err != nil:
				f.err = err
				failed(err)
				return
			}
		}
	}()
	return f
}

// stop ends the feeder; see feeder. The runner first closes what send
// writes to, so that a send in progress returns.
func (f *feeder) stop() {
	if f == nil {
		return
	}
	close(f.stopped)
	if !f.inRead.Load() {
		<-f.done
	}
}
