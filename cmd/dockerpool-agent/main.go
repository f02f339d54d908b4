// Command dockerpool-agent runs as a container's main process and starts
// commands for dockerpool, which talks to it over the container's attach
// stream: frames of package agentproto arrive on stdin and leave on stdout;
// stderr carries the agent's own short log lines. With AgentConfig.Socket
// the frames go over the pool's unix socket instead (socket.go).
//
// It is a small static program (CGO_ENABLED=0, standard library only):
//
//	CGO_ENABLED=0 go build -o dockerpool-agent ./cmd/dockerpool-agent
//
// The agent is a child subreaper, so every process its commands start stays
// its descendant even after its parent died. That is what lets it kill
// exactly what a command started (kill.go) and reap the orphans' zombies
// (reap.go) when it is not PID 1 itself.
//
// Kill scope. The agent only ever kills its own descendants (processes whose
// parent chain in /proc leads to the agent). In a container the agent is PID
// 1 or the child of an init, so its descendants are everything the commands
// started, reparented orphans included; outside a container (the tests run it
// on the host) the same rule keeps it from touching anything else. Processes
// started by a `docker exec` beside the agent are not its descendants and are
// left alone. Within that scope, a kill on timeout, limit or Kill takes every
// descendant when no other exec runs, and only the exec's own processes
// (process group, DOCKERPOOL_EXEC_ID token, descendants, owners recorded by
// earlier scans) when others run; a Reset, and SIGTERM, take everything.
//
// Terminals. A Term frame runs its program on a pseudo-terminal the agent
// allocates (term.go): an exec whose program leads its own session, with
// the terminal's master in place of the pipes; its kill, sweep and Exit are
// an exec's.
//
// Zombies. os/exec waits for each command's main process by PID; the agent
// never waits for "any child", which could steal such a status. Every 200 ms
// and after every kill it lists its children, and waits by PID for each
// zombie that is not the main process of an exec.
package main

import (
	"log"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// agentName is announced in Hello.
const agentName = "dockerpool-agent/1"

// prSetChildSubreaper is prctl's PR_SET_CHILD_SUBREAPER.
const prSetChildSubreaper = 36

// agent is the state of the running agent.
type agent struct {
	pid int
	// wide: the agent could not become a child subreaper and is not PID 1
	// (gVisor has no PR_SET_CHILD_SUBREAPER): orphans of its commands go to
	// PID 1, out of its subtree, so it takes every process of the container
	// but PID 1 and its own ancestors for its commands'.
	wide bool
	out  *writer
	log  *log.Logger

	// startMu orders process starts against /proc sweeps: a start holds it
	// shared from the fork until the new PID is registered, a sweep or the
	// zombie reaper holds it exclusively. So a sweep never sees a child of the
	// agent that is not yet known as an exec's main process.
	startMu sync.RWMutex

	mu        sync.Mutex
	execs     map[uint32]*execution // by frame id, until the Exit is sent
	transfers map[uint32]*transfer  // by frame id, until the Done is sent
	mains     map[int]bool          // PIDs os/exec waits for: the reaper leaves them alone
	serial    uint64                // last execution serial

	ownMu  sync.Mutex
	owners map[procKey]uint64 // the exec (serial) a process was seen to belong to
}

func newAgent() *agent {
	return &agent{
		pid:       os.Getpid(),
		out:       &writer{w: os.Stdout},
		log:       log.New(os.Stderr, "dockerpool-agent: ", 0),
		execs:     map[uint32]*execution{},
		transfers: map[uint32]*transfer{},
		mains:     map[int]bool{},
		owners:    map[procKey]uint64{},
	}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == launchArg {
		launch(os.Args[2:])
	}
	a := newAgent()
	a.out.log = a.log
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
		a.wide = a.pid != 1
		a.log.Printf("cannot become a child subreaper (%v): every process but PID 1 and the agent's ancestors counts as the commands'", errno)
	}
	// Handling SIGPIPE makes a write to a closed stdout fail with EPIPE
	// instead of killing the agent. (signal.Ignore would be inherited by the
	// commands; a handled signal is reset to the default in them.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)

	hello := agentproto.HelloMsg{Version: agentproto.Version, Agent: agentName, PID: a.pid}
	if conn, token := a.dialPool(); conn != nil {
		on := hello
		on.Token = token
		(&writer{w: conn, log: a.log}).json(agentproto.Hello, 0, on)
		hello.Socket = true
		go a.serveSocket(conn, os.Stdout)
	}
	a.out.json(agentproto.Hello, 0, hello)
	go a.housekeeping()
	go a.serve(os.Stdin)

	s := <-stop
	a.log.Printf("%v: killing every process and exiting", s)
	_, survivors := a.sweep(func(*view, procInfo) bool { return true })
	if survivors > 0 {
		a.log.Printf("%d process(es) survived", survivors)
	}
	os.Exit(0)
}
