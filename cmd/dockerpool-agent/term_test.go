package main

import (
	"bytes"
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// Terminals: a Term frame runs the program on a pseudo-terminal of the
// agent's, its session leader.

// startTerm sends a Term and returns its id.
func (c *client) startTerm(m agentproto.TermMsg) uint32 {
	id := c.id()
	c.sendJSON(agentproto.Term, id, m)
	return id
}

// typeIn sends keystrokes to a terminal.
func (c *client) typeIn(id uint32, s string) { c.sendData(id, []byte(s)) }

// screen collects a terminal's output, giving credit back as it reads.
type screen struct {
	c    *client
	id   uint32
	out  []byte
	exit *agentproto.ExitMsg
}

// until reads the terminal's output until it holds s (after what was read
// before), failing the test at its Exit or after frameWait.
func (s *screen) until(want string) {
	s.c.t.Helper()
	from := len(s.out)
	for !bytes.Contains(s.out[from:], []byte(want)) {
		if s.exit != nil {
			s.c.t.Fatalf("terminal %d exited (%+v) before writing %q; it wrote %q", s.id, *s.exit, want, s.out[from:])
		}
		s.read()
	}
}

// read takes one frame of the terminal.
func (s *screen) read() {
	s.c.t.Helper()
	f := s.c.next(s.id)
	switch f.Type {
	case agentproto.Stdout:
		s.out = append(s.out, f.Payload...)
		s.c.grant(s.id, len(f.Payload))
	case agentproto.Exit:
		var x agentproto.ExitMsg
		if err := f.Decode(&x); err != nil {
			s.c.t.Fatal(err)
		}
		s.exit = &x
	default:
		s.c.t.Fatalf("terminal %d: unexpected frame %q", s.id, byte(f.Type))
	}
}

// end reads until the Exit and returns it.
func (s *screen) end() agentproto.ExitMsg {
	s.c.t.Helper()
	for s.exit == nil {
		s.read()
	}
	return *s.exit
}

func TestTerminalRunsTheProgramOnATerminalOfTheGivenSize(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"sh"}, Rows: 24, Cols: 80, Env: []string{"PS1=$ "}})
	s := &screen{c: c, id: id}
	c.typeIn(id, "stty size\n")
	s.until("24 80\r\n")
	// Resized: the kernel tells the program (SIGWINCH), stty sees the size.
	c.sendJSON(agentproto.Resize, id, agentproto.ResizeMsg{Rows: 31, Cols: 101})
	c.typeIn(id, "stty size\n")
	s.until("31 101\r\n")
	// Its own session's leader, with the terminal as controlling terminal
	// (tty_nr, field 7 of stat, is not 0), TERM set as Docker sets it.
	c.typeIn(id, `echo "pid=$$ stat=$(cut -d' ' -f6,7 /proc/$$/stat) term=$TERM"; tty`+"\n")
	s.until("/dev/pts/")
	line := string(s.out[bytes.LastIndex(s.out, []byte("pid=")):])
	var pid, sid, ttyNr int
	var term string
	line = strings.NewReplacer("pid=", "", "stat=", "", "term=", "").Replace(line)
	if _, err := fmt.Sscan(line, &pid, &sid, &ttyNr, &term); err != nil || pid != sid || ttyNr == 0 || term != "xterm" {
		t.Errorf("pid %d, session %d, tty_nr %d, TERM %q (%v) from %q", pid, sid, ttyNr, term, err, line)
	}
	c.typeIn(id, "exit 3\n")
	if x := how(s.end()); x.Code != 3 || x.Killed || x.Error != "" {
		t.Errorf("exit %+v", x)
	}
	c.ping() // the agent is well and frames for the ended id are dropped
	c.typeIn(id, "echo after the end\n")
	c.sendJSON(agentproto.Resize, id, agentproto.ResizeMsg{Rows: 1, Cols: 1})
	c.ping()
	if n := c.pending(id); n != 0 {
		t.Errorf("%d frames after the Exit", n)
	}
}

func TestTerminalEchoesKeystrokesAndPassesControlCharacters(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"cat"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	c.typeIn(id, "hello\r")
	s.until("hello\r\nhello\r\n") // the terminal's echo, then cat's line
	// Ctrl-C: the line discipline turns it into SIGINT for cat.
	c.typeIn(id, "\x03")
	x := how(s.end())
	if x.Code != 130 || x.Signal != int(syscall.SIGINT) {
		t.Errorf("exit %+v, want 130 by SIGINT", x)
	}
}

func TestTerminalOfAProgramThatDoesNotExistShowsWhyAnd127(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"no-such-program-dockerpool"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	x := s.end()
	if x.Code != 127 || x.StartError == "" || !strings.Contains(string(s.out), "executable file not found") {
		t.Errorf("exit %+v, output %q", x, s.out)
	}
}

func TestTerminalKillTakesTheProgramAndItsJobs(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"sh"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	// A job in its own group (set -m), one in a new session, one that
	// ignores the hangup.
	c.typeIn(id, "set -m; sleep 7201 & setsid sleep 7202 & (trap '' HUP; exec sleep 7203) & echo jobs-started\n")
	s.until("jobs-started\r\n")
	if !eventually(frameWait, func() bool {
		return len(live("sleep", "7201"))+len(live("sleep", "7202"))+len(live("sleep", "7203")) == 3
	}) {
		t.Fatal("the jobs did not start")
	}
	c.send(agentproto.Kill, id, nil)
	x := how(s.end())
	if !x.Killed || x.Code != -1 || x.Survivors != 0 {
		t.Errorf("exit %+v", x)
	}
	for _, n := range []string{"7201", "7202", "7203"} {
		assertGone(t, "sleep", n)
	}
}

func TestTerminalEndsWhenItsProgramExitsAndHangsUpWhatItLeft(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	// The job ignores SIGHUP and holds the terminal: the terminal still
	// ends with its program (as Docker's exec does), and the job is left,
	// as an exec's leftovers are.
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"sh", "-c", "(trap '' HUP; echo job-ready; exec sleep 7204) & read line"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	s.until("job-ready")
	start := time.Now()
	c.typeIn(id, "\r") // the program exits
	x := how(s.end())
	took := time.Since(start)
	t.Logf("Exit %v after the program was told to exit (linger %v)", took, ttyLinger)
	if x.Code != 0 || x.Killed {
		t.Errorf("exit %+v, output %q", x, s.out)
	}
	if took > 5*time.Second {
		t.Errorf("the Exit came %v after the program exited", took)
	}
	pids := live("sleep", "7204")
	if len(pids) != 1 {
		t.Fatalf("the job: %v", pids)
	}
	_ = syscall.Kill(pids[0], syscall.SIGKILL)
}

func TestTerminalOutputStaysWithinTheWindowWithoutStallingOthers(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"yes", "terminal"}, Rows: 24, Cols: 80})
	// No credit given back: the agent sends a window and stops.
	got := 0
	for got < agentproto.Window {
		f := c.next(id)
		if f.Type != agentproto.Stdout {
			t.Fatalf("frame %q", byte(f.Type))
		}
		got += len(f.Payload)
	}
	// Another command on the same agent runs meanwhile.
	if r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "beside"}}, nil); string(r.stdout) != "beside\n" {
		t.Errorf("beside: %q %+v", r.stdout, r.exit)
	}
	c.ping()
	if got != agentproto.Window || c.pending(id) != 0 {
		t.Errorf("sent %d bytes (+%d frames) without credit, window %d", got, c.pending(id), agentproto.Window)
	}
	c.grant(id, got) // more flows
	if f := c.next(id); f.Type != agentproto.Stdout {
		t.Errorf("after the grant: %q", byte(f.Type))
	}
	c.send(agentproto.Kill, id, nil)
	s := &screen{c: c, id: id}
	if x := s.end(); !x.Killed || x.Survivors != 0 {
		t.Errorf("exit %+v", x)
	}
}

func TestTerminalKeystrokeEchoRoundTrip(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"cat"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	c.typeIn(id, "ready\r")
	s.until("ready\r\nready\r\n")
	const n = 300
	rtt := make([]time.Duration, 0, n)
	for i := range n {
		b := string(rune('a' + i%26))
		start := time.Now()
		c.typeIn(id, b)
		s.until(b)
		rtt = append(rtt, time.Since(start))
	}
	slices.Sort(rtt)
	t.Logf("agent alone, echo of a keystroke through a terminal: p50 %v, p99 %v, max %v", rtt[n/2], rtt[n*99/100], rtt[n-1])
	c.send(agentproto.Kill, id, nil)
	s.end()
}

func TestTerminalEndsSoonAfterItsProgramEvenWithAJobLeftWritingOnIt(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	// The job ignores the hangup and writes on and on: the terminal must
	// not stay open for it.
	id := c.startTerm(agentproto.TermMsg{Argv: []string{"sh", "-c", "(trap '' HUP; echo job-ready; exec yes job-output) & read line"}, Rows: 24, Cols: 80})
	s := &screen{c: c, id: id}
	s.until("job-output")
	start := time.Now()
	c.typeIn(id, "\r")
	x := how(s.end())
	took := time.Since(start)
	t.Logf("Exit %v after the program was told to exit (drain %v at most)", took, ttyDrain)
	if x.Code != 0 || x.Killed {
		t.Errorf("exit %+v", x)
	}
	if took > ttyDrain+5*time.Second {
		t.Errorf("the Exit came %v after the program exited", took)
	}
	// Hung up, the job's writes fail: yes ends by itself.
	if !eventually(frameWait, func() bool { return len(live("yes", "job-output")) == 0 }) {
		t.Errorf("yes still writes on a hung-up terminal")
	}
}
