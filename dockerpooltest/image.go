package dockerpooltest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// ImageRepo is the repository of the images BuildImage makes.
const ImageRepo = "dockerpool-busybox"

// busyboxPaths are where BuildImage looks for a static busybox, after the
// DOCKERPOOL_BUSYBOX variable. Debian's busybox-static installs /bin/busybox.
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox", "/usr/local/bin/busybox"}

// ErrNoBusybox means no static busybox binary was found on this machine.
var ErrNoBusybox = errors.New("dockerpooltest: no static busybox found (install Debian's busybox-static, or set DOCKERPOOL_BUSYBOX)")

// ImageOptions adds files to the image BuildImage makes.
type ImageOptions struct {
	// Files maps absolute paths in the image to their content. Files are
	// made executable.
	Files map[string][]byte
	// Tag overrides the image tag; default: a hash of the content.
	Tag string
	// Applets, when set, limits the busybox applets linked in /bin (for
	// example an image without sh). Default: all of them.
	Applets []string
}

// BuildImage makes a tiny image offline: a static busybox with its applets
// (sh, sleep, cat, ps, kill, ...), /etc/passwd with root and nobody, and a
// world-writable /tmp, imported with the Docker API. It needs no registry. It
// returns the image reference, such as "dockerpool-busybox:3f2a...". When an
// image with the same content exists already, it is reused.
//
// The busybox is the machine's (DOCKERPOOL_BUSYBOX, or Debian's
// busybox-static at /bin/busybox). A machine without one, but with a
// registry, gets the binary of a pinned busybox image instead (busybox
// 1.36.1, musl, static, pinned by digest): BuildImage pulls it, copies its
// /bin/busybox out of a container that is never started, and builds the
// same image around it. The copy is made once per process.
func BuildImage(ctx context.Context, cli *client.Client, opts ImageOptions) (string, error) {
	return buildImage(ctx, cli, opts)
}

// imageAPI is what BuildImage asks of the daemon; *client.Client has it,
// and the tests give a fake.
type imageAPI interface {
	ImageInspect(ctx context.Context, imageID string, opts ...client.ImageInspectOption) (image.InspectResponse, error)
	ImageImport(ctx context.Context, source image.ImportSource, ref string, options image.ImportOptions) (io.ReadCloser, error)
	ImagePull(ctx context.Context, ref string, options image.PullOptions) (io.ReadCloser, error)
	ContainerCreate(ctx context.Context, config *container.Config, hostConfig *container.HostConfig, networkingConfig *network.NetworkingConfig, platform *ocispec.Platform, containerName string) (container.CreateResponse, error)
	CopyFromContainer(ctx context.Context, containerID, srcPath string) (io.ReadCloser, container.PathStat, error)
	ContainerRemove(ctx context.Context, containerID string, options container.RemoveOptions) error
}

var _ imageAPI = (*client.Client)(nil)

func buildImage(ctx context.Context, cli imageAPI, opts ImageOptions) (string, error) {
	bb, applets, err := busybox(ctx, cli)
	if err != nil {
		return "", err
	}
	if opts.Applets != nil {
		applets = opts.Applets
	}
	rootfs, err := rootfsTar(bb, applets, opts.Files)
	if err != nil {
		return "", err
	}
	tag := opts.Tag
	if tag == "" {
		sum := sha256.Sum256(rootfs)
		tag = hex.EncodeToString(sum[:6])
	}
	ref := ImageRepo + ":" + tag
	if _, err := cli.ImageInspect(ctx, ref); err == nil {
		return ref, nil
	} else if !cerrdefs.IsNotFound(err) {
		return "", fmt.Errorf("dockerpooltest: inspect %s: %w", ref, err)
	}
	rc, err := cli.ImageImport(ctx, image.ImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, ref, image.ImportOptions{
		Changes: []string{
			`ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`,
			`CMD ["sleep", "infinity"]`,
		},
	})
	if err != nil {
		return "", fmt.Errorf("dockerpooltest: import %s: %w", ref, err)
	}
	defer rc.Close()
	out, err := io.ReadAll(rc)
	if err != nil {
		return "", fmt.Errorf("dockerpooltest: import %s: %w", ref, err)
	}
	if bytes.Contains(out, []byte(`"error"`)) {
		return "", fmt.Errorf("dockerpooltest: import %s: %s", ref, strings.TrimSpace(string(out)))
	}
	return ref, nil
}

// busybox returns the static busybox to build the image around, and its
// applets: the machine's, or else the pinned image's (fetched once).
func busybox(ctx context.Context, cli imageAPI) ([]byte, []string, error) {
	path, bb, err := findBusybox()
	if err == nil {
		return bb, appletNames(path), nil
	}
	if !errors.Is(err, ErrNoBusybox) || os.Getenv("DOCKERPOOL_BUSYBOX") != "" {
		return nil, nil, err // a broken busybox, or one named explicitly: no fallback
	}
	fetched.mu.Lock()
	defer fetched.mu.Unlock()
	if fetched.bin == nil {
		bin, applets, ferr := fetchBusybox(ctx, cli)
		if ferr != nil {
			return nil, nil, fmt.Errorf("%w; nor could the pinned busybox image be used: %w", err, ferr)
		}
		fetched.bin, fetched.applets = bin, applets
	}
	return fetched.bin, fetched.applets, nil
}

// fetched holds the busybox copied from the pinned image.
var fetched struct {
	mu      sync.Mutex
	bin     []byte
	applets []string
}

// pinnedBusybox is the image BuildImage takes its busybox from when the
// machine has none, by architecture: the official busybox:1.36.1-musl,
// whose /bin/busybox is statically linked, pinned by the digest of the
// architecture's manifest (from the OCI layout in
// github.com/docker-library/busybox, latest-1/musl/<arch>/index.json), so
// that every machine tests with the same binary and a moved tag changes
// nothing.
var pinnedBusybox = map[string]string{
	"amd64": "docker.io/library/busybox@sha256:e56bc0f7fc7d4452b17eb4ac0a9261ff4c9a469afa45d2b673e03650716d095d",
	"arm64": "docker.io/library/busybox@sha256:c3be5bfaa2b99099a83a598b79f3cc6c6b264b78cf453c1be5e8750f807881d5",
}

// fetchBusybox pulls the pinned image (unless the daemon has it), creates a
// container of it without starting it, and copies /bin out of it: the
// busybox binary, and its applets, which the image installs as hard links
// to it.
func fetchBusybox(ctx context.Context, cli imageAPI) ([]byte, []string, error) {
	ref, ok := pinnedBusybox[runtime.GOARCH]
	if !ok {
		return nil, nil, fmt.Errorf("no busybox image is pinned for %s", runtime.GOARCH)
	}
	if _, err := cli.ImageInspect(ctx, ref); err != nil {
		if !cerrdefs.IsNotFound(err) {
			return nil, nil, fmt.Errorf("inspect %s: %w", ref, err)
		}
		rc, err := cli.ImagePull(ctx, ref, image.PullOptions{})
		if err != nil {
			return nil, nil, fmt.Errorf("pull %s: %w", ref, err)
		}
		err = jsonmessage.DisplayJSONMessagesStream(rc, io.Discard, 0, false, nil)
		rc.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("pull %s: %w", ref, err)
		}
	}
	created, err := cli.ContainerCreate(ctx, &container.Config{
		Image:  ref,
		Cmd:    []string{"/bin/busybox", "true"},
		Labels: map[string]string{LabelTest: "dockerpooltest-busybox-copy"},
	}, &container.HostConfig{NetworkMode: "none"}, nil, nil, "")
	if err != nil {
		return nil, nil, fmt.Errorf("create a container of %s: %w", ref, err)
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = cli.ContainerRemove(rctx, created.ID, container.RemoveOptions{Force: true})
	}()
	rc, _, err := cli.CopyFromContainer(ctx, created.ID, "/bin")
	if err != nil {
		return nil, nil, fmt.Errorf("copy /bin out of %s: %w", ref, err)
	}
	defer rc.Close()
	bin, applets, err := busyboxFromTar(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("/bin of %s: %w", ref, err)
	}
	if err := staticELF(bin); err != nil {
		return nil, nil, fmt.Errorf("/bin/busybox of %s %w", ref, err)
	}
	return bin, applets, nil
}

// busyboxFromTar reads a tar of a /bin directory and returns the content of
// bin/busybox and the names of the applets linked to it (hard links, as
// busybox --install makes, or symlinks).
func busyboxFromTar(r io.Reader) ([]byte, []string, error) {
	tr := tar.NewReader(r)
	files := map[string][]byte{} // regular files, by base name
	hard := map[string]string{}  // hard link -> target, base names
	var soft []string            // symlinks to busybox
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		base := h.Name[strings.LastIndexByte(strings.TrimSuffix(h.Name, "/"), '/')+1:]
		switch h.Typeflag {
		case tar.TypeReg:
			if h.Size > 32<<20 {
				continue // not busybox
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				return nil, nil, err
			}
			files[base] = b
		case tar.TypeLink:
			hard[base] = h.Linkname[strings.LastIndexByte(h.Linkname, '/')+1:]
		case tar.TypeSymlink:
			if h.Linkname == "busybox" || h.Linkname == "/bin/busybox" {
				soft = append(soft, base)
			}
		}
	}
	// busybox is a regular file, or a hard link to the one that holds the
	// content (the first of its names in the archive).
	holder := "busybox"
	if t, ok := hard["busybox"]; ok {
		holder = t
	}
	bin, ok := files[holder]
	if !ok {
		return nil, nil, errors.New("no bin/busybox in it")
	}
	applets := append([]string{}, soft...)
	if holder != "busybox" {
		applets = append(applets, holder)
	}
	for name, target := range hard {
		if target == holder && name != "busybox" {
			applets = append(applets, name)
		}
	}
	if len(applets) == 0 {
		return nil, nil, errors.New("no applet is linked to bin/busybox")
	}
	slices.Sort(applets)
	return bin, applets, nil
}

// findBusybox returns the path and content of a statically linked busybox.
func findBusybox() (string, []byte, error) {
	paths := busyboxPaths
	if p := os.Getenv("DOCKERPOOL_BUSYBOX"); p != "" {
		paths = []string{p}
	}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if err := checkStatic(p, b); err != nil {
			return "", nil, err
		}
		return p, b, nil
	}
	return "", nil, ErrNoBusybox
}

// checkStatic fails unless b is an ELF binary without an interpreter.
func checkStatic(name string, b []byte) error {
	if err := staticELF(b); err != nil {
		return fmt.Errorf("%w: %s %w", ErrNoBusybox, name, err)
	}
	return nil
}

// staticELF fails unless b is an ELF binary without an interpreter.
func staticELF(b []byte) error {
	f, err := elf.NewFile(bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("is not an ELF binary: %w", err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return errors.New("is dynamically linked")
		}
	}
	return nil
}

// rootfsTar builds the image's filesystem as a tar archive, in memory.
func rootfsTar(busybox []byte, applets []string, extra map[string][]byte) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{} // each directory once: the daemon refuses a tar with duplicates
	dir := func(name string, mode int64) {
		if dirs[name] {
			return
		}
		dirs[name] = true
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode})
	}
	file := func(name string, mode int64, data []byte) {
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))})
		_, _ = tw.Write(data)
	}
	for _, d := range []string{"bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "proc", "sys", "dev", "var", "run"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	file("bin/busybox", 0o755, busybox)
	for _, a := range applets {
		if a == "busybox" {
			continue
		}
		_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777})
	}
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	names := make([]string, 0, len(extra))
	for name := range extra {
		names = append(names, name)
	}
	sort.Strings(names) // the same content, the same tar, the same tag
	for _, name := range names {
		data := extra[name]
		name = strings.TrimPrefix(name, "/")
		for i := 0; i < len(name); i++ {
			if name[i] == '/' {
				dir(name[:i], 0o755) // every parent, outermost first
			}
		}
		file(name, 0o755, data)
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// appletNames asks busybox which applets it has. A static binary runs on
// this machine as well as in the image; if it cannot run here, a fixed list
// of the usual applets is used.
func appletNames(path string) []string {
	out, err := exec.Command(path, "--list").Output()
	if err != nil || len(out) == 0 {
		return strings.Fields(fallbackApplets)
	}
	return strings.Fields(string(out))
}

const fallbackApplets = `sh ash cat cp echo env false grep head kill ls mkdir mv nproc printf ps pwd
	rm rmdir seq setsid sh sleep sort tail tee test timeout touch tr true uname wc yes id
	chmod chown date dd df du find hostname ln md5sum sha256sum sed awk xargs [ [[ which`

// LocalImage builds (or finds) the busybox image of BuildImage with a Docker
// client made from the environment, and returns its reference. It is meant
// for examples and first steps on a machine that cannot pull images; use
// your own image in production.
func LocalImage(ctx context.Context) (string, error) {
	cli, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		return "", fmt.Errorf("dockerpooltest: docker client: %w", err)
	}
	defer cli.Close()
	return BuildImage(ctx, cli, ImageOptions{})
}
