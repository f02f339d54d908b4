package dockerpool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// File transfers on the agent path: a Put or Get frame, the data as Stdin or
// Stdout frames within the stream's window, and the agent's Done. The agent
// does the work in the container as the container's user: into tmpfs, onto
// a read-only root's writable places, with every file whole or absent.

func (r agentRunner) put(ctx context.Context, _ *Container, t *transferSpec) outcome {
	a := r.a
	if err := t.op.ready(); err != nil {
		return outcome{err: err, suspect: gone(err)}
	}
	src := t.r
	if t.kind == kindTar {
		// The same checks as on the Docker path, before anything is sent;
		// the agent checks again as it unpacks, under os.Root.
		pr := (&tarCheck{dir: t.path}).pipe(t.r)
		defer pr.Close()
		src = pr
	}
	st := a.register()
	defer a.unregister(st)
	msg := agentproto.PutMsg{Kind: kindName(t.kind), Path: t.path, Mode: uint32(t.perm)}
	x := &agentTransfer{a: a, st: st, fed: make(chan error, 1)}
	if t.kind == kindFile && len(t.data) <= agentproto.Chunk {
		// A small WriteFile: the Put, its data and its end in one write,
		// within the window a new stream starts with.
		if err := a.writeFrames(smallPut(st, msg, t.data)); err != nil {
			return lost(err)
		}
		defer st.close()
		return x.wait(ctx, nil, t)
	}
	if err := a.send(agentproto.Put, st.id, msg); err != nil {
		return lost(err)
	}
	f := feed(src, agentproto.Chunk,
		func(b []byte) error { return st.send(agentproto.Stdin, b) },
		func() error { return a.write(agentproto.StdinEOF, st.id, nil) },
		func(err error) { x.fed <- err })
	defer f.stop()
	defer st.close()
	// A refused tar, or the caller's reader failing, aborts the Put: its
	// error is the outcome's cause.
	return x.wait(ctx, nil, t)
}

func (r agentRunner) get(ctx context.Context, c *Container, t *transferSpec) outcome {
	if err := t.op.ready(); err != nil {
		return outcome{err: err, suspect: gone(err)}
	}
	if t.kind == kindTar {
		// Docker's archive API streams a tar some 2.5 times faster than the
		// attach stream (about 260 against 100 MB/s here); where it sees
		// what the container sees (the same rules as on the Docker path) it
		// gives the same tar, and a read leaves nothing to be whole or not.
		if rt := routeOf(ctx, c, t, path.Dir(t.path), t.path, false); rt.archive && len(rt.missing) == 0 {
			if o, ok := archiveGet(ctx, c, t); ok {
				return o
			}
		}
	}
	return r.fromAgent(ctx, t)
}

// fromAgent reads through the agent: a Get frame, the data, the Done.
func (r agentRunner) fromAgent(ctx context.Context, t *transferSpec) outcome {
	a := r.a
	st := a.register()
	defer a.unregister(st)
	msg := agentproto.GetMsg{Kind: kindName(t.kind), Path: t.path, Max: max(t.max, -1)}
	if err := a.send(agentproto.Get, st.id, msg); err != nil {
		return lost(err)
	}
	x := &agentTransfer{a: a, st: st}
	return x.wait(ctx, t.w, t)
}

// smallPut encodes the frames of a Put whose data fits one frame, and takes
// the data's credit (a new stream has a whole window).
func smallPut(st *stream, msg agentproto.PutMsg, data []byte) []byte {
	payload, _ := json.Marshal(msg) // a struct of strings and numbers
	b := agentproto.Append(make([]byte, 0, 3*agentproto.HeaderSize+len(payload)+len(data)), agentproto.Put, st.id, payload)
	if len(data) > 0 {
		st.credit.Take(len(data), nil)
		b = agentproto.Append(b, agentproto.Stdin, st.id, data)
	}
	return agentproto.Append(b, agentproto.StdinEOF, st.id, nil)
}

func kindName(k transferKind) string {
	if k == kindTar {
		return agentproto.KindTar
	}
	return agentproto.KindFile
}

// agentTransfer is one Put or Get while it runs.
type agentTransfer struct {
	a       *agentConn
	st      *stream
	fed     chan error // a Put's reader failed (or its tar was refused)
	aborted bool
	why     error // why we aborted it
	grace   <-chan time.Time
}

// wait moves a transfer's frames until its Done: data to w (a Get), and
// aborts it when ctx ends, the reader fails or w fails.
func (x *agentTransfer) wait(ctx context.Context, w io.Writer, t *transferSpec) outcome {
	for {
		for f, ok := x.st.next(); ok; f, ok = x.st.next() {
			switch f.Type {
			case agentproto.Stdout:
				if !x.aborted {
					if _, err := w.Write(f.Payload); err != nil {
						x.abort(fmt.Errorf("write: %w", err))
					}
				}
				x.st.consumed(len(f.Payload))
				recycle(f.Payload)
			case agentproto.Done:
				return x.done(f, t)
			}
		}
		var ctxDone <-chan struct{}
		if !x.aborted {
			ctxDone = ctx.Done()
		}
		select {
		case <-x.st.ready:
		case err := <-x.fed:
			x.abort(err)
		case <-ctxDone:
			x.abort(context.Cause(ctx))
		case <-x.grace:
			return outcome{err: fmt.Errorf("%w: no answer %v after the abort", ErrAgent, agentKillGrace), left: errors.New("the agent did not confirm the abort")}
		case <-x.a.done:
			return lost(x.a.broken())
		}
	}
}

func (x *agentTransfer) abort(why error) {
	if x.aborted {
		return
	}
	x.aborted, x.why = true, why
	_ = x.a.write(agentproto.Kill, x.st.id, nil)
	x.grace = time.After(agentKillGrace)
}

// done turns the agent's Done into an outcome.
func (x *agentTransfer) done(f agentproto.Frame, t *transferSpec) outcome {
	var d agentproto.DoneMsg
	if err := f.Decode(&d); err != nil {
		return outcome{err: fmt.Errorf("%w: %w", ErrAgent, err), left: errors.New("its end could not be read")}
	}
	var o outcome
	switch {
	case x.why != nil:
		o.cause = x.why // we stopped it: ctx, the caller's reader or writer
	case d.Error == "":
		return o
	case d.TooLarge:
		o.err = tooLarge(t.path, t.max)
	case d.Invalid:
		o.err = fmt.Errorf("%w: %s", ErrInvalidArchive, d.Error)
	case d.Errno != 0:
		o.err = agentErr{msg: d.Error, errno: syscall.Errno(d.Errno)}
	default:
		o.err = errors.New(d.Error)
	}
	if !d.Clean && d.Error != "" {
		o.left = errors.New("the transfer stopped midway")
	}
	return o
}

// agentErr is an error the agent reported with its system error number, so
// that errors.Is(err, fs.ErrNotExist) and the like work.
type agentErr struct {
	msg   string
	errno syscall.Errno
}

func (e agentErr) Error() string { return e.msg }
func (e agentErr) Unwrap() error { return e.errno }
