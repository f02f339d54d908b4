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
