package dockerpool

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"path"
	"strconv"
	"strings"
	"sync"

	"github.com/docker/docker/api/types"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// The Docker path's file server. Every call to the daemon's archive API
// costs about as much as an exec here (the daemon re-executes itself to
// chroot, some 40 ms on fuse-overlayfs), and so does every one-shot shell
// command: a WriteFile then a ReadFile would cost two execs. Instead, the
// first WriteFile or ReadFile of a hand-out starts one shell in the
// container, as the container's user, that serves the next ones over its
// stdin and stdout: a line that says what to do, the data (dd reads exactly
// its length), and on stdout, in one ordered stream, a ReadFile's data or a
// request's messages followed by a line that says how it ended, marked
// with a token of the session. The token goes in on stdin, not in the
// command line or the environment that other processes of the container
// could read. A WriteFile is then a dd, a mv and (for modes a umask cannot
// give) a chmod, a ReadFile a dd: a few milliseconds.
//
// The shell ends when the handle ends (Return, Remove), when the stream
// breaks, and after any error it cannot recover its framing from. A
// command that kills every process of the container (KillProcesses, the
// kill after a timeout) ends it too: the next transfer starts another. It
// serves one transfer at a time; a transfer that finds it busy takes the
// one-shot way.

//go:embed fileserver.sh
var fileServerScript string

// fileServer is one running file server shell.
type fileServer struct {
	token string
	att   types.HijackedResponse
	ended chan struct{} // the demultiplexer stopped: the shell's output ended

	mu   sync.Mutex
	cond *sync.Cond   // signalled on every piece of output, and at the end
	out  bytes.Buffer // output not taken yet
	err  error        // why the output ended
}

// fileServers is a handle's file server: at most one at a time.
type fileServers struct {
	mu     sync.Mutex
	cur    *fileServer
	busy   bool
	closed bool // the handle ended
	broken bool // the image cannot run it: use the one-shot way
}

// take returns the running server, starting one if none runs, or nil when
// the transfer should take the one-shot way (busy, the handle ended, or
// the image cannot run the server). release must follow a non-nil take.
func (fs *fileServers) take(ctx context.Context, c *Container) *fileServer {
	fs.mu.Lock()
	if fs.busy || fs.closed || fs.broken {
		fs.mu.Unlock()
		return nil
	}
	fs.busy = true
	s := fs.cur
	fs.mu.Unlock()
	if s != nil && !s.over() {
		return s
	}
	s, err := startFileServer(ctx, c)
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if err != nil {
		fs.busy = false
		if !errors.Is(err, errCopyStopped) && ctx.Err() == nil {
			fs.broken = true
		}
		return nil
	}
	if fs.closed { // the handle ended meanwhile
		s.close()
		fs.busy = false
		return nil
	}
	fs.cur = s
	return s
}

// release ends a transfer on s; keep false stops the server.
func (fs *fileServers) release(s *fileServer, keep bool) {
	if !keep {
		s.close()
	}
	fs.mu.Lock()
	fs.busy = false
	fs.mu.Unlock()
}

// close stops the server for good: the handle ended.
func (fs *fileServers) close() {
	fs.mu.Lock()
	fs.closed = true
	s := fs.cur
	fs.cur = nil
	fs.mu.Unlock()
	if s != nil {
		s.close()
	}
}

// startFileServer starts the shell and checks that it answers.
func startFileServer(ctx context.Context, c *Container) (*fileServer, error) {
	api := c.pool.api
	token := newToken()
	created, err := api.ContainerExecCreate(ctx, c.id, container.ExecOptions{
		Cmd:          []string{"/bin/sh", "-c", fileServerScript, "dockerpool-files"},
		Env:          []string{execIDEnv + "=" + token},
		AttachStdin:  true,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return nil, err
	}
	att, err := api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return nil, err
	}
	s := &fileServer{token: token, att: att, ended: make(chan struct{})}
	s.cond = sync.NewCond(&s.mu)
	go s.demux()
	// A ping: the image has what the server needs (sh, dd with count_bytes).
	stop := context.AfterFunc(ctx, s.close)
	defer stop()
	if _, err := fmt.Fprintf(att.Conn, "%s\nP 0 - - - /\n", token); err != nil {
		s.close()
		return nil, err
	}
	code, msg, err := s.reply(ctx)
	if err == nil && code != 0 {
		err = fmt.Errorf("file server: %s", bytes.TrimSpace(msg))
	}
	if err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// demux moves the shell's output into out.
func (s *fileServer) demux() {
	defer close(s.ended)
	_, err := stdcopy.StdCopy(serverSink{s}, serverSink{s}, s.att.Reader)
	s.mu.Lock()
	s.err = err
	if s.err == nil {
		s.err = io.EOF
	}
	s.cond.Broadcast()
	s.mu.Unlock()
}

type serverSink struct{ s *fileServer }

func (w serverSink) Write(b []byte) (int, error) {
	s := w.s
	s.mu.Lock()
	defer s.mu.Unlock()
	s.out.Write(b)
	s.cond.Broadcast()
	return len(b), nil
}

// over reports whether the shell's output ended.
func (s *fileServer) over() bool {
	select {
	case <-s.ended:
		return true
	default:
		return false
	}
}

func (s *fileServer) close() { s.att.Close() }

// wait blocks until ready reports true (under s.mu) or the output ends or
// ctx ends; it returns why it stopped waiting, nil when ready.
func (s *fileServer) wait(ctx context.Context, ready func() bool) error {
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	for !ready() {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if s.err != nil {
			return fmt.Errorf("%w: the file server's stream ended: %w", errStream, s.err)
		}
		s.cond.Wait()
	}
	return nil
}

// reply waits for the end of one request: its code, and what it wrote
// before that (a G's data, or messages).
func (s *fileServer) reply(ctx context.Context) (int, []byte, error) {
	marker := []byte(s.token + " R ")
	var body []byte
	code := -1
	err := s.wait(ctx, func() bool {
		b := s.out.Bytes()
		i := bytes.Index(b, marker)
		if i < 0 {
			return false
		}
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return false
		}
		code, _ = strconv.Atoi(string(b[i+len(marker) : i+j]))
		body = bytes.Clone(b[:i])
		s.out.Next(i + j + 1)
		return true
	})
	return code, body, err
}

// servable reports whether the server's line protocol can carry path: not
// a newline in it, no blank at its end (read strips them).
func servable(p string) bool {
	return !strings.ContainsAny(p, "\n\r") && strings.TrimSpace(p) == p
}

// tmpName is the temporary file a write of p goes to before the rename,
// as the script names it.
func tmpName(p, suffix string) string {
	return path.Join(path.Dir(p), "."+path.Base(p)+".dockerpool-"+suffix)
}

// serverPut writes a file through the server. ok false: the server could
// not take it (busy, or the image cannot run it) and nothing was sent.
func serverPut(ctx context.Context, c *Container, t *transferSpec) (outcome, bool) {
	fs := &c.files
	s := fs.take(ctx, c)
	if s == nil {
		return outcome{}, false
	}
	suffix := newToken()[:8]
	umask, chmod := "0077", strconv.FormatUint(uint64(t.perm), 8)
	if t.perm&0o111 == 0 {
		umask, chmod = fmt.Sprintf("%04o", 0o666&^t.perm), "-"
	}
	req := fmt.Sprintf("W %d %s %s %s %s\n", len(t.data), chmod, umask, suffix, t.path)
	frame := make([]byte, 0, len(req)+len(t.data)+2)
	frame = append(append(append(frame, req...), t.data...), "C\n"...)
	// The shell may stop reading (a full tmpfs): the write must not hold
	// the reply up, and ends when the server is closed.
	wrote := make(chan error, 1)
	go func() { _, err := s.att.Conn.Write(frame); wrote <- err }()
	code, msg, err := s.reply(ctx)
	keep := err == nil && (code == 0 || code == shNoDir || code == shIsDir || code == shFailed)
	var werr error
	if keep {
		werr = <-wrote // the shell read it all: the write is over
		keep = werr == nil
	}
	fs.release(s, keep)
	if !keep && werr == nil {
		werr = <-wrote // ends with the connection
	}
	if err == nil && werr != nil {
		err = fmt.Errorf("%w: write to the file server: %w", errStream, werr)
	}
	if err != nil {
		// Cut short, or the server is gone: the target is whole, old or
		// new (the rename is last); the temporary file may be left.
		tmp := tmpName(t.path, suffix)
		if _, _, rm := runHelper(context.WithoutCancel(ctx), c, t.op, []string{"rm", "-f", tmp}, nil, io.Discard, 0); rm.err != nil || rm.cause != nil {
			return outcome{cause: err, left: fmt.Errorf("could not remove %s", tmp)}, true
		}
		if ctx.Err() != nil {
			return outcome{cause: err}, true
		}
		return outcome{}, false // the server failed, not the write: the one-shot way
	}
	if code == shWriteFailed {
		code = shFailed // the data could not all be written: the server stopped
	}
	return shellOutcome(outcome{}, code, string(bytes.TrimSpace(msg)), t.path, false), true
}

// serverGet reads a file through the server into t.w.
func serverGet(ctx context.Context, c *Container, t *transferSpec) (outcome, bool) {
	fs := &c.files
	s := fs.take(ctx, c)
	if s == nil {
		return outcome{}, false
	}
	count := "-"
	if t.max >= 0 {
		count = strconv.FormatInt(t.max+1, 10) // one more byte tells that it is larger
	}
	var code int
	var body []byte
	_, err := fmt.Fprintf(s.att.Conn, "G %s - - - %s\n", count, t.path)
	if err == nil {
		code, body, err = s.reply(ctx)
	}
	fs.release(s, err == nil)
	if err != nil {
		if ctx.Err() != nil {
			return outcome{cause: err}, true
		}
		return outcome{}, false // the server failed: the one-shot way
	}
	if code != 0 {
		return shellOutcome(outcome{}, code, string(bytes.TrimSpace(body)), t.path, false), true
	}
	if t.max >= 0 && int64(len(body)) > t.max {
		return outcome{err: tooLarge(t.path, t.max)}, true
	}
	_, err = t.w.Write(body)
	return outcome{err: err}, true
}
