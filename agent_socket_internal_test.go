package dockerpool

import (
	"context"
	"errors"
	"strings"
	"testing"

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
