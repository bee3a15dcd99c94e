//go:build linux

package agent

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"time"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
)

// maxArchiveDepth bounds how deep the walk descends. Each level holds one
// directory fd open, so a hostile tree thousands of levels deep would
// otherwise run the agent (PID 1) out of descriptors.
const maxArchiveDepth = 256

// handleReadArchive streams path as a tar: a directory's contents with names
// relative to it, or a regular file as one entry named by its base name.
//
// The path itself resolves like a read (symlinks followed, clamped to the
// root); below it nothing is followed: symlinks are stored as symlinks and
// every open is single-component, O_NOFOLLOW and RESOLVE_NO_SYMLINKS, so a
// process in the sandbox swapping a directory for a symlink mid-walk cannot
// lead the walk anywhere.
//
// Errors before the first byte are ordinary error answers. After it, the
// status is sent, so a failure aborts the connection: a tar cut at an entry
// boundary would otherwise look complete to the reader.
func (s *Server) handleReadArchive(w http.ResponseWriter, r *http.Request) {
	name, sudo, err := pathAndSudo(r, "path")
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	// The whole walk runs with the caller's identity: every entry is
	// opened as the user would open it (or skipped when the user cannot).
	err = s.as(sudo, func() error {
		s.archive(w, r, name)
		return nil
	})
	if err != nil {
		s.writeError(w, r, err) // before the walk: nothing was sent
	}
}

// archive is handleReadArchive's body, run with the caller's identity.
func (s *Server) archive(w http.ResponseWriter, r *http.Request, name string) {
	f, err := s.openInRoot(name)
	if err != nil {
		s.writeError(w, r, fsError(name, err))
		return
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		s.writeError(w, r, fsError(name, err))
		return
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && typ != unix.S_IFREG {
		s.writeError(w, r, sandbox.Errorf(sandbox.ErrInvalid, "not_a_regular_file", "/%s is neither a directory nor a regular file", name))
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)

	a := &archiver{s: s, tw: tar.NewWriter(w), top: "/" + name, done: r.Context().Done()}
	if typ == unix.S_IFDIR {
		err = a.dir(f, "", 0)
	} else {
		err = a.regular(f, &st, path.Base("/"+name))
	}
	if err == nil {
		err = a.tw.Close()
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("archive cut short", "path", "/"+name, "err", err)
		}
		panic(http.ErrAbortHandler)
	}
}

// archiver writes one tree as a tar stream.
type archiver struct {
	s    *Server
	tw   *tar.Writer
	top  string          // the requested path, for log lines
	done <-chan struct{} // the request's end
}

// dir writes the entries of the open directory d, whose entries are named
// prefix+name in the archive, and descends into its subdirectories.
func (a *archiver) dir(d *os.File, prefix string, depth int) error {
	if depth >= maxArchiveDepth {
		return fmt.Errorf("%s%s: deeper than %d levels", a.top, "/"+prefix, maxArchiveDepth)
	}
	for {
		// Batches, not the whole listing: a directory may be huge.
		names, err := d.Readdirnames(256)
		for _, n := range names {
			select {
			case <-a.done:
				return errors.New("request ended")
			default:
			}
			if err := a.entry(d, prefix, n, depth); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read dir %s/%s: %w", a.top, prefix, err)
		}
	}
}

// entry writes the entry n of directory d. Entries that vanish or change
// type between listing and opening (the sandbox keeps running) are skipped
// with a log line rather than failing the whole archive.
func (a *archiver) entry(d *os.File, prefix, n string, depth int) error {
	dfd := int(d.Fd())
	name := prefix + n
	var st unix.Stat_t
	if err := unix.Fstatat(dfd, n, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		a.skip(name, "stat: "+err.Error())
		return nil
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFLNK:
		target, err := readlinkat(dfd, n)
		if err != nil {
			a.skip(name, "readlink: "+err.Error())
			return nil
		}
		hdr := header(&st, name, tar.TypeSymlink)
		hdr.Linkname = target
		return a.tw.WriteHeader(hdr)
	case unix.S_IFDIR:
		sub, err := openEntry(dfd, n, unix.O_DIRECTORY)
		if err != nil {
			a.skip(name, "open: "+err.Error())
			return nil
		}
		defer sub.Close()
		// The header describes what was opened, not what was listed.
		if err := unix.Fstat(int(sub.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			a.skip(name, "changed while archiving")
			return nil
		}
		if err := a.tw.WriteHeader(header(&st, name+"/", tar.TypeDir)); err != nil {
			return err
		}
		return a.dir(sub, name+"/", depth+1)
	case unix.S_IFREG:
		f, err := openEntry(dfd, n, 0)
		if err != nil {
			a.skip(name, "open: "+err.Error())
			return nil
		}
		defer f.Close()
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			a.skip(name, "changed while archiving")
			return nil
		}
		return a.regular(f, &st, name)
	default:
		a.skip(name, "not a regular file, directory or symlink")
		return nil
	}
}

func (a *archiver) skip(name, why string) {
	a.s.log.Info("archive: skipped entry", "path", path.Join(a.top, name), "reason", why)
}

// regular writes f, described by st, as name. Exactly st.Size bytes are
// sent whatever the file does meanwhile: the tar header promised them.
func (a *archiver) regular(f *os.File, st *unix.Stat_t, name string) error {
	if err := a.tw.WriteHeader(header(st, name, tar.TypeReg)); err != nil {
		return err
	}
	n, err := io.CopyN(a.tw, f, st.Size)
	if errors.Is(err, io.EOF) {
		// The file shrank while it was read: pad like GNU tar does, and say so.
		a.s.log.Warn("archive: file shrank while read, padded with zeros", "path", path.Join(a.top, name), "missing", st.Size-n)
		_, err = io.CopyN(a.tw, zeros{}, st.Size-n)
	}
	if err != nil {
		return fmt.Errorf("archive %s: %w", path.Join(a.top, name), err)
	}
	return nil
}

// header builds a tar header from a stat. Names and modes come from the
// kernel, not from a user lookup in the sandbox's /etc/passwd.
func header(st *unix.Stat_t, name string, typ byte) *tar.Header {
	h := &tar.Header{
		Typeflag: typ,
		Name:     name,
		Mode:     int64(st.Mode & 0o7777),
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  time.Unix(st.Mtim.Unix()).Truncate(time.Second),
	}
	if typ == tar.TypeReg {
		h.Size = st.Size
	}
	return h
}

// openEntry opens the single component n of directory dfd without
// following anything: a symlink put there since the stat fails with ELOOP.
// O_NONBLOCK and O_NOCTTY keep a FIFO or tty swapped in from hanging or
// grabbing the agent; fstat on the result then rejects it.
func openEntry(dfd int, n string, flags uint64) (*os.File, error) {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_CLOEXEC | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | flags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	fd, err := unix.Openat2(dfd, n, &how)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), n), nil
}

// readlinkat reads a symlink's target, growing the buffer for long ones.
func readlinkat(dfd int, n string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		k, err := unix.Readlinkat(dfd, n, buf)
		if err != nil {
			return "", err
		}
		if k < size {
			return string(buf[:k]), nil
		}
		if size >= unix.PathMax*2 {
			return "", unix.ENAMETOOLONG
		}
	}
}

// zeros is an endless source of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
