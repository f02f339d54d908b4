package dockerpool

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// agentRunner runs commands through the container's agent: an Exec frame
// starts the command, output and exit come back as frames on the session.
// The agent is the subreaper of every process a command starts, so it kills
// exactly those and verifies it, in an image without a shell too.
type agentRunner struct{ a *agentConn }

var errSessionEnded = errors.New("the agent's session ended")

func (agentRunner) name() string         { return " (agent)" }
func (agentRunner) enforcesLimits() bool { return true }

func (r agentRunner) exec(ctx context.Context, _ *Container, s *execSpec) outcome {
	a := r.a
	if err := s.op.ready(); err != nil {
		return outcome{err: err, suspect: gone(err)}
	}
	if err := a.broken(); err != nil {
		return lost(err)
	}
	st := a.register()
	defer a.unregister(st)
	err := a.send(agentproto.Exec, st.id, agentproto.ExecMsg{
		Argv:      s.cmd,
		Env:       s.env,
		Dir:       s.dir,
		User:      s.user,
		TimeoutMS: s.timeout.Milliseconds(),
		Limit:     int64(s.limit),
		Stdin:     s.stdin != nil,

		CPUTimeMS:    s.cpuTime.Milliseconds(),
		MaxFileSize:  s.maxFileSize,
		MaxOpenFiles: s.maxOpenFiles,
	})
	if err != nil {
		return lost(err)
	}
	x := &agentCall{a: a, st: st, s: s, grace: time.NewTimer(time.Hour), stdinErr: make(chan error, 1)}
	x.grace.Stop()
	defer x.grace.Stop()
	if s.stdin != nil {
		// Within the window the agent grants: a command that does not read
		// its input holds at most a window of it in the container.
		f := feed(s.stdin, agentproto.Chunk,
			func(b []byte) error { return st.send(agentproto.Stdin, b) },
			func() error { return a.write(agentproto.StdinEOF, st.id, nil) },
			func(err error) { x.stdinErr <- err })
		defer f.stop()
		defer st.close() // before f.stop: a send waiting for credit returns
	}
	return x.wait(ctx)
}

// lost is the outcome of a command whose session ended: the container died
// (the agent is its main process) or the agent failed. Either way the
// container is not reused.
func lost(err error) outcome {
	return outcome{err: err, suspect: true, left: errSessionEnded}
}

// agentCall is one command on the agent path, while it runs.
type agentCall struct {
	a        *agentConn
	st       *stream
	s        *execSpec
	grace    *time.Timer // after a kill, how long the agent has to confirm it
	stdinErr chan error
	killed   bool
	cause    error // why we asked for the kill
	writeErr error // the caller's writer failed
}

// wait moves the command's frames until its Exit, ctx's end, or the end of
// the session.
func (x *agentCall) wait(ctx context.Context) outcome {
	for {
		for f, ok := x.st.next(); ok; f, ok = x.st.next() {
			switch f.Type {
			case agentproto.Stdout, agentproto.Stderr:
				x.output(f)
			case agentproto.Exit:
				var m agentproto.ExitMsg
				if err := f.Decode(&m); err != nil {
					return outcome{err: fmt.Errorf("%w: %w", ErrAgent, err), left: errors.New("its exit could not be read")}
				}
				return x.result(ctx, m)
			}
		}
		var ctxDone <-chan struct{}
		if !x.killed {
			ctxDone = ctx.Done()
		}
		select {
		case <-x.st.ready:
		case err := <-x.stdinErr:
			x.kill(fmt.Errorf("%w: %w", errStdinFailed, err))
		case <-ctxDone:
			x.kill(context.Cause(ctx))
		case <-x.grace.C:
			return outcome{
				err:  fmt.Errorf("%w: no answer %v after the kill", ErrAgent, agentKillGrace),
				left: errors.New("the agent did not confirm the kill"),
			}
		case <-x.a.done:
			return lost(x.a.broken())
		}
	}
}

// output writes an output frame; a write that fails (the limit, or the
// caller's writer) ends the command.
func (x *agentCall) output(f agentproto.Frame) {
	w := x.s.stdout
	if f.Type == agentproto.Stderr {
		w = x.s.stderr
	}
	_, err := w.Write(f.Payload)
	x.st.consumed(len(f.Payload))
	recycle(f.Payload)
	if err != nil && !x.killed {
		if !errors.Is(err, ErrOutputLimitExceeded) {
			x.writeErr = err
		}
		x.kill(err)
	}
}

// kill asks the agent to kill the command. The agent kills what it can
// attribute to this command; killAll tells the frame whether others ran.
func (x *agentCall) kill(why error) {
	if x.killed {
		return
	}
	x.killed, x.cause = true, why
	x.s.op.killAll()
	_ = x.a.write(agentproto.Kill, x.st.id, nil)
	x.grace.Reset(agentKillGrace)
}

// result turns the agent's Exit into an outcome.
func (x *agentCall) result(ctx context.Context, m agentproto.ExitMsg) outcome {
	o := outcome{
		code:   m.Code,
		signal: syscall.Signal(m.Signal),
		oom:    m.OOM,
		usage: Usage{
			Wall:   time.Duration(m.WallUS) * time.Microsecond,
			User:   time.Duration(m.UserUS) * time.Microsecond,
			System: time.Duration(m.SystemUS) * time.Microsecond,
			MaxRSS: m.MaxRSS,
		},
		limitCPU: x.s.cpuTime,
	}
	switch {
	case m.Error != "":
		o.err = fmt.Errorf("%w: %s", ErrAgent, m.Error)
	case m.CPULimited:
		o.cause = ErrCPUTimeExceeded
	case m.Limited:
		o.cause = ErrOutputLimitExceeded
	case m.TimedOut:
		o.cause = ErrExecTimeout
	case x.writeErr != nil:
		o.cause = fmt.Errorf("write output: %w", x.writeErr)
	case x.cause != nil:
		o.cause = x.cause
	case m.Killed:
		o.cause = fmt.Errorf("killed: %w", context.Cause(ctx))
	}
	if m.Survivors > 0 {
		o.left = fmt.Errorf("%d process(es) survived the kill", m.Survivors)
	}
	return o
}

func (r agentRunner) killAll(_ context.Context, _ *Container) error {
	return r.a.reset(reapBudget, nil)
}
