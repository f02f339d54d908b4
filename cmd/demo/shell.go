package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dockerpool/dockerpool"
)

// Default size of the shell's terminal when the demo's input is not a
// terminal (a pipe, in the tests).
const (
	defaultRows = 24
	defaultCols = 80
)

// console is the user's terminal: the shell puts it in raw mode, so that
// every key goes to the container as it is typed (Ctrl-C included), and
// follows its size.
type console interface {
	raw() (restore func(), err error)
	size() (rows, cols int, err error)
}

// ttyConsole is the console on a terminal's descriptor.
type ttyConsole struct{ fd int }

// raw switches the terminal to raw mode, as cfmakeraw does: no echo, no
// line editing, no signals from keys, no output processing. restore puts
// the mode back as it was.
func (c ttyConsole) raw() (func(), error) {
	old, err := unix.IoctlGetTermios(c.fd, unix.TCGETS)
	if err != nil {
		return nil, fmt.Errorf("read the terminal's mode: %w", err)
	}
	raw := *old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN], raw.Cc[unix.VTIME] = 1, 0
	if err := unix.IoctlSetTermios(c.fd, unix.TCSETS, &raw); err != nil {
		return nil, fmt.Errorf("set raw mode: %w", err)
	}
	return func() { _ = unix.IoctlSetTermios(c.fd, unix.TCSETS, old) }, nil
}

func (c ttyConsole) size() (int, int, error) {
	ws, err := unix.IoctlGetWinsize(c.fd, unix.TIOCGWINSZ)
	if err != nil {
		return 0, 0, err
	}
	return int(ws.Row), int(ws.Col), nil
}

// cmdShell runs sh on a terminal in a warm container (acquired for it and
// returned after), or in held container n, and connects it to the user's
// terminal until the shell exits.
func (s *session) cmdShell(ctx context.Context, args []string) error {
	if len(args) > 1 {
		return errUsage
	}
	c, where, done, err := s.shellContainer(ctx, args)
	if err != nil {
		return err
	}
	code, err := s.shell(ctx, c, where)
	if rerr := done(); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("shell: %w", err)
	}
	fmt.Fprintf(s.out, "shell exited with code %d; back in the demo\n", code)
	return nil
}

// shellContainer finds the shell's container: held container n, or one
// acquired now, which done returns.
func (s *session) shellContainer(ctx context.Context, args []string) (*dockerpool.Container, string, func() error, error) {
	if len(args) == 1 {
		n, h, err := s.lookup(args[0])
		if err != nil {
			return nil, "", nil, err
		}
		return h.c, fmt.Sprintf("#%d (container %s)", n, shortID(h.c.ID())), func() error { return nil }, nil
	}
	actx, cancel := context.WithTimeout(ctx, acquireTimeout)
	defer cancel()
	c, err := s.pool.Acquire(actx)
	if err != nil {
		return nil, "", nil, fmt.Errorf("acquire: %w", err)
	}
	done := func() error {
		if err := s.pool.Return(context.WithoutCancel(ctx), c); err != nil {
			return fmt.Errorf("return: %w", err)
		}
		return nil
	}
	return c, "warm container " + shortID(c.ID()), done, nil
}

// shell runs the shell and moves the keys, the screen and the window size
// until it exits; it returns the shell's exit code.
func (s *session) shell(ctx context.Context, c *dockerpool.Container, where string) (int, error) {
	rows, cols := defaultRows, defaultCols
	if s.console != nil {
		if r, c, err := s.console.size(); err == nil && r > 0 && c > 0 {
			rows, cols = r, c
		}
	}
	start := time.Now()
	term, err := c.Terminal(ctx, []string{"sh"}, dockerpool.TerminalOptions{Rows: rows, Cols: cols})
	if err != nil {
		return -1, err
	}
	defer term.Close()
	fmt.Fprintf(s.out, "shell in %s, %dx%d, started in %s; exit or Ctrl-D to come back\n", where, cols, rows, ms(time.Since(start)))
	if s.console != nil {
		restore, err := s.console.raw()
		if err != nil {
			return -1, err
		}
		defer restore() // before the deferred Close and what cmdShell prints
	}
	stopSize := s.followSize(ctx, term)
	defer stopSize()
	screen := make(chan struct{})
	go func() {
		defer close(screen)
		_, _ = io.Copy(s.out, term)
	}()
	exited := make(chan struct{})
	var code int
	var waitErr error
	go func() {
		code, waitErr = term.Wait()
		close(exited)
	}()
	if s.in.forward(term, exited) {
		// The end of our input: the shell's ends too.
		_ = term.Close()
	}
	<-exited
	<-screen
	if errors.Is(waitErr, dockerpool.ErrTerminalClosed) {
		return code, errors.New("the input ended")
	}
	return code, waitErr
}

// followSize passes the console's size on to the terminal whenever it
// changes (SIGWINCH), until stop.
func (s *session) followSize(ctx context.Context, term *dockerpool.Terminal) (stop func()) {
	if s.console == nil {
		return func() {}
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, unix.SIGWINCH)
	winch <- unix.SIGWINCH // a change before Notify would be missed: look once
	quit, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		for {
			select {
			case <-winch:
				if rows, cols, err := s.console.size(); err == nil && rows > 0 && cols > 0 {
					_ = term.Resize(ctx, rows, cols)
				}
			case <-quit:
				return
			}
		}
	}()
	return func() {
		signal.Stop(winch)
		close(quit)
		<-finished
	}
}
