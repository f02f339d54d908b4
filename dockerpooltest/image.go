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
	"sort"
	"strings"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/client"
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
func BuildImage(ctx context.Context, cli *client.Client, opts ImageOptions) (string, error) {
	path, bb, err := findBusybox()
	if err != nil {
		return "", err
	}
	applets := opts.Applets
	if applets == nil {
		applets = appletNames(path)
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
		f, err := elf.NewFile(bytes.NewReader(b))
		if err != nil {
			return "", nil, fmt.Errorf("dockerpooltest: %s is not an ELF binary: %w", p, err)
		}
		for _, prog := range f.Progs {
			if prog.Type == elf.PT_INTERP {
				return "", nil, fmt.Errorf("%w: %s is dynamically linked", ErrNoBusybox, p)
			}
		}
		return p, b, nil
	}
	return "", nil, ErrNoBusybox
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
