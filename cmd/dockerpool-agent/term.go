package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// Terminals. A Term frame starts an execution whose program runs on a
// pseudo-terminal the agent allocates (/dev/ptmx): the program is the leader
// of a new session (setsid), the terminal its controlling terminal and its
// standard input, output and error. The agent keeps the master side: what
// it reads there goes out as Stdout frames, within the window, and Stdin
// frames are written to it, as keystrokes. Everything else is an exec's:
// the process group (the session's, its leader's PID), the token, the kill
// and its verification, the Exit.
//
// The terminal is over when its program exits, as with Docker's exec: the
// agent reads what is left on the terminal until nothing holds it any more
// or it has been silent for ttyLinger, then closes the master, which hangs
// up what the program left holding it (SIGHUP, and EIO on the terminal).

// After a terminal's program exited, the agent reads what is left on the
// terminal until it stays silent for ttyLinger, or for ttyDrain at most (a
// job left writing on it would keep it open forever), then hangs it up.
const (
	ttyLinger = 100 * time.Millisecond
	ttyDrain  = time.Second
)

// tty is the terminal of one execution.
type tty struct {
	mu         sync.Mutex
	rows, cols uint16
	master     *os.File // nil until the terminal is open
}

// handleTerm starts the terminal a frame asks for.
func (a *agent) handleTerm(f agentproto.Frame) {
	if a.idInUse(f.ID, "terminal") {
		return
	}
	var m agentproto.TermMsg
	if err := f.Decode(&m); err != nil {
		a.log.Printf("terminal %d: %v", f.ID, err)
		go a.out.json(agentproto.Exit, f.ID, agentproto.ExitMsg{Code: -1, Error: err.Error()})
		return
	}
	msg := agentproto.ExecMsg{Argv: m.Argv, Env: m.Env, Dir: m.Dir, User: m.User, Stdin: true}
	a.startExec(f.ID, msg, &tty{rows: m.Rows, cols: m.Cols})
}

// command opens the terminal and builds the command that runs on it. The
// returned pipes hold the master as outR, a duplicate of it as inW (the
// inbox closes its own descriptor when the input ends: the terminal stays),
// and the terminal's side as outW, the child's end.
func (t *tty) command(path string, m agentproto.ExecMsg, env []string, cred *syscall.Credential) (*exec.Cmd, *pipes, *startError) {
	p, err := t.open()
	if err != nil {
		return nil, nil, &startError{code: -1, msg: fmt.Sprintf("terminal: %v", err)}
	}
	if cred != nil {
		// As login and sshd do: the user's own terminal, so that the
		// program can open it again by name (/dev/pts/N). Without the
		// privilege to, it stays the agent's, which only that costs.
		_ = p.outW.Chown(int(cred.Uid), -1)
	}
	cmd := &exec.Cmd{
		Path:   path,
		Args:   m.Argv,
		Env:    env,
		Dir:    m.Dir,
		Stdin:  p.outW,
		Stdout: p.outW,
		Stderr: p.outW,
		// Setsid makes the program a session (and process group) leader,
		// so its PID is the group an exec's kill takes; Setctty makes its
		// descriptor 0, the terminal, the session's controlling terminal.
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0, Credential: cred},
	}
	return cmd, p, nil
}

// open allocates the pseudo-terminal at the size asked last.
func (t *tty) open() (*pipes, error) {
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, err
	}
	p := &pipes{outR: master}
	fail := func(err error) (*pipes, error) {
		p.closeAll()
		return nil, err
	}
	var unlock int32
	if err := ioctl(master, syscall.TIOCSPTLCK, unsafe.Pointer(&unlock)); err != nil {
		return fail(fmt.Errorf("unlock: %w", err))
	}
	var n uint32
	if err := ioctl(master, syscall.TIOCGPTN, unsafe.Pointer(&n)); err != nil {
		return fail(fmt.Errorf("number: %w", err))
	}
	name := "/dev/pts/" + strconv.FormatUint(uint64(n), 10)
	// Opened blocking (not through Go's poller): it is the child's.
	fd, err := syscall.Open(name, syscall.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fail(fmt.Errorf("open %s: %w", name, err))
	}
	p.outW = os.NewFile(uintptr(fd), name)
	if p.inW, err = dupFile(master); err != nil {
		return fail(err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := setSize(master, t.rows, t.cols); err != nil {
		return fail(fmt.Errorf("set size: %w", err))
	}
	t.master = master
	return p, nil
}

// resize sets the terminal's size, now if it is open, else when it opens.
// The kernel sends SIGWINCH to its foreground process group.
func (t *tty) resize(a *agent, id uint32, rows, cols uint16) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.rows, t.cols = rows, cols
	if t.master == nil {
		return
	}
	if err := setSize(t.master, rows, cols); err != nil && !errors.Is(err, os.ErrClosed) {
		a.log.Printf("terminal %d: resize: %v", id, err)
	}
}

// pumpTerminal streams what the program writes to its terminal as Stdout
// frames, within the window, until nothing holds the terminal any more (EIO
// on the master) or, once the program exited, the terminal stayed silent
// for ttyLinger (or ttyDrain passed). Closing the master then hangs up what
// is left on it.
func (e *execution) pumpTerminal(master *os.File, exited <-chan struct{}, wg *sync.WaitGroup) {
	defer wg.Done()
	defer master.Close()
	stopped := afterClose(exited, func() { _ = master.SetReadDeadline(time.Now().Add(ttyLinger)) })
	defer stopped()
	buf := make([]byte, chunkSize)
	dropping := false
	var drained time.Time // when the drain after the exit ends at the latest
	for {
		select {
		case <-exited:
			now := time.Now()
			if drained.IsZero() {
				drained = now.Add(ttyDrain)
			}
			deadline := now.Add(ttyLinger)
			if deadline.After(drained) {
				deadline = drained
			}
			_ = master.SetReadDeadline(deadline)
		default:
		}
		n, err := master.Read(buf)
		if n > 0 && !dropping {
			dropping = !e.a.out.send(agentproto.Stdout, e.id, buf[:n], e.out, e.killCh)
		}
		if err != nil {
			return // EIO: the terminal is closed on the other side; or the linger passed
		}
	}
}

// afterClose calls f once ch is closed, on a goroutine, unless the returned
// stop is called first; stop waits for f to have run or been dropped.
func afterClose(ch <-chan struct{}, f func()) (stop func()) {
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		select {
		case <-ch:
			f()
		case <-quit:
		}
	}()
	return func() {
		close(quit)
		<-done
	}
}

// setSize sets a terminal's size (TIOCSWINSZ) through its master.
func setSize(master *os.File, rows, cols uint16) error {
	ws := struct{ row, col, xpixel, ypixel uint16 }{rows, cols, 0, 0}
	return ioctl(master, syscall.TIOCSWINSZ, unsafe.Pointer(&ws))
}

// ioctl makes an ioctl on f that passes a pointer.
func ioctl(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = syscall.Syscall(syscall.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// dupFile duplicates f's descriptor, close-on-exec: no command started
// meanwhile may inherit a terminal's master (it would keep the terminal
// from hanging up).
func dupFile(f *os.File) (*os.File, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var nfd uintptr
	var errno syscall.Errno
	if err := rc.Control(func(fd uintptr) {
		nfd, _, errno = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if errno != 0 {
		return nil, fmt.Errorf("dup: %w", errno)
	}
	return os.NewFile(nfd, f.Name()), nil
}
