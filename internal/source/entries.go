package source

import (
	"archive/tar"
	"errors"
	"io"
	"path"
	"strings"
	"time"
)

// maxNameLen bounds an entry's name and a link's target.
const maxNameLen = 4096

// checker enforces the rules of the emitted tar across its entries: the
// caps, no entry below an earlier symlink (the agent would refuse it or,
// for a link it creates later, the name would land elsewhere), hardlinks
// only to earlier regular files.
type checker struct {
	maxBytes   int64
	maxEntries int
	bytes      int64
	entries    int
	kinds      map[string]byte // name → type of its latest entry
}

func newChecker(maxBytes int64, maxEntries int) *checker {
	return &checker{maxBytes: maxBytes, maxEntries: maxEntries, kinds: map[string]byte{}}
}

// add admits an entry with a clean relative name.
func (c *checker) add(name string, typ byte, size int64) error {
	c.entries++
	if c.entries > c.maxEntries {
		return tooLarge("number of entries", int64(c.maxEntries))
	}
	if len(name) > maxNameLen {
		return entryErrorf("entry name of %d bytes is too long", len(name))
	}
	for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
		if c.kinds[dir] == tar.TypeSymlink {
			return entryErrorf("entry %q lies below the symlink %q", name, dir)
		}
	}
	if typ == tar.TypeReg {
		if size < 0 {
			return entryErrorf("entry %q has a negative size", name)
		}
		c.bytes += size
		if c.bytes > c.maxBytes {
			return tooLarge("unpacked content", c.maxBytes)
		}
	}
	c.kinds[name] = typ
	return nil
}

// hardlink admits a hardlink name → target, both clean and relative.
func (c *checker) hardlink(name, target string) error {
	if c.kinds[target] != tar.TypeReg {
		return entryErrorf("hardlink %q points to %q, which is not a regular file earlier in the archive", name, target)
	}
	return c.add(name, tar.TypeLink, 0)
}

// symlinkTarget checks a symlink's target. Targets are kept verbatim,
// absolute or leading out included: they are resolved by the sandbox's
// kernel inside its own root, never by the host.
func symlinkTarget(name, target string) error {
	if target == "" || len(target) > maxNameLen || strings.ContainsRune(target, 0) {
		return entryErrorf("symlink %q has an empty, over-long or NUL-bearing target", name)
	}
	return nil
}

// tarWriter writes the sanitized stream: only the fields the agent uses,
// no owners, no xattrs, no PAX records from the source.
type tarWriter struct {
	tw *tar.Writer
}

func (w *tarWriter) dir(name string, mode int64, mtime time.Time) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode & 0o7777, ModTime: mtime})
}

func (w *tarWriter) file(name string, mode, size int64, mtime time.Time, r io.Reader) error {
	if err := w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode & 0o7777, Size: size, ModTime: mtime}); err != nil {
		return err
	}
	n, err := io.CopyN(w.tw, r, size)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return entryErrorf("entry %q is shorter (%d bytes) than its header says (%d)", name, n, size)
		}
		return err
	}
	return nil
}

func (w *tarWriter) symlink(name, target string, mtime time.Time) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime})
}

func (w *tarWriter) hardlink(name, target string, mtime time.Time) error {
	return w.tw.WriteHeader(&tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, ModTime: mtime})
}

// pipeStream runs produce in a goroutine writing a tar into the returned
// stream. Close stops produce (its writes fail), waits for it, then runs
// cleanup: the stream owns the goroutine and whatever cleanup releases.
func pipeStream(produce func(w *tarWriter) error, cleanup func()) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tw := tar.NewWriter(pw)
		err := produce(&tarWriter{tw: tw})
		if err == nil {
			err = tw.Close()
		}
		pw.CloseWithError(err)
	}()
	return &stream{pr: pr, done: done, cleanup: cleanup}
}

type stream struct {
	pr      *io.PipeReader
	done    chan struct{}
	cleanup func()
	closed  bool
}

func (s *stream) Read(p []byte) (int, error) { return s.pr.Read(p) }

func (s *stream) Close() error {
	if s.closed {
		return nil
	}
	s.closed = true
	s.pr.CloseWithError(errStreamClosed)
	<-s.done
	if s.cleanup != nil {
		s.cleanup()
	}
	return nil
}

var errStreamClosed = errors.New("source stream closed")
