package dockerpool

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"

	"github.com/dockerpool/dockerpool/internal/agentproto"
	"github.com/dockerpool/dockerpool/internal/fakedocker"
)

func TestNewRefusesTheAgentSocketOnADaemonOfAnotherMachine(t *testing.T) {
	for _, cli := range []DockerAPI{
		daemonAt{fakedocker.New(fakeImage), "tcp://10.0.0.7:2376"},
		fakedocker.New(fakeImage), // says nothing of where it is
	} {
		cfg := testConfig(Config{MinIdle: 1, Client: cli, Agent: &AgentConfig{Socket: true}})
		p, err := New(context.Background(), cfg)
		if err == nil {
			_ = p.Shutdown(context.Background())
			t.Fatalf("New with Agent.Socket on %T succeeded", cli)
		}
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "Agent.Socket") {
			t.Fatalf("err = %v; want ErrInvalidConfig naming Agent.Socket", err)
		}
	}
}

// Another process of this machine may connect to a container's socket
// first: it is turned away, and the agent's connection behind it taken.
func TestAgentSocketTurnsAwayAConnectionThatIsNotTheAgents(t *testing.T) {
	s, err := newAgentSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close(false)
	path := filepath.Join(s.dir, s.name)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	silent := dial()                                                                                       // says nothing
	_ = agentproto.WriteJSON(dial(), agentproto.Hello, 0, agentproto.HelloMsg{Version: 2, Token: "guess"}) // a wrong token
	agent := dial()
	if err := agentproto.WriteJSON(agent, agentproto.Hello, 0, agentproto.HelloMsg{Version: agentproto.Version, Token: s.token}); err != nil {
		t.Fatal(err)
	}
	conn, _, err := s.accept(5 * time.Second)
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer conn.Close()
	// The one taken is the agent's: what it writes next arrives.
	if _, err := agent.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil || b[0] != 'x' {
		t.Fatalf("the connection taken is not the agent's: %q, %v", b, err)
	}
	_ = silent
	s.close(false)
	if _, err := os.Stat(s.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket's directory is left: %v", err)
	}
}

// listedOnly is a daemon that answers ContainerList alone, with list or
// with err.
type listedOnly struct {
	DockerAPI
	list []container.Summary
	err  error
}

func (l listedOnly) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	return l.list, l.err
}

// sweepSocketDirs, at New, removes the sockets' directories a dead process
// left behind, and nothing else: not one a container of the daemon mounts,
// not one whose lock a live process holds (its container is on another
// daemon of this machine), not a young one (a creation of another pool may
// be under way), not a directory that is not a socket's, and nothing when
// the daemon cannot list its containers.
func TestSweepSocketDirsRemovesOnlyStaleUnusedSocketDirectories(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // os.TempDir: the sweep looks nowhere else
	old := time.Now().Add(-11 * time.Minute)
	mk := func(name string, mtime time.Time) string {
		d := filepath.Join(tmp, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "agent.sock"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return d
	}
	stale := mk(socketDirPrefix+"stale", old)
	used := mk(socketDirPrefix+"used", old)
	young := mk(socketDirPrefix+"young", time.Now())
	other := mk("not-a-socket-dir", old)
	held := mk(socketDirPrefix+"held", old)
	lock, err := lockSocketDir(held)
	if err != nil || lock == nil {
		t.Fatalf("lockSocketDir(%s) = %v, %v; want the lock", held, lock, err)
	}
	if again, err := lockSocketDir(held); again != nil || err != nil {
		t.Fatalf("lockSocketDir of a held directory = %v, %v; want nil, nil", again, err)
	}
	mounted := []container.Summary{{ID: "c1", Mounts: []container.MountPoint{{Source: used, Destination: agentSocketMount}}}}

	sweepSocketDirs(context.Background(), listedOnly{err: errors.New("daemon down")})
	for _, d := range []string{stale, used, young, other} {
		if _, err := os.Stat(d); err != nil {
			t.Fatalf("the daemon could not list its containers, yet %s is gone: %v", d, err)
		}
	}

	sweepSocketDirs(context.Background(), listedOnly{list: mounted})
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("stale unused %s: stat err = %v; want it removed", stale, err)
	}
	for _, d := range []string{used, young, other, held} {
		if _, err := os.Stat(filepath.Join(d, "agent.sock")); err != nil {
			t.Fatalf("%s was touched by the sweep: %v", d, err)
		}
	}

	lock.Close() // as when its process dies
	sweepSocketDirs(context.Background(), listedOnly{list: mounted})
	if _, err := os.Stat(held); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s, its lock released: stat err = %v; want it removed", held, err)
	}
}

// A socket's directory is locked while its container lives: from the
// socket's making until the session, or the failed creation, removes it.
func TestAgentSocketHoldsItsDirectorysLock(t *testing.T) {
	held := func(dir string) bool {
		t.Helper()
		l, err := lockSocketDir(dir)
		if err != nil {
			t.Fatalf("lockSocketDir(%s): %v", dir, err)
		}
		l.Close() // nil when held: Close of a nil *os.File returns ErrInvalid
		return l == nil
	}
	kept, err := newAgentSocket()
	if err != nil {
		t.Fatal(err)
	}
	if !held(kept.dir) {
		t.Fatalf("a new socket's directory %s is not locked", kept.dir)
	}
	kept.close(true) // a session keeps it, and its lock
	if !held(kept.dir) {
		t.Fatalf("after close(kept), %s is not locked", kept.dir)
	}
	a := &agentConn{sockDir: kept.socketDir, err: errors.New("ended")} // a session already ended
	a.close()
	if _, err := os.Stat(kept.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after the session's close: stat %s = %v; want it removed", kept.dir, err)
	}

	failed, err := newAgentSocket()
	if err != nil {
		t.Fatal(err)
	}
	failed.close(false) // a creation that failed
	if _, err := os.Stat(failed.dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("after close(not kept): stat %s = %v; want it removed", failed.dir, err)
	}
}
