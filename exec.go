package dockerpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"syscall"
	"time"

	"github.com/docker/docker/client"
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

	// Limits that hold for every process the command starts, on the agent
	// path (the Docker exec path refuses them with ErrLimitUnsupported, before
	// running anything). Zero: no limit.
	//
	// CPUTime bounds the CPU time (user and system) of all the command's
	// processes together: past it the command is killed (and the kill
	// verified), and the error satisfies errors.Is(err, ErrCPUTimeExceeded).
	// It is checked every 20ms. MaxFileSize (bytes) is the largest file any
	// of its processes may write (RLIMIT_FSIZE: a write past it fails with
	// EFBIG, or kills the process with SIGXFSZ); MaxOpenFiles the most file
	// descriptors each may have open (RLIMIT_NOFILE). Those two cost an extra
	// execve of the agent (about a millisecond) to set before the command's
	// first instruction.
	CPUTime      time.Duration
	MaxFileSize  int64
	MaxOpenFiles int

	// Report, when set, is filled in when ExecStream returns, with an error
	// too: how the command ended and what it used. (ExecStd returns the same
	// in its ExecResult.)
	Report *ExecReport
}

// Usage is what a command used.
type Usage struct {
	Wall   time.Duration // start to exit
	User   time.Duration // CPU in user mode, all processes the command started
	System time.Duration // CPU in kernel mode, same processes
	MaxRSS int64         // bytes: the largest resident set of any one of them
}

// ExecReport is how a command ended and what it used.
//
// On the agent path every field is filled in: the agent is the parent (and
// subreaper) of every process a command starts, so User, System and MaxRSS
// cover them all, those that left the command's process group or session and
// were reparented to it included (from wait4's rusage of each one that ended,
// and /proc for those still running when the CPU time is checked). On the
// Docker exec path only Wall is measured (Docker reports nothing of an
// exec's processes) and Signal is 0: a command killed by a signal and one
// that exited with 128+n look the same there.
type ExecReport struct {
	// ExitCode is as in ExecResult: -1 when the command did not finish.
	ExitCode int
	// Signal is the signal that ended the command's main process (ExitCode
	// is then 128+Signal, as a shell reports it), 0 when it exited.
	Signal syscall.Signal
	Usage  Usage
}

// ExecResult is the outcome of a command run with Exec or ExecStd.
type ExecResult struct {
	// ExitCode is the command's exit status. 126 means the command could not
	// be executed, 127 that it was not found in the image. It is -1 when the
	// command did not finish (an error is returned then).
	ExitCode int
	// Signal and Usage: see ExecReport.
	Signal syscall.Signal
	Usage  Usage
	// Stdout and Stderr hold what the command wrote.
	Stdout []byte
	Stderr []byte
}

// ErrEmptyCommand is returned by Exec for an empty command.
var ErrEmptyCommand = errors.New("dockerpool: empty command")

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
	var rep ExecReport
	opts.Report = &rep
	code, err := c.ExecStream(ctx, cmd, &stdout, &stderr, opts)
	return ExecResult{ExitCode: code, Signal: rep.Signal, Usage: rep.Usage, Stdout: stdout.Bytes(), Stderr: stderr.Bytes()}, err
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
// or that escaped, the container gone, other commands running), the handle
// is marked tainted (Container.Tainted) and Return removes the container
// instead of reusing it. Either way, nothing of the command runs in a
// container that the pool hands out again. (On the agent path the agent
// kills and verifies; see AgentConfig.)
//
// The command is over when its output streams close. If they close while the
// command still runs (the connection was cut, or the command closed its
// stdout and stderr and went on), ExecStream cannot vouch for the output: it
// returns an error and kills the command as after a timeout.
//
// A Stdin that blocks in Read after the command ended keeps one goroutine of
// the pool until that Read returns; ExecStream does not wait for it.
//
// Several commands may run on one container at once; each gets its own
// Docker exec.
func (c *Container) ExecStream(ctx context.Context, cmd []string, stdout, stderr io.Writer, opts ExecOptions) (int, error) {
	if len(cmd) == 0 {
		return -1, ErrEmptyCommand
	}
	if err := checkExecOptions(opts, c.runner); err != nil {
		return -1, err
	}
	tel := c.pool.tel
	ctx, m := tel.beginExec(ctx, c, cmd[0])
	code, err := c.execStream(ctx, cmd, stdout, stderr, opts)
	m.end(ctx, tel.execTime, tel.execOptsOf(c), err)
	return code, err
}

// execStream is ExecStream's frame, inside its span.
func (c *Container) execStream(ctx context.Context, cmd []string, stdout, stderr io.Writer, opts ExecOptions) (int, error) {
	op, err := c.begin(ctx, fmt.Sprintf("exec %q", cmd[0]), opts.Timeout)
	if err != nil {
		return -1, err
	}
	defer op.end()
	lim := newLimiter(opts.Limit)
	spec := &execSpec{
		cmd: cmd, env: opts.Env, dir: opts.WorkingDir, user: opts.User, stdin: opts.Stdin,
		stdout: lim.wrap(orDiscard(stdout)), stderr: lim.wrap(orDiscard(stderr)),
		timeout: opts.Timeout, limit: opts.Limit, op: op,
		cpuTime: opts.CPUTime, maxFileSize: opts.MaxFileSize, maxOpenFiles: opts.MaxOpenFiles,
	}
	start, oomBefore := time.Now(), c.state.Load()&handleOOM != 0
	o := c.runner.exec(op.ctx, c, spec)
	if o.usage.Wall == 0 {
		o.usage.Wall = time.Since(start) // the runner could not measure it closer
	}
	if lim.hit {
		o.cause = ErrOutputLimitExceeded
	}
	c.noticeOOM(&o, oomBefore)
	err = op.finish(o, opts.Limit)
	code := o.code
	if err != nil {
		code = -1
	}
	if opts.Report != nil {
		*opts.Report = ExecReport{ExitCode: code, Signal: o.signal, Usage: o.usage}
	}
	return code, err
}

// checkExecOptions refuses options that are wrong, or that the runner
// cannot enforce: never a limit silently ignored.
func checkExecOptions(opts ExecOptions, r runner) error {
	if opts.Limit < 0 || opts.Timeout < 0 || opts.CPUTime < 0 || opts.MaxFileSize < 0 || opts.MaxOpenFiles < 0 {
		return fmt.Errorf("%w: negative Limit, Timeout, CPUTime, MaxFileSize or MaxOpenFiles", ErrInvalidConfig)
	}
	if (opts.CPUTime > 0 || opts.MaxFileSize > 0 || opts.MaxOpenFiles > 0) && !r.enforcesLimits() {
		return fmt.Errorf("%w: CPUTime, MaxFileSize and MaxOpenFiles need the agent path (Config.Agent): Docker exec cannot follow a command's processes", ErrLimitUnsupported)
	}
	return nil
}

func orDiscard(w io.Writer) io.Writer {
	if w == nil {
		return io.Discard
	}
	return w
}

// operation is the frame of one operation on a handle (a command; later a
// file transfer): it is registered on the handle, bounded by its timeout,
// marks the container used before anything runs in it, and turns the
// runner's outcome into the error the caller gets.
type operation struct {
	c       *Container
	what    string // "exec \"sh\" in container 0123456789ab", for errors
	ctx     context.Context
	cancel  context.CancelFunc
	timeout time.Duration
	marked  chan error // the used mark's rename, when one runs
	partial bool       // killed while other operations ran on the handle
}

// begin starts an operation, or returns why it may not run.
func (c *Container) begin(ctx context.Context, what string, timeout time.Duration) (*operation, error) {
	if err := c.beginOp(); err != nil {
		return nil, err
	}
	op := &operation{c: c, what: what + " in container " + shortID(c.id) + c.runner.name(), timeout: timeout}
	select {
	case <-c.pool.done:
		c.endOp()
		return nil, ErrPoolShutdown
	default:
	}
	// The operation ends with the handle's life (the container died or
	// was revoked), the caller's ctx or the timeout, whichever comes first.
	lctx, lcancel := context.WithCancelCause(ctx)
	life := c.lifeContext()
	stop := context.AfterFunc(life, func() { lcancel(context.Cause(life)) })
	op.ctx, op.cancel = lctx, func() { stop(); lcancel(nil) }
	if timeout > 0 {
		tctx, tcancel := context.WithTimeoutCause(lctx, timeout, ErrExecTimeout)
		op.ctx, op.cancel = tctx, func() { tcancel(); stop(); lcancel(nil) }
	}
	if err := op.ctx.Err(); err != nil {
		op.end()
		return nil, fmt.Errorf("dockerpool: %s: %w", op.what, context.Cause(op.ctx))
	}
	// The used mark must be on the container before anything runs in it;
	// the rename overlaps with whatever the runner does first.
	if c.needsMark() {
		op.marked = make(chan error, 1)
		go func() { op.marked <- c.markUsed(op.ctx) }()
	}
	return op, nil
}

// ready waits until the container carries the used mark. A runner calls it
// before anything can run in the container.
func (op *operation) ready() error {
	if op.marked == nil {
		return nil
	}
	err := <-op.marked
	op.marked = nil
	return err
}

// killAll tells a runner that must kill the command whether it may kill
// every process of the container (nothing else runs on the handle) or only
// those it can attribute to this command, which cannot be proven complete.
func (op *operation) killAll() bool {
	if op.c.running() > 1 {
		op.partial = true
		return false
	}
	return true
}

func (op *operation) end() {
	op.cancel() // first: a mark still on its way gives up (nothing ran)
	if op.marked != nil {
		<-op.marked
	}
	op.c.endOp()
}

// finish maps the runner's outcome to the caller's error, and taints the
// handle when what the command left cannot be vouched for. It returns nil
// when the command ended by itself.
func (op *operation) finish(o outcome, limit int) error {
	err, dead := op.describe(o, limit)
	if errors.Is(err, ErrHostDown) && !errors.Is(err, ErrContainerDead) {
		// The host's calls were cut before the owner marked the handle.
		err, dead = fmt.Errorf("%w: container %s: %w", ErrContainerDead, shortID(op.c.id), err), true
	}
	left := o.left
	if op.partial && o.cause != nil {
		left = errors.Join(left, errPartialKill)
	}
	if left == nil {
		return err
	}
	op.c.state.Or(handleTainted)
	if dead {
		return err // the container is gone: nothing to vouch for
	}
	if err == nil {
		err = fmt.Errorf("dockerpool: %s", op.what)
	}
	return fmt.Errorf("%w (container tainted, it will be removed on Return: %v)", err, left)
}

// describe says what went wrong, if anything, and whether the container
// turned out to be dead.
func (op *operation) describe(o outcome, limit int) (error, bool) {
	switch {
	case o.err != nil:
		// A container that is gone or stopped is marked dead on the handle,
		// so that later operations fail at once and Return discards it.
		if o.suspect {
			if why := op.c.pool.checkContainer(op.c.id); errors.Is(why, ErrContainerDead) {
				op.c.setFlags(handleDead)
				// Under gVisor an OOM kill takes the whole sandbox, the
				// agent's session with it, and Docker may say why a moment
				// later (seen in CI on a busy machine).
				return fmt.Errorf("dockerpool: %s: %w: %w", op.what, op.c.whyDead(why), o.err), true
			}
		}
		// A daemon killed under the command cuts the call itself
		// ("connection reset by peer") before the group's prober notices:
		// the host's verdict, not the cut, is the answer. (Not for a
		// deadline: a transfer's call that ran into the caller's own
		// deadline ends with it here.)
		if connectionLost(o.err) {
			if why := op.c.hostVerdict(o.err); why != nil {
				return fmt.Errorf("dockerpool: %s: %w: %w", op.what, why, o.err), true
			}
		}
		return fmt.Errorf("dockerpool: %s: %w", op.what, o.err), false
	case errors.Is(o.cause, ErrContainerDead):
		return fmt.Errorf("dockerpool: %s: %w", op.what, op.c.whyDead(o.cause)), true
	case errors.Is(o.cause, ErrOutputLimitExceeded):
		return fmt.Errorf("%w: %s wrote more than %d bytes", ErrOutputLimitExceeded, op.what, limit), false
	case errors.Is(o.cause, ErrExecTimeout):
		return fmt.Errorf("%w: %s after %v", ErrExecTimeout, op.what, op.timeout), false
	case errors.Is(o.cause, ErrOutOfMemory):
		return fmt.Errorf("%w: %s: the kernel's OOM killer killed a process of it (the container's memory limit)", ErrOutOfMemory, op.what), false
	case errors.Is(o.cause, ErrCPUTimeExceeded):
		return fmt.Errorf("%w: %s used %v of CPU (limit %v)", ErrCPUTimeExceeded, op.what, (o.usage.User + o.usage.System).Round(time.Millisecond), o.limitCPU), false
	case o.cause != nil:
		if why := op.c.hostVerdict(o.cause); why != nil {
			return fmt.Errorf("dockerpool: %s: %w: %w", op.what, why, o.cause), true
		}
		return fmt.Errorf("dockerpool: %s: %w", op.what, o.cause), false
	}
	return nil, false
}

// hostVerdict, for an operation cut because its Group host stopped
// answering (a killed daemon refuses connections before the group's
// prober notices; a stopped one lets a call run into its deadline, as the
// exit code's inspect, which outlives the operation's ctx, did in a test),
// waits for the group's verdict: the handle's death with the host's,
// ErrContainerDead wrapping ErrHostDown. nil when the pool is on no Group
// host, the error is neither a lost connection nor a deadline, or the host
// stays in placement.
func (c *Container) hostVerdict(cause error) error {
	wait := c.pool.cfg.hostVerdict
	if wait <= 0 || !connectionLost(cause) && !errors.Is(cause, context.DeadlineExceeded) {
		return nil
	}
	life := c.lifeContext()
	t := time.NewTimer(wait + 500*time.Millisecond)
	defer t.Stop()
	select {
	case <-life.Done():
		if why := context.Cause(life); errors.Is(why, ErrHostDown) {
			return why
		}
	case <-t.C:
	}
	return nil
}

// connectionLost says whether err is a daemon's connection refused or cut
// (a daemon killed, or restarting), rather than its answer.
func connectionLost(err error) bool {
	return client.IsErrConnectionFailed(err) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET)
}

// whyDead says why the container died under a running operation: the
// owner's word (cause), or an OOM kill whose "oom" event or inspect flag
// came after the "die" (under gVisor the OOM killer takes the whole
// sandbox), waited for at most oomWait.
func (c *Container) whyDead(cause error) error {
	deadline := time.Now().Add(oomWait)
	for !errors.Is(cause, ErrOutOfMemory) && !errors.Is(cause, ErrHostDown) {
		if c.state.Load()&handleOOM != 0 {
			return fmt.Errorf("%w: container %s died: %w", ErrContainerDead, shortID(c.id), ErrOutOfMemory)
		}
		if why := c.pool.checkContainer(c.id); errors.Is(why, ErrOutOfMemory) {
			return why
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // the flags come from the owner, the inspect from Docker: nothing to block on
	}
	return cause
}

// oomWait bounds the wait, after a Docker exec that ended with 137, for the
// daemon's "oom" event that tells an OOM kill from any other SIGKILL.
const oomWait = 500 * time.Millisecond

// noticeOOM turns a command one of whose processes the OOM killer killed
// into ErrOutOfMemory, and marks the handle so that Return removes the
// container. The agent reads the container's cgroup and says so. On the
// Docker exec path the daemon's "oom" event sets the handle's OOM flag
// (through the owner): a flag that came up during the command counts, and a
// command that ended with 137 waits briefly for the event, which can lag.
func (c *Container) noticeOOM(o *outcome, before bool) {
	if !c.runner.enforcesLimits() && !before {
		if o.err == nil && o.cause == nil && o.code == 137 {
			deadline := time.Now().Add(oomWait)
			for c.state.Load()&handleOOM == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // the flag comes from the owner: nothing to block on
			}
		}
		o.oom = c.state.Load()&handleOOM != 0
	}
	if o.oom {
		c.state.Or(handleOOM)
		if o.err == nil && (o.cause == nil || errors.Is(o.cause, context.Canceled)) {
			o.cause = ErrOutOfMemory
		}
	}
}

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
	if err := c.beginOp(); err != nil {
		return err
	}
	defer c.endOp()
	if err := c.runner.killAll(ctx, c); err != nil {
		return fmt.Errorf("dockerpool: kill processes in container %s%s: %w", shortID(c.id), c.runner.name(), err)
	}
	return nil
}
