package dockerpool

import (
	"bufio"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/docker/docker/api/types/container"
	dmount "github.com/docker/docker/api/types/mount"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// The agent's socket (AgentConfig.Socket): on a daemon of this machine the
// pool makes, for each container it creates, a unix socket in a directory
// of its own, which the container gets as a read-only bind mount (a connect
// needs no write access to the mount, and the container can write nothing
// there). The agent connects at its start and proves with a token from its
// environment that it is this container's agent; the session then runs on
// the socket, and the attach stream carries only the agent's log. Frames
// skip dockerd and the shim both ways: about 0.25 ms less per round trip
// here (BENCHMARKS.md, fifth session). The socket is gone from this machine
// once the agent is connected or the creation failed; its empty directory
// goes with the container (Docker's archive API mounts it again for every
// copy, and fails on a mount whose source is gone).

// agentSocketMount is where the socket's directory is in the container.
const agentSocketMount = "/.dockerpool-socket"

// agentSocket is the pool's end of one container's socket while the
// container starts.
type agentSocket struct {
	socketDir
	name, token string
	ln          *net.UnixListener
}

// socketDir is a socket's directory on this machine and its lock
// (lockSocketDir), held for as long as the directory is in use: by the
// socket while the container starts, then by the session.
type socketDir struct {
	dir  string
	lock *os.File
}

// remove removes the directory, then lets its lock go: a sweep sees the
// directory held until it is gone.
func (d socketDir) remove() {
	if d.dir != "" {
		_ = os.RemoveAll(d.dir)
	}
	if d.lock != nil {
		d.lock.Close()
	}
}

// socketDirPrefix names the sockets' directories in os.TempDir(); short,
// as a socket's path is (108 bytes on Linux, 104 on macOS).
const socketDirPrefix = "dockerpool-socket-"

// newAgentSocket makes the directory (mode 0711: the agent, whatever its
// user, can reach the socket; only root can list the directory, though
// /proc/net/unix shows every socket's path to all) and listens on a socket
// of a random name in it.
func newAgentSocket() (*agentSocket, error) {
	dir, err := os.MkdirTemp("", socketDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("%w: the agent's socket: %w", ErrAgent, err)
	}
	s := &agentSocket{socketDir: socketDir{dir: dir}, name: newToken()[:16] + ".sock", token: newToken()}
	path := filepath.Join(dir, s.name)
	err = os.Chmod(dir, 0o711)
	if err == nil {
		s.lock, err = lockSocketDir(dir)
		if err == nil && s.lock == nil {
			err = errors.New("its lock is held by another")
		}
	}
	if err == nil {
		s.ln, err = net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	}
	if err == nil {
		err = os.Chmod(path, 0o666) // the agent may run as any user
	}
	if err != nil {
		s.close(false)
		return nil, fmt.Errorf("%w: the agent's socket %s: %w", ErrAgent, path, err)
	}
	return s, nil
}

// shareWith gives a container's configs (copies of the pool's) the mount
// and the agent's environment.
func (s *agentSocket) shareWith(cc *container.Config, hc *container.HostConfig) {
	// First: of two settings of a variable, Docker keeps the last, so that
	// the config's own win (a test points the agent where no socket is).
	cc.Env = append([]string{agentproto.SocketEnv + "=" + agentSocketMount + "/" + s.name, agentproto.TokenEnv + "=" + s.token}, cc.Env...)
	hc.Mounts = append(slices.Clip(hc.Mounts),
		dmount.Mount{Type: dmount.TypeBind, Source: s.dir, Target: agentSocketMount, ReadOnly: true})
}

// accept waits up to timeout for the agent's connection and its hello with
// the token. Another process of this machine may connect first (the
// socket is 0666, its path in /proc/net/unix): it is turned away, and the
// agent's connection, queued behind it, is taken. It returns the
// connection and a reader of it.
func (s *agentSocket) accept(timeout time.Duration) (net.Conn, io.Reader, error) {
	deadline := time.Now().Add(timeout)
	_ = s.ln.SetDeadline(deadline)
	for {
		conn, err := s.ln.Accept()
		if err != nil {
			return nil, nil, err
		}
		br := bufio.NewReaderSize(conn, 64<<10)
		// The agent's hello is written before it says so on stdout: a
		// connection that says nothing at once is not the agent's.
		soon := time.Now().Add(100 * time.Millisecond)
		if soon.After(deadline) {
			soon = deadline
		}
		_ = conn.SetReadDeadline(soon)
		if err := s.hello(br); err != nil {
			conn.Close()
			continue
		}
		_ = conn.SetReadDeadline(time.Time{})
		return conn, br, nil
	}
}

// hello reads the first frame of a connection: the agent's hello with the
// token.
func (s *agentSocket) hello(r io.Reader) error {
	f, err := agentproto.Read(r)
	if err != nil {
		return err
	}
	var h agentproto.HelloMsg
	if f.Type != agentproto.Hello || f.Decode(&h) != nil {
		return fmt.Errorf("the first frame is %q, not a hello", f.Type)
	}
	if subtle.ConstantTimeCompare([]byte(h.Token), []byte(s.token)) != 1 {
		return fmt.Errorf("a hello without this container's token")
	}
	return nil
}

// sweepSocketDirs removes the sockets' directories that no container of
// the daemon mounts any more and whose lock no process holds (a process
// that made them died before it removed its containers' directories),
// except the youngest (a creation of another pool may be under way).
func sweepSocketDirs(ctx context.Context, api DockerAPI) {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), socketDirPrefix+"*"))
	if len(dirs) == 0 {
		return
	}
	list, err := api.ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		return
	}
	used := map[string]bool{}
	for _, c := range list {
		for _, m := range c.Mounts {
			if m.Destination == agentSocketMount {
				used[m.Source] = true
			}
		}
	}
	for _, d := range dirs {
		if fi, err := os.Stat(d); err != nil || used[d] || time.Since(fi.ModTime()) <= 10*time.Minute {
			continue
		}
		// A live process holds the lock of the directories it uses, those
		// of another daemon's containers included: only a dead one's go.
		lock, err := lockSocketDir(d)
		if err != nil || lock == nil {
			continue
		}
		socketDir{d, lock}.remove()
	}
}

// socketDirOf is where a container found at New mounts its socket's
// directory, for its session to remove with it; "" if none of ours.
func socketDirOf(mounts []container.MountPoint) string {
	for _, m := range mounts {
		if m.Destination == agentSocketMount && filepath.Dir(m.Source) == filepath.Clean(os.TempDir()) &&
			strings.HasPrefix(filepath.Base(m.Source), socketDirPrefix) {
			return m.Source
		}
	}
	return ""
}

// close stops listening and removes the socket and, unless a session
// keeps it (for as long as the container: Docker's archive API mounts it
// again for each copy), its directory.
func (s *agentSocket) close(kept bool) {
	if s.ln != nil {
		s.ln.Close() // and the socket with it
	}
	if !kept {
		s.socketDir.remove()
	}
}

// socketDaemon checks that the pool's daemon can share a socket with its
// containers: it must run on this machine (DOCKER_HOST unix://). Under
// gVisor the frames stay on the attach stream: a sandbox does not reach
// the host's sockets.
func socketDaemon(s *settings, api DockerAPI) error {
	if s.agent == nil || !s.agent.Socket {
		return nil
	}
	if s.gvisor {
		s.agent.Socket = false
		return nil
	}
	d, ok := api.(interface{ DaemonHost() string })
	if !ok || !strings.HasPrefix(d.DaemonHost(), "unix://") {
		host := "a client that does not say where its daemon is"
		if ok {
			host = d.DaemonHost()
		}
		return fmt.Errorf("%w: Agent.Socket needs a Docker daemon on this machine (unix://), this pool's is %s", ErrInvalidConfig, host)
	}
	return nil
}
