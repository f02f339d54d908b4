package main

import (
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// Every test here uses sleep durations of its own (71xx...), to find its
// processes on the host by command line.

func TestLimit(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	t.Run("yes", func(t *testing.T) {
		t.Parallel()
		r := c.run(agentproto.ExecMsg{Argv: []string{"yes", "dockerpool-limit-test"}, Limit: 65536}, nil)
		if len(r.stdout)+len(r.stderr) != 65536 {
			t.Errorf("got %d+%d bytes", len(r.stdout), len(r.stderr))
		}
		if !r.exit.Limited || !r.exit.Killed || r.exit.Code != -1 || r.exit.Survivors != 0 || r.exit.TimedOut {
			t.Errorf("exit %+v", r.exit)
		}
		assertGone(t, "yes", "dockerpool-limit-test")
	})
	t.Run("stdout and stderr together", func(t *testing.T) {
		t.Parallel()
		// stdout is read long before stderr floods: both count.
		r := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "echo out; sleep 0.2; while :; do echo err >&2; done"}, Limit: 1000}, nil)
		if string(r.stdout) != "out\n" || len(r.stderr) != 996 || !r.exit.Limited {
			t.Errorf("got %d+%d bytes, %+v", len(r.stdout), len(r.stderr), r.exit)
		}
	})
	t.Run("exactly the limit", func(t *testing.T) {
		t.Parallel()
		r := c.run(agentproto.ExecMsg{Argv: []string{"printf", "abc"}, Limit: 3}, nil)
		if string(r.stdout) != "abc" || how(r.exit) != (agentproto.ExitMsg{}) {
			t.Errorf("got %q %+v", r.stdout, r.exit)
		}
	})
}

func TestTimeout(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	start := time.Now()
	r := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "sleep 7100 & setsid sleep 7101 & sleep 7102"}, TimeoutMS: 300}, nil)
	if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("took %v", d)
	}
	if !r.exit.TimedOut || !r.exit.Killed || r.exit.Code != -1 || r.exit.Survivors != 0 || r.exit.Limited {
		t.Errorf("exit %+v", r.exit)
	}
	for _, arg := range []string{"7100", "7101", "7102"} {
		assertGone(t, "sleep", arg)
	}
}

// TestTimeoutWithOpenPipes: the main process ended but a background process
// holds the output open; the exec stays open until the timeout kills it.
func TestTimeoutWithOpenPipes(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	r := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "sleep 7110 & echo main done"}, TimeoutMS: 300}, nil)
	if string(r.stdout) != "main done\n" || !r.exit.TimedOut || r.exit.Survivors != 0 {
		t.Errorf("got %q %+v", r.stdout, r.exit)
	}
	assertGone(t, "sleep", "7110")
}

func TestKillFrame(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.start(sh("echo started; exec sleep 7200"))
	c.waitFor(id, "started")
	c.send(agentproto.Kill, id, nil)
	r := c.wait(id)
	if !r.exit.Killed || r.exit.TimedOut || r.exit.Limited || r.exit.Code != -1 || r.exit.Survivors != 0 {
		t.Errorf("exit %+v", r.exit)
	}
	assertGone(t, "sleep", "7200")

	// A Kill right after the Exec, before the command may have started.
	id = c.start(agentproto.ExecMsg{Argv: []string{"sleep", "7201"}})
	c.send(agentproto.Kill, id, nil)
	if r := c.wait(id); !r.exit.Killed || r.exit.Code != -1 {
		t.Errorf("exit %+v", r.exit)
	}
	assertGone(t, "sleep", "7201")

	// A Kill for an unknown id is ignored.
	c.send(agentproto.Kill, 99999, nil)
	c.ping()
}

// TestKillScope: while another exec runs, a kill takes only the processes of
// its own exec (process group, token, descendants), even one that left the
// group; alone, it takes every descendant of the agent, leftovers of earlier
// execs included.
func TestKillScope(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	other := c.start(sh("echo started; exec sleep 7301"))
	c.waitFor(other, "started")
	left := c.run(sh("sleep 7302 >/dev/null 2>&1 &"), nil) // ends, leaves sleep 7302
	if left.exit.Code != 0 {
		t.Fatalf("exit %+v", left.exit)
	}

	victim := c.start(sh("sleep 7300 & setsid sleep 7303 & echo started; wait"))
	c.waitFor(victim, "started")
	c.send(agentproto.Kill, victim, nil)
	if r := c.wait(victim); !r.exit.Killed || r.exit.Survivors != 0 {
		t.Errorf("victim exit %+v", r.exit)
	}
	assertGone(t, "sleep", "7300")
	assertGone(t, "sleep", "7303")
	if len(live("sleep", "7301")) != 1 {
		t.Errorf("the other exec's process was killed")
	}
	if len(live("sleep", "7302")) != 1 {
		t.Errorf("a leftover was killed while another exec ran")
	}

	// Alone now: the kill also takes the leftover.
	c.send(agentproto.Kill, other, nil)
	if r := c.wait(other); !r.exit.Killed || r.exit.Survivors != 0 {
		t.Errorf("other exit %+v", r.exit)
	}
	assertGone(t, "sleep", "7301")
	assertGone(t, "sleep", "7302")
}

func TestSIGTERMKillsCommands(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.start(sh("sleep 7501 >/dev/null 2>&1 & echo started; exec sleep 7500"))
	c.waitFor(id, "started")
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(frameWait):
		t.Fatal("the agent did not exit on SIGTERM")
	}
	if c.waitErr != nil {
		t.Errorf("agent exit: %v", c.waitErr)
	}
	assertGone(t, "sleep", "7500")
	assertGone(t, "sleep", "7501")
}

// Without a subreaper (gVisor), the orphans of the commands belong to PID 1:
// the agent's domain then is every process but PID 1 and its ancestors.
func TestDomainWithoutASubreaperTakesTheOrphansOfPID1(t *testing.T) {
	procs := map[int]procInfo{
		1:  {pid: 1, ppid: 0},  // docker-init
		5:  {pid: 5, ppid: 1},  // the agent's parent (a shell, say)
		7:  {pid: 7, ppid: 5},  // the agent
		9:  {pid: 9, ppid: 7},  // a command
		12: {pid: 12, ppid: 1}, // an orphan of a command
		20: {pid: 20, ppid: 0}, // a docker exec beside the agent
	}
	pids := func(ps []procInfo) map[int]bool {
		m := map[int]bool{}
		for _, p := range ps {
			m[p.pid] = true
		}
		return m
	}
	narrow := pids((&agent{pid: 7}).domain(procs))
	if len(narrow) != 1 || !narrow[9] {
		t.Errorf("with a subreaper the domain is the descendants {9}, got %v", narrow)
	}
	wide := pids((&agent{pid: 7, wide: true}).domain(procs))
	if len(wide) != 3 || !wide[9] || !wide[12] || !wide[20] {
		t.Errorf("without one the domain is everything but 1, 5 and 7: {9 12 20}, got %v", wide)
	}
}
