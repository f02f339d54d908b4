package main

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

func TestHandshake(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	if c.hello.Version != agentproto.Version {
		t.Errorf("hello version %d", c.hello.Version)
	}
	if c.hello.Agent != agentName || c.hello.PID != c.cmd.Process.Pid {
		t.Errorf("hello %+v, agent PID %d", c.hello, c.cmd.Process.Pid)
	}
	// A hello from the pool is accepted and ignored.
	c.sendJSON(agentproto.Hello, 0, agentproto.HelloMsg{Version: agentproto.Version, Agent: "test"})
	c.ping()
}

func TestEcho(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "hello", "world"}}, nil)
	if string(r.stdout) != "hello world\n" || len(r.stderr) != 0 || how(r.exit) != (agentproto.ExitMsg{}) {
		t.Errorf("got %q %q %+v", r.stdout, r.stderr, r.exit)
	}
}

func TestExitCodes(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	dir := t.TempDir()
	noExec := filepath.Join(dir, "not-executable")
	if err := os.WriteFile(noExec, []byte("#!/bin/sh\necho no\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	badFormat := filepath.Join(dir, "bad-format")
	if err := os.WriteFile(badFormat, []byte("\x7fELF garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		msg    agentproto.ExecMsg
		code   int
		stderr string // contained in stderr
	}{
		{"true", agentproto.ExecMsg{Argv: []string{"true"}}, 0, ""},
		{"exit 3", sh("exit 3"), 3, ""},
		{"signal", sh("kill -9 $$"), 137, ""},
		{"not in PATH", agentproto.ExecMsg{Argv: []string{"no-such-command-dockerpool"}}, 127,
			`exec: "no-such-command-dockerpool": executable file not found in $PATH`},
		{"PATH of the exec", agentproto.ExecMsg{Argv: []string{"sh", "-c", "true"}, Env: []string{"PATH=/nonexistent"}}, 127,
			"executable file not found"},
		{"no such file", agentproto.ExecMsg{Argv: []string{"/nonexistent/dockerpool"}}, 127, "no such file or directory"},
		{"not executable", agentproto.ExecMsg{Argv: []string{noExec}}, 126, "permission denied"},
		{"directory", agentproto.ExecMsg{Argv: []string{dir}}, 126, "permission denied"},
		{"exec format", agentproto.ExecMsg{Argv: []string{badFormat}}, 126, "exec format error"},
		{"missing dir", agentproto.ExecMsg{Argv: []string{"true"}, Dir: "/nonexistent/dockerpool"}, 127, "no such file or directory"},
		{"unknown user", agentproto.ExecMsg{Argv: []string{"true"}, User: "no-such-user-dockerpool"}, 126, "unable to find user"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.run(tc.msg, nil)
			if r.exit.Code != tc.code || !strings.Contains(string(r.stderr), tc.stderr) {
				t.Errorf("got code %d, stderr %q; want %d, %q", r.exit.Code, r.stderr, tc.code, tc.stderr)
			}
			if (tc.code == 126 || tc.code == 127) != (r.exit.StartError != "") {
				t.Errorf("start error %q for code %d", r.exit.StartError, r.exit.Code)
			}
			if r.exit.Killed || r.exit.Error != "" {
				t.Errorf("exit %+v", r.exit)
			}
		})
	}
}

func TestStdoutStderrSplit(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	r := c.run(sh("echo out; echo err >&2; echo out2; echo err2 >&2; exit 5"), nil)
	if string(r.stdout) != "out\nout2\n" || string(r.stderr) != "err\nerr2\n" || r.exit.Code != 5 {
		t.Errorf("got %q %q %+v", r.stdout, r.stderr, r.exit)
	}
}

func TestEnvDirUser(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	dir := t.TempDir()
	r := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", `pwd; echo "$FOO"; echo "$DOCKERPOOL_EXEC_ID"`}, Env: []string{"FOO=bar"}, Dir: dir}, nil)
	lines := strings.Split(string(r.stdout), "\n")
	if len(lines) != 4 || lines[0] != dir || lines[1] != "bar" || len(lines[2]) != 24 {
		t.Fatalf("got %q %+v", r.stdout, r.exit)
	}
	r2 := c.run(sh(`echo "$DOCKERPOOL_EXEC_ID"`), nil)
	if strings.TrimSpace(string(r2.stdout)) == lines[2] {
		t.Errorf("two execs got the same token %q", lines[2])
	}
	// The token cannot be overridden by the exec's environment.
	r3 := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", `echo "$DOCKERPOOL_EXEC_ID"`}, Env: []string{"DOCKERPOOL_EXEC_ID=mine"}}, nil)
	if got := strings.TrimSpace(string(r3.stdout)); got == "mine" || len(got) != 24 {
		t.Errorf("token %q", got)
	}

	uid := strconv.Itoa(os.Geteuid())
	want := uid
	user := uid
	if os.Geteuid() == 0 {
		user, want = "65534:65534", "65534 65534"
	} else {
		want = uid + " " + strconv.Itoa(os.Getegid())
	}
	r = c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "echo $(id -u) $(id -g)"}, User: user, Dir: "/"}, nil)
	if strings.TrimSpace(string(r.stdout)) != want || r.exit.Code != 0 {
		t.Errorf("user %s: got %q %q %+v", user, r.stdout, r.stderr, r.exit)
	}
}

func TestUserSwitchWithoutCapabilities(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to start the agent as another user")
	}
	c := startAgentAs(t, &syscall.Credential{Uid: 65534, Gid: 65534})
	r := c.run(agentproto.ExecMsg{Argv: []string{"id"}, User: "0"}, nil)
	if r.exit.Code != -1 || !strings.Contains(r.exit.Error, "switch to user") {
		t.Errorf("got %q %q %+v", r.stdout, r.stderr, r.exit)
	}
	// The agent goes on.
	if r := c.run(agentproto.ExecMsg{Argv: []string{"id", "-u"}}, nil); string(r.stdout) != "65534\n" {
		t.Errorf("got %q %+v", r.stdout, r.exit)
	}
}

func TestStdin(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	t.Run("cat 5 MiB", func(t *testing.T) {
		t.Parallel()
		data := make([]byte, 5<<20)
		_, _ = rand.Read(data)
		r := c.run(agentproto.ExecMsg{Argv: []string{"cat"}}, data)
		if !bytes.Equal(r.stdout, data) || r.exit.Code != 0 {
			t.Errorf("got %d bytes (equal: %v), exit %+v", len(r.stdout), bytes.Equal(r.stdout, data), r.exit)
		}
	})
	t.Run("empty", func(t *testing.T) {
		t.Parallel()
		r := c.run(agentproto.ExecMsg{Argv: []string{"cat"}}, []byte{})
		if len(r.stdout) != 0 || r.exit.Code != 0 {
			t.Errorf("got %q %+v", r.stdout, r.exit)
		}
	})
	t.Run("none", func(t *testing.T) {
		t.Parallel()
		r := c.run(agentproto.ExecMsg{Argv: []string{"cat"}}, nil) // /dev/null
		if len(r.stdout) != 0 || r.exit.Code != 0 {
			t.Errorf("got %q %+v", r.stdout, r.exit)
		}
	})
	t.Run("wc", func(t *testing.T) {
		t.Parallel()
		r := c.run(agentproto.ExecMsg{Argv: []string{"wc", "-l"}}, []byte("a\nb\nc\n"))
		if strings.TrimSpace(string(r.stdout)) != "3" || r.exit.Code != 0 {
			t.Errorf("got %q %+v", r.stdout, r.exit)
		}
	})
	t.Run("not read", func(t *testing.T) {
		t.Parallel()
		// The command exits without reading 2 MiB: the rest is dropped.
		r := c.run(agentproto.ExecMsg{Argv: []string{"true"}}, make([]byte, 2<<20))
		if r.exit.Code != 0 {
			t.Errorf("got %+v", r.exit)
		}
	})
}

func TestStreaming(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.start(sh("echo a; sleep 1; echo b"))
	f := c.next(id)
	first := time.Now()
	if f.Type != agentproto.Stdout || string(f.Payload) != "a\n" {
		t.Fatalf("first frame %q %q", byte(f.Type), f.Payload)
	}
	r := c.wait(id)
	if d := time.Since(first); d < 500*time.Millisecond {
		t.Errorf("the first output came only %v before the end: not streamed", d)
	}
	if string(r.stdout) != "b\n" || r.exit.Code != 0 {
		t.Errorf("rest %q %+v", r.stdout, r.exit)
	}
}

func TestConcurrentExecs(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	const n = 100
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = c.start(agentproto.ExecMsg{Argv: []string{"echo", fmt.Sprintf("exec-%d", i)}})
	}
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() {
			r := c.wait(id)
			if want := fmt.Sprintf("exec-%d\n", i); string(r.stdout) != want || how(r.exit) != (agentproto.ExitMsg{}) {
				t.Errorf("exec %d: got %q %q %+v", i, r.stdout, r.stderr, r.exit)
			}
		})
	}
	wg.Wait()
	c.ping()
	for _, id := range ids {
		if n := c.pending(id); n > 0 {
			t.Errorf("id %d: %d frame(s) after the Exit", id, n)
		}
	}
}

// TestOrphansDoNotStealExitCodes runs many commands that leave short-lived
// orphans: the reaper reaps the orphans and never a command's status.
func TestOrphansDoNotStealExitCodes(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	const n = 40
	ids := make([]uint32, n)
	for i := range ids {
		ids[i] = c.start(sh(fmt.Sprintf("sleep 0.0%d >/dev/null 2>&1 & echo $!; exit %d", i%10, i%50+1)))
	}
	var pids []int
	for i, id := range ids {
		r := c.wait(id)
		if r.exit.Code != i%50+1 {
			t.Errorf("exec %d: code %d, want %d", i, r.exit.Code, i%50+1)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(r.stdout)))
		if err != nil {
			t.Fatalf("exec %d: %q", i, r.stdout)
		}
		pids = append(pids, pid)
	}
	// The orphans (reparented to the agent) are reaped: no zombie stays.
	ok := eventually(5*time.Second, func() bool {
		for _, pid := range pids {
			if p, ok := readStat(pid); ok && p.ppid == c.cmd.Process.Pid {
				return false
			}
		}
		return true
	})
	if !ok {
		t.Errorf("orphans not reaped")
	}
}
