package dockerpool

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// File transfers on the Docker exec path. Docker's archive API is fast (a
// few milliseconds, against some 40 for an exec), but it works on the
// container's layers as seen from the host: it is used only where that is
// what the container sees (see mounts.go), with no symbolic link on the way
// (the daemon would resolve it without the container's mounts), and never
// under gVisor, whose kernel keeps a cache of the files that the host's
// view of the layers lags behind. Everywhere
// else a short /bin/sh command does it in the container, as the container's
// user: cat into a temporary file renamed over the target, tar -x, cat, tar
// -c. The image needs /bin/sh, cat, mkdir, mv, chmod, rm and tar for that
// (busybox has them); the agent path needs none of them.

// route is where a transfer goes on the Docker path.
type route struct {
	archive  bool     // Docker's archive API; else a shell command
	existing string   // the deepest directory of the target that exists
	missing  []string // the directories below it that do not, outermost first
}

// mounts returns the container's mount table, reading it once per pool.
func (p *Pool) mountTable(ctx context.Context, c *Container, op *operation) (mountTable, error) {
	if mt := p.mounts.Load(); mt != nil {
		return *mt, nil
	}
	var out bytes.Buffer
	if ar, ok := c.runner.(agentRunner); ok {
		// The agent reads it in the container's namespace; the image may have no cat.
		t := &transferSpec{kind: kindFile, path: "/proc/self/mountinfo", w: &out, max: 1 << 20, op: op}
		if o := ar.fromAgent(ctx, t); o.err != nil || o.cause != nil {
			return nil, fmt.Errorf("read the container's mounts: %v %v", o.err, o.cause)
		}
	} else {
		code, stderr, o := runHelper(ctx, c, op, []string{"cat", "/proc/self/mountinfo"}, nil, &out, 1<<20)
		if o.err != nil || o.cause != nil || code != 0 {
			return nil, fmt.Errorf("read the container's mounts: exit %d %s %v %v", code, stderr, o.err, o.cause)
		}
	}
	mt, err := parseMountinfo(out.String())
	if err != nil {
		return nil, err
	}
	p.mounts.Store(&mt)
	return mt, nil
}

// routeOf says how to reach dir, the directory a transfer writes into or
// reads from (target: what it reads or unpacks into): through the archive
// API when the mount shows target the container's view and no element of
// dir is a symbolic link; else through the shell. What the last element of
// a read is (a file, a directory, a link) the archive call itself says.
func routeOf(ctx context.Context, c *Container, t *transferSpec, dir, target string, write bool) route {
	if c.pool.cfg.gvisor {
		return route{} // gVisor caches files in the sandbox: the host's view lags
	}
	mt, err := c.pool.mountTable(ctx, c, t.op)
	if err != nil || !mt.find(target).archiveSees(write) {
		return route{}
	}
	r := route{archive: true, existing: "/"}
	for _, elem := range strings.Split(strings.TrimPrefix(dir, "/"), "/") {
		if elem == "" {
			continue
		}
		next := path.Join(r.existing, elem)
		if len(r.missing) > 0 {
			r.missing = append(r.missing, elem)
			continue
		}
		st, err := c.pool.api.ContainerStatPath(ctx, c.id, next)
		switch {
		case cerrdefs.IsNotFound(err):
			r.missing = append(r.missing, elem)
		case err != nil, st.Mode&os.ModeSymlink != 0, !st.Mode.IsDir():
			return route{} // let the container resolve it, and say what is wrong
		default:
			r.existing = next
		}
	}
	return r
}

func (dockerRunner) put(ctx context.Context, c *Container, t *transferSpec) outcome {
	if err := t.op.ready(); err != nil {
		return outcome{err: err, suspect: gone(err)}
	}
	if t.kind == kindFile && servable(t.path) {
		if o, ok := serverPut(ctx, c, t); ok {
			return o
		}
	}
	dir := t.path
	if t.kind == kindFile {
		dir = path.Dir(t.path)
	}
	r := routeOf(ctx, c, t, dir, dir, true)
	if r.archive && t.kind == kindFile && len(r.missing) > 0 {
		return outcome{err: &fs.PathError{Op: "write", Path: path.Join(r.existing, r.missing[0]), Err: syscall.ENOENT}}
	}
	if r.archive {
		return archivePut(ctx, c, t, r)
	}
	return shellPut(ctx, c, t)
}

func (dockerRunner) get(ctx context.Context, c *Container, t *transferSpec) outcome {
	if err := t.op.ready(); err != nil {
		return outcome{err: err, suspect: gone(err)}
	}
	if t.kind == kindFile && servable(t.path) {
		if o, ok := serverGet(ctx, c, t); ok {
			return o
		}
	}
	if r := routeOf(ctx, c, t, path.Dir(t.path), t.path, false); r.archive && len(r.missing) == 0 {
		if o, ok := archiveGet(ctx, c, t); ok {
			return o
		}
	}
	return shellGet(ctx, c, t)
}

// ---- through the archive API ------------------------------------------------------

// archivePut unpacks a tar into the deepest existing directory, making the
// missing ones first, chowned by the daemon to the container's user
// (CopyUIDGID), or kept as the tar says when that user is root.
func archivePut(ctx context.Context, c *Container, t *transferSpec, r route) outcome {
	check := &tarCheck{dir: t.path, prefix: r.missing}
	src := t.r
	if t.kind == kindFile {
		src = fileTar(path.Base(t.path), t.data, t.perm)
		check.prefix = nil
	}
	pr := check.pipe(src)
	// net/http waits, even for a cancelled request, until its body's reader
	// returns: when ctx ends, the pipe must fail at once, whatever the
	// caller's reader does.
	stop := context.AfterFunc(ctx, func() { pr.CloseWithError(context.Cause(ctx)) })
	defer stop()
	// AllowOverwriteDirWithFile stays false: the daemon refuses to replace
	// a directory by a file (or a file by a directory) and writes nothing,
	// so WriteFile onto a directory needs no stat before it. A symbolic
	// link at the path is replaced, as the shell and the agent do.
	err := c.pool.api.CopyToContainer(ctx, c.id, r.existing, pr, container.CopyToContainerOptions{CopyUIDGID: true})
	pr.CloseWithError(errCopyStopped)
	ck := check.outcome()
	switch {
	case err == nil:
		return outcome{}
	case t.kind == kindFile && ck.readErr == nil && overwritesDir(err):
		return outcome{err: &fs.PathError{Op: "write", Path: t.path, Err: syscall.EISDIR}}
	case ck.readErr != nil:
		err = ck.readErr
	case errors.Is(ck.err, ErrInvalidArchive):
		err = ck.err
	case ctx.Err() != nil:
		err = context.Cause(ctx)
	}
	o := outcome{err: err, suspect: gone(err)}
	if ck.midEntry || !errors.Is(err, ErrInvalidArchive) {
		o.left = errors.New("the daemon may have written part of a file")
	}
	return o
}

// fileTar is a tar of one regular file.
func fileTar(name string, data []byte, perm fs.FileMode) io.Reader {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: int64(perm), Size: int64(len(data)), ModTime: time.Now()})
	_, _ = tw.Write(data)
	_ = tw.Close()
	return &buf
}

// overwritesDir reports the daemon's refusal to replace a directory by a
// file ("cannot overwrite directory ... with non-directory ...").
func overwritesDir(err error) bool {
	return strings.Contains(err.Error(), "cannot overwrite directory")
}

// archiveGet reads through the archive API. It reports false, having read
// nothing, when the path is a symbolic link that a file read must follow
// as the container sees it (the daemon would resolve it without the
// container's mounts): the shell does it then.
func archiveGet(ctx context.Context, c *Container, t *transferSpec) (outcome, bool) {
	rc, st, err := c.pool.api.CopyFromContainer(ctx, c.id, t.path)
	if err != nil {
		if cerrdefs.IsNotFound(err) {
			err = &fs.PathError{Op: "read", Path: t.path, Err: syscall.ENOENT}
		}
		return outcome{err: err, suspect: gone(err)}, true
	}
	defer rc.Close()
	if t.kind == kindTar {
		// A link is packed as a link, never followed, as tar -c does.
		_, err := tarCount(t.w, rc, t.max, t.path)
		return outcome{err: err}, true
	}
	switch {
	case st.Mode&os.ModeSymlink != 0:
		return outcome{}, false
	case st.Mode.IsDir():
		return outcome{err: &fs.PathError{Op: "read", Path: t.path, Err: syscall.EISDIR}}, true
	case !st.Mode.IsRegular():
		return outcome{err: &fs.PathError{Op: "read", Path: t.path, Err: errNotRegular}}, true
	case t.max >= 0 && st.Size > t.max:
		return outcome{err: tooLarge(t.path, t.max)}, true
	}
	tr := tar.NewReader(rc)
	if _, err := tr.Next(); err != nil {
		return outcome{err: fmt.Errorf("read the daemon's archive: %w", err)}, true
	}
	_, err = io.Copy(t.w, tr)
	return outcome{err: err}, true
}

// ---- through the shell --------------------------------------------------------------

// Exit codes of the transfer scripts, for the errors they mean.
const (
	shNoDir    = 40 // the directory (or path) does not exist
	shIsDir    = 41
	shFailed   = 42 // the command failed; its stderr says why
	shNotRegul = 44
	// the file server could not write all of the data (a full tmpfs): it
	// stopped, its framing lost
	shWriteFailed = 43
)

const putFileScript = `p=$1 t=$2 m=$3 d=${1%/*}
[ -n "$d" ] || d=/
[ -d "$d" ] || { echo "$d: no such directory" >&2; exit 40; }
[ -d "$p" ] && { echo "$p: is a directory" >&2; exit 41; }
{ cat > "$t" && chmod "$m" "$t" && mv -f "$t" "$p"; } || { rm -f "$t"; exit 42; }`

const getFileScript = `[ -e "$1" ] || { echo "$1: no such file" >&2; exit 40; }
[ -d "$1" ] && { echo "$1: is a directory" >&2; exit 41; }
[ -f "$1" ] || { echo "$1: not a regular file" >&2; exit 44; }
exec cat "$1"`

const putTarScript = `mkdir -p "$1" && cd "$1" && exec tar -x -f -`

const getTarScript = `[ -e "$1" ] || [ -L "$1" ] || { echo "$1: no such file" >&2; exit 40; }
d=${1%/*} b=${1##*/}
[ -n "$b" ] || { cd / && exec tar -c -f - .; }
cd "${d:-/}" && exec tar -c -f - "$b"`

func shellPut(ctx context.Context, c *Container, t *transferSpec) outcome {
	if t.kind == kindTar {
		check := &tarCheck{dir: t.path}
		pr := check.pipe(t.r)
		defer pr.Close()
		code, stderr, o := runHelper(ctx, c, t.op, []string{"/bin/sh", "-c", putTarScript, "dockerpool-put", t.path}, pr, io.Discard, 0)
		if ck := check.outcome(); ck.readErr != nil || errors.Is(ck.err, ErrInvalidArchive) {
			return refused(ck, o)
		}
		return shellOutcome(o, code, stderr, t.path, true)
	}
	tmp := path.Join(path.Dir(t.path), "."+path.Base(t.path)+".dockerpool-"+newToken()[:8])
	mode := fmt.Sprintf("%o", t.perm)
	code, stderr, o := runHelper(ctx, c, t.op, []string{"/bin/sh", "-c", putFileScript, "dockerpool-put", t.path, tmp, mode}, t.r, io.Discard, 0)
	if o.cause != nil && o.left == nil {
		// Cut short: the target was not touched (the rename is last), but
		// the temporary file may be there.
		if _, _, rm := runHelper(context.WithoutCancel(ctx), c, t.op, []string{"rm", "-f", tmp}, nil, io.Discard, 0); rm.err != nil || rm.cause != nil {
			o.left = fmt.Errorf("could not remove %s", tmp)
		}
		return o
	}
	return shellOutcome(o, code, stderr, t.path, false)
}

// refused is the outcome of a tar stream the pool stopped: the caller's
// reader failed, or an entry was refused. What was unpacked before is whole
// unless the stop came inside a file.
func refused(ck checkOutcome, o outcome) outcome {
	r := outcome{cause: ck.err, left: o.left}
	if ck.readErr != nil {
		r.cause = ck.readErr
	}
	if ck.midEntry && r.left == nil {
		r.left = errors.New("a file may be half written")
	}
	return r
}

func shellGet(ctx context.Context, c *Container, t *transferSpec) outcome {
	if t.kind == kindFile {
		limit := 0
		if t.max >= 0 {
			limit = int(t.max) + 1 // one more byte tells that it is larger
		}
		w := &counter{w: t.w}
		code, stderr, o := runHelper(ctx, c, t.op, []string{"/bin/sh", "-c", getFileScript, "dockerpool-get", t.path}, nil, w, limit)
		if errors.Is(o.cause, ErrOutputLimitExceeded) || (o.err == nil && o.cause == nil && t.max >= 0 && w.n > t.max) {
			return outcome{err: tooLarge(t.path, t.max), left: o.left}
		}
		return shellOutcome(o, code, stderr, t.path, false)
	}
	pr, pw := io.Pipe()
	counted := make(chan error, 1)
	go func() {
		_, err := tarCount(t.w, pr, t.max, t.path)
		pr.CloseWithError(errCopyStopped) // a command still writing stops
		counted <- err
	}()
	code, stderr, o := runHelper(ctx, c, t.op, []string{"/bin/sh", "-c", getTarScript, "dockerpool-get", t.path}, nil, pw, 0)
	pw.Close()
	if err := <-counted; err != nil && (o.cause != nil || code != 0 || errors.Is(err, ErrFileTooLarge)) {
		return outcome{err: err, left: o.left}
	}
	return shellOutcome(o, code, stderr, t.path, false)
}

// runHelper runs one command of a transfer through the Docker exec runner,
// as the container's user, and returns its exit code and stderr.
func runHelper(ctx context.Context, c *Container, op *operation, cmd []string, stdin io.Reader, stdout io.Writer, limit int) (int, string, outcome) {
	var stderr bytes.Buffer
	lim := newLimiter(limit)
	s := &execSpec{cmd: cmd, stdin: stdin, stdout: lim.wrap(stdout), stderr: &capped{w: &stderr, left: 4096}, limit: limit, op: op}
	o := dockerRunner{}.exec(ctx, c, s)
	if lim.hit {
		o.cause = ErrOutputLimitExceeded
	}
	return o.code, strings.TrimSpace(stderr.String()), o
}

// shellOutcome turns a transfer command's end into an outcome. A put that
// failed midway (mayBeHalf: tar -x writes in place) leaves the container
// tainted.
func shellOutcome(o outcome, code int, stderr, p string, mayBeHalf bool) outcome {
	if o.err != nil || o.cause != nil {
		if mayBeHalf && o.cause != nil && o.left == nil {
			o.left = errors.New("a file may be half written")
		}
		return o
	}
	var err error
	switch code {
	case 0:
		return o
	case shNoDir:
		err = &fs.PathError{Op: "open", Path: p, Err: syscall.ENOENT}
	case shIsDir:
		err = &fs.PathError{Op: "open", Path: p, Err: syscall.EISDIR}
	case shNotRegul:
		err = &fs.PathError{Op: "read", Path: p, Err: errNotRegular}
	case 126, 127:
		err = fmt.Errorf("the image lacks what file transfers need on the Docker exec path (/bin/sh, cat, tar...; or use the agent path): %s", stderr)
	default:
		err = shellError(stderr)
	}
	o.err = err
	if mayBeHalf {
		o.left = errors.New("a file may be half written")
	}
	return o
}

// shellError wraps the system error a command's message names.
func shellError(stderr string) error {
	for _, e := range []struct {
		text  string
		errno syscall.Errno
	}{
		{"No space left on device", syscall.ENOSPC},
		{"Permission denied", syscall.EACCES},
		{"Read-only file system", syscall.EROFS},
		{"No such file or directory", syscall.ENOENT},
		{"Not a directory", syscall.ENOTDIR},
		{"File too large", syscall.EFBIG},
	} {
		if strings.Contains(stderr, e.text) {
			return agentErr{msg: stderr, errno: e.errno}
		}
	}
	return errors.New(stderr)
}

// capped keeps the first left bytes written to it and drops the rest.
type capped struct {
	w    io.Writer
	left int
}

func (c *capped) Write(b []byte) (int, error) {
	if n := min(len(b), c.left); n > 0 {
		_, _ = c.w.Write(b[:n])
		c.left -= n
	}
	return len(b), nil
}

// counter counts the bytes written through it.
type counter struct {
	w io.Writer
	n int64
}

func (c *counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
