package dockerpool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
)

// Files in and out of a container. The obvious way, Docker's archive API
// (docker cp), writes into the container's root filesystem layer: into a
// tmpfs mount (the sandbox preset's /tmp) it writes nothing and reports
// success, and on a read-only root it fails. So a transfer goes through the
// container's own view of its files: on the agent path the agent does it; on
// the Docker exec path the archive API is used only where it sees what the
// container sees (a writable layer or volume, no symbolic link on the way),
// and a short shell command (cat, tar) everywhere else. See
// runner_docker_files.go and the README's "Files".

// transferKind says what a transfer moves.
type transferKind uint8

const (
	kindFile transferKind = iota // one regular file
	kindTar                      // a tar stream: unpacked into a directory, or packed from a path
)

// transferSpec is one transfer as the frame hands it to a runner.
type transferSpec struct {
	kind transferKind
	path string      // absolute and clean: the file, the directory to unpack into, or what to pack
	perm fs.FileMode // a file's permission bits (put)
	r    io.Reader   // put: the content, or the tar stream
	data []byte      // put of a file (WriteFile): the content, all in memory; r reads it
	w    io.Writer   // get: where the content, or the tar stream, goes
	max  int64       // get: content bytes allowed; < 0: no limit
	op   *operation
}

// WriteFile creates or replaces the file at path (absolute) with data and
// mode perm. The file is written whole or not at all (a temporary file
// beside it is renamed over it), owned by the user the container's commands
// run as, so that a sandboxed program can read and overwrite it. It works
// into tmpfs mounts and on a read-only root (where the archive API of docker
// cp cannot). The directory must exist: otherwise the error satisfies
// errors.Is(err, fs.ErrNotExist). On the Docker exec path, the first
// WriteFile or ReadFile of a hand-out starts a small shell in the container
// that serves the next ones (see the README's Files section): it costs an
// exec once, and a few milliseconds after that.
func (c *Container) WriteFile(ctx context.Context, path string, data []byte, perm fs.FileMode) error {
	t := &transferSpec{kind: kindFile, path: path, perm: perm.Perm(), r: bytes.NewReader(data), data: data}
	return c.transfer(ctx, "write file", t, runner.put)
}

// ReadFile returns the content of the file at path (absolute), following
// symbolic links as the container sees them. More than max bytes is an
// error that satisfies errors.Is(err, ErrFileTooLarge), and no more than
// max bytes are read: max 0 accepts only an empty file, and a negative max
// means no limit (only for files you trust). A directory is an error, and
// a path that does not exist satisfies errors.Is(err, fs.ErrNotExist).
func (c *Container) ReadFile(ctx context.Context, path string, max int64) ([]byte, error) {
	var buf bytes.Buffer
	t := &transferSpec{kind: kindFile, path: path, w: &buf, max: max}
	if err := c.transfer(ctx, "read file", t, runner.get); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// CopyTo unpacks the tar stream r into dir (absolute, made if missing, as
// with mkdir -p). Regular files are each written whole or not at all.
// Entries are owned by the user the container's commands run as; when that
// user is root, by the owners the tar says. An entry that would land outside
// dir (a name with "..", an absolute name, a symbolic or hard link pointing
// out of it), a device node or a fifo, and a stream that is not a tar, fail
// with ErrInvalidArchive, and nothing is written outside dir. r is read as
// it goes, never held whole in memory: a stream of gigabytes holds a bounded
// amount here and in the container. A read error of r ends the transfer and
// is returned.
func (c *Container) CopyTo(ctx context.Context, dir string, r io.Reader) error {
	if r == nil {
		return fmt.Errorf("%w: CopyTo with a nil reader", ErrInvalidConfig)
	}
	t := &transferSpec{kind: kindTar, path: dir, r: r}
	return c.transfer(ctx, "copy into", t, runner.put)
}

// CopyFrom writes path (a file or a directory, and everything below it) to
// w as a tar stream, streamed as it is read. Entries are named from path's
// parent (CopyFrom of /tmp/out gives out/, out/a, ...), and symbolic links
// are sent as links, never followed. More than max bytes of file content
// together is an error that satisfies errors.Is(err, ErrFileTooLarge), and
// the transfer stops at the limit (w has then received a part of the
// stream); a negative max means no limit. A write error of w ends the
// transfer and is returned.
func (c *Container) CopyFrom(ctx context.Context, path string, w io.Writer, max int64) error {
	if w == nil {
		return fmt.Errorf("%w: CopyFrom with a nil writer", ErrInvalidConfig)
	}
	t := &transferSpec{kind: kindTar, path: path, w: w, max: max}
	return c.transfer(ctx, "copy from", t, runner.get)
}

// transfer is the frame of every file transfer, as ExecStream is the one of
// commands: the path checked, the operation registered on the handle, the
// container marked used, the runner's outcome mapped to the caller's error
// (naming the container and the path), and a transfer cut midway tainting
// the handle unless the runner knows every file whole or absent.
func (c *Container) transfer(ctx context.Context, verb string, t *transferSpec, do func(runner, context.Context, *Container, *transferSpec) outcome) error {
	clean, err := cleanPath(t.path)
	if err != nil {
		return fmt.Errorf("dockerpool: %s %q in container %s: %w", verb, t.path, shortID(c.id), err)
	}
	t.path = clean
	tel := c.pool.tel
	ctx, m, o := tel.beginTransfer(ctx, c, verb)
	op, err := c.begin(ctx, fmt.Sprintf("%s %q", verb, clean), 0)
	if err == nil {
		t.op = op
		err = op.finish(do(c.runner, op.ctx, c, t), 0)
		op.end()
	}
	m.end(ctx, tel.transferTime, o, err)
	return err
}

// cleanPath checks that p is an absolute path, and cleans it.
func cleanPath(p string) (string, error) {
	switch {
	case p == "":
		return "", fmt.Errorf("%w: empty path", ErrInvalidConfig)
	case !path.IsAbs(p):
		return "", fmt.Errorf("%w: path %q is not absolute", ErrInvalidConfig, p)
	case strings.ContainsRune(p, 0):
		return "", fmt.Errorf("%w: path %q holds a NUL byte", ErrInvalidConfig, p)
	}
	return path.Clean(p), nil
}

// tooLarge is the error of a transfer stopped at its limit.
func tooLarge(what string, max int64) error {
	return fmt.Errorf("%w: %s is larger than %d bytes", ErrFileTooLarge, what, max)
}

// errNotRegular is a ReadFile of something that is not a regular file.
var errNotRegular = errors.New("not a regular file")
