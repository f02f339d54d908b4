package dockerpool

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/pkg/stdcopy"
)

// ExecOptions tunes one command. The zero value runs the command with no
// timeout (beyond ctx), no output limit and no input.
type ExecOptions struct {
	// Timeout bounds the command. When it elapses the command is killed (see
	// ExecStream) and the error satisfies errors.Is(err, ErrExecTimeout) and
	// errors.Is(err, context.DeadlineExceeded). Zero: no timeout but ctx's.
	Timeout time.Duration
	// Limit caps the output kept, stdout and stderr together, in bytes.
	// When the command writes more, it is killed and Exec returns
	// ErrOutputLimitExceeded with the first Limit bytes. Zero: no limit.
	Limit int
	// Stdin, when set, is copied to the command's standard input, which is
	// closed at EOF. A read error ends the command and is returned.
	Stdin io.Reader

	// Env adds KEY=value variables to the container's environment.
	Env []string
	// WorkingDir is the directory the command starts in. Default: the
	// image's working directory.
	WorkingDir string
	// User runs the command as this user (name or uid[:gid]). Default: the
	// container's user.
	User string
}

// ExecResult is the outcome of a command run with Exec or ExecStd.
type ExecResult struct {
	// ExitCode is the command's exit status. 126 means the command could not
	// be executed, 127 that it was not found in the image. It is -1 when the
	// command did not finish (an error is returned then).
	ExitCode int
	// Stdout and Stderr hold what the command wrote.
	Stdout []byte
	Stderr []byte
}

// ErrEmptyCommand is returned by Exec for an empty command.
var ErrEmptyCommand = errors.New("dockerpool: empty command")

// execIDEnv names the variable every command gets with a token unique to its
// exec, so that its processes can be found after a timeout.
const execIDEnv = "DOCKERPOOL_EXEC_ID"

const (
	inspectBudget = time.Second     // to learn the exit code after the output ended
	reapBudget    = 3 * time.Second // to kill and verify after a timeout
)

// Exec runs cmd in the container and returns its output and exit code. It is
// ExecStd with zero options.
//
// A non-zero exit code is not an error: err reports a command that could not
// be run or did not finish (a Docker failure, a dead container, ctx ending).
func (c *Container) Exec(ctx context.Context, cmd []string) (ExecResult, error) {
	return c.ExecStd(ctx, cmd, ExecOptions{})
}

// ExecStd runs cmd and collects its stdout and stderr in memory. Use
// ExecStream for large outputs. It keeps the promises of ExecStream; on
// ErrOutputLimitExceeded the result holds what was kept.
func (c *Container) ExecStd(ctx context.Context, cmd []string, opts ExecOptions) (ExecResult, error) {
	var stdout, stderr bytes.Buffer
	code, err := c.ExecStream(ctx, cmd, &stdout, &stderr, opts)
	return ExecResult{ExitCode: code, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, err
}

// ExecStream runs cmd and writes its stdout and stderr to the writers as the
// output arrives, without holding it in memory; a nil writer discards its
// stream. It returns the exit code (126: not executable, 127: not found, with
// the daemon's message on stderr), or -1 and an error.
//
// Docker has no call to stop an exec'd process, so when the command does not
// end by itself (Timeout, ctx cancelled, Limit reached, stdin failing, output
// stream broken), ExecStream kills it before returning: it runs a short
// /bin/sh script in the container that SIGKILLs every process but the
// container's main one (PID 1, and the first child of an init), then lists
// the processes again to verify that none survived. When other commands run
// on the same handle at that moment, only the processes carrying this
// command's token are killed, since the others are not ours to end. If the
// kill cannot be verified (no /bin/sh in the image, processes of another user
// or that escaped, the container gone), the handle is marked tainted
// (Container.Tainted) and Return removes the container instead of reusing it.
// Either way, nothing of the command runs in a container that the pool hands
// out again.
//
// The command is over when its output streams close. If they close while the
// command still runs (the connection was cut, or the command closed its
// stdout and stderr and went on), ExecStream cannot vouch for the output: it
// returns an error and kills the command as after a timeout.
//
// Several commands may run on one container at once; each gets its own
// Docker exec.
func (c *Container) ExecStream(ctx context.Context, cmd []string, stdout, stderr io.Writer, opts ExecOptions) (int, error) {
	if len(cmd) == 0 {
		return -1, ErrEmptyCommand
	}
	if opts.Limit < 0 || opts.Timeout < 0 {
		return -1, fmt.Errorf("%w: negative Limit or Timeout", ErrInvalidConfig)
	}
	if err := c.beginExec(); err != nil {
		return -1, err
	}
	defer c.endExec()
	select {
	case <-c.pool.done:
		return -1, ErrPoolShutdown
	default:
	}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	if c.agent != nil {
		return c.agentExec(ctx, cmd, stdout, stderr, opts)
	}
	return c.exec(ctx, cmd, stdout, stderr, opts)
}

// Causes of an exec ending early; they say which error to return.
var (
	errStdinFailed = errors.New("stdin failed")
	errStream      = errors.New("output stream broke")
)

func (c *Container) exec(parent context.Context, cmd []string, stdout, stderr io.Writer, opts ExecOptions) (int, error) {
	api := c.pool.api
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	if opts.Timeout > 0 {
		var stop context.CancelFunc
		ctx, stop = context.WithTimeoutCause(ctx, opts.Timeout, ErrExecTimeout)
		defer stop()
	}
	what := fmt.Sprintf("exec %q in container %s", cmd[0], shortID(c.id))
	if err := ctx.Err(); err != nil {
		return -1, fmt.Errorf("dockerpool: %s: %w", what, context.Cause(ctx))
	}

	// The used mark must be on the container before anything runs in it; the
	// rename overlaps with the exec's creation, which runs nothing yet.
	var marked chan error
	if c.needMark && c.state.Load()&handleMarked == 0 {
		marked = make(chan error, 1)
		go func() { marked <- c.markUsed() }()
		defer func() {
			if marked != nil {
				<-marked
			}
		}()
	}
	token := newToken()
	created, err := api.ContainerExecCreate(ctx, c.id, container.ExecOptions{
		Cmd:          cmd,
		Env:          append(append([]string(nil), opts.Env...), execIDEnv+"="+token),
		WorkingDir:   opts.WorkingDir,
		User:         opts.User,
		AttachStdin:  opts.Stdin != nil,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		if ctx.Err() != nil {
			return -1, fmt.Errorf("dockerpool: %s: %w", what, context.Cause(ctx))
		}
		return -1, c.execFailed(what, err)
	}
	if marked != nil {
		err := <-marked
		marked = nil
		if err != nil {
			return -1, c.execFailed(what, err)
		}
	}
	att, err := api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		// The start may have happened before the call failed: clean up as
		// after a timeout.
		cause := c.execFailed(what, err)
		if ctx.Err() != nil {
			cause = fmt.Errorf("dockerpool: %s: %w", what, context.Cause(ctx))
		}
		return -1, c.abandon(cause, created.ID, token, opts.User)
	}
	defer att.Close()
	// Reads on a hijacked connection ignore ctx: closing it is what unblocks
	// them when ctx ends.
	stopClose := context.AfterFunc(ctx, func() { att.Close() })
	defer stopClose()

	var stdinSent atomic.Bool // all of stdin went out (see stdinResetAtExit)
	if opts.Stdin != nil {
		go func() {
			r := &readErrReader{r: opts.Stdin}
			_, werr := io.Copy(att.Conn, r)
			if r.err != nil {
				cancel(fmt.Errorf("%w: %w", errStdinFailed, r.err))
				return
			}
			stdinSent.Store(werr == nil)
			_ = att.CloseWrite() // EOF for the command
		}()
	}

	lim := &limiter{on: opts.Limit > 0, left: opts.Limit}
	sniff := &ociSniffer{w: &limitedWriter{l: lim, w: stdout}}
	errw := &limitedWriter{l: lim, w: stderr}
	_, copyErr := stdcopy.StdCopy(sniff, errw, att.Reader)

	switch {
	case lim.hit:
		cancel(ErrOutputLimitExceeded)
	case ctx.Err() != nil:
		// timeout, the caller's ctx, or stdin: context.Cause says which
	case copyErr != nil && !stdinResetAtExit(copyErr, opts.Stdin != nil && !stdinSent.Load()):
		cancel(fmt.Errorf("%w: %w", errStream, copyErr))
	}
	if ctx.Err() != nil {
		att.Close()
		cause := context.Cause(ctx)
		var err error
		switch {
		case errors.Is(cause, ErrOutputLimitExceeded):
			err = fmt.Errorf("%w: %s wrote more than %d bytes", ErrOutputLimitExceeded, what, opts.Limit)
		case errors.Is(cause, ErrExecTimeout):
			err = fmt.Errorf("%w: %s after %v", ErrExecTimeout, what, opts.Timeout)
		default:
			err = fmt.Errorf("dockerpool: %s: %w", what, cause)
		}
		return -1, c.abandon(err, created.ID, token, opts.User)
	}

	code, err := c.exitCode(parent, created.ID)
	if err != nil {
		// The output ended but the command did not, or Docker cannot say:
		// the stream was cut. Clean up as after a timeout.
		return -1, c.abandon(fmt.Errorf("dockerpool: %s: %w", what, err), created.ID, token, opts.User)
	}
	if code, err = sniff.finish(code, errw); err != nil {
		return -1, fmt.Errorf("dockerpool: %s: %w", what, err)
	}
	return code, nil
}

// stdinResetAtExit reports whether copyErr, the error that ended the output
// stream, is how Podman ends an exec whose command exited without reading
// all of its stdin: it closes the connection with our input unread, which
// the client sees as a connection reset (Docker drains the input and ends
// the stream cleanly). What Podman sent before the reset is read before the
// error on a unix socket; Podman 4.3 itself loses that output in about a
// third of such execs, reset or not, which no client can tell. Only then
// is the reset taken for the end of the output; exitCode still checks that
// the command ended, and a command that still runs is killed as after a
// cut stream.
func stdinResetAtExit(copyErr error, stdinPending bool) bool {
	return stdinPending && errors.Is(copyErr, syscall.ECONNRESET)
}

// exitCode asks Docker for the exit code. Right after the output ends the
// exec can still be reported as running: ask again, briefly.
func (c *Container) exitCode(parent context.Context, execID string) (int, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), inspectBudget)
	defer cancel()
	wait := time.Millisecond
	for {
		info, err := c.pool.api.ContainerExecInspect(ctx, execID)
		if err != nil {
			return -1, fmt.Errorf("inspect exec: %w", err)
		}
		if !info.Running {
			return info.ExitCode, nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return -1, errors.New("the output stream ended but the command still runs (stream cut, or the command closed its output)")
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// execFailed wraps an error of the Docker calls that set up an exec. A
// container that is gone or stopped is marked dead on the handle, so that
// later Execs fail at once and Return discards it.
func (c *Container) execFailed(what string, err error) error {
	msg := err.Error()
	if cerrdefs.IsNotFound(err) || cerrdefs.IsConflict(err) || strings.Contains(msg, "is not running") ||
		strings.Contains(msg, "container state improper") { // Podman's word for it
		if c.pool.checkContainer(c.id) == nil {
			return fmt.Errorf("dockerpool: %s: %w", what, err) // a conflict of another kind
		}
		c.state.Or(handleDead)
		return fmt.Errorf("dockerpool: %s: %w: %w", what, ErrContainerDead, err)
	}
	return fmt.Errorf("dockerpool: %s: %w", what, err)
}

// abandon is called when a command did not end by itself: it kills what the
// command left and verifies it, or taints the handle. It returns err, noting
// the taint.
func (c *Container) abandon(err error, execID, token, user string) error {
	if c.state.Load()&handleDead != 0 {
		return err
	}
	// The start of an exec is asynchronous: runc may still be creating the
	// process. A kill before it exists would verify nothing, and the
	// command would start afterwards. Wait until Docker reports its PID.
	if serr := c.waitStarted(execID); serr != nil {
		c.state.Or(handleTainted)
		return fmt.Errorf("%w (container tainted, it will be removed on Return: %v)", err, serr)
	}
	others := int(c.state.Load()&execMask) - 1
	if rerr := c.reap(token, user, others > 0); rerr != nil {
		c.state.Or(handleTainted)
		return fmt.Errorf("%w (container tainted, it will be removed on Return: %v)", err, rerr)
	}
	return err
}

// waitStarted waits until Docker reports that the exec's process started.
func (c *Container) waitStarted(execID string) error {
	ctx, cancel := context.WithTimeout(c.pool.baseCtx, reapBudget)
	defer cancel()
	wait := time.Millisecond
	for {
		info, err := c.pool.api.ContainerExecInspect(ctx, execID)
		if err != nil {
			return fmt.Errorf("inspect exec: %w", err)
		}
		if info.Pid != 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return errors.New("the command's process was not reported started: cannot vouch for what it may run")
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// reap kills the processes a command left and checks that none survived.
// With onlyToken it kills only the processes carrying the command's token,
// which cannot be proven complete: it always reports the container tainted
// then.
func (c *Container) reap(token, user string, onlyToken bool) error {
	ctx, cancel := context.WithTimeout(c.pool.baseCtx, reapBudget)
	defer cancel()
	mode := "all"
	if onlyToken {
		mode = "token"
	}
	api := c.pool.api
	created, err := api.ContainerExecCreate(ctx, c.id, container.ExecOptions{
		Cmd:          []string{"/bin/sh", "-c", reapScript, "dockerpool-reap", mode, execIDEnv + "=" + token},
		User:         user,
		AttachStdout: true,
		AttachStderr: true,
	})
	if err != nil {
		return fmt.Errorf("start process sweep: %w", err)
	}
	att, err := api.ContainerExecAttach(ctx, created.ID, container.ExecAttachOptions{})
	if err != nil {
		return fmt.Errorf("start process sweep: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { att.Close() })
	var out bytes.Buffer
	_, _ = stdcopy.StdCopy(&out, &out, io.LimitReader(att.Reader, 4096))
	stop()
	att.Close()
	if ctx.Err() != nil {
		return fmt.Errorf("process sweep: %w", ctx.Err())
	}
	code, err := c.exitCode(ctx, created.ID)
	switch {
	case err != nil:
		return fmt.Errorf("process sweep: %w", err)
	case code != 0:
		return fmt.Errorf("process sweep failed (exit %d): %s", code, strings.TrimSpace(out.String()))
	case onlyToken:
		return errors.New("other commands were running: the kill covers only processes that kept the command's environment")
	}
	return nil
}

// reapScript kills every process of the container except PID 1, the main
// process under an init, and itself ("all"), or those whose environment holds
// the token given as $2 ("token"); then it lists the processes again, until
// none is left (exit 0) or it gives up (exit 3). It forks nothing in "all"
// mode but sleep, so what it finds is not its own. Zombies are dead already
// and not counted.
const reapScript = `mode=$1 token=$2 self=$$ main=
read -r comm < /proc/1/comm
case $comm in
docker-init|tini|catatonit|dumb-init|init|podman-init)
  bestt=
  for d in /proc/[0-9]*; do
    read -r st < "$d/stat" 2>/dev/null || continue
    set -- ${st##*) }
    [ "$2" = 1 ] || continue
    if [ -z "$bestt" ] || [ "${20}" -lt "$bestt" ]; then main=${d#/proc/} bestt=${20}; fi
  done;;
esac
i=0
while :; do
  left=0
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    { [ "$p" = 1 ] || [ "$p" = "$self" ] || [ "$p" = "$main" ]; } && continue
    read -r st < "$d/stat" 2>/dev/null || continue
    set -- ${st##*) }
    { [ "$1" = Z ] || [ "$2" = "$self" ]; } && continue
    if [ "$mode" = token ]; then
      grep -q "$token" "$d/environ" 2>/dev/null || continue
    fi
    kill -9 "$p" 2>/dev/null
    left=$((left+1))
  done
  [ "$left" = 0 ] && exit 0
  i=$((i+1))
  if [ "$i" -ge 60 ]; then echo "$left process(es) survive" >&2; exit 3; fi
  sleep 0.02 2>/dev/null || :
done`

// KillProcesses kills every process in the container but its main one (PID
// 1, and the first child of an init) and verifies with a process listing
// that none is left. Use it in Config.OnReturn to clear what a holder left
// running before the container is reused:
//
//	OnReturn: func(ctx context.Context, c *dockerpool.Container) error {
//		return c.KillProcesses(ctx)
//	}
//
// On the agent path the agent does it. The image needs /bin/sh otherwise.
// An error means the container cannot be vouched for.
func (c *Container) KillProcesses(ctx context.Context) error {
	if err := c.beginExec(); err != nil {
		return err
	}
	defer c.endExec()
	if c.agent != nil {
		return c.agent.reset(reapBudget, nil)
	}
	if err := c.reap("", "", false); err != nil { // as the container's user
		return fmt.Errorf("dockerpool: kill processes in container %s: %w", shortID(c.id), err)
	}
	return nil
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// limiter counts the bytes left under ExecOptions.Limit, shared by the two
// streams. Only the goroutine demultiplexing the output uses it.
type limiter struct {
	on   bool // Limit > 0
	left int  // bytes still allowed
	hit  bool
}

type limitedWriter struct {
	l *limiter
	w io.Writer
}

func (lw *limitedWriter) Write(b []byte) (int, error) {
	l := lw.l
	if !l.on {
		return lw.w.Write(b)
	}
	if len(b) <= l.left {
		l.left -= len(b)
		return lw.w.Write(b)
	}
	n, err := lw.w.Write(b[:l.left])
	l.left -= n
	l.hit = true
	if err != nil {
		return n, err
	}
	return n, ErrOutputLimitExceeded
}

// ociSniffer holds back stdout while it starts like the daemon's own message
// for a command that could not be started ("OCI runtime exec failed: ...").
// If the exec then ends with 126, the message goes to stderr and the code says
// not found (127) or not executable (126), whatever the daemon's version;
// otherwise it was the command's own output and is written out unchanged.
type ociSniffer struct {
	w       io.Writer
	started bool
	held    []byte
}

const ociPrefix = "OCI runtime exec failed"

func (s *ociSniffer) Write(b []byte) (int, error) {
	if s.held == nil && s.started {
		return s.w.Write(b)
	}
	if !s.started {
		s.started = true
		if !bytes.HasPrefix(b, []byte(ociPrefix)) && !bytes.HasPrefix([]byte(ociPrefix), b) {
			return s.w.Write(b)
		}
	}
	s.held = append(s.held, b...)
	if len(s.held) > 64<<10 { // not the daemon's message after all
		held := s.held
		s.held = nil
		if _, err := s.w.Write(held); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (s *ociSniffer) finish(code int, stderr io.Writer) (int, error) {
	if s.held == nil {
		return code, nil
	}
	held := s.held
	s.held = nil
	if code != 126 && code != 127 {
		_, err := s.w.Write(held)
		return code, err
	}
	msg := string(held)
	if strings.Contains(msg, "not found") || strings.Contains(msg, "no such file or directory") {
		code = 127
	}
	_, err := stderr.Write(held)
	if errors.Is(err, ErrOutputLimitExceeded) {
		err = nil // the message is cut, the code tells the story
	}
	return code, err
}

// readErrReader remembers a read error, to tell it apart from a write error
// on the connection (the command closing its stdin early is not a failure).
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}
