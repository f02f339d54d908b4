package main

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

const (
	// execIDEnv names the variable every command gets with a token unique to
	// its exec (as on the Docker exec path), so that its processes can be
	// recognized in /proc.
	execIDEnv = "DOCKERPOOL_EXEC_ID"
	// chunkSize bounds the output read at once, and so a data frame.
	chunkSize = agentproto.Chunk
	// outputGrace is how long the end of the output may lag behind a kill
	// before the agent closes the pipes itself (something it could not kill
	// holds them).
	outputGrace = 500 * time.Millisecond
)

// killReason says why the agent killed a command.
type killReason int

const (
	reasonNone killReason = iota
	reasonKill
	reasonTimeout
	reasonLimit
	reasonReset
	reasonCPU // the CPU time limit
)

// execution is one command, from its Exec frame to its Exit frame.
type execution struct {
	a      *agent
	id     uint32
	serial uint64 // unique over the agent's life, unlike id
	msg    agentproto.ExecMsg
	token  string
	stdin  *inbox             // nil: stdin is /dev/null
	out    *agentproto.Credit // the window of its output
	tty    *tty               // a terminal's: the program runs on it (term.go); nil for a command

	pid  atomic.Int64  // main process, also its process group; 0 until started
	done chan struct{} // closed once the Exit is sent

	used usage // the CPU time and memory of its processes that ended

	mu       sync.Mutex
	seenUser time.Duration // the largest sums the CPU watcher saw
	seenSys  time.Duration
	seenRSS  int64
	finished bool          // the outcome is decided: a kill is too late
	reason   killReason    // why it is killed; reasonNone if not
	killCh   chan struct{} // closed when reason is set
	left     int64         // output bytes still allowed under Limit
}

// handleExec starts the exec a frame asks for.
func (a *agent) handleExec(f agentproto.Frame) {
	if a.idInUse(f.ID, "exec") {
		return
	}
	var msg agentproto.ExecMsg
	if err := f.Decode(&msg); err != nil {
		a.log.Printf("exec %d: %v", f.ID, err)
		go a.out.json(agentproto.Exit, f.ID, agentproto.ExitMsg{Code: -1, Error: err.Error()})
		return
	}
	a.startExec(f.ID, msg, nil)
}

// idInUse reports (and logs) a frame that would start an exec on an id that
// has one: answering it would give the running exec a second Exit.
func (a *agent) idInUse(id uint32, what string) bool {
	a.mu.Lock()
	_, dup := a.execs[id]
	a.mu.Unlock()
	if dup {
		a.log.Printf("%s %d: id already in use, frame ignored", what, id)
	}
	return dup
}

// startExec registers an exec, a command or (with t) a terminal, and starts
// it on a goroutine of its own.
func (a *agent) startExec(id uint32, msg agentproto.ExecMsg, t *tty) {
	e := &execution{a: a, id: id, msg: msg, tty: t, token: newToken(), done: make(chan struct{}), killCh: make(chan struct{}), left: msg.Limit, out: agentproto.NewCredit()}
	if msg.Stdin {
		e.stdin = newInbox(a.granter(id))
	}
	a.mu.Lock()
	a.serial++
	e.serial = a.serial
	a.execs[id] = e
	a.mu.Unlock()
	go e.run()
}

// run runs the command and sends its Exit, always exactly once and last.
func (e *execution) run() {
	x := e.execute()
	a := e.a
	a.mu.Lock()
	delete(a.execs, e.id)
	a.mu.Unlock()
	if e.stdin != nil {
		e.stdin.stop()
	}
	e.out.Close()
	a.out.json(agentproto.Exit, e.id, x)
	close(e.done)
}

// execute starts the command, streams its output and waits for its end: the
// main process exited and both output pipes are closed (as with docker exec,
// a background process that keeps them open keeps the exec open), or a kill.
// The Exit says what the command used.
func (e *execution) execute() agentproto.ExitMsg {
	oomBefore := oomKills()
	cmd, pipes, serr := e.prepare()
	if serr == nil {
		serr = e.start(cmd, pipes)
	}
	if serr != nil {
		pipes.closeAll()
		e.markFinished()
		return serr.report(e)
	}
	started := time.Now()
	r := e.follow(cmd, pipes)
	x := r.exit(e, cmd)
	x.WallUS = time.Since(started).Microseconds()
	e.report(&x, cmd)
	if n := oomKills(); oomBefore >= 0 && n > oomBefore {
		x.OOM = true // the kernel killed a process of the container meanwhile
	}
	return x
}

// running is a started command's channels.
type running struct {
	exited, outDone, ended chan struct{}
	killed                 bool
	survivors              int
}

// follow streams the command's output and input, enforces its timeout and
// CPU time, and waits for its end or a kill.
func (e *execution) follow(cmd *exec.Cmd, pipes *pipes) *running {
	r := &running{exited: make(chan struct{}), outDone: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		_ = cmd.Wait() // the status is in cmd.ProcessState
		e.a.unmain(cmd.Process.Pid)
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			e.used.add(ru)
		}
		close(r.exited)
	}()
	var outputs sync.WaitGroup
	if e.tty != nil {
		outputs.Add(1)
		go e.pumpTerminal(pipes.outR, r.exited, &outputs)
	} else {
		outputs.Add(2)
		go e.pump(pipes.outR, agentproto.Stdout, &outputs)
		go e.pump(pipes.errR, agentproto.Stderr, &outputs)
	}
	go func() {
		outputs.Wait()
		close(r.outDone)
	}()
	if e.stdin != nil {
		go e.stdin.feed(pipes.inW)
	}
	if e.msg.TimeoutMS > 0 {
		t := time.AfterFunc(time.Duration(e.msg.TimeoutMS)*time.Millisecond, func() { e.kill(reasonTimeout) })
		defer t.Stop()
	}
	stopCPU := make(chan struct{})
	defer close(stopCPU)
	if e.msg.CPUTimeMS > 0 {
		go e.a.watchCPU(e, time.Duration(e.msg.CPUTimeMS)*time.Millisecond, stopCPU)
	}
	go func() {
		<-r.outDone
		<-r.exited
		close(r.ended)
	}()
	select {
	case <-r.ended:
		if e.finishNormally() {
			return r
		}
	case <-e.killCh:
	}
	r.killed = true
	_, r.survivors = e.a.killExec(e)
	e.drain(r, pipes)
	e.markFinished()
	return r
}

// drain waits, after a kill, for the output to end, and for the main
// process to be reaped (so that its rusage counts).
func (e *execution) drain(r *running, pipes *pipes) {
	grace := time.NewTimer(outputGrace)
	defer grace.Stop()
	select {
	case <-r.ended:
		return
	case <-grace.C:
	}
	// Something holds the pipes (it survived, or it is not ours to kill):
	// stop reading so that the Exit can go.
	pipes.outR.Close()
	pipes.errR.Close()
	e.a.log.Printf("exec %d: output still open %v after the kill", e.id, outputGrace)
	// No data frame may follow the Exit: wait for the readers, which the
	// Close ends (unless the pool stopped reading our stdout).
	<-r.outDone
	select {
	case <-r.exited:
	case <-time.After(outputGrace):
	}
}

// exit is the Exit of a command that ended by itself or was killed.
func (r *running) exit(e *execution, cmd *exec.Cmd) agentproto.ExitMsg {
	if !r.killed {
		return agentproto.ExitMsg{Code: exitCode(cmd.ProcessState)}
	}
	e.mu.Lock()
	reason := e.reason
	e.mu.Unlock()
	x := agentproto.ExitMsg{
		Code:       -1,
		Killed:     true,
		TimedOut:   reason == reasonTimeout,
		Limited:    reason == reasonLimit,
		CPULimited: reason == reasonCPU,
		Survivors:  r.survivors,
	}
	if reason == reasonReset {
		x.Error = "killed by a reset"
	}
	return x
}

// report fills in what the command used and the signal that ended its main
// process.
func (e *execution) report(x *agentproto.ExitMsg, cmd *exec.Cmd) {
	if ps := cmd.ProcessState; ps != nil {
		if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			x.Signal = int(ws.Signal())
		}
	}
	user, sys, rss := e.used.get()
	e.mu.Lock()
	user, sys, rss = max(user, e.seenUser), max(sys, e.seenSys), max(rss, e.seenRSS)
	e.mu.Unlock()
	x.UserUS, x.SystemUS, x.MaxRSS = user.Microseconds(), sys.Microseconds(), rss
}

// start starts cmd and registers its PID, under the start lock (see
// agent.startMu). The child's ends of the pipes are closed afterwards.
func (e *execution) start(cmd *exec.Cmd, p *pipes) *startError {
	a := e.a
	a.startMu.RLock()
	err := cmd.Start()
	if err == nil {
		pid := cmd.Process.Pid
		e.pid.Store(int64(pid))
		a.mu.Lock()
		a.mains[pid] = true
		a.mu.Unlock()
	}
	a.startMu.RUnlock()
	p.closeChildEnds()
	if err != nil {
		return classifyStartError(e.msg.Argv[0], err, cmd.SysProcAttr.Credential != nil, e.msg.User)
	}
	return nil
}

// unmain forgets a main process once os/exec has reaped it.
func (a *agent) unmain(pid int) {
	a.mu.Lock()
	delete(a.mains, pid)
	a.mu.Unlock()
}

// pump streams one output pipe as data frames until EOF, enforcing Limit on
// stdout and stderr together: exactly Limit bytes go out, then the command is
// killed and the rest is read and dropped. It sends only what the window of
// the command's output allows: while the pool's caller reads slowly, the
// pipe fills and the command waits, and nothing else does. After a kill the
// rest is read and dropped.
func (e *execution) pump(f *os.File, t agentproto.Type, wg *sync.WaitGroup) {
	defer wg.Done()
	defer f.Close()
	buf := make([]byte, chunkSize)
	dropping := false
	for {
		n, err := f.Read(buf)
		if n > 0 && !dropping {
			m := e.allow(n)
			dropping = !e.a.out.send(t, e.id, buf[:m], e.out, e.killCh)
			if m < n {
				e.kill(reasonLimit)
				dropping = true
			}
		}
		if err != nil {
			return
		}
	}
}

// allow takes n bytes of output from the budget and says how many may go
// out.
func (e *execution) allow(n int) int {
	if e.msg.Limit <= 0 {
		return n
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	m := int64(n)
	if m > e.left {
		m = e.left
	}
	e.left -= m
	return int(m)
}

// kill asks for the command to be killed, unless its outcome is decided
// already or a kill was asked before (the first reason stays).
func (e *execution) kill(r killReason) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.finished || e.reason != reasonNone {
		return
	}
	e.reason = r
	close(e.killCh)
}

// finishNormally decides that the command ended by itself, unless a kill
// came first.
func (e *execution) finishNormally() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.reason != reasonNone {
		return false
	}
	e.finished = true
	return true
}

func (e *execution) markFinished() {
	e.mu.Lock()
	e.finished = true
	e.mu.Unlock()
}

// running reports an exec whose processes are live and its own: started,
// outcome not decided.
func (e *execution) running() bool {
	if e.pid.Load() == 0 {
		return false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return !e.finished
}

// exitCode is the exit status, or 128+signal for a command killed by a
// signal, as a shell reports it.
func exitCode(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
