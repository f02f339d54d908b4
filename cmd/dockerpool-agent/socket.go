package main

import (
	"io"
	"net"
	"os"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// The pool's socket (AgentConfig.Socket). On a daemon of its own machine
// the pool can share a unix socket with the container: a directory of its
// own, bind-mounted read-only (a connect needs no write access to the
// mount). The agent connects before its hello, sends a hello with the
// pool's token there, and says in its hello on stdout that it did. Its
// output moves to the socket when the pool's hello comes on it, and frames
// then skip Docker's attach stream (dockerd and the shim, both ways). When
// the socket closes (the pool that made it is gone) the output goes back
// to stdout, where a pool that adopts the container attaches.

// dialPool connects to the pool's socket, if the environment names one,
// and removes both variables from the environment the commands inherit.
func (a *agent) dialPool() (net.Conn, string) {
	path, token := os.Getenv(agentproto.SocketEnv), os.Getenv(agentproto.TokenEnv)
	_ = os.Unsetenv(agentproto.SocketEnv)
	_ = os.Unsetenv(agentproto.TokenEnv)
	if path == "" {
		return nil, ""
	}
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err != nil {
		// Under gVisor, for one: the sandbox does not reach the host's
		// sockets.
		a.log.Printf("pool socket: %v: frames stay on stdin and stdout", err)
		return nil, ""
	}
	return conn, token
}

// serveSocket serves the pool's frames from the socket: output moves there
// with the pool's hello on it, and back to back (stdout) when it closes.
func (a *agent) serveSocket(conn net.Conn, back io.Writer) {
	defer conn.Close()
	moved := false
	a.serveFrom(conn, "the pool's socket", func() {
		if !moved {
			moved = true
			a.out.use(conn)
		}
	})
	if moved {
		a.out.use(back)
	}
}
