package dockerpool

import (
	"context"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// Terminals on the agent path: a Term frame starts the program on a
// pseudo-terminal the agent allocates; keystrokes go as Stdin frames within
// the window the agent grants, what the program writes comes as Stdout
// frames within ours, and Resize frames change the size. For the agent it
// is an exec like any other (its kill, sweep and Exit), and agentCall
// follows it here as it follows a command.

// agentTerm is one terminal on the agent path, once started.
type agentTerm struct {
	x   *agentCall
	ctx context.Context
}

func (r agentRunner) terminal(ctx context.Context, _ *Container, s *termSpec) (terminalConn, outcome) {
	a := r.a
	if err := s.op.ready(); err != nil {
		return nil, outcome{err: err, suspect: gone(err)}
	}
	if err := a.broken(); err != nil {
		return nil, lost(err)
	}
	st := a.register()
	err := a.send(agentproto.Term, st.id, agentproto.TermMsg{
		Argv: s.cmd, Env: s.env, Dir: s.dir, User: s.user, Rows: s.rows, Cols: s.cols,
	})
	if err != nil {
		a.unregister(st)
		return nil, lost(err)
	}
	// The output goes to the terminal's buffer, which waits when full: the
	// frames then wait in the stream, credit is not given back, and the
	// agent stops reading the terminal.
	w := s.out.writer(ctx.Done())
	x := &agentCall{a: a, st: st, s: &execSpec{cmd: s.cmd, stdout: w, stderr: w, op: s.op},
		grace: time.NewTimer(time.Hour), stdinErr: make(chan error, 1)}
	x.grace.Stop()
	return &agentTerm{x: x, ctx: ctx}, outcome{}
}

func (t *agentTerm) wait() outcome {
	defer t.x.a.unregister(t.x.st) // a write waiting for credit returns
	defer t.x.grace.Stop()
	return t.x.wait(t.ctx)
}

func (t *agentTerm) write(p []byte) (int, error) {
	if err := t.x.st.send(agentproto.Stdin, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// resize sends the new size; the agent applies it in order with the
// keystrokes around it.
func (t *agentTerm) resize(_ context.Context, rows, cols uint16) error {
	return t.x.a.send(agentproto.Resize, t.x.st.id, agentproto.ResizeMsg{Rows: rows, Cols: cols})
}
