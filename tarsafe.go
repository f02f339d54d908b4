package dockerpool

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"sync"
)

// Tar streams as they cross the pool: CopyTo's input is checked entry by
// entry before anything reaches the container, the same way on both paths,
// and CopyFrom's output is counted against its max as it passes.

// tarCheck copies a caller's tar stream for CopyTo, refusing (with
// ErrInvalidArchive) what would land outside the target directory:
//
//   - an absolute name, or a name with a ".." element;
//   - a name that goes through a symbolic link of the same stream (a link
//     inside that was fine, then a file written "through" it);
//   - a symbolic link whose target, from the link's directory, leaves the
//     directory; a hard link to anything outside it;
//   - a device node or a fifo.
//
// prefix, when set, is put before every name (and hard link target): the
// directories of the target that do not exist yet, made by the stream.
type tarCheck struct {
	dir    string   // the target, for messages
	prefix []string // directories to make first, outermost first
	links  map[string]bool

	// How the copy went: written by pipe's goroutine, read by the runner,
	// which cannot always wait for it (it may be blocked in the caller's
	// Read, which nothing interrupts).
	mu  sync.Mutex
	out checkOutcome
}

// checkOutcome is how a checked copy went, so far.
type checkOutcome struct {
	midEntry bool  // the copy stopped inside a file's content
	readErr  error // the caller's reader failed (not the stream's format)
	err      error // why the copy stopped, once it has
}

func (tc *tarCheck) set(f func(o *checkOutcome)) {
	tc.mu.Lock()
	f(&tc.out)
	tc.mu.Unlock()
}

// outcome returns how the copy went so far.
func (tc *tarCheck) outcome() checkOutcome {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.out
}

// pipe copies r through the checks into a pipe, on a goroutine of its own,
// and returns the pipe's reader for the container's side. The reader fails
// with the copy's error.
func (tc *tarCheck) pipe(r io.Reader) *io.PipeReader {
	pr, pw := io.Pipe()
	go func() {
		err := tc.copy(pw, r)
		tc.set(func(o *checkOutcome) { o.err = err })
		pw.CloseWithError(err)
	}()
	return pr
}

func (tc *tarCheck) copy(w io.Writer, r io.Reader) error {
	src := &readErrReader{r: r}
	tr, tw := tar.NewReader(src), tar.NewWriter(w)
	tc.links = map[string]bool{}
	base := ""
	for _, d := range tc.prefix {
		base = path.Join(base, d)
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: base + "/", Mode: 0o755}); err != nil {
			return err
		}
	}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return tw.Close()
		}
		if err != nil {
			if src.err != nil {
				tc.set(func(o *checkOutcome) { o.readErr = src.err })
				return src.err
			}
			return fmt.Errorf("%w: not a tar stream: %v", ErrInvalidArchive, err)
		}
		name, err := tc.check(hdr)
		if err != nil {
			return err
		}
		if name == "" {
			continue
		}
		hdr.Name = path.Join(base, name)
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name += "/"
		}
		if hdr.Typeflag == tar.TypeLink {
			hdr.Linkname = path.Join(base, path.Clean(hdr.Linkname))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		tc.set(func(o *checkOutcome) { o.midEntry = hdr.Size > 0 })
		if _, err := io.Copy(tw, tr); err != nil {
			if src.err != nil {
				tc.set(func(o *checkOutcome) { o.readErr = src.err })
			}
			return err
		}
		tc.set(func(o *checkOutcome) { o.midEntry = false })
	}
}

// check says what an entry's name is inside the directory ("" for the
// directory itself), or why it is refused.
func (tc *tarCheck) check(hdr *tar.Header) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: entry %q %s (into %s)", ErrInvalidArchive, hdr.Name, why, tc.dir)
	}
	raw := strings.TrimPrefix(hdr.Name, "./")
	if path.IsAbs(raw) {
		return bad("has an absolute name")
	}
	for _, elem := range strings.Split(raw, "/") {
		if elem == ".." {
			return bad(`has a ".." in its name`)
		}
	}
	name := path.Clean(raw)
	if name == "." {
		return "", nil
	}
	for p := path.Dir(name); p != "."; p = path.Dir(p) {
		if tc.links[p] {
			return bad("goes through a symbolic link of the same stream")
		}
	}
	switch hdr.Typeflag {
	case tar.TypeDir, tar.TypeReg:
	case tar.TypeSymlink:
		if !linkStaysIn(name, hdr.Linkname, tc.dir) {
			return bad(fmt.Sprintf("is a symbolic link out of the directory (to %q)", hdr.Linkname))
		}
		tc.links[name] = true
	case tar.TypeLink:
		t := strings.TrimPrefix(hdr.Linkname, "./")
		if path.IsAbs(t) || strings.HasPrefix(path.Clean(t), "..") || path.Clean(t) == "." {
			return bad(fmt.Sprintf("is a hard link to %q, outside the directory", hdr.Linkname))
		}
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		return bad("is a device node or a fifo")
	default:
		return bad(fmt.Sprintf("has an unsupported type %q", hdr.Typeflag))
	}
	return name, nil
}

// linkStaysIn reports whether a symbolic link at name (relative to dir) to
// target resolves inside dir.
func linkStaysIn(name, target, dir string) bool {
	var p string
	if path.IsAbs(target) {
		if !strings.HasPrefix(path.Clean(target)+"/", strings.TrimSuffix(dir, "/")+"/") {
			return false
		}
		p = strings.TrimPrefix(path.Clean(target), strings.TrimSuffix(dir, "/"))
		p = strings.TrimPrefix(p, "/")
	} else {
		p = path.Join(path.Dir(name), target)
	}
	return p == "." || p == "" || !strings.HasPrefix(p, "../") && p != ".."
}

// tarCount passes a tar stream from the container through to the caller's
// writer unchanged, and stops it (ErrFileTooLarge) before the content of its
// regular files passes max (max < 0: no limit).
func tarCount(w io.Writer, r io.Reader, max int64, what string) (int64, error) {
	tr := tar.NewReader(io.TeeReader(r, w))
	var total int64
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			// The end-of-archive blocks were read, and so passed on.
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if hdr.Typeflag == tar.TypeReg {
			total += hdr.Size
			if max >= 0 && total > max {
				return total, tooLarge(what, max)
			}
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return total, err
		}
	}
}

// readErrReader remembers a read error, to tell the caller's reader failing
// from a bad stream (or, on a connection, from a write error: the command
// closing its stdin early is not a failure).
type readErrReader struct {
	r   io.Reader
	err error
}

func (r *readErrReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

var errCopyStopped = errors.New("copy stopped")
