package dockerpool_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
)

// Terminals on the real daemon, on both paths.

// raceEnabled is set by race_test.go under -race, which slows the pool
// side of a round trip.
var raceEnabled bool

// screenWait bounds every wait for a terminal's output.
const screenWait = 20 * time.Second

// screen reads a terminal on a goroutine of its own and keeps what it
// wrote, for the test to wait for.
type screen struct {
	t       *testing.T
	mu      sync.Mutex
	out     []byte
	seen    int           // until has matched up to here
	changed chan struct{} // closed and replaced when out grows or the reader ends
	ended   chan struct{} // closed when Read failed
	err     error         // Read's error, once ended is closed
}

// openTerminal starts a terminal and a screen on it; the cleanup closes it
// and waits for the reader.
func openTerminal(t *testing.T, c *dockerpool.Container, cmd []string, opts dockerpool.TerminalOptions) (*dockerpool.Terminal, *screen) {
	t.Helper()
	term, err := c.Terminal(bg(t), cmd, opts)
	if err != nil {
		t.Fatalf("terminal: %v", err)
	}
	s := &screen{t: t, changed: make(chan struct{}), ended: make(chan struct{})}
	go s.read(term)
	t.Cleanup(func() {
		_ = term.Close()
		<-s.ended
	})
	return term, s
}

func (s *screen) read(term *dockerpool.Terminal) {
	buf := make([]byte, 4096)
	for {
		n, err := term.Read(buf)
		s.mu.Lock()
		s.out = append(s.out, buf[:n]...)
		if err != nil {
			s.err = err
			close(s.ended)
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// until waits until the terminal wrote want after what until matched
// before.
func (s *screen) until(want string) {
	s.t.Helper()
	deadline := time.NewTimer(screenWait)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		if i := bytes.Index(s.out[s.seen:], []byte(want)); i >= 0 {
			s.seen += i + len(want)
			s.mu.Unlock()
			return
		}
		changed, out := s.changed, string(s.out[s.seen:])
		s.mu.Unlock()
		select {
		case <-changed:
		case <-s.ended:
			s.t.Fatalf("the terminal's output ended (%v) before %q; after the last match it wrote %q", s.err, want, out)
		case <-deadline.C:
			s.t.Fatalf("no %q on the terminal within %v; after the last match it wrote %q", want, screenWait, out)
		}
	}
}

// end waits for the end of the output and returns Read's error.
func (s *screen) end() error {
	s.t.Helper()
	select {
	case <-s.ended:
		return s.err
	case <-time.After(screenWait):
		s.t.Fatalf("the terminal's output did not end within %v", screenWait)
		return nil
	}
}

// typeIn writes keystrokes, failing the test on an error.
func typeIn(t *testing.T, term *dockerpool.Terminal, keys string) {
	t.Helper()
	if _, err := term.Write([]byte(keys)); err != nil {
		t.Fatalf("type %q: %v", keys, err)
	}
}

// waitOf waits for the terminal's end within screenWait.
func waitOf(t *testing.T, term *dockerpool.Terminal) (int, error) {
	t.Helper()
	type result struct {
		code int
		err  error
	}
	r := make(chan result, 1)
	go func() {
		code, err := term.Wait()
		r <- result{code, err}
	}()
	select {
	case res := <-r:
		return res.code, res.err
	case <-time.After(screenWait):
		t.Fatalf("Wait did not return within %v", screenWait)
		return 0, nil
	}
}

var size24x80 = dockerpool.TerminalOptions{Rows: 24, Cols: 80}

func TestTerminalHasItsSizeFollowsResizeAndReturnsTheExitCode(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		opts := size24x80
		opts.Env = []string{"GREETING=hello"}
		term, s := openTerminal(t, c, []string{"sh"}, opts)
		typeIn(t, term, "stty size\r")
		s.until("24 80\r\n")
		is.NoErr(term.Resize(bg(t), 30, 100))
		typeIn(t, term, "stty size\r")
		s.until("30 100\r\n")
		// A terminal of its own, TERM set, the environment passed. (What
		// is typed is echoed: the output is told apart by what the shell
		// makes of it.)
		typeIn(t, term, "tty; echo \"$TERM $GREETING $((40+2))\"\r")
		s.until("/dev/pts/")
		s.until("xterm hello 42\r\n")
		typeIn(t, term, "exit 5\r")
		code, err := waitOf(t, term)
		is.NoErr(err)
		is.Equal(code, 5)
		is.Equal(s.end(), io.EOF)
		// The program ended: nothing more goes to it.
		_, err = term.Write([]byte("echo too late\r"))
		is.True(errors.Is(err, dockerpool.ErrTerminalEnded))
		is.True(errors.Is(term.Resize(bg(t), 10, 10), dockerpool.ErrTerminalEnded))
		is.NoErr(term.Close())
		is.NoErr(term.Close()) // again: the same
		_, err = term.Write([]byte("x"))
		is.True(errors.Is(err, dockerpool.ErrTerminalClosed))
		is.True(errors.Is(term.Resize(bg(t), 10, 10), dockerpool.ErrTerminalClosed))
		_, err = term.Read(make([]byte, 1))
		is.True(errors.Is(err, dockerpool.ErrTerminalClosed))
		is.True(!c.Tainted())
		res, err := c.Exec(bg(t), []string{"echo", "after"}) // the container serves on
		is.NoErr(err)
		is.Equal(string(res.Stdout), "after\n")
	})
}

func TestTerminalCloseKillsEverythingItStartedAndVerifiesIt(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		term, s := openTerminal(t, c, []string{"sh"}, size24x80)
		// A job, one in a session of its own, one that ignores the hangup.
		typeIn(t, term, "sleep 3101 & setsid sleep 3102 & (trap '' HUP; exec sleep 3103) & echo $((1+2))-started\r")
		s.until("3-started")
		eventually(t, func() bool { return len(strays(t, c, "sleep 310")) == 3 })
		is.NoErr(term.Close())
		is.Equal(strays(t, c, "sleep 310"), []string(nil))
		is.True(!c.Tainted())
		code, err := term.Wait()
		is.Equal(code, -1)
		is.True(errors.Is(err, dockerpool.ErrTerminalClosed))
		is.True(errors.Is(s.end(), dockerpool.ErrTerminalClosed))
	})
}

func TestTerminalEndsWhenCtxEndsAndKillsWhatItStarted(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		ctx, cancel := context.WithCancel(bg(t))
		defer cancel()
		term, err := c.Terminal(ctx, []string{"sh"}, size24x80)
		is.NoErr(err)
		defer term.Close()
		typeIn(t, term, "sleep 3201 & sleep 3202\r")
		eventually(t, func() bool { return len(strays(t, c, "sleep 320")) == 2 })
		cancel()
		code, err := waitOf(t, term)
		is.Equal(code, -1)
		is.True(errors.Is(err, context.Canceled))
		is.Equal(strays(t, c, "sleep 320"), []string(nil))
		is.True(!c.Tainted())
		_, err = term.Write([]byte("x"))
		is.True(errors.Is(err, dockerpool.ErrTerminalEnded))
		is.NoErr(term.Close()) // the kill was verified
	})
}

func TestTerminalBadInputIsAClearError(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		for _, size := range [][2]int{{0, 80}, {24, 0}, {0, 0}, {-1, 80}, {24, 1 << 16}} {
			_, err := c.Terminal(bg(t), []string{"sh"}, dockerpool.TerminalOptions{Rows: size[0], Cols: size[1]})
			is.True(errors.Is(err, dockerpool.ErrInvalidConfig))
		}
		_, err := c.Terminal(bg(t), nil, size24x80)
		is.True(errors.Is(err, dockerpool.ErrEmptyCommand))
		// A program that does not exist: 127 and why, on the terminal.
		term, s := openTerminal(t, c, []string{"no-such-program"}, size24x80)
		code, err := waitOf(t, term)
		is.NoErr(err)
		is.Equal(code, 127)
		is.Equal(s.end(), io.EOF)
		s.until("not found")
		// Not executable: 126.
		term, _ = openTerminal(t, c, []string{"/etc"}, size24x80)
		code, err = waitOf(t, term)
		is.NoErr(err)
		is.Equal(code, 126)
		// A size out of range on a running terminal.
		term, s = openTerminal(t, c, []string{"cat"}, size24x80)
		is.True(errors.Is(term.Resize(bg(t), 0, 10), dockerpool.ErrInvalidConfig))
		typeIn(t, term, "still\r")
		s.until("still\r\nstill\r\n") // the echo, then cat's line
		is.NoErr(term.Close())
		is.True(!c.Tainted())
	})
}

func TestTerminalReturnWhileItRunsRemovesTheContainerAndEndsIt(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		term, s := openTerminal(t, c, []string{"sh"}, size24x80)
		typeIn(t, term, "echo $((6*7))\r")
		s.until("42\r\n")
		is.NoErr(p.Return(bg(t), c))
		_, err = term.Write([]byte("echo hi\r"))
		is.True(errors.Is(err, dockerpool.ErrContainerReleased))
		is.True(errors.Is(term.Resize(bg(t), 10, 10), dockerpool.ErrContainerReleased))
		// The container's removal ends it: killed with it (SIGKILL, 137, as
		// Docker's exec reports it), or its session lost (the agent's).
		code, err := waitOf(t, term)
		t.Logf("Wait after Return: %d, %v; Read: %v", code, err, s.end())
		is.True(code == 137 && err == nil || code == -1 && err != nil)
		waitGone(t, c.ID(), 10*time.Second)
	})
}

func TestTerminalOutputNobodyReadsStallsTheProgramAloneAndStaysBounded(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		term, err := c.Terminal(bg(t), []string{"yes", "terminal output"}, size24x80)
		is.NoErr(err)
		defer term.Close()
		// Nobody reads: yes ends up waiting in its writes. Its count of
		// bytes written (a counter that announces nothing: polled) stops,
		// and says how much waits anywhere between it and Read.
		var last []int64
		eventually(t, func() bool {
			res, err := c.Exec(bg(t), []string{"sh", "-c", "grep wchar /proc/$(pidof yes)/io"})
			is.NoErr(err) // and other commands run meanwhile
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(string(res.Stdout), "wchar:")), 10, 64)
			last = append(last, n)
			k := len(last)
			return k >= 4 && n > 0 && last[k-2] == n && last[k-3] == n && last[k-4] == n
		})
		written := last[len(last)-1]
		t.Logf("yes wrote %d KiB and waits", written>>10)
		is.True(written < 8<<20) // the window, the buffers: far from unbounded
		// It flows again once read.
		buf := make([]byte, 64<<10)
		n, err := io.ReadAtLeast(term, buf, len(buf))
		is.NoErr(err)
		is.True(strings.Contains(string(buf[:n]), "terminal output\r\n"))
		is.NoErr(term.Close())
		is.Equal(strays(t, c, "yes"), []string(nil))
		is.True(!c.Tainted())
	})
}

// TestTerminalKeystrokeEchoRoundTrip measures the time from the write of a
// byte to the read of its echo from cat, on each path in turn. Not
// parallel: the figures are the machine's, not the other tests'.
func TestTerminalKeystrokeEchoRoundTrip(t *testing.T) {
	for _, path := range execPaths {
		t.Run(path.name, func(t *testing.T) {
			is := is.New(t)
			p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
			c := held(t, p)
			term, err := c.Terminal(bg(t), []string{"cat"}, size24x80)
			is.NoErr(err)
			defer term.Close()
			const n = 300
			rtt := make([]time.Duration, 0, n)
			buf := make([]byte, 256)
			for i := range n + 20 {
				key := []byte{byte('a' + i%26)}
				start := time.Now()
				_, err := term.Write(key)
				is.NoErr(err)
				got, err := term.Read(buf)
				is.NoErr(err)
				is.Equal(string(buf[:got]), string(key)) // the terminal's echo
				if i >= 20 {                             // after a warm-up
					rtt = append(rtt, time.Since(start))
				}
			}
			slices.Sort(rtt)
			p50, p99 := rtt[n/2], rtt[n*99/100]
			t.Logf("%s: keystroke echo round trip over %d keystrokes: p50 %v, p99 %v, max %v", path.name, n, p50, p99, rtt[n-1])
			if path.agent && p50 > 2*time.Millisecond && !raceEnabled {
				t.Errorf("agent path: p50 %v, want at most 2ms", p50)
			}
		})
	}
}

func TestTerminalCloseWhileAWriteWaitsForTheProgramReturnsBoth(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		// A raw terminal whose program reads nothing: what is typed piles up
		// until the writes wait.
		term, s := openTerminal(t, c, []string{"sh", "-c", "stty raw -echo; echo $((3*11)); exec sleep 3301"}, size24x80)
		s.until("33")
		var written atomic.Int64
		wrote := make(chan error, 1)
		go func() {
			chunk := bytes.Repeat([]byte("k"), 64<<10)
			for {
				if _, err := term.Write(chunk); err != nil {
					wrote <- err
					return
				}
				written.Add(int64(len(chunk)))
			}
		}()
		eventually(t, func() bool { return written.Load() >= 64<<10 }) // the writes go on, until they wait
		is.NoErr(term.Close())
		select {
		case err := <-wrote:
			t.Logf("the write returned after %d KiB: %v", written.Load()>>10, err)
			is.True(errors.Is(err, dockerpool.ErrTerminalClosed) || errors.Is(err, dockerpool.ErrTerminalEnded))
		case <-time.After(screenWait):
			t.Fatal("the write did not return after Close")
		}
		is.Equal(strays(t, c, "sleep 3301"), []string(nil))
		is.True(!c.Tainted())
	})
}

func TestTerminalRunsAsTheUserInTheDirectoryAsked(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		term, s := openTerminal(t, c, []string{"sh"}, dockerpool.TerminalOptions{Rows: 24, Cols: 80, User: "nobody", WorkingDir: "/tmp"})
		// The terminal is the user's: a program may open it again by name.
		typeIn(t, term, "echo \"uid=$(id -u) dir=$(pwd)\"; stty size < $(tty) && echo reopened-$((1+1))\r")
		s.until("uid=65534 dir=/tmp\r\n")
		s.until("24 80\r\nreopened-2\r\n")
		typeIn(t, term, "exit\r")
		code, err := waitOf(t, term)
		is.NoErr(err)
		is.Equal(code, 0)
	})
}
