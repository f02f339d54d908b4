package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

func TestGarbageOnStdin(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	c.sendRaw([]byte("sh: this is not a frame\n"))
	c.sendRaw([]byte{'?', 0, 0, 0, 1, 0, 0, 0, 0})             // unknown type
	c.sendRaw([]byte{'O', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff}) // too large
	c.ping()

	// A frame for the pool only, and frames for ids nobody knows.
	c.send(agentproto.Exit, 5, []byte("{}"))
	c.send(agentproto.Stdin, 12345, []byte("data"))
	c.send(agentproto.StdinEOF, 12345, nil)
	c.ping()

	// An Exec that does not decode is answered with an Exit.
	id := c.id()
	c.send(agentproto.Exec, id, []byte("{not json"))
	f := c.next(id)
	var x agentproto.ExitMsg
	if f.Type != agentproto.Exit || f.Decode(&x) != nil || x.Code != -1 || x.Error == "" {
		t.Errorf("got %q %s", byte(f.Type), f.Payload)
	}
	if r := c.run(agentproto.ExecMsg{}, nil); r.exit.Code != -1 || r.exit.Error == "" {
		t.Errorf("empty argv: %+v", r.exit)
	}
	if r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "still here"}}, nil); string(r.stdout) != "still here\n" {
		t.Errorf("got %q %+v", r.stdout, r.exit)
	}
	if !strings.Contains(c.stderr.String(), "garbage") {
		t.Errorf("garbage not logged: %s", c.stderr.String())
	}
}

// TestStdinEOFKeepsRunning: the agent outlives the end of its stdin, and so
// do its commands and their output.
func TestStdinEOFKeepsRunning(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	id := c.start(sh("read x </dev/null; sleep 0.2; echo done"))
	c.wmu.Lock()
	c.in.Close()
	c.wmu.Unlock()
	r := c.wait(id)
	if string(r.stdout) != "done\n" || r.exit.Code != 0 {
		t.Errorf("got %q %+v", r.stdout, r.exit)
	}
	select {
	case <-c.exited:
		t.Fatalf("the agent exited at the end of its stdin: %v", c.waitErr)
	default:
	}
	if err := c.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		t.Errorf("agent gone: %v", err)
	}
}

func TestParseStat(t *testing.T) {
	line := []byte("42 (we ird) (name)) S 7 42 42 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 123456 1000 10 18446744073709551615")
	p, ok := parseStat(42, line)
	if !ok || p.ppid != 7 || p.pgid != 42 || p.state != 'S' || p.start != 123456 {
		t.Errorf("got %+v %v", p, ok)
	}
	if _, ok := parseStat(1, []byte("1 (x")); ok {
		t.Error("parsed a truncated line")
	}
	self, ok := readStat(os.Getpid())
	if !ok || self.ppid != os.Getppid() {
		t.Errorf("self %+v %v", self, ok)
	}
}

func TestDescendants(t *testing.T) {
	procs := map[int]procInfo{
		1:  {pid: 1},
		10: {pid: 10, ppid: 1},  // the agent
		11: {pid: 11, ppid: 10}, // child
		12: {pid: 12, ppid: 11}, // grandchild
		13: {pid: 13, ppid: 1},  // elsewhere
		14: {pid: 14, ppid: 99}, // parent unknown
	}
	var got []int
	for _, p := range descendants(procs, 10) {
		got = append(got, p.pid)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{11, 12}) {
		t.Errorf("got %v", got)
	}
}

func TestLookPath(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "tool")
	if err := os.WriteFile(exe, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "plain"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := lookPath("tool", "relative:"+dir); p != exe || err != nil {
		t.Errorf("got %q %v", p, err)
	}
	if _, err := lookPath("plain", dir); err == nil || err.Error() != `exec: "plain": executable file not found in $PATH` {
		t.Errorf("got %v", err)
	}
	if p, err := lookPath("./x/y", ""); p != "./x/y" || err != nil {
		t.Errorf("got %q %v", p, err)
	}
	if got := searchPath([]string{"PATH=/a:/b"}); got != "/a:/b" {
		t.Errorf("got %q", got)
	}
}

func TestLookupUser(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	group := filepath.Join(dir, "group")
	_ = os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\n# comment\napp:x:1000:1001::/home/app:/bin/sh\n"), 0o644)
	_ = os.WriteFile(group, []byte("root:x:0:\napp:x:1001:\nstaff:x:50:app,other\nwheel:x:10:other\n"), 0o644)
	oldP, oldG := passwdFile, groupFile
	passwdFile, groupFile = passwd, group
	defer func() { passwdFile, groupFile = oldP, oldG }()

	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		groups   []uint32
		home     string
		err      string
	}{
		{spec: "app", uid: 1000, gid: 1001, groups: []uint32{50}, home: "/home/app"},
		{spec: "1000", uid: 1000, gid: 1001, groups: []uint32{50}, home: "/home/app"},
		{spec: "app:staff", uid: 1000, gid: 50, groups: []uint32{}, home: "/home/app"},
		{spec: "4242", uid: 4242, gid: 0, groups: []uint32{}, home: "/"},
		{spec: "4242:7", uid: 4242, gid: 7, groups: []uint32{}, home: "/"},
		{spec: "nobody-here", err: "unable to find user nobody-here"},
		{spec: "app:nogroup", err: "unable to find group nogroup"},
	} {
		u, err := lookupUser(tc.spec)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: got %v", tc.spec, err)
			}
			continue
		}
		if err != nil || u.cred == nil || u.cred.Uid != tc.uid || u.cred.Gid != tc.gid || !slices.Equal(u.cred.Groups, tc.groups) || u.home != tc.home {
			t.Errorf("%s: got %+v %+v %v", tc.spec, u, u.cred, err)
		}
	}
	if u, err := lookupUser(""); u.cred != nil || err != nil {
		t.Errorf("empty: %+v %v", u, err)
	}
}

func TestResync(t *testing.T) {
	var in bytes.Buffer
	in.WriteString("noise")
	_ = agentproto.Write(&in, agentproto.Ping, 7, []byte("p"))
	in.Write([]byte{'O', 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff})
	_ = agentproto.Write(&in, agentproto.Ping, 8, nil)
	in.Write([]byte{'P', 0, 0}) // cut short

	out := &lockedBuffer{}
	a := newAgent()
	a.out = &writer{w: out}
	var logBuf lockedBuffer
	a.log.SetOutput(&logBuf)
	a.serve(&in)
	var got []uint32
	pongs := func() bool { // the answers are written on goroutines
		got = got[:0]
		r := bytes.NewReader([]byte(out.String()))
		for {
			f, err := agentproto.Read(r)
			if err != nil {
				return len(got) == 2
			}
			if f.Type != agentproto.Pong {
				t.Errorf("got %q", byte(f.Type))
			}
			got = append(got, f.ID)
		}
	}
	eventually(5*time.Second, pongs)
	slices.Sort(got)
	if !slices.Equal(got, []uint32{7, 8}) {
		t.Errorf("pongs %v; log:\n%s", got, logBuf.String())
	}
	var hdr [agentproto.HeaderSize]byte
	hdr[0] = byte(agentproto.Stdout)
	binary.BigEndian.PutUint32(hdr[5:], agentproto.MaxPayload+1)
	if plausibleHeader(hdr[:]) {
		t.Error("oversized header accepted")
	}
}

func TestEmptyDirs(t *testing.T) {
	dir := t.TempDir()
	_ = os.WriteFile(filepath.Join(dir, "f"), nil, 0o600)
	if err := emptyDirs([]string{dir, filepath.Join(dir, "nope")}); err != nil {
		t.Fatal(err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("left %v", entries)
	}
	if err := emptyDirs([]string{"/", "rel"}); err == nil {
		t.Error("accepted / and a relative path")
	}
}

// TestLatency measures the round trip of a trivial command through the
// agent, sequentially (the number in the report).
func TestLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	c := startAgent(t)
	const n = 1000
	d := make([]time.Duration, n)
	for i := range d {
		start := time.Now()
		r := c.run(agentproto.ExecMsg{Argv: []string{"echo", "hi"}}, nil)
		d[i] = time.Since(start)
		if string(r.stdout) != "hi\n" || r.exit.Code != 0 {
			t.Fatalf("exec %d: %q %+v", i, r.stdout, r.exit)
		}
	}
	slices.Sort(d)
	t.Logf("echo through the agent, %d sequential execs: p50 %v, p90 %v, p99 %v, max %v", n, d[n/2], d[n*9/10], d[n*99/100], d[n-1])
}
