package main

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// put writes data with a Put of kind and returns the agent's Done.
func (c *client) put(kind, path string, mode uint32, data []byte) agentproto.DoneMsg {
	c.t.Helper()
	id := c.id()
	c.sendJSON(agentproto.Put, id, agentproto.PutMsg{Kind: kind, Path: path, Mode: mode})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		c.sendData(id, data)
		c.send(agentproto.StdinEOF, id, nil)
	}()
	d := c.untilDone(id, nil)
	c.creditOf(id).Close()
	<-sent
	return d
}

// get reads with a Get and returns the data and the agent's Done.
func (c *client) get(kind, path string, max int64) ([]byte, agentproto.DoneMsg) {
	c.t.Helper()
	id := c.id()
	c.sendJSON(agentproto.Get, id, agentproto.GetMsg{Kind: kind, Path: path, Max: max})
	var out bytes.Buffer
	d := c.untilDone(id, &out)
	return out.Bytes(), d
}

// done collects a transfer's data until its Done.
func (c *client) untilDone(id uint32, out *bytes.Buffer) agentproto.DoneMsg {
	c.t.Helper()
	for {
		f := c.next(id)
		switch f.Type {
		case agentproto.Stdout:
			if out == nil {
				c.t.Fatalf("id %d: data from a Put", id)
			}
			out.Write(f.Payload)
			c.grant(id, len(f.Payload))
		case agentproto.Done:
			var d agentproto.DoneMsg
			if err := f.Decode(&d); err != nil {
				c.t.Fatal(err)
			}
			return d
		default:
			c.t.Fatalf("id %d: unexpected frame %q", id, byte(f.Type))
		}
	}
}

func TestFilesWriteWholeReadWithALimitAndSayWhyNot(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	big := bytes.Repeat([]byte("x"), 3<<20) // past the window: flow control both ways
	if d := c.put(agentproto.KindFile, p, 0o640, big); d.Error != "" {
		t.Fatalf("put: %+v", d)
	}
	if st, err := os.Stat(p); err != nil || st.Mode().Perm() != 0o640 || st.Size() != int64(len(big)) {
		t.Fatalf("written: %v %v", st, err)
	}
	got, d := c.get(agentproto.KindFile, p, -1)
	if d.Error != "" || !bytes.Equal(got, big) {
		t.Fatalf("get: %d bytes, %+v", len(got), d)
	}
	if got, d := c.get(agentproto.KindFile, p, 1000); !d.TooLarge || len(got) != 0 {
		t.Errorf("get past max: %d bytes, %+v", len(got), d)
	}
	if _, d := c.get(agentproto.KindFile, dir, -1); d.Errno != int(syscall.EISDIR) {
		t.Errorf("get of a directory: %+v", d)
	}
	if _, d := c.get(agentproto.KindFile, filepath.Join(dir, "nope"), -1); d.Errno != int(syscall.ENOENT) {
		t.Errorf("get of nothing: %+v", d)
	}
	if d := c.put(agentproto.KindFile, filepath.Join(dir, "no", "f"), 0o600, []byte("x")); d.Errno != int(syscall.ENOENT) || !d.Clean {
		t.Errorf("put into no directory: %+v", d)
	}
	left, _ := filepath.Glob(filepath.Join(dir, ".*dockerpool*"))
	if len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestFilesUnpackAndPackATreeAndRefuseWhatLeavesIt(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	dir := filepath.Join(t.TempDir(), "made", "here")
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "d/", Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "d/f", Mode: 0o644, Size: 3})
	_, _ = tw.Write([]byte("abc"))
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "d/l", Linkname: "f"})
	_ = tw.Close()
	if d := c.put(agentproto.KindTar, dir, 0, buf.Bytes()); d.Error != "" {
		t.Fatalf("untar: %+v", d)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "d", "l")); err != nil || string(b) != "abc" {
		t.Fatalf("unpacked: %q %v", b, err)
	}
	out, d := c.get(agentproto.KindTar, dir, -1)
	if d.Error != "" {
		t.Fatalf("tar: %+v", d)
	}
	tr := tar.NewReader(bytes.NewReader(out))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if len(names) != 4 || names[0] != "here/" {
		t.Errorf("packed %v", names)
	}
	if _, d := c.get(agentproto.KindTar, dir, 2); !d.TooLarge {
		t.Errorf("pack past max: %+v", d)
	}
	outside := filepath.Join(filepath.Dir(dir), "outside")
	for name, h := range map[string]tar.Header{
		"dotdot":   {Typeflag: tar.TypeReg, Name: "../outside", Size: 0},
		"absolute": {Typeflag: tar.TypeSymlink, Name: "evil", Linkname: "/etc"},
		"hardlink": {Typeflag: tar.TypeLink, Name: "pw", Linkname: "/etc/passwd"},
		"device":   {Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3},
	} {
		var b bytes.Buffer
		tw := tar.NewWriter(&b)
		_ = tw.WriteHeader(&h)
		_ = tw.Close()
		if d := c.put(agentproto.KindTar, dir, 0, b.Bytes()); !d.Invalid || !d.Clean {
			t.Errorf("%s: %+v", name, d)
		}
	}
	if d := c.put(agentproto.KindTar, dir, 0, []byte("this is not a tar stream, not at all, no")); !d.Invalid {
		t.Errorf("not a tar: %+v", d)
	}
	if _, err := os.Lstat(outside); err == nil {
		t.Errorf("%s was written", outside)
	}
}

func TestLimitsAreSetBeforeTheCommandRunsAndHoldForItsChildren(t *testing.T) {
	t.Parallel()
	c := startAgent(t)
	r := c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "ulimit -n; ulimit -f; sh -c 'ulimit -n'"}, MaxOpenFiles: 64, MaxFileSize: 1 << 20}, nil)
	if got := string(r.stdout); got != "64\n2048\n64\n" || r.exit.Code != 0 {
		t.Errorf("limits seen by the command: %q %+v", got, r.exit)
	}
	r = c.run(agentproto.ExecMsg{Argv: []string{"sh", "-c", "kill -9 $$"}}, nil)
	if r.exit.Code != 137 || r.exit.Signal != 9 {
		t.Errorf("kill -9: %+v", r.exit)
	}
	r = c.run(agentproto.ExecMsg{Argv: []string{"nosuchcommand"}, MaxOpenFiles: 64}, nil)
	if r.exit.Code != 127 {
		t.Errorf("missing command through the launcher: %+v %q", r.exit, r.stderr)
	}
}
