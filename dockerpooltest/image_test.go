package dockerpooltest

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// There is no registry on the project's machines, so the fallback to the
// pinned busybox image is tested against a fake daemon that serves it (or
// refuses to).

// fakeDaemon is an imageAPI that records what BuildImage asks of it.
type fakeDaemon struct {
	images   map[string]bool   // refs the daemon has
	pullErr  error             // ImagePull fails with it
	pullOut  string            // ImagePull's stream
	binTar   []byte            // /bin of the pinned image, as CopyFromContainer gives it
	pulled   []string          // refs pulled
	created  []string          // container IDs created
	removed  []string          // container IDs removed
	imported map[string][]byte // rootfs tars imported, by ref
}

func newFakeDaemon(binTar []byte) *fakeDaemon {
	return &fakeDaemon{images: map[string]bool{}, binTar: binTar, imported: map[string][]byte{}, pullOut: `{"status":"Pull complete"}` + "\n"}
}

func (f *fakeDaemon) ImageInspect(_ context.Context, ref string, _ ...client.ImageInspectOption) (image.InspectResponse, error) {
	if f.images[ref] {
		return image.InspectResponse{ID: "sha256:" + ref}, nil
	}
	return image.InspectResponse{}, fmt.Errorf("no such image: %s: %w", ref, cerrdefs.ErrNotFound)
}

func (f *fakeDaemon) ImageImport(_ context.Context, src image.ImportSource, ref string, _ image.ImportOptions) (io.ReadCloser, error) {
	b, err := io.ReadAll(src.Source)
	if err != nil {
		return nil, err
	}
	f.imported[ref] = b
	f.images[ref] = true
	return io.NopCloser(strings.NewReader(`{"status":"sha256:1234"}`)), nil
}

func (f *fakeDaemon) ImagePull(_ context.Context, ref string, _ image.PullOptions) (io.ReadCloser, error) {
	f.pulled = append(f.pulled, ref)
	if f.pullErr != nil {
		return nil, f.pullErr
	}
	if !strings.Contains(f.pullOut, `"error"`) {
		f.images[ref] = true
	}
	return io.NopCloser(strings.NewReader(f.pullOut)), nil
}

func (f *fakeDaemon) ContainerCreate(_ context.Context, cfg *container.Config, _ *container.HostConfig, _ *network.NetworkingConfig, _ *ocispec.Platform, _ string) (container.CreateResponse, error) {
	if !f.images[cfg.Image] {
		return container.CreateResponse{}, fmt.Errorf("no such image: %s: %w", cfg.Image, cerrdefs.ErrNotFound)
	}
	id := fmt.Sprintf("c%d", len(f.created)+1)
	f.created = append(f.created, id)
	return container.CreateResponse{ID: id}, nil
}

func (f *fakeDaemon) CopyFromContainer(_ context.Context, id, path string) (io.ReadCloser, container.PathStat, error) {
	if path != "/bin" {
		return nil, container.PathStat{}, fmt.Errorf("copy %s: %w", path, cerrdefs.ErrNotFound)
	}
	return io.NopCloser(bytes.NewReader(f.binTar)), container.PathStat{Name: "bin", Mode: 0o755}, nil
}

func (f *fakeDaemon) ContainerRemove(_ context.Context, id string, _ container.RemoveOptions) error {
	f.removed = append(f.removed, id)
	return nil
}

// fakeELF returns the headers of an ELF executable, with an interpreter
// (dynamically linked) or without (static): enough for checkStatic.
func fakeELF(dynamic bool) []byte {
	progs := []elf.Prog64{{Type: uint32(elf.PT_LOAD)}}
	if dynamic {
		progs = append(progs, elf.Prog64{Type: uint32(elf.PT_INTERP)})
	}
	h := elf.Header64{
		Ident:     [elf.EI_NIDENT]byte{0x7f, 'E', 'L', 'F', byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)},
		Type:      uint16(elf.ET_EXEC),
		Machine:   uint16(elf.EM_X86_64),
		Version:   uint32(elf.EV_CURRENT),
		Phoff:     64,
		Ehsize:    64,
		Phentsize: 56,
		Phnum:     uint16(len(progs)),
	}
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, h)
	for _, p := range progs {
		_ = binary.Write(&b, binary.LittleEndian, p)
	}
	return b.Bytes()
}

// pinnedBin is /bin of the pinned image as the daemon's archive gives it:
// the first of busybox's names (in the archive's lexical order) holds the
// content, the others are hard links to it; getconf is a program of its
// own.
func pinnedBin(busybox []byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/[", Mode: 0o755, Size: int64(len(busybox))})
	_, _ = tw.Write(busybox)
	for _, a := range []string{"busybox", "cat", "sh", "sleep"} {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "bin/" + a, Linkname: "bin/["})
	}
	other := fakeELF(false)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/getconf", Mode: 0o755, Size: int64(len(other))})
	_, _ = tw.Write(other)
	_ = tw.Close()
	return buf.Bytes()
}

// noLocalBusybox makes this machine look like one without a static busybox,
// and forgets any busybox fetched before.
func noLocalBusybox(t *testing.T) {
	t.Setenv("DOCKERPOOL_BUSYBOX", "")
	saved := busyboxPaths
	busyboxPaths = []string{t.TempDir() + "/no-busybox"}
	fetched.bin, fetched.applets = nil, nil
	t.Cleanup(func() {
		busyboxPaths = saved
		fetched.bin, fetched.applets = nil, nil
	})
}

// rootfsEntries lists an imported rootfs tar: name -> header, content.
func rootfsEntries(t *testing.T, b []byte) (map[string]*tar.Header, map[string][]byte) {
	t.Helper()
	hdrs, data := map[string]*tar.Header{}, map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return hdrs, data
		}
		if err != nil {
			t.Fatal(err)
		}
		hdrs[h.Name] = h
		data[h.Name], _ = io.ReadAll(tr)
	}
}

func TestBuildImageWithoutALocalBusyboxUsesThePinnedImagesBinary(t *testing.T) {
	pinned, ok := pinnedBusybox[runtime.GOARCH]
	if !ok {
		t.Fatalf("no busybox image is pinned for %s: add its digest to pinnedBusybox", runtime.GOARCH)
	}
	noLocalBusybox(t)
	bin := fakeELF(false)
	d := newFakeDaemon(pinnedBin(bin))
	ref, err := buildImage(t.Context(), d, ImageOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(ref, ImageRepo+":") {
		t.Errorf("ref %q", ref)
	}
	if len(d.pulled) != 1 || d.pulled[0] != pinned || !strings.Contains(pinned, "@sha256:") {
		t.Errorf("pulled %q, want the pinned %q, by digest", d.pulled, pinned)
	}
	if len(d.created) != 1 || len(d.removed) != 1 || d.removed[0] != d.created[0] {
		t.Errorf("created %q, removed %q: the container the binary was copied from must go", d.created, d.removed)
	}
	// The same image as offline: busybox, a link per applet, root and
	// nobody, a world-writable /tmp.
	hdrs, data := rootfsEntries(t, d.imported[ref])
	if !bytes.Equal(data["bin/busybox"], bin) || hdrs["bin/busybox"].Mode != 0o755 {
		t.Errorf("bin/busybox is not the pinned image's binary")
	}
	for _, a := range []string{"[", "cat", "sh", "sleep"} {
		if h := hdrs["bin/"+a]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "busybox" {
			t.Errorf("bin/%s: %+v, want a symlink to busybox", a, h)
		}
	}
	if _, ok := hdrs["bin/getconf"]; ok {
		t.Errorf("bin/getconf is not an applet of busybox")
	}
	passwd := string(data["etc/passwd"])
	if !strings.Contains(passwd, "root:x:0:0:") || !strings.Contains(passwd, "nobody:x:65534:65534:") {
		t.Errorf("etc/passwd: %q", passwd)
	}
	if h := hdrs["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Errorf("tmp: %+v", h)
	}

	// Fetched once: another image (the agent's, say) reuses the copy.
	ref2, err := buildImage(t.Context(), d, ImageOptions{Files: map[string][]byte{"/x": []byte("x")}})
	if err != nil {
		t.Fatal(err)
	}
	if ref2 == ref || len(d.pulled) != 1 || len(d.created) != 1 {
		t.Errorf("second image %s: pulled %d times, %d containers", ref2, len(d.pulled), len(d.created))
	}
}

func TestBuildImageDoesNotPullThePinnedImageWhenTheDaemonHasIt(t *testing.T) {
	noLocalBusybox(t)
	d := newFakeDaemon(pinnedBin(fakeELF(false)))
	d.images[pinnedBusybox[runtime.GOARCH]] = true
	if _, err := buildImage(t.Context(), d, ImageOptions{}); err != nil {
		t.Fatal(err)
	}
	if len(d.pulled) != 0 {
		t.Errorf("pulled %q", d.pulled)
	}
}

func TestBuildImageSaysWhyWhenNeitherALocalBusyboxNorTheRegistryWorks(t *testing.T) {
	for _, tc := range []struct {
		name   string
		daemon func(*fakeDaemon)
		want   string
	}{
		{"the pull is refused", func(d *fakeDaemon) { d.pullErr = errors.New("dial tcp: lookup registry-1.docker.io: no such host") }, "no such host"},
		{"the pull stream reports an error", func(d *fakeDaemon) {
			d.pullOut = `{"errorDetail":{"message":"toomanyrequests: rate limit"},"error":"toomanyrequests: rate limit"}` + "\n"
		}, "toomanyrequests"},
		{"the image's busybox is dynamically linked", func(d *fakeDaemon) { d.binTar = pinnedBin(fakeELF(true)) }, "dynamically linked"},
		{"the image has no busybox", func(d *fakeDaemon) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755})
			_ = tw.Close()
			d.binTar = buf.Bytes()
		}, "no bin/busybox"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			noLocalBusybox(t)
			d := newFakeDaemon(pinnedBin(fakeELF(false)))
			tc.daemon(d)
			_, err := buildImage(t.Context(), d, ImageOptions{})
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			msg := err.Error()
			for _, want := range []string{"no static busybox found", "install Debian's busybox-static", pinnedBusybox[runtime.GOARCH], tc.want} {
				if !strings.Contains(msg, want) {
					t.Errorf("the error does not say %q", want)
				}
			}
			if !errors.Is(err, ErrNoBusybox) {
				t.Errorf("the error is not ErrNoBusybox")
			}
			if len(d.imported) != 0 {
				t.Errorf("an image was imported")
			}
			if len(d.created) != len(d.removed) {
				t.Errorf("created %q, removed %q", d.created, d.removed)
			}
			if fetched.bin != nil {
				t.Errorf("a failure was kept as the busybox")
			}
		})
	}
}

func TestBuildImageDoesNotFallBackFromABusyboxNamedExplicitly(t *testing.T) {
	noLocalBusybox(t)
	t.Setenv("DOCKERPOOL_BUSYBOX", t.TempDir()+"/missing")
	d := newFakeDaemon(pinnedBin(fakeELF(false)))
	_, err := buildImage(t.Context(), d, ImageOptions{})
	if !errors.Is(err, ErrNoBusybox) || len(d.pulled) != 0 {
		t.Fatalf("err %v, pulled %q: want ErrNoBusybox and no pull", err, d.pulled)
	}
}

// skipTB records what unavailable does with a test.
type skipTB struct {
	testing.TB
	skipped, failed string
}

func (s *skipTB) Helper()                           {}
func (s *skipTB) Skip(args ...any)                  { s.skipped = fmt.Sprint(args...) }
func (s *skipTB) Fatalf(format string, args ...any) { s.failed = fmt.Sprintf(format, args...) }

func TestUnavailableSkipsAndCountsOutsideCIAndFailsUnderCI(t *testing.T) {
	skips.mu.Lock()
	savedN, savedReason := skips.n, skips.reason
	skips.n, skips.reason = 0, ""
	skips.mu.Unlock()
	t.Cleanup(func() {
		skips.mu.Lock()
		skips.n, skips.reason = savedN, savedReason
		skips.mu.Unlock()
	})

	t.Setenv("CI", "")
	for range 3 {
		tb := &skipTB{TB: t}
		unavailable(tb, "no Docker daemon: %s", "connection refused")
		if tb.skipped == "" || tb.failed != "" {
			t.Fatalf("outside CI: skipped %q, failed %q", tb.skipped, tb.failed)
		}
	}
	line := SkipReport()
	t.Log(line)
	for _, want := range []string{"3 integration tests skipped", "no Docker daemon: connection refused", "CI=1"} {
		if !strings.Contains(line, want) {
			t.Errorf("the report does not say %q", want)
		}
	}
	if strings.Count(line, "\n") != 0 {
		t.Errorf("the report is more than one line")
	}

	t.Setenv("CI", "true")
	tb := &skipTB{TB: t}
	unavailable(tb, "no test image: %s", "no busybox")
	if tb.failed == "" || tb.skipped != "" || !strings.Contains(tb.failed, "CI is set") {
		t.Fatalf("under CI: skipped %q, failed %q", tb.skipped, tb.failed)
	}
	if !strings.Contains(SkipReport(), "3 integration tests") {
		t.Errorf("a failure under CI was counted as a skip")
	}
}

// The fallback against the real daemon, all but the pull: the pinned
// reference is pointed at a local image laid out like the pinned one (a
// hard-linked /bin), so that the daemon's own archive format is what
// busyboxFromTar reads.
func TestFetchBusyboxCopiesTheBinaryOutOfARealDaemonsContainer(t *testing.T) {
	cli := Client(t)
	bin := fakeELF(false) // never run: the container is not started
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755})
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin))})
	_, _ = tw.Write(bin)
	for _, a := range []string{"[", "sh", "sleep"} {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: "bin/" + a, Linkname: "bin/busybox"})
	}
	_ = tw.Close()
	ref := ImageRepo + "-pinned-test:" + strings.ToLower(Name(t)[len(Name(t))-8:])
	rc, err := cli.ImageImport(t.Context(), image.ImportSource{Source: &buf, SourceName: "-"}, ref, image.ImportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, rc)
	rc.Close()
	t.Cleanup(func() { _, _ = cli.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true}) })

	saved := pinnedBusybox[runtime.GOARCH]
	pinnedBusybox[runtime.GOARCH] = ref
	t.Cleanup(func() { pinnedBusybox[runtime.GOARCH] = saved })
	got, applets, err := fetchBusybox(t.Context(), cli)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bin) {
		t.Errorf("the copied busybox differs from the image's")
	}
	if strings.Join(applets, " ") != "[ sh sleep" {
		t.Errorf("applets %q, want [ sh sleep", applets)
	}
	left, err := cli.ContainerList(t.Context(), container.ListOptions{All: true, Filters: filters.NewArgs(filters.Arg("ancestor", ref))})
	if err != nil || len(left) != 0 {
		t.Errorf("containers of %s left: %d (%v)", ref, len(left), err)
	}
}
