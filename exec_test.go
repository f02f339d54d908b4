package dockerpool_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
	"github.com/dockerpool/dockerpool/internal/testwait"
)

// Exec's promises, on the real daemon. Most tests share nothing and run in
// parallel, each with its own pool.

// held acquires a container for the test and returns it at cleanup.
func held(t *testing.T, p *dockerpool.Pool) *dockerpool.Container {
	t.Helper()
	c, err := p.Acquire(bg(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Return(context.Background(), c) })
	return c
}

// processes lists the command lines of the processes in the container, as
// the daemon's top sees them from the host (so the image needs no ps).
//
// Docker runs the host's ps -ef and keeps the container's lines. Podman's
// top takes psgo descriptors instead: with "pid,args" it reads the
// container's /proc from the host and answers in columns; with ps options
// (or none) it runs ps inside the container and answers each line as a
// single column, which an image without ps cannot do.
func processes(t *testing.T, c *dockerpool.Container) []string {
	t.Helper()
	if underGVisor() {
		return processesInside(t, c)
	}
	var args []string
	if dockerpooltest.Podman(t) {
		args = []string{"pid,args"}
	}
	top, err := dockerpooltest.Client(t).ContainerTop(bg(t), c.ID(), args)
	if err != nil {
		t.Fatalf("top: %v", err)
	}
	cmd := -1
	for i, title := range top.Titles {
		if title == "CMD" || title == "COMMAND" {
			cmd = i
		}
	}
	if cmd < 0 {
		t.Fatalf("top: no CMD or COMMAND column in %q", top.Titles)
	}
	var out []string
	for _, p := range top.Processes {
		if len(p) != len(top.Titles) {
			t.Fatalf("top: process %q does not match the columns %q", p, top.Titles)
		}
		out = append(out, p[cmd])
	}
	return out
}

// strays returns the processes whose command line contains marker.
func strays(t *testing.T, c *dockerpool.Container, marker string) []string {
	var found []string
	for _, p := range processes(t, c) {
		if strings.Contains(p, marker) {
			found = append(found, p)
		}
	}
	return found
}

// execPath is a way of running commands: Docker exec, or the agent in the
// container. The exec tests run on both.
type execPath struct {
	name  string
	agent bool
}

var execPaths = []execPath{{name: "docker-exec"}, {name: "agent", agent: true}}

// onEachPath runs f once per exec path, in parallel.
func onEachPath(t *testing.T, f func(t *testing.T, path execPath)) {
	t.Parallel()
	for _, path := range execPaths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			f(t, path)
		})
	}
}

// config prepares cfg for the path. On the agent path the image is the
// busybox one with the agent at its default place (or opts's variant).
func (path execPath) config(t *testing.T, cfg dockerpool.Config, opts ...dockerpooltest.ImageOptions) dockerpool.Config {
	t.Helper()
	if !path.agent {
		if len(opts) > 0 {
			ref, err := dockerpooltest.BuildImage(bg(t), dockerpooltest.Client(t), opts[0])
			if err != nil {
				t.Fatal(err)
			}
			cfg.Image.Name = ref
		}
		return cfg
	}
	var o dockerpooltest.ImageOptions
	if len(opts) > 0 {
		o = opts[0]
	}
	ref, err := dockerpooltest.AgentImage(bg(t), dockerpooltest.Client(t), dockerpooltest.Agent(t), o)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Image.Name = ref
	cfg.Agent = &dockerpool.AgentConfig{Socket: agentSocketHere()}
	return cfg
}

// agentSocketHere says whether the agent path of the tests runs its
// sessions on the agent's socket: on a daemon of this machine (Docker and
// Podman in CI). Under gVisor the pool keeps them on the attach stream by
// itself, so the gVisor run tests that transport; TestAgentSocket... test
// both side by side.
func agentSocketHere() bool {
	h := os.Getenv("DOCKER_HOST")
	return h == "" || strings.HasPrefix(h, "unix://")
}

func TestExecSplitsStreamsAndReportsExitCodes(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		for _, tc := range []struct {
			cmd            []string
			code           int
			stdout, stderr string
		}{
			{[]string{"true"}, 0, "", ""},
			{[]string{"sh", "-c", "echo out; echo err >&2; exit 3"}, 3, "out\n", "err\n"},
			{[]string{"sh", "-c", "kill -9 $$"}, 137, "", ""},
			{[]string{"/etc"}, 126, "", "permission denied"},                    // not executable
			{[]string{"no-such-command"}, 127, "", "executable file not found"}, // not found
			{[]string{"/no/such/path"}, 127, "", "no such file or directory"},
		} {
			t.Run(strings.Join(tc.cmd, " "), func(t *testing.T) {
				is := is.New(t)
				res, err := c.Exec(bg(t), tc.cmd)
				is.NoErr(err) // an exit code is not an error
				is.Equal(res.ExitCode, tc.code)
				is.Equal(string(res.Stdout), tc.stdout) // the daemon's message never lands on stdout
				want := tc.stderr
				if underGVisor() && tc.code == 127 && !path.agent {
					want = "no such file or directory" // gVisor: "failed to load /bin/x: no such file or directory"
				}
				is.True(strings.Contains(string(res.Stderr), want))
			})
		}
	})
}

func TestExecTimeoutReturnsInTimeAndKillsTheWholeProcessTree(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		// Children, grandchildren, a new session, and one that clears its
		// environment: all must go.
		script := `sleep 1001 & (sleep 1002 &) ; setsid sleep 1003 & env -i /bin/sleep 1004 & sleep 1005`
		const timeout = 500 * time.Millisecond
		start := time.Now()
		res, err := c.ExecStd(bg(t), []string{"sh", "-c", script}, dockerpool.ExecOptions{Timeout: timeout})
		took := time.Since(start)
		t.Logf("timed out after %v (timeout %v): %v", took, timeout, err)
		is.True(errors.Is(err, dockerpool.ErrExecTimeout))
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.Equal(res.ExitCode, -1)
		if took > timeout+time.Second {
			t.Fatalf("returned %v after the timeout", took-timeout)
		}
		is.True(!c.Tainted()) // killed and verified: the warm container is kept
		is.Equal(strays(t, c, "sleep 100"), []string(nil))
		// The container still works, and the main process survived.
		res, err = c.Exec(bg(t), []string{"echo", "alive"})
		is.NoErr(err)
		is.Equal(string(res.Stdout), "alive\n")
		main := "sleep infinity"
		if path.agent {
			main = dockerpool.DefaultAgentPath
		}
		mains := 0
		for _, p := range processes(t, c) {
			if strings.HasPrefix(p, main) {
				mains++
			}
		}
		is.Equal(mains, 1)
	})
}

func TestExecCancelledByTheCallerKillsLikeATimeout(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		ctx, cancel := context.WithCancel(bg(t))
		started := make(chan struct{})
		w := writerFunc(func(b []byte) (int, error) {
			select {
			case <-started:
			default:
				close(started)
			}
			return len(b), nil
		})
		errc := make(chan error, 1)
		go func() {
			_, err := c.ExecStream(ctx, []string{"sh", "-c", "echo go; sleep 1006 & sleep 1007"}, w, nil, dockerpool.ExecOptions{})
			errc <- err
		}()
		testwait.Recv(t, started, time.Minute, "the command's first output") // it runs
		cancel()
		err := testwait.Recv(t, errc, time.Minute, "ExecStream's return after the cancel")
		is.True(errors.Is(err, context.Canceled))
		is.True(!errors.Is(err, dockerpool.ErrExecTimeout))
		is.True(!c.Tainted())
		is.Equal(strays(t, c, "sleep 100"), []string(nil))
	})
}

func TestExecTimeoutInAnImageWithoutAShell(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		// ps, no shell: under gVisor the test lists the processes with it.
		noShell := dockerpooltest.ImageOptions{Applets: []string{"sleep", "ps"}}
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}, noShell))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		_, err = c.ExecStd(bg(t), []string{"sleep", "1008"}, dockerpool.ExecOptions{Timeout: 200 * time.Millisecond})
		is.True(errors.Is(err, dockerpool.ErrExecTimeout))
		t.Logf("%v", err)
		if path.agent {
			// The agent needs no shell: killed and verified, kept warm.
			is.True(!c.Tainted())
			is.Equal(strays(t, c, "sleep 1008"), []string(nil))
			is.NoErr(p.Return(bg(t), c))
			return
		}
		is.True(c.Tainted()) // no /bin/sh to kill with: cannot prove anything
		is.True(strings.Contains(err.Error(), "tainted"))
		is.NoErr(p.Return(bg(t), c))
		waitGone(t, c.ID(), 10*time.Second) // removed, not reused
		eventually(t, func() bool { return p.Stats().RemovedBy[dockerpool.ReasonTainted] == 1 })
	})
}

func TestExecTimeoutWhileOtherCommandsRunTaintsInsteadOfKillingThem(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		other := make(chan int, 1)
		started := make(chan struct{})
		go func() {
			code, _ := c.ExecStream(bg(t), []string{"sh", "-c", "echo up; sleep 1; echo done"}, writerFunc(func(b []byte) (int, error) {
				if bytes.Contains(b, []byte("up")) {
					close(started)
				}
				return len(b), nil
			}), nil, dockerpool.ExecOptions{})
			other <- code
		}()
		testwait.Recv(t, started, time.Minute, `the other command's "up"`)
		_, err = c.ExecStd(bg(t), []string{"sh", "-c", "sleep 1009 & sleep 1010"}, dockerpool.ExecOptions{Timeout: 200 * time.Millisecond})
		is.True(errors.Is(err, dockerpool.ErrExecTimeout))
		is.True(c.Tainted())
		is.Equal(strays(t, c, "sleep 10"), []string(nil))                            // the timed-out command's processes are gone...
		is.Equal(testwait.Recv(t, other, time.Minute, "the other command's end"), 0) // ...and it finished untouched
		is.NoErr(p.Return(bg(t), c))
		waitGone(t, c.ID(), 10*time.Second)
	})
}

func TestExecLimitStopsAnEndlessProducerPromptly(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		const limit = 64 << 10
		start := time.Now()
		res, err := c.ExecStd(bg(t), []string{"sh", "-c", "yes out & yes err >&2"}, dockerpool.ExecOptions{Limit: limit})
		took := time.Since(start)
		t.Logf("limit reached and cleaned up in %v", took)
		is.True(errors.Is(err, dockerpool.ErrOutputLimitExceeded))
		is.Equal(len(res.Stdout)+len(res.Stderr), limit) // headers do not count
		is.True(strings.HasPrefix(string(res.Stdout), "out\n") || len(res.Stdout) == 0)
		is.True(strings.Trim(string(res.Stdout), "out\n") == "")
		is.True(strings.Trim(string(res.Stderr), "er\n") == "")
		if took > 2*time.Second {
			t.Fatalf("took %v", took)
		}
		is.True(!c.Tainted())
		is.Equal(strays(t, c, "yes"), []string(nil))
	})
}

func TestExecStreamWritesOutputAsItArrives(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		var firstAt atomic.Int64
		var out bytes.Buffer
		w := writerFunc(func(b []byte) (int, error) {
			firstAt.CompareAndSwap(0, time.Now().UnixNano())
			return out.Write(b)
		})
		start := time.Now()
		code, err := c.ExecStream(bg(t), []string{"sh", "-c", "echo first; sleep 1; echo second"}, w, nil, dockerpool.ExecOptions{})
		end := time.Now()
		is.NoErr(err)
		is.Equal(code, 0)
		is.Equal(out.String(), "first\nsecond\n")
		first := time.Unix(0, firstAt.Load())
		t.Logf("first bytes after %v, end after %v", first.Sub(start), end.Sub(start))
		is.True(end.Sub(first) > 800*time.Millisecond) // written a second before the end
	})
}

// execStreamPassesMegabytesWithoutHoldingThem is a test of
// TestInChildProcesses/BigStreams: the heap it measures is the whole
// process's, so it runs alone in a process of its own.
func execStreamPassesMegabytesWithoutHoldingThem(t *testing.T) {
	for _, path := range execPaths {
		t.Run(path.name, func(t *testing.T) {
			is := is.New(t)
			p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
			c := held(t, p)
			const size = 64 << 20
			// Every 8 MiB, the live heap (after a collection) is sampled: what
			// the pool holds, not garbage waiting for the collector.
			var n atomic.Int64
			var peak uint64
			var ms runtime.MemStats
			w := writerFunc(func(b []byte) (int, error) {
				if n.Add(int64(len(b)))%(8<<20) < int64(len(b)) {
					runtime.GC()
					runtime.ReadMemStats(&ms)
					peak = max(peak, ms.HeapAlloc)
				}
				return len(b), nil
			})
			runtime.GC()
			runtime.ReadMemStats(&ms)
			base := ms.HeapAlloc
			code, err := c.ExecStream(bg(t), []string{"head", "-c", fmt.Sprint(size), "/dev/zero"}, w, nil, dockerpool.ExecOptions{})
			is.NoErr(err)
			is.Equal(code, 0)
			is.Equal(n.Load(), int64(size))
			t.Logf("live heap grew by at most %d KiB while streaming %d MiB", (peak-min(peak, base))>>10, size>>20)
			is.True(peak < base+16<<20) // other tests run in parallel: a generous bound, far below 64 MiB
			// Nil writers discard.
			code, err = c.ExecStream(bg(t), []string{"sh", "-c", "echo x; echo y >&2; exit 4"}, nil, nil, dockerpool.ExecOptions{})
			is.NoErr(err)
			is.Equal(code, 4)
		})
	}
}

func TestExecReportsTheRealExitCodeEveryTime(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		// Right after the output ends, the exec can still be "running": the code
		// must be waited for, never guessed.
		for i := range 40 {
			res, err := c.Exec(bg(t), []string{"sh", "-c", fmt.Sprintf("echo %d; exit %d", i, i%5)})
			is.NoErr(err)
			if res.ExitCode != i%5 { // the runtime's own refusal (126) says why on stderr
				t.Fatalf("exec %d: exit code %d, want %d; stderr %q", i, res.ExitCode, i%5, res.Stderr)
			}
			is.Equal(string(res.Stdout), fmt.Sprintf("%d\n", i))
		}
	})
}

func TestExecFeedsStdinAndClosesItAtEOF(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		t.Run("megabytes pass unchanged through cat", func(t *testing.T) {
			is := is.New(t)
			data := make([]byte, 5<<20)
			_, _ = rand.Read(data)
			res, err := c.ExecStd(bg(t), []string{"cat"}, dockerpool.ExecOptions{Stdin: bytes.NewReader(data)})
			is.NoErr(err)
			is.Equal(res.ExitCode, 0)
			is.True(bytes.Equal(res.Stdout, data))
		})
		t.Run("grep and wc finish", func(t *testing.T) {
			is := is.New(t)
			res, err := c.ExecStd(bg(t), []string{"grep", "line2"}, dockerpool.ExecOptions{Stdin: strings.NewReader("line1\nline2\nline3\n")})
			is.NoErr(err)
			is.Equal(string(res.Stdout), "line2\n")
			res, err = c.ExecStd(bg(t), []string{"wc", "-l"}, dockerpool.ExecOptions{Stdin: strings.NewReader("a\nb\n")})
			is.NoErr(err)
			is.Equal(strings.TrimSpace(string(res.Stdout)), "2")
		})
		t.Run("an empty reader is an immediate EOF", func(t *testing.T) {
			is := is.New(t)
			res, err := c.ExecStd(bg(t), []string{"wc", "-c"}, dockerpool.ExecOptions{Stdin: strings.NewReader("")})
			is.NoErr(err)
			is.Equal(strings.TrimSpace(string(res.Stdout)), "0")
		})
		t.Run("a reader that fails is an error and ends the command", func(t *testing.T) {
			is := is.New(t)
			boom := errors.New("upstream broke")
			r := io.MultiReader(strings.NewReader("partial\n"), errReader{boom})
			start := time.Now()
			res, err := c.ExecStd(bg(t), []string{"sh", "-c", "cat; sleep 1011"}, dockerpool.ExecOptions{Stdin: r})
			if !errors.Is(err, boom) {
				t.Fatalf("err = %v (result %+v), want one wrapping %v", err, res, boom)
			}
			is.True(time.Since(start) < 5*time.Second)
			is.Equal(strays(t, c, "sleep 1011"), []string(nil))
		})
		t.Run("a command that does not read its input still finishes", func(t *testing.T) {
			is := is.New(t)
			res, err := c.ExecStd(bg(t), []string{"sh", "-c", "echo ignored; exit 3"}, dockerpool.ExecOptions{Stdin: bytes.NewReader(make([]byte, 8<<20))})
			is.NoErr(err)
			is.Equal(res.ExitCode, 3)
			if !path.agent && dockerpooltest.Podman(t) {
				// Podman 4.3 loses the output of an exec whose command
				// exits without reading all of its stdin in about a third
				// of the runs, whatever the input's size (docs/podman.md,
				// difference 10). What holds: it finishes, with its code.
				t.Logf("Podman: stdout %q", res.Stdout)
				return
			}
			is.Equal(string(res.Stdout), "ignored\n")
		})
	})
}

func TestExecOnADeadOrRemovedContainerFailsPromptly(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 2}))
		cli := dockerpooltest.Client(t)
		for _, how := range []string{"killed", "removed"} {
			t.Run(how, func(t *testing.T) {
				is := is.New(t)
				c, err := p.Acquire(bg(t))
				is.NoErr(err)
				if how == "killed" {
					is.NoErr(cli.ContainerKill(bg(t), c.ID(), "SIGKILL"))
				} else {
					is.NoErr(cli.ContainerRemove(bg(t), c.ID(), container.RemoveOptions{Force: true}))
				}
				start := time.Now()
				_, err = c.Exec(bg(t), []string{"true"})
				is.True(errors.Is(err, dockerpool.ErrContainerDead))
				is.True(time.Since(start) < 2*time.Second)
				// Return neither hangs nor hands it out again.
				is.NoErr(p.Return(bg(t), c))
				is.Equal(p.InUse(), 0)
				waitGone(t, c.ID(), 10*time.Second)
			})
		}
		// And the pool keeps serving.
		c := held(t, p)
		res, err := c.Exec(bg(t), []string{"echo", "ok"})
		if err != nil || string(res.Stdout) != "ok\n" {
			t.Fatalf("after the deaths: %q, %v", res.Stdout, err)
		}
	})
}

func TestExecThroughAReleasedHandleNeverRunsInSomeoneElsesContainer(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, MaxIdle: 2}))
		old, err := p.Acquire(bg(t))
		is.NoErr(err)
		// The refill's replacement is idle before ours comes back, so that
		// ours is on top of the idle stack.
		is.NoErr(p.WaitIdle(bg(t), 1))
		is.NoErr(p.Return(bg(t), old))
		now, err := p.Acquire(bg(t)) // the same container, a new holder
		is.NoErr(err)
		is.Equal(now.ID(), old.ID())
		_, err = old.Exec(bg(t), []string{"touch", "/tmp/intruder"})
		is.True(errors.Is(err, dockerpool.ErrContainerReleased))
		res, err := now.Exec(bg(t), []string{"ls", "/tmp"})
		is.NoErr(err)
		is.Equal(string(res.Stdout), "")
		is.NoErr(p.Return(bg(t), now))
		_, err = now.Exec(bg(t), []string{"true"})
		is.True(errors.Is(err, dockerpool.ErrContainerReleased))
	})
}

func TestExecRunsSeveralCommandsOnOneContainerAtOnce(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range 6 {
			wg.Go(func() {
				res, err := c.Exec(bg(t), []string{"sh", "-c", fmt.Sprintf("sleep 0.5; echo %d", i)})
				if err != nil || string(res.Stdout) != fmt.Sprintf("%d\n", i) {
					t.Errorf("exec %d: %q %v", i, res.Stdout, err)
				}
			})
		}
		testwait.Group(t, &wg, time.Minute, "the end of 6 concurrent commands")
		took := time.Since(start)
		t.Logf("6 concurrent 0.5s commands took %v", took)
		if took > 2500*time.Millisecond {
			t.Errorf("concurrent execs were serialized: %v", took)
		}
	})
}

func TestExecBadInputIsAClearError(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		_, err := c.Exec(bg(t), nil)
		is.True(errors.Is(err, dockerpool.ErrEmptyCommand))
		_, err = c.ExecStd(bg(t), []string{"true"}, dockerpool.ExecOptions{Limit: -1})
		is.True(errors.Is(err, dockerpool.ErrInvalidConfig))
		ctx, cancel := context.WithCancel(bg(t))
		cancel()
		_, err = c.Exec(ctx, []string{"true"})
		is.True(errors.Is(err, context.Canceled))
	})
}

func TestExecTimeoutsNeverLeaveStrayProcessesForTheNextCaller(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 2, MaxIdle: 2}))
		for i := range 15 {
			c, err := p.Acquire(bg(t))
			is.NoErr(err)
			is.Equal(strays(t, c, "sleep 2"), []string(nil)) // nothing of earlier callers
			marker := fmt.Sprintf("sleep 2%03d", i)
			_, err = c.ExecStd(bg(t), []string{"sh", "-c", marker + " & " + marker + " & " + marker},
				dockerpool.ExecOptions{Timeout: 100 * time.Millisecond})
			is.True(errors.Is(err, context.DeadlineExceeded))
			is.NoErr(p.Return(bg(t), c))
		}
		st := p.Stats()
		t.Logf("15 timeouts: %d containers created, %d removed as tainted", st.Created, st.RemovedBy[dockerpool.ReasonTainted])
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(b []byte) (int, error) { return f(b) }

type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
