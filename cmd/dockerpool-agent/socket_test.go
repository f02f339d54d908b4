package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// The pool's socket: the agent connects at its start, proves itself with
// the token, moves its output there with the pool's hello on it, and back
// to stdout when the socket closes (a pool that adopts the container then
// attaches and finds it answering there).
func TestSocketCarriesTheSessionAndStdoutTakesItBack(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pool.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if conn, err := ln.Accept(); err == nil {
			accepted <- conn
		}
	}()
	cmd := exec.Command(agentBin)
	cmd.Env = append(os.Environ(), agentproto.SocketEnv+"="+path, agentproto.TokenEnv+"=the-token")
	c := startClient(t, cmd)
	if !c.hello.Socket {
		t.Fatalf("the hello on stdout does not say the agent is on the socket: %+v", c.hello)
	}
	var conn net.Conn
	select {
	case conn = <-accepted:
	case <-time.After(frameWait):
		t.Fatal("the agent did not connect to the socket")
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(frameWait))
	r := bufio.NewReader(conn)
	var h agentproto.HelloMsg
	if f, err := agentproto.Read(r); err != nil || f.Type != agentproto.Hello || f.Decode(&h) != nil || h.Token != "the-token" {
		t.Fatalf("the socket's first frame: %q %s, %v; want a hello with the token", byte(f.Type), f.Payload, err)
	}
	c.ping() // until the pool's hello on the socket, the session is on stdin and stdout

	if err := agentproto.WriteJSON(conn, agentproto.Hello, 0, agentproto.HelloMsg{Version: agentproto.Version}); err != nil {
		t.Fatal(err)
	}
	if err := agentproto.Write(conn, agentproto.Ping, 7, []byte("s")); err != nil {
		t.Fatal(err)
	}
	if f, err := agentproto.Read(r); err != nil || f.Type != agentproto.Pong || f.ID != 7 {
		t.Fatalf("a ping on the socket: %q %d, %v; want its pong there", byte(f.Type), f.ID, err)
	}

	// The socket closes: the output goes back to stdout, a moment later.
	conn.Close()
	deadline := time.Now().Add(frameWait)
	for {
		id := c.id()
		c.send(agentproto.Ping, id, []byte("x"))
		if _, err := c.nextWithin(id, 200*time.Millisecond); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pong on stdout within %v of the socket's close", frameWait)
		}
	}
}
