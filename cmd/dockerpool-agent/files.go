package main

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	"github.com/dockerpool/dockerpool/internal/agentproto"
)

// transfer is one Put or Get, from its frame to its Done. It runs as the
// agent's user, the container's: the files it makes are that user's (as
// root it keeps a tar's owners).
type transfer struct {
	a    *agent
	id   uint32
	in   *inbox             // a Put's data
	out  *agentproto.Credit // a Get's window
	stop chan struct{}      // closed by a Kill frame
	once sync.Once
}

func (t *transfer) input() *inbox              { return t.in }
func (t *transfer) output() *agentproto.Credit { return t.out }
func (t *transfer) abort() {
	t.once.Do(func() { close(t.stop) })
	if t.in != nil {
		t.in.stop()
	}
}

// handleTransfer starts the Put or Get a frame asks for.
func (a *agent) handleTransfer(f agentproto.Frame) {
	t := &transfer{a: a, id: f.ID, stop: make(chan struct{})}
	var put agentproto.PutMsg
	var get agentproto.GetMsg
	var err error
	if f.Type == agentproto.Put {
		err = f.Decode(&put)
		t.in = newInbox(a.granter(f.ID))
	} else {
		err = f.Decode(&get)
		t.out = agentproto.NewCredit()
	}
	a.mu.Lock()
	_, dup := a.transfers[f.ID]
	if _, exec := a.execs[f.ID]; exec {
		dup = true
	}
	if !dup && err == nil {
		a.transfers[f.ID] = t
	}
	a.mu.Unlock()
	switch {
	case dup:
		a.log.Printf("transfer %d: id already in use, frame ignored", f.ID)
	case err != nil:
		go a.out.json(agentproto.Done, f.ID, agentproto.DoneMsg{Error: err.Error(), Invalid: true})
	case f.Type == agentproto.Put:
		go func() { t.finish(t.put(put)) }() // off the frame reader's goroutine: put reads frames
	default:
		go func() { t.finish(t.get(get)) }()
	}
}

// finish sends the Done, always exactly once and last.
func (t *transfer) finish(d agentproto.DoneMsg) {
	t.a.mu.Lock()
	delete(t.a.transfers, t.id)
	t.a.mu.Unlock()
	if t.in != nil {
		t.in.stop()
	}
	if t.out != nil {
		t.out.Close()
	}
	t.a.out.json(agentproto.Done, t.id, d)
}

// failed is the Done of a transfer that failed with err.
func failed(err error, clean bool) agentproto.DoneMsg {
	d := agentproto.DoneMsg{Error: err.Error(), Clean: clean}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		d.Errno = int(errno)
	}
	var inv invalidError
	if errors.As(err, &inv) {
		d.Invalid = true
	}
	if errors.Is(err, errTooLarge) {
		d.TooLarge = true
	}
	return d
}

// invalidError is input the agent refuses: not a tar, an entry that would
// land outside the directory, a device node.
type invalidError struct{ msg string }

func (e invalidError) Error() string { return e.msg }

func invalidf(format string, args ...any) error { return invalidError{fmt.Sprintf(format, args...)} }

var errTooLarge = errors.New("larger than the limit")

func (t *transfer) put(m agentproto.PutMsg) agentproto.DoneMsg {
	if !filepath.IsAbs(m.Path) {
		return failed(invalidf("path %q is not absolute", m.Path), true)
	}
	switch m.Kind {
	case agentproto.KindFile:
		size, err := writeWhole(nil, m.Path, t.in, fs.FileMode(m.Mode).Perm(), -1, -1)
		if err != nil {
			return failed(err, true)
		}
		return agentproto.DoneMsg{Size: size}
	case agentproto.KindTar:
		size, err := t.untar(m.Path)
		if err != nil {
			return failed(err, true)
		}
		return agentproto.DoneMsg{Size: size}
	}
	return failed(invalidf("unknown kind %q", m.Kind), true)
}

// writeWhole writes r to name, whole or not at all: into a temporary file
// beside it, renamed over it at the end; a failure or an abort removes the
// temporary file. Within root when root is set (name is then relative to
// it). uid and gid, when not -1, become the file's owner.
//
// Outside a root, the rename itself refuses a directory at name (EISDIR),
// and the temporary file is made with perm when the umask keeps all of its
// bits: a WriteFile of a small file is an open, a write, a close and a
// rename, each a round trip to fuse-overlayfs.
func writeWhole(root *os.Root, name string, r io.Reader, perm fs.FileMode, uid, gid int) (int64, error) {
	if root != nil {
		if fi, err := root.Lstat(name); err == nil && fi.IsDir() {
			return 0, &fs.PathError{Op: "write", Path: name, Err: syscall.EISDIR}
		}
	}
	dir, base := filepath.Split(name)
	tmpName := filepath.Join(dir, "."+base+".dockerpool-"+newToken()[:8])
	chmod := root != nil || perm&^startUmask != perm
	mode := perm
	if chmod {
		mode = 0o600
	}
	f, err := openFile(root, tmpName, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(f, r)
	if err == nil && chmod {
		err = f.Chmod(perm)
	}
	if err == nil && uid >= 0 {
		err = f.Chown(uid, gid)
	}
	if cerr := f.Close(); err == nil {
		err = cerr // a full file system can show at close
	}
	if err == nil {
		err = rename(root, tmpName, name)
	}
	if err != nil {
		_ = remove(root, tmpName)
		return n, err
	}
	return n, nil
}

// startUmask is the agent's umask, read once at start (the commands inherit
// it; the agent never changes it).
var startUmask = func() fs.FileMode {
	m := syscall.Umask(0o022)
	syscall.Umask(m)
	return fs.FileMode(m)
}()

func openFile(root *os.Root, name string, flag int, perm fs.FileMode) (*os.File, error) {
	if root != nil {
		return root.OpenFile(name, flag, perm)
	}
	return os.OpenFile(name, flag|syscall.O_NOFOLLOW, perm)
}

func rename(root *os.Root, from, to string) error {
	if root != nil {
		return root.Rename(from, to)
	}
	// Not os.Rename: it lstats the target first, to refuse a directory,
	// which rename(2) refuses by itself for a file (EISDIR).
	if err := syscall.Rename(from, to); err != nil {
		return &fs.PathError{Op: "write", Path: to, Err: err}
	}
	return nil
}

func remove(root *os.Root, name string) error {
	if root != nil {
		return root.Remove(name)
	}
	return os.Remove(name)
}

// untar unpacks the tar stream of the Put into dir, made if missing. Every
// entry stays inside dir: names and link targets that would leave it are
// refused, and os.Root refuses to follow a symbolic link out of it.
func (t *transfer) untar(dir string) (int64, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return 0, err
	}
	defer root.Close()
	tr := tar.NewReader(t.in)
	var size int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return size, nil
		}
		if err != nil {
			if errors.Is(err, errStopped) {
				return size, err
			}
			return size, invalidf("not a tar stream: %v", err)
		}
		if err := extract(root, dir, hdr, tr); err != nil {
			return size, err
		}
		size += hdr.Size
	}
}

// extract writes one entry of a tar into root (the directory dir).
func extract(root *os.Root, dir string, hdr *tar.Header, r io.Reader) error {
	name := strings.TrimPrefix(filepath.Clean(strings.TrimPrefix(hdr.Name, "/")), "./")
	if name == "." {
		return nil // the directory itself
	}
	if !filepath.IsLocal(name) || strings.HasPrefix(hdr.Name, "/") {
		return invalidf("entry %q would land outside %s", hdr.Name, dir)
	}
	uid, gid := -1, -1
	mode := hdr.FileInfo().Mode()
	if os.Getuid() == 0 {
		uid, gid = hdr.Uid, hdr.Gid // as root, the tar says who owns it
	} else {
		mode &^= fs.ModeSetuid | fs.ModeSetgid
	}
	if d := filepath.Dir(name); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		return mkdir(root, name, mode, uid, gid)
	case tar.TypeReg: // archive/tar reports the old TypeRegA as TypeReg
		_, err := writeWhole(root, name, r, mode&(fs.ModePerm|fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky), uid, gid)
		return err
	case tar.TypeSymlink:
		if !linkInside(dir, name, hdr.Linkname) {
			return invalidf("symbolic link %q points outside %s (to %q)", hdr.Name, dir, hdr.Linkname)
		}
		_ = root.Remove(name) // replaced, as tar does
		if err := root.Symlink(hdr.Linkname, name); err != nil {
			return err
		}
		if uid >= 0 {
			return root.Lchown(name, uid, gid)
		}
		return nil
	case tar.TypeLink:
		target := filepath.Clean(strings.TrimPrefix(hdr.Linkname, "./"))
		if !filepath.IsLocal(target) {
			return invalidf("hard link %q points outside %s (to %q)", hdr.Name, dir, hdr.Linkname)
		}
		_ = root.Remove(name)
		return root.Link(target, name)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return invalidf("entry %q is a device node or a fifo: not unpacked", hdr.Name)
	}
	return invalidf("entry %q has an unsupported type %q", hdr.Name, hdr.Typeflag)
}

func mkdir(root *os.Root, name string, mode fs.FileMode, uid, gid int) error {
	if err := root.Mkdir(name, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	if err := root.Chmod(name, mode&(fs.ModePerm|fs.ModeSetgid|fs.ModeSticky)); err != nil {
		return err
	}
	if uid >= 0 {
		return root.Lchown(name, uid, gid)
	}
	return nil
}

// linkInside reports whether a symbolic link name (relative to dir) to
// target resolves inside dir, lexically.
func linkInside(dir, name, target string) bool {
	if filepath.IsAbs(target) {
		rel, err := filepath.Rel(dir, target)
		return err == nil && filepath.IsLocal(rel)
	}
	return filepath.IsLocal(filepath.Join(filepath.Dir(name), target))
}

func (t *transfer) get(m agentproto.GetMsg) agentproto.DoneMsg {
	if !filepath.IsAbs(m.Path) {
		return failed(invalidf("path %q is not absolute", m.Path), true)
	}
	w := &creditWriter{t: t}
	var err error
	switch m.Kind {
	case agentproto.KindFile:
		err = readFile(m.Path, w, m.Max)
	case agentproto.KindTar:
		err = packTar(m.Path, w, m.Max)
	default:
		err = invalidf("unknown kind %q", m.Kind)
	}
	if err != nil {
		d := failed(err, true)
		d.Size = w.n
		return d
	}
	return agentproto.DoneMsg{Size: w.n}
}

// creditWriter sends a Get's data as Stdout frames, within its window.
type creditWriter struct {
	t *transfer
	n int64 // bytes sent
}

func (w *creditWriter) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += agentproto.Chunk {
		end := min(off+agentproto.Chunk, len(p))
		if !w.t.a.out.send(agentproto.Stdout, w.t.id, p[off:end], w.t.out, w.t.stop) {
			return off, errStopped
		}
		w.n += int64(end - off)
	}
	return len(p), nil
}

// readFile sends a regular file, failing with errTooLarge before it sends
// more than max bytes (max < 0: no limit).
func readFile(name string, w io.Writer, max int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.IsDir() {
		return &fs.PathError{Op: "read", Path: name, Err: syscall.EISDIR}
	}
	if !fi.Mode().IsRegular() {
		return invalidf("%s is not a regular file (%v)", name, fi.Mode().Type())
	}
	if max >= 0 && fi.Size() > max {
		return fmt.Errorf("%s: %d bytes, %w of %d", name, fi.Size(), errTooLarge, max)
	}
	r := io.Reader(f)
	if max >= 0 {
		r = io.LimitReader(f, max+1) // one more tells that it grew past max
	}
	n, err := io.CopyBuffer(w, r, make([]byte, agentproto.Chunk))
	if err == nil && max >= 0 && n > max {
		return fmt.Errorf("%s: %w of %d", name, errTooLarge, max)
	}
	return err
}

// packTar sends name (a file or a directory, and all below it) as a tar
// stream whose entries are named from name's parent, failing with
// errTooLarge before the files' content passes max (max < 0: no limit).
// Symbolic links are sent as links, never followed.
func packTar(name string, w io.Writer, max int64) error {
	if _, err := os.Lstat(name); err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	parent := filepath.Dir(name)
	var total int64
	seen := map[[2]uint64]string{} // files with several links: the first name, for the next ones
	err := filepath.WalkDir(name, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if fi.Mode().Type() == fs.ModeSocket {
			return nil // no place in a tar
		}
		link := ""
		if fi.Mode().Type() == fs.ModeSymlink {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(parent, p)
		hdr.Name = filepath.ToSlash(rel)
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino}
			if first, ok := seen[key]; ok { // a hard link to a file sent already, as tar sends it
				hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
				return tw.WriteHeader(hdr)
			}
			seen[key] = hdr.Name
		}
		if fi.Mode().IsRegular() {
			total += fi.Size()
			if max >= 0 && total > max {
				return fmt.Errorf("%s: %w of %d content bytes", name, errTooLarge, max)
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		return copyFile(tw, p, hdr.Size)
	})
	if err != nil {
		return err
	}
	return tw.Close()
}

// copyFile writes exactly size bytes of the file at p (it may have changed
// since its header was written).
func copyFile(w io.Writer, p string, size int64) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.CopyN(w, f, size)
	if err == io.EOF {
		return fmt.Errorf("%s shrank while it was read (%d of %d bytes)", p, n, size)
	}
	return err
}
