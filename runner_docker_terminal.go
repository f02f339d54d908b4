package dockerpool

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
)

// Terminals on the Docker exec path: an exec with a TTY. The daemon
// allocates the pseudo-terminal; what the program writes comes raw on the
// attach stream (no stdcopy framing: a terminal has one output), keystrokes
// go up the same connection, and the size is set with the exec resize
// endpoint. The stream ends when the program exits. A terminal that must
// end early is killed by reap.sh, as a command is.

// dockerTerm is one terminal on the Docker exec path, once started.
type dockerTerm struct {
	c      *Container
	s      *termSpec
	ctx    context.Context
	att    types.HijackedResponse
	execID string
	token  string
}

func (r dockerRunner) terminal(ctx context.Context, c *Container, s *termSpec) (terminalConn, outcome) {
	api := c.pool.api
	token := newToken()
	size := &[2]uint{uint(s.rows), uint(s.cols)} // honoured from API 1.42 on
	created, err := api.ContainerExecCreate(ctx, c.id, container.ExecOptions{
		Cmd:          s.cmd,
		Env:          append(append([]string(nil), s.env...), execIDEnv+"="+token),
		WorkingDir:   s.dir,
		User:         s.user,
		Tty:          true,
		ConsoleSize:  size,
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil, outcome{cause: context.Cause(ctx)}
		}
		return nil, outcome{err: err, suspect: gone(err)}
	}
	if err := s.op.ready(); err != nil {
		return nil, outcome{err: err, suspect: gone(err)}
	}
	t := &dockerTerm{c: c, s: s, ctx: ctx, execID: created.ID, token: token}
	t.att, err = api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{Tty: true, ConsoleSize: size})
	if err != nil {
		// The start may have happened before the call failed.
		o := outcome{err: err, suspect: gone(err)}
		if ctx.Err() != nil {
			o = outcome{cause: context.Cause(ctx)}
		}
		o.left = t.leftovers()
		return nil, o
	}
	if err := t.initialSize(); err != nil {
		t.att.Close()
		return nil, outcome{err: err, left: t.leftovers()}
	}
	return t, outcome{}
}

// initialSize sets the terminal's size once the program started: Docker
// Engines before API 1.42 ignore ConsoleSize, and the exec starts at 0x0
// (moby#35407). The daemon waits for the start. A program that could not
// start has no terminal to size: its message and exit code follow on the
// stream.
func (t *dockerTerm) initialSize() error {
	err := t.resize(t.ctx, t.s.rows, t.s.cols)
	if err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(t.ctx, inspectBudget)
	defer cancel()
	if poll(ctx, func() (bool, error) {
		info, err := t.c.pool.api.ContainerExecInspect(ctx, t.execID)
		return err == nil && !info.Running, err
	}, "still running") == nil {
		return nil // over already: nothing to size
	}
	return fmt.Errorf("set the terminal's size: %w", err)
}

func (t *dockerTerm) wait() outcome {
	// Reads on a hijacked connection ignore ctx: closing it is what
	// unblocks them.
	stop := context.AfterFunc(t.ctx, func() { t.att.Close() })
	defer stop()
	head := &ociHead{w: t.s.out.writer(t.ctx.Done())}
	_, copyErr := io.Copy(head, t.att.Reader)
	t.att.Close()
	var o outcome
	switch {
	case copyErr == nil: // the stream ended with the program, unless Docker says otherwise
		code, err := exitCode(t.ctx, t.c.pool.api, t.execID)
		if err == nil {
			o.code = head.code(code)
			return o
		}
		o.cause = err
		if t.ctx.Err() != nil {
			o.cause = context.Cause(t.ctx)
		}
	case t.ctx.Err() != nil:
		o.cause = context.Cause(t.ctx) // Close, or the caller's ctx
	default:
		o.cause = fmt.Errorf("%w: %w", errStream, copyErr)
	}
	o.left = t.leftovers()
	return o
}

// leftovers kills what the terminal left and verifies it, as for a command.
func (t *dockerTerm) leftovers() error {
	return dockerRunner{}.leftovers(t.c, &execSpec{cmd: t.s.cmd, user: t.s.user, op: t.s.op}, t.execID, t.token)
}

func (t *dockerTerm) write(p []byte) (int, error) { return t.att.Conn.Write(p) }

func (t *dockerTerm) resize(ctx context.Context, rows, cols uint16) error {
	return t.c.pool.api.ContainerExecResize(ctx, t.execID, container.ResizeOptions{Height: uint(rows), Width: uint(cols)})
}

// ociHead passes a terminal's output through and keeps its first bytes:
// for a program that could not start, the daemon writes its message there
// ("OCI runtime exec failed: ...") and ends the exec with 126 whatever the
// reason; the message tells a program not found (127), as for a command.
type ociHead struct {
	w    io.Writer
	head []byte
}

const ociHeadSize = 512

func (h *ociHead) Write(b []byte) (int, error) {
	if len(h.head) < ociHeadSize {
		h.head = append(h.head, b[:min(len(b), ociHeadSize-len(h.head))]...)
	}
	return h.w.Write(b)
}

func (h *ociHead) code(code int) int {
	msg := string(h.head)
	if code == 126 && strings.HasPrefix(msg, ociPrefix) &&
		(strings.Contains(msg, "not found") || strings.Contains(msg, "no such file or directory")) {
		return 127
	}
	return code
}
