package main

import (
	"bytes"
	"context"
	"fmt"
	"go.uber.org/goleak"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// agentBin is the agent built once for all tests, as the pool would use it
// (CGO_ENABLED=0). DOCKERPOOL_AGENT_RACE=1 builds it with the race detector
// instead (that needs cgo), to check the agent itself.
var agentBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dockerpool-agent-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	// Readable by everybody: one test runs the agent as another user.
	_ = os.Chmod(dir, 0o755)
	agentBin = filepath.Join(dir, "dockerpool-agent")
	args := []string{"build", "-o", agentBin}
	env := append(os.Environ(), "CGO_ENABLED=0")
	if os.Getenv("DOCKERPOOL_AGENT_RACE") == "1" {
		args = append(args, "-race")
		env = append(os.Environ(), "CGO_ENABLED=1")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	cmd := exec.CommandContext(ctx, "go", append(args, ".")...)
	cmd.Env = env
	out, err := cmd.CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build the agent: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := dockerpooltest.Main(m).Run() // and the line about skipped tests, if any
	os.RemoveAll(dir)
	if code == 0 {
		// No test may leave a goroutine behind (a reader of a killed agent's
		// pipes, say).
		if err := goleak.Find(
			// Idle keep-alive connections of dockerpooltest's shared
			// Docker client (TestInContainer); they belong to net/http.
			goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
			goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
			goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.Exit(code)
}

// frameWait bounds every wait for a frame.
const frameWait = 20 * time.Second

// client is a test pool: it runs an agent with pipes and talks to it.
type client struct {
	t      testing.TB
	cmd    *exec.Cmd
	in     io.WriteCloser
	stderr lockedBuffer
	hello  agentproto.HelloMsg

	wmu sync.Mutex // one frame at a time

	mu     sync.Mutex
	queues map[uint32]chan agentproto.Frame
	// credit: what the agent lets this client send on each id (flow control).
	credit map[uint32]*agentproto.Credit
	done   chan struct{} // closed when the agent's stdout ended
	readEr error

	nextID  atomic.Uint32
	waitErr error         // the agent's exit, once exited is closed
	exited  chan struct{} // closed when the agent exited
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startAgent runs an agent, checks its hello, and stops it at the end of the
// test (SIGTERM, which kills its commands).
func startAgent(t testing.TB) *client {
	return startAgentAs(t, nil)
}

// startAgentAs runs the agent as another user.
func startAgentAs(t testing.TB, cred *syscall.Credential) *client {
	t.Helper()
	cmd := exec.Command(agentBin)
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Dir = "/"
	}
	return startClient(t, cmd)
}

// startClient runs cmd, an agent or something that runs one with its stdin
// and stdout (docker run -i).
func startClient(t testing.TB, cmd *exec.Cmd) *client {
	t.Helper()
	c := &client{t: t, cmd: cmd, queues: map[uint32]chan agentproto.Frame{}, credit: map[uint32]*agentproto.Credit{}, done: make(chan struct{}), exited: make(chan struct{})}
	c.cmd.Stderr = &c.stderr
	// The agent dies with the test binary (SIGTERM: it kills its commands
	// first), and Wait returns even if a command holds the pipes open.
	if c.cmd.SysProcAttr == nil {
		c.cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	c.cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	c.cmd.WaitDelay = 5 * time.Second
	var err error
	if c.in, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go c.read(out)
	go func() {
		c.waitErr = c.cmd.Wait()
		close(c.exited)
	}()
	t.Cleanup(c.stop)
	f := c.next(0)
	if f.Type != agentproto.Hello {
		t.Fatalf("first frame %q, want Hello", byte(f.Type))
	}
	if err := f.Decode(&c.hello); err != nil {
		t.Fatal(err)
	}
	return c
}

// stop ends the agent with SIGTERM (SIGKILL if it does not go), and shows
// its log if the test failed.
func (c *client) stop() {
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		select {
		case <-c.exited:
		case <-time.After(10 * time.Second):
			c.t.Errorf("the agent (pid %d) did not exit on SIGKILL either", c.cmd.Process.Pid)
		}
		c.t.Errorf("the agent did not exit on SIGTERM")
	}
	log := c.stderr.String()
	if strings.Contains(log, "DATA RACE") || strings.Contains(log, "panic:") {
		c.t.Errorf("the agent raced or panicked")
	}
	if c.t.Failed() {
		c.t.Logf("agent log:\n%s", log)
	}
}

func (c *client) read(r io.Reader) {
	for {
		f, err := agentproto.Read(r)
		if err != nil {
			c.mu.Lock()
			c.readEr = err
			c.mu.Unlock()
			close(c.done)
			return
		}
		if f.Type == agentproto.Grant {
			n, err := agentproto.GrantOf(f)
			if err != nil {
				c.t.Errorf("grant: %v", err)
			}
			c.creditOf(f.ID).Add(n)
			continue
		}
		c.queue(f.ID) <- f
	}
}

// creditOf returns the credit for data this client sends on id.
func (c *client) creditOf(id uint32) *agentproto.Credit {
	c.mu.Lock()
	defer c.mu.Unlock()
	cr := c.credit[id]
	if cr == nil {
		cr = agentproto.NewCredit()
		c.credit[id] = cr
	}
	return cr
}

// sendData sends data on id within the credit the agent granted.
func (c *client) sendData(id uint32, b []byte) {
	for len(b) > 0 {
		n := c.creditOf(id).Take(min(len(b), 64<<10), c.done)
		if n == 0 {
			return // the agent is gone
		}
		c.send(agentproto.Stdin, id, b[:n])
		b = b[n:]
	}
}

// grant gives the agent credit back for n bytes of output of id. A test
// may have closed the agent's stdin: the grant is lost then, as it would be.
func (c *client) grant(id uint32, n int) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = agentproto.Write(c.in, agentproto.Grant, id, agentproto.GrantPayload(n))
}

func (c *client) queue(id uint32) chan agentproto.Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[id]
	if q == nil {
		q = make(chan agentproto.Frame, 1<<14)
		c.queues[id] = q
	}
	return q
}

// id returns a fresh frame id.
func (c *client) id() uint32 { return c.nextID.Add(1) }

func (c *client) send(t agentproto.Type, id uint32, payload []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := agentproto.Write(c.in, t, id, payload); err != nil {
		c.t.Errorf("send %q: %v", byte(t), err)
	}
}

func (c *client) sendJSON(t agentproto.Type, id uint32, v any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := agentproto.WriteJSON(c.in, t, id, v); err != nil {
		c.t.Errorf("send %q: %v", byte(t), err)
	}
}

func (c *client) sendRaw(b []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if _, err := c.in.Write(b); err != nil {
		c.t.Errorf("send raw: %v", err)
	}
}

// next returns the next frame for id, failing the test after frameWait.
func (c *client) next(id uint32) agentproto.Frame {
	c.t.Helper()
	f, err := c.nextWithin(id, frameWait)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

func (c *client) nextWithin(id uint32, d time.Duration) (agentproto.Frame, error) {
	q := c.queue(id)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case f := <-q:
		return f, nil
	default:
	}
	select {
	case f := <-q:
		return f, nil
	case <-c.done:
		select {
		case f := <-q:
			return f, nil
		default:
		}
		c.mu.Lock()
		err := c.readEr
		c.mu.Unlock()
		return agentproto.Frame{}, fmt.Errorf("id %d: agent's stdout ended: %v", id, err)
	case <-t.C:
		return agentproto.Frame{}, fmt.Errorf("id %d: no frame within %v", id, d)
	}
}

// pending reports whether frames for id are queued.
func (c *client) pending(id uint32) int { return len(c.queue(id)) }

// result is what an exec produced.
type result struct {
	stdout, stderr []byte
	exit           agentproto.ExitMsg
}

// start sends an Exec and returns its id.
func (c *client) start(msg agentproto.ExecMsg) uint32 {
	id := c.id()
	c.sendJSON(agentproto.Exec, id, msg)
	return id
}

// wait collects an exec's output until its Exit.
func (c *client) wait(id uint32) result {
	c.t.Helper()
	var r result
	for {
		f := c.next(id)
		switch f.Type {
		case agentproto.Stdout:
			r.stdout = append(r.stdout, f.Payload...)
			c.grant(id, len(f.Payload))
		case agentproto.Stderr:
			r.stderr = append(r.stderr, f.Payload...)
			c.grant(id, len(f.Payload))
		case agentproto.Exit:
			if err := f.Decode(&r.exit); err != nil {
				c.t.Fatal(err)
			}
			return r
		default:
			c.t.Fatalf("id %d: unexpected frame %q", id, byte(f.Type))
		}
	}
}

// run runs a command to its end, with stdin if not nil.
func (c *client) run(msg agentproto.ExecMsg, stdin []byte) result {
	c.t.Helper()
	if stdin != nil {
		msg.Stdin = true
	}
	id := c.start(msg)
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		if stdin == nil {
			return
		}
		c.sendData(id, stdin)
		c.send(agentproto.StdinEOF, id, nil)
	}()
	r := c.wait(id)
	c.creditOf(id).Close() // the exec is over: a sender waiting for credit stops, as the pool's does
	<-sent
	return r
}

// waitFor reads frames of id until a Stdout frame holds s.
func (c *client) waitFor(id uint32, s string) {
	c.t.Helper()
	var out []byte
	for !bytes.Contains(out, []byte(s)) {
		f := c.next(id)
		if f.Type == agentproto.Exit {
			c.t.Fatalf("id %d: exited before writing %q: %s", id, s, f.Payload)
		}
		if f.Type == agentproto.Stdout {
			out = append(out, f.Payload...)
		}
	}
}

// ping round-trips a Ping: every frame the agent wrote before is queued.
func (c *client) ping() {
	c.t.Helper()
	id := c.id()
	c.send(agentproto.Ping, id, []byte("x"))
	if f := c.next(id); f.Type != agentproto.Pong || string(f.Payload) != "x" {
		c.t.Fatalf("ping answered with %q %q", byte(f.Type), f.Payload)
	}
}

// live returns the PIDs of live (non-zombie) processes whose command line is
// exactly argv, among the descendants of the test process (the agents are its
// children, and the commands' orphans stay under their agent, a subreaper).
// Tests use unusual arguments (sleep 7101) to find their processes.
func live(argv ...string) []int {
	want := strings.Join(argv, "\x00") + "\x00"
	var pids []int
	for _, p := range descendants(scan(), os.Getpid()) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p.pid) + "/cmdline")
		if err == nil && string(b) == want && !p.dead() {
			pids = append(pids, p.pid)
		}
	}
	return pids
}

// assertGone fails if a process with that command line is alive.
func assertGone(t testing.TB, argv ...string) {
	t.Helper()
	if pids := live(argv...); len(pids) > 0 {
		t.Errorf("%q still alive: %v", strings.Join(argv, " "), pids)
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// eventually polls cond until it holds or d passes: for facts the agent
// brings about on its own schedule (reaping zombies).
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sh(script string) agentproto.ExecMsg {
	return agentproto.ExecMsg{Argv: []string{"sh", "-c", script}}
}

// how is an Exit without what the command used (which varies from run to
// run): how it ended.
func how(x agentproto.ExitMsg) agentproto.ExitMsg {
	x.WallUS, x.UserUS, x.SystemUS, x.MaxRSS = 0, 0, 0, 0
	return x
}
