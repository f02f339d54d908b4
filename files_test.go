package dockerpool_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/matryer/is"

	"github.com/dockerpool/dockerpool"
	"github.com/dockerpool/dockerpool/dockerpooltest"
)

// Files in and out of containers, on the real daemon, on both paths, in
// every kind of place: the writable layer, a tmpfs mount, and the sandbox
// preset (a read-only root with a tmpfs /tmp) as SandboxUser.

// place is a container configuration and a writable directory in it.
type place struct {
	name  string
	dir   string
	host  *container.HostConfig
	user  string // the container's user, "" for root
	owner string // what stat -c %u:%g says of a file we wrote
}

var places = []place{
	{name: "layer", dir: "/root", host: &container.HostConfig{NetworkMode: "none"}, owner: "0:0"},
	{name: "tmpfs", dir: "/mnt", host: &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/mnt": "size=16m"}}, owner: "0:0"},
	{name: "sandbox", dir: "/tmp", host: sandboxHost(dockerpool.SandboxOptions{}), user: dockerpool.SandboxUser, owner: dockerpool.SandboxUser},
}

// onEachPlace runs f on every path and in every place, in parallel.
func onEachPlace(t *testing.T, f func(t *testing.T, path execPath, pl place, c *dockerpool.Container)) {
	onEachPath(t, func(t *testing.T, path execPath) {
		for _, pl := range places {
			t.Run(pl.name, func(t *testing.T) {
				t.Parallel()
				cfg := dockerpool.Config{MinIdle: 1, HostConfig: pl.host}
				if pl.user != "" {
					cfg.ContainerConfig = &container.Config{User: pl.user}
				}
				p := warm(t, path.config(t, cfg))
				f(t, path, pl, held(t, p))
			})
		}
	})
}

// sh runs a script in c and returns its stdout, failing the test on an
// error or a non-zero exit.
func shOut(t *testing.T, c *dockerpool.Container, script string) string {
	t.Helper()
	res, err := c.Exec(bg(t), []string{"sh", "-c", script})
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("%s: exit %d, %v, %s", script, res.ExitCode, err, res.Stderr)
	}
	return strings.TrimSpace(string(res.Stdout))
}

func TestFilesAreWrittenWholeAndReadBackInEveryKindOfPlace(t *testing.T) {
	onEachPlace(t, func(t *testing.T, path execPath, pl place, c *dockerpool.Container) {
		is := is.New(t)
		ctx := bg(t)
		name := pl.dir + "/input.txt"
		is.NoErr(c.WriteFile(ctx, name, []byte("the input\n"), 0o640))
		got, err := c.ReadFile(ctx, name, 1024)
		is.NoErr(err)
		is.Equal(string(got), "the input\n")
		// In the container, as the container sees it: owned by its user.
		is.Equal(shOut(t, c, "cat "+name), "the input")
		is.Equal(shOut(t, c, "stat -c '%u:%g %a' "+name), pl.owner+" 640")
		// A program of the container's user can overwrite it.
		shOut(t, c, "echo rewritten > "+name)
		got, err = c.ReadFile(ctx, name, 1024)
		is.NoErr(err)
		is.Equal(string(got), "rewritten\n")
		// Replaced whole; nothing left beside it.
		is.NoErr(c.WriteFile(ctx, name, []byte("v2"), 0o600))
		is.Equal(shOut(t, c, "cat "+name+"; ls -a "+pl.dir+" | grep -c dockerpool || true"), "v20")
		// Empty files are files.
		is.NoErr(c.WriteFile(ctx, pl.dir+"/empty", nil, 0o644))
		got, err = c.ReadFile(ctx, pl.dir+"/empty", 0)
		is.NoErr(err)
		is.Equal(len(got), 0)
	})
}

// tarOf builds a tar stream of entries (name, content; a name ending in /
// is a directory, "->target" makes a symbolic link).
func tarOf(t *testing.T, entries ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		name, content, _ := strings.Cut(e, "=")
		h := &tar.Header{Name: name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(content))}
		switch {
		case strings.HasSuffix(name, "/"):
			h.Typeflag, h.Mode, h.Size = tar.TypeDir, 0o755, 0
		case strings.HasPrefix(content, "->"):
			h.Typeflag, h.Linkname, h.Size = tar.TypeSymlink, content[2:], 0
		case strings.HasPrefix(content, "=>"):
			h.Typeflag, h.Linkname, h.Size = tar.TypeLink, content[2:], 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			_, _ = tw.Write([]byte(content))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// listTar returns "name size" for each entry of a tar stream, sorted.
func listTar(t *testing.T, b []byte) []string {
	t.Helper()
	var out []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			sort.Strings(out)
			return out
		}
		if err != nil {
			t.Fatalf("read tar: %v", err)
		}
		out = append(out, fmt.Sprintf("%s %d %s", h.Name, h.Size, h.Linkname))
	}
}

func TestFilesCopyATreeInAndBackOutInEveryKindOfPlace(t *testing.T) {
	onEachPlace(t, func(t *testing.T, path execPath, pl place, c *dockerpool.Container) {
		is := is.New(t)
		ctx := bg(t)
		dir := pl.dir + "/made/here" // does not exist yet
		in := tarOf(t, "src/", "src/main.py=print(1)\n", "src/lib/", "src/lib/a.py=A", "src/link=->main.py", "src/hard==>src/lib/a.py")
		is.NoErr(c.CopyTo(ctx, dir, bytes.NewReader(in)))
		is.Equal(shOut(t, c, "cat "+dir+"/src/link "+dir+"/src/hard"), "print(1)\nA")
		is.Equal(shOut(t, c, "stat -c '%u:%g' "+dir+"/src/lib/a.py "+dir+"/made 2>/dev/null | sort -u"), pl.owner)
		var out bytes.Buffer
		is.NoErr(c.CopyFrom(ctx, dir+"/src", &out, -1))
		names := listTar(t, out.Bytes())
		t.Logf("CopyFrom gave %v", names)
		// As tar makes it: of two names of one file, the first one the walk
		// meets carries the content, the other links to it; which comes
		// first is the file system's order (gVisor's differs from overlay's).
		hardFirst := []string{"src/ 0 ", "src/hard 1 ", "src/lib/ 0 ", "src/lib/a.py 0 src/hard", "src/link 0 main.py", "src/main.py 9 "}
		libFirst := []string{"src/ 0 ", "src/hard 0 src/lib/a.py", "src/lib/ 0 ", "src/lib/a.py 1 ", "src/link 0 main.py", "src/main.py 9 "}
		if !slices.Equal(names, hardFirst) && !slices.Equal(names, libFirst) {
			t.Errorf("CopyFrom gave %q, want %q or %q", names, hardFirst, libFirst)
		}
		// One file alone.
		out.Reset()
		is.NoErr(c.CopyFrom(ctx, dir+"/src/lib/a.py", &out, -1))
		is.Equal(listTar(t, out.Bytes()), []string{"a.py 1 "})
	})
}

func TestFilesCopyToKeepsATarsOwnersOnlyForARootContainer(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c := held(t, p)
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "owned", Mode: 0o600, Size: 1, Uid: 1234, Gid: 4321})
		_, _ = tw.Write([]byte("x"))
		_ = tw.Close()
		is.NoErr(c.CopyTo(bg(t), "/srv", &buf))
		is.Equal(shOut(t, c, "stat -c '%u:%g %a' /srv/owned"), "1234:4321 600")
	})
}

// failingReader gives n bytes of data, then fails.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestFilesRefuseBadInputWithAClearErrorAndWriteNothingOutside(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		host := &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/small": "size=1m"}}
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, HostConfig: host}))
		c := held(t, p)
		ctx := bg(t)
		mentions := func(err error, s ...string) bool {
			for _, x := range s {
				if err == nil || !strings.Contains(err.Error(), x) {
					return false
				}
			}
			return true
		}
		// Paths.
		err := c.WriteFile(ctx, "relative/x", []byte("x"), 0o644)
		is.True(errors.Is(err, dockerpool.ErrInvalidConfig) && mentions(err, "relative/x", c.ID()[:12]))
		_, err = c.ReadFile(ctx, "/nope/none", 10)
		is.True(errors.Is(err, fs.ErrNotExist) && mentions(err, "/nope/none", c.ID()[:12]))
		err = c.WriteFile(ctx, "/nope/none", []byte("x"), 0o644)
		is.True(errors.Is(err, fs.ErrNotExist))
		err = c.CopyFrom(ctx, "/nope/none", io.Discard, -1)
		is.True(errors.Is(err, fs.ErrNotExist))
		_, err = c.ReadFile(ctx, "/etc", 1<<20)
		is.True(err != nil && errors.Is(err, syscall.EISDIR))
		// Tar slip and friends: each a clear error, nothing outside.
		for name, stream := range map[string][]byte{
			"dot-dot":         tarOf(t, "../outside=x"),
			"absolute":        tarOf(t, "/tmp/outside=x"),
			"symlink out":     tarOf(t, "evil=->/tmp"),
			"through a link":  tarOf(t, "ok=->sub", "sub/", "ok/../../outside=x"),
			"hard link out":   tarOf(t, "pw==>/etc/passwd"),
			"symlink then in": tarOf(t, "l=->.", "l/outside=x"),
		} {
			err := c.CopyTo(ctx, "/srv/target", bytes.NewReader(stream))
			if !errors.Is(err, dockerpool.ErrInvalidArchive) || !mentions(err, "/srv/target") {
				t.Errorf("%s: %v", name, err)
			}
		}
		var dev bytes.Buffer
		tw := tar.NewWriter(&dev)
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeChar, Name: "null", Devmajor: 1, Devminor: 3, Mode: 0o666})
		_ = tw.Close()
		is.True(errors.Is(c.CopyTo(ctx, "/srv/target", &dev), dockerpool.ErrInvalidArchive))
		is.True(errors.Is(c.CopyTo(ctx, "/srv/target", strings.NewReader(strings.Repeat("not a tar ", 100))), dockerpool.ErrInvalidArchive))
		is.Equal(shOut(t, c, "ls /tmp/outside /srv/outside /outside /srv/target/null 2>/dev/null | wc -l; md5sum /etc/passwd | cut -c1-8"), "0\n"+shOut(t, c, "md5sum /etc/passwd | cut -c1-8"))
		// A reader that fails midway: its error, wrapped.
		boom := errors.New("boom")
		err = c.CopyTo(ctx, "/srv/partial", &failingReader{r: bytes.NewReader(tarOf(t, "a=aaaa", "b=bbbb")[:1024]), err: boom})
		is.True(errors.Is(err, boom))
		// A file larger than the tmpfs: an error, and no truncated file.
		err = c.WriteFile(ctx, "/small/big", bytes.Repeat([]byte("x"), 2<<20), 0o644)
		is.True(errors.Is(err, syscall.ENOSPC))
		is.Equal(shOut(t, c, "ls -a /small | grep -v '^\\.*$' | wc -l"), "0")
		// max: 0 takes an empty file only; negative is no limit.
		is.NoErr(c.WriteFile(ctx, "/srv/three", []byte("abc"), 0o644))
		_, err = c.ReadFile(ctx, "/srv/three", 0)
		is.True(errors.Is(err, dockerpool.ErrFileTooLarge) && mentions(err, "/srv/three"))
		_, err = c.ReadFile(ctx, "/srv/three", 2)
		is.True(errors.Is(err, dockerpool.ErrFileTooLarge))
		b, err := c.ReadFile(ctx, "/srv/three", -1)
		is.NoErr(err)
		is.Equal(string(b), "abc")
		err = c.CopyFrom(ctx, "/srv", io.Discard, 2)
		if !errors.Is(err, dockerpool.ErrFileTooLarge) {
			t.Errorf("CopyFrom past max: %v (%s)", err, shOut(t, c, "ls -laR /srv"))
		}
		is.True(errors.Is(c.CopyTo(ctx, "/srv", nil), dockerpool.ErrInvalidConfig))
		is.True(errors.Is(c.CopyFrom(ctx, "/srv", nil, -1), dockerpool.ErrInvalidConfig))
		// A file onto a directory: refused, and the directory kept whole.
		err = c.WriteFile(ctx, "/srv", []byte("x"), 0o644)
		is.True(errors.Is(err, syscall.EISDIR) && mentions(err, "/srv", c.ID()[:12]))
		is.Equal(shOut(t, c, "cat /srv/three"), "abc")
	})
}

// The Docker path remembers the directories it found real between two
// transfers; a command that turns one into a link to a tmpfs mount must
// send the next transfers where the container sees them, not into the
// layer below the mount.
func TestFilesSeeWhatACommandChangedBetweenTwoTransfers(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		host := &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/mnt": "size=1m"}}
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1, HostConfig: host}))
		c := held(t, p)
		ctx := bg(t)
		shOut(t, c, "mkdir -p /root/d")
		is.NoErr(c.WriteFile(ctx, "/root/d/a", []byte("1"), 0o644))
		got, err := c.ReadFile(ctx, "/root/d/a", 16)
		is.NoErr(err)
		is.Equal(string(got), "1")
		shOut(t, c, "rm -r /root/d && ln -s /mnt /root/d && echo 3 > /mnt/c && ln -s /mnt/c /root/l")
		is.NoErr(c.WriteFile(ctx, "/root/d/b", []byte("2"), 0o644))
		is.Equal(shOut(t, c, "cat /mnt/b"), "2") // in the tmpfs, as the container sees /root/d
		got, err = c.ReadFile(ctx, "/root/d/c", 16)
		is.NoErr(err)
		is.Equal(string(got), "3\n")
		got, err = c.ReadFile(ctx, "/root/l", 16) // a link to a file on the tmpfs
		is.NoErr(err)
		is.Equal(string(got), "3\n")
		// A CopyTo may make links too: the next transfer checks again.
		shOut(t, c, "mkdir /root/e")
		is.NoErr(c.WriteFile(ctx, "/root/e/x", []byte("x"), 0o644))
		is.NoErr(c.CopyTo(ctx, "/root", bytes.NewReader(tarOf(t, "g/", "g/h=h"))))
		shOut(t, c, "rmdir /root/e 2>/dev/null; rm -rf /root/e; ln -s /mnt /root/e")
		is.NoErr(c.WriteFile(ctx, "/root/e/y", []byte("y"), 0o644))
		is.Equal(shOut(t, c, "cat /mnt/y"), "y")
	})
}

// stall is a reader that gives some data, then blocks until its done.
type stall struct {
	data []byte
	done <-chan struct{}
}

func (s *stall) Read(b []byte) (int, error) {
	if len(s.data) > 0 {
		n := copy(b, s.data)
		s.data = s.data[n:]
		return n, nil
	}
	<-s.done
	return 0, errors.New("stall released")
}

func TestFilesFollowTheHandleRules(t *testing.T) {
	onEachPath(t, func(t *testing.T, path execPath) {
		is := is.New(t)
		p := warm(t, path.config(t, dockerpool.Config{MinIdle: 1}))
		c, err := p.Acquire(bg(t))
		is.NoErr(err)
		// A transfer cut by ctx returns promptly.
		release := make(chan struct{})
		defer close(release)
		in := tarOf(t, "a="+strings.Repeat("x", 10000))
		ctx, cancel := context.WithTimeout(bg(t), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		err = c.CopyTo(ctx, "/srv/cut", &stall{data: in[:5000], done: release})
		took := time.Since(start)
		t.Logf("cut CopyTo: %v after %v; tainted %v", err, took, c.Tainted())
		is.True(errors.Is(err, context.DeadlineExceeded))
		is.True(took < 2*time.Second)
		is.NoErr(p.Return(bg(t), c))
		// A dead handle refuses everything.
		_, err = c.ReadFile(bg(t), "/etc/passwd", -1)
		is.True(errors.Is(err, dockerpool.ErrContainerReleased))
		is.True(errors.Is(c.WriteFile(bg(t), "/tmp/x", nil, 0o644), dockerpool.ErrContainerReleased))
		is.True(errors.Is(c.CopyTo(bg(t), "/tmp", bytes.NewReader(in)), dockerpool.ErrContainerReleased))
		is.True(errors.Is(c.CopyFrom(bg(t), "/tmp", io.Discard, -1), dockerpool.ErrContainerReleased))
	})
}

func TestFilesHandleImageAndLabels(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, dockerpool.Config{MinIdle: 1, Labels: map[string]string{"app": "judge"}})
	c := held(t, p)
	is.True(strings.HasPrefix(c.Image(), "dockerpool-busybox:"))
	l := c.Labels()
	is.Equal(l["app"], "judge")
	is.True(l[dockerpool.LabelPool] != "")
	l["app"] = "changed"
	is.Equal(c.Labels()["app"], "judge") // a copy
}

// servers counts the Docker path's file server shells in the container.
func servers(t *testing.T, c *dockerpool.Container) string {
	t.Helper()
	return shOut(t, c, "ps -o args | grep -c '[d]ockerpool-files' || true")
}

// On the Docker exec path, the transfers of a hand-out go through one
// shell that stays in the container between them (an exec each would cost
// some 40 ms). It must be one, outlive commands, come back after a kill of
// every process, and a transfer cut while it does not answer returns
// promptly, leaving the file whole or the container tainted.
func TestFilesDockerPathServesTransfersFromOneShellThatSurvivesItsEnd(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	p := warm(t, execPaths[0].config(t, dockerpool.Config{MinIdle: 1, MaxSize: 1}))
	c := held(t, p)
	ctx := bg(t)
	is.Equal(servers(t, c), "0")
	for i := range 3 {
		body := fmt.Sprintf("round %d, with blanks in the name", i)
		is.NoErr(c.WriteFile(ctx, "/root/a b", []byte(body), 0o755))
		got, err := c.ReadFile(ctx, "/root/a b", 100)
		is.NoErr(err)
		is.Equal(string(got), body)
	}
	is.Equal(servers(t, c), "1")
	is.Equal(shOut(t, c, "stat -c %a '/root/a b'; ls -a /root | grep -c dockerpool || true"), "755\n0")
	// A kill of every process ends it; the next transfer starts another.
	is.NoErr(c.KillProcesses(ctx))
	is.Equal(servers(t, c), "0")
	is.NoErr(c.WriteFile(ctx, "/root/f", []byte("old"), 0o644))
	is.Equal(servers(t, c), "1")
	// Return ends it: the next holder of the container finds none.
	is.NoErr(p.Return(ctx, c))
	id := c.ID()
	c = held(t, p)
	is.Equal(c.ID(), id)
	is.Equal(servers(t, c), "0")
	is.NoErr(c.WriteFile(ctx, "/root/f", []byte("old"), 0o644))
	// A frozen container: the transfers return at their deadline.
	cli := dockerpooltest.Client(t)
	is.NoErr(cli.ContainerPause(ctx, c.ID()))
	cut, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.WriteFile(cut, "/root/f", []byte("new"), 0o644)
	took := time.Since(start)
	_, rerr := c.ReadFile(cut, "/root/f", 100)
	t.Logf("cut WriteFile: %v after %v; ReadFile: %v; tainted %v", err, took, rerr, c.Tainted())
	is.NoErr(cli.ContainerUnpause(ctx, c.ID()))
	is.True(errors.Is(err, context.DeadlineExceeded))
	is.True(errors.Is(rerr, context.DeadlineExceeded))
	is.True(took < 2*time.Second)
	// The file is whole, old or new, and a temporary file left taints.
	left := shOut(t, c, "cat /root/f; echo; ls -a /root | grep -c dockerpool || true")
	is.True(left == "old\n0" || left == "new\n0" || (c.Tainted() && strings.HasSuffix(left, "\n1")))
	got, err := c.ReadFile(ctx, "/root/f", 100)
	is.NoErr(err)
	is.True(string(got) == "old" || string(got) == "new")
	is.Equal(servers(t, c), "1") // the frozen one was closed, a new one serves
}

// Where the file server cannot run (an image without a dd that counts
// bytes) or is busy with another transfer, the Docker exec path takes the
// one-shot way, with the same results: the archive API into the layer, a
// shell command into a tmpfs.
func TestFilesDockerPathWithoutTheFileServerTakesTheOneShotWay(t *testing.T) {
	t.Parallel()
	is := is.New(t)
	host := &container.HostConfig{NetworkMode: "none", Tmpfs: map[string]string{"/mnt": "size=1m"}}
	p := warm(t, execPaths[0].config(t, dockerpool.Config{MinIdle: 1, HostConfig: host}))
	c := held(t, p)
	dockerpool.NoFileServer(c)
	ctx := bg(t)
	var got []byte
	var err error
	for _, dir := range []string{"/root", "/mnt"} {
		is.NoErr(c.WriteFile(ctx, dir+"/f", []byte("in "+dir), 0o640))
		got, err = c.ReadFile(ctx, dir+"/f", 100)
		is.NoErr(err)
		is.Equal(string(got), "in "+dir)
		is.Equal(shOut(t, c, "cat "+dir+"/f; echo; stat -c %a "+dir+"/f"), "in "+dir+"\n640")
		err = c.WriteFile(ctx, dir, []byte("x"), 0o644) // a directory: refused, kept
		is.True(errors.Is(err, syscall.EISDIR))
		_, err = c.ReadFile(ctx, dir+"/none", 100)
		is.True(errors.Is(err, fs.ErrNotExist))
	}
	shOut(t, c, "ln -s /mnt/f /root/l")
	got, err = c.ReadFile(ctx, "/root/l", 100) // a link into the tmpfs, followed as the container sees it
	is.NoErr(err)
	is.Equal(string(got), "in /mnt")
	is.Equal(servers(t, c), "0")
}
