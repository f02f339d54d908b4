package dockerpooltest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/docker/docker/client"

	"github.com/dockerpool/dockerpool"
)

// AgentPackage is the import path of the agent program.
const AgentPackage = "github.com/dockerpool/dockerpool/cmd/dockerpool-agent"

// BuildAgent compiles dockerpool-agent as a static binary into dir and
// returns its path. It needs the go command (the agent's source comes with
// the module).
func BuildAgent(ctx context.Context, dir string) (string, error) {
	out := filepath.Join(dir, "dockerpool-agent")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", out, AgentPackage)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("dockerpooltest: build the agent: %w\n%s", err, b)
	}
	return out, nil
}

var (
	agentOnce sync.Once
	agentDir  string
	agentPath string
	agentErr  error
)

// Agent returns the path of a static dockerpool-agent, built once per test
// binary, in a temporary directory that Main removes after the tests. The
// test fails if it cannot be built.
func Agent(t testing.TB) string {
	t.Helper()
	agentOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dockerpool-agent-")
		if err != nil {
			agentErr = err
			return
		}
		agentDir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		agentPath, agentErr = BuildAgent(ctx, dir)
	})
	if agentErr != nil {
		t.Fatal(agentErr)
	}
	return agentPath
}

// AgentImage builds the busybox image of BuildImage with the agent at
// dockerpool.DefaultAgentPath, so that a pool with Config.Agent set to
// &dockerpool.AgentConfig{} finds it there.
func AgentImage(ctx context.Context, cli *client.Client, agentBinary string, opts ImageOptions) (string, error) {
	bin, err := os.ReadFile(agentBinary)
	if err != nil {
		return "", fmt.Errorf("dockerpooltest: read the agent: %w", err)
	}
	files := map[string][]byte{dockerpool.DefaultAgentPath: bin}
	for k, v := range opts.Files {
		files[k] = v
	}
	opts.Files = files
	return BuildImage(ctx, cli, opts)
}

// removeAgent removes what Agent built.
func removeAgent() {
	if agentDir != "" {
		_ = os.RemoveAll(agentDir)
	}
}
