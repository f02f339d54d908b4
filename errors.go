package dockerpool

import (
	"context"
	"errors"
)

// Configuration errors returned by New. Test for them with errors.Is.
var (
	// ErrPoolNameRequired means Config.Name is empty.
	ErrPoolNameRequired = errors.New("dockerpool: pool name is required")
	// ErrNetworkNameRequired means Config.Network.Name is empty.
	ErrNetworkNameRequired = errors.New("dockerpool: network name is required")
	// ErrImageRequired means Config.Image.Name is empty.
	ErrImageRequired = errors.New("dockerpool: image name is required")
	// ErrInvalidConfig wraps every other configuration mistake (a negative
	// count, MinIdle above MaxIdle, ...). The message says which field.
	ErrInvalidConfig = errors.New("dockerpool: invalid config")
	// ErrImageNotFound means the image is not on the daemon and could not be
	// pulled. The error names the image and carries the daemon's reason.
	ErrImageNotFound = errors.New("dockerpool: image not available")
	// ErrRuntimeNotFound means HostConfig.Runtime (SandboxOptions.Runtime)
	// names a runtime the daemon does not have registered. The error names
	// the runtimes it has.
	ErrRuntimeNotFound = errors.New("dockerpool: runtime not registered with the daemon")
	// ErrNetworkNotFound means the pool network does not exist and
	// Config.Network.NeedsCreate is false.
	ErrNetworkNotFound = errors.New("dockerpool: network not found")
)

// Errors of a running pool.
var (
	// ErrPoolShutdown is returned by Acquire (including callers that were
	// already waiting) once Shutdown has started, and by Return, Remove and
	// Exec once the pool has stopped.
	ErrPoolShutdown = errors.New("dockerpool: pool is shut down")
	// ErrDaemonUnavailable is returned by Acquire when no container is idle and
	// the Docker daemon is failing: the pool answers at once instead of
	// queueing the caller behind calls that cannot succeed. It wraps the last
	// error seen from the daemon.
	ErrDaemonUnavailable = errors.New("dockerpool: docker daemon unavailable")
	// ErrCrashLoop is returned by Acquire, with nothing idle, while the
	// pool's containers exit on their own right after they start: their Cmd
	// does not keep running (or crashes), so every replacement would too. It
	// wraps what the last one did ("exited with code 0 right after it
	// started"); the daemon itself is fine, and refill backs off until a
	// container stays up.
	ErrCrashLoop = errors.New("dockerpool: containers exit right after they start")
	// ErrCreateFailed is returned by Acquire when the container being made
	// for the caller could not be created or started. It wraps the daemon's
	// error.
	ErrCreateFailed = errors.New("dockerpool: create container")
	// ErrContainerReleased is returned when a Container handle is used after
	// it was returned or removed (a double Return, Exec after Return, ...).
	// Nothing is run and the pool is unchanged.
	ErrContainerReleased = errors.New("dockerpool: container was already returned or removed")
	// ErrInvalidContainer is returned by Return and Remove for a nil handle or
	// one that belongs to another pool.
	ErrInvalidContainer = errors.New("dockerpool: container does not belong to this pool")
	// ErrContainerDead is returned by Exec when the pool knows the container
	// has stopped, died or was removed behind its back. Return discards such a
	// container.
	ErrContainerDead = errors.New("dockerpool: container is not running")
)

// Errors of Exec.
var (
	// ErrOutputLimitExceeded is returned by Exec when the command wrote more
	// than ExecOptions.Limit bytes (stdout and stderr together). The result
	// holds the first Limit bytes, and the command has been stopped.
	ErrOutputLimitExceeded = errors.New("dockerpool: output limit exceeded")
	// ErrExecTimeout is returned when ExecOptions.Timeout elapsed before the
	// command finished. It wraps context.DeadlineExceeded, so
	// errors.Is(err, context.DeadlineExceeded) holds too.
	ErrExecTimeout error = execTimeoutError{}
)

// Errors of per-command limits (ExecOptions.CPUTime, MaxFileSize,
// MaxOpenFiles) and of the container's memory limit.
var (
	// ErrCPUTimeExceeded means that the command's processes used
	// ExecOptions.CPUTime together: it was killed (and the kill verified).
	ErrCPUTimeExceeded = errors.New("dockerpool: CPU time limit exceeded")
	// ErrOutOfMemory means that the kernel's OOM killer killed a process of
	// the command: the container reached its memory limit. The container is
	// not reused (Stats: ReasonOutOfMemory); ExecStd still returns the output
	// so far.
	ErrOutOfMemory = errors.New("dockerpool: out of memory")
	// ErrLimitUnsupported means a limit was asked of a path that cannot
	// enforce it (CPUTime, MaxFileSize and MaxOpenFiles need the agent path).
	// Nothing was run.
	ErrLimitUnsupported = errors.New("dockerpool: limit not supported on this path")
)

// Errors of file transfers (WriteFile, ReadFile, CopyTo, CopyFrom). System
// errors in the container come wrapped too, so errors.Is(err,
// fs.ErrNotExist), errors.Is(err, fs.ErrPermission) and errors.Is(err,
// syscall.ENOSPC) work.
var (
	// ErrFileTooLarge means that a file (ReadFile), or the content of a tree
	// (CopyFrom), is larger than the max the caller allowed. Nothing more
	// than max bytes was read: the transfer stopped at the limit.
	ErrFileTooLarge = errors.New("dockerpool: file too large")
	// ErrInvalidArchive means that the tar stream given to CopyTo is not
	// one, or has an entry that would land outside the directory (a name
	// with "..", an absolute name, a symbolic or hard link that points out of
	// it), or a device node or fifo. Entries before it were unpacked whole;
	// nothing was written outside the directory.
	ErrInvalidArchive = errors.New("dockerpool: invalid tar stream")
)

// execTimeoutError is ErrExecTimeout: its message does not repeat the one of
// context.DeadlineExceeded, which it unwraps to.
type execTimeoutError struct{}

func (execTimeoutError) Error() string   { return "dockerpool: exec timed out" }
func (execTimeoutError) Unwrap() error   { return context.DeadlineExceeded }
func (execTimeoutError) Timeout() bool   { return true }
func (execTimeoutError) Temporary() bool { return true }

// errPromiseGone is a member pool's answer to a caller a Group over hosts
// placed there for an idle container that is gone by the time it arrives
// (it died, expired, or was evicted): the group places the caller again
// (acquireOnHosts). Callers never see it.
var errPromiseGone = errors.New("dockerpool: the idle container the caller was placed for is gone")
