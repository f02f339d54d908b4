package dockerpool

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"time"
)

// AgentConfig turns on the agent path: dockerpool-agent (cmd/dockerpool-agent,
// a static program of the standard library alone) runs as each container's
// main process, and Exec sends it the command over the container's attach
// stream instead of creating a Docker exec. A command then costs about a
// millisecond instead of tens: the daemon and runc are out of the way. It
// needs no network (it works with NetworkMode "none" and a remote daemon).
//
// Exec, ExecStd and ExecStream keep every promise of the Docker exec path. In
// addition the agent knows every process its commands start (it is their
// subreaper), so a timeout kills exactly the command's processes, even in an
// image without a shell and while other commands run; and Return can reset
// the container (see ResetOnReturn).
//
// Getting the agent into the container: either the image has it at Path
// (Dockerfile: COPY dockerpool-agent /dockerpool-agent), or set Binary and
// the pool copies it into each container before starting it (onto a volume
// when the root is read-only, as in the sandbox preset: see
// DefaultReadOnlyAgentPath).
type AgentConfig struct {
	// Path of the agent in the container. Default "/dockerpool-agent".
	Path string
	// Binary, when set, is the path on this machine of a static agent
	// (CGO_ENABLED=0 go build github.com/dockerpool/dockerpool/cmd/dockerpool-agent).
	// New reads it, and the pool copies it to Path in every container before
	// starting it.
	Binary string
	// HandshakeTimeout bounds the wait for the agent's hello when a container
	// starts. Default 10s.
	HandshakeTimeout time.Duration
	// ResetOnReturn makes every Return reset the container in the
	// background before reuse: the agent kills every process the commands
	// left and verifies it, and empties ResetDirs.
	ResetOnReturn bool
	// ResetDirs are emptied by a reset (for example "/tmp").
	ResetDirs []string
	// Socket moves each container's session off Docker's attach stream onto
	// a unix socket the pool shares with the container (a directory of its
	// own, bind-mounted read-only at /.dockerpool-socket; the socket is
	// removed when the creation ends, the empty directory with the
	// container). A round trip then skips dockerd and the shim: a WriteFile
	// + ReadFile pair of 1 KiB took 0.70 ms instead of 1.21 in a tmpfs, 1.85
	// instead of 2.34 in the image's layer (BENCHMARKS.md). It needs a daemon on
	// this machine (a client whose DaemonHost is unix://, as a
	// *client.Client says; New fails otherwise) that shares its file system
	// with the pool (not Docker Desktop's VM, not a snap whose confinement
	// hides /tmp: the first creation then fails on the mount, and the pool
	// goes on without the socket). Under gVisor the sessions stay on the
	// attach stream, whatever Socket says: the sandbox cannot reach a socket
	// of the host. An agent that could not connect also stays there; OnError
	// hears of a fall-back once. The socket's path and its token are in the
	// container's environment (docker inspect shows them, and Docker execs
	// inherit them): harmless, as nobody can connect once the creation
	// ended.
	Socket bool
}

// DefaultAgentPath is where the agent is in the container by default.
const DefaultAgentPath = "/dockerpool-agent"

// DefaultReadOnlyAgentPath is where the pool copies the agent (Binary) into
// a container whose root is read-only, such as the sandbox preset's: a
// directory of its own, which the pool makes an anonymous volume (Docker
// copies onto a volume of a read-only container, not onto its root).
const DefaultReadOnlyAgentPath = "/.dockerpool/dockerpool-agent"

// ErrAgent is wrapped by errors of the agent path: an agent that does not
// answer, speaks another protocol version or garbage, or whose connection
// broke. The container is then tainted (Return removes it).
var ErrAgent = errors.New("dockerpool: agent")

const (
	agentKillGrace = 3 * time.Second // after a Kill, how long the agent has to answer
)

// agentTar is the tar archive CopyToContainer needs to put the agent binary
// at path.
func agentTar(binaryPath, inContainer string) ([]byte, error) {
	bin, err := os.ReadFile(binaryPath)
	if err != nil {
		return nil, fmt.Errorf("%w: read agent binary: %w", ErrInvalidConfig, err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: path.Base(inContainer), Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
