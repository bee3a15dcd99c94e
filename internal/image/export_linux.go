package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// WriteLayerTar writes the layer directory dir, in overlayfs's on-disk
// form (a snapshot's layer), as an OCI layer tar: the inverse of
// unpackLayer. A 0/0 character device becomes the whiteout .wh.<name>, a
// directory marked trusted.overlay.opaque=y gets .wh..wh..opq, and
// directories, regular files, symlinks and fifos keep their mode, owner
// and mtime. Other devices and sockets are left out, as unpackLayer skips
// them; so are real files named .wh.*, which a tar cannot tell from
// whiteouts. Entries come in lexical order, so one directory always gives
// the same stream (and digest).
func WriteLayerTar(ctx context.Context, w io.Writer, dir string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), whiteoutPrefix) {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		if !ok {
			return fmt.Errorf("%s: no stat", rel)
		}
		hdr := &tar.Header{
			Name: filepath.ToSlash(rel), Mode: int64(fi.Mode().Perm()), ModTime: fi.ModTime(),
			Uid: int(st.Uid), Gid: int(st.Gid), Format: tar.FormatPAX,
		}
		if st.Mode&unix.S_ISVTX != 0 {
			hdr.Mode |= unix.S_ISVTX
		}
		if st.Mode&unix.S_ISGID != 0 && fi.IsDir() {
			hdr.Mode |= unix.S_ISGID
		}
		switch typ := fi.Mode().Type(); {
		case typ == fs.ModeDir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			opaque, err := isOpaque(p)
			if err != nil || !opaque {
				return err
			}
			return tw.WriteHeader(&tar.Header{Name: hdr.Name + whiteoutOpaque, Typeflag: tar.TypeReg, Mode: 0o644,
				ModTime: hdr.ModTime, Format: tar.FormatPAX})
		case typ == fs.ModeCharDevice|fs.ModeDevice && st.Rdev == 0:
			hdr.Typeflag, hdr.Mode, hdr.Uid, hdr.Gid = tar.TypeReg, 0o644, 0, 0
			hdr.Name = filepath.ToSlash(filepath.Join(filepath.Dir(rel), whiteoutPrefix+d.Name()))
			return tw.WriteHeader(hdr)
		case typ == fs.ModeSymlink:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
			return tw.WriteHeader(hdr)
		case typ == fs.ModeNamedPipe:
			hdr.Typeflag = tar.TypeFifo
			return tw.WriteHeader(hdr)
		case typ == 0:
			return writeFile(tw, hdr, p, fi.Size())
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("layer tar of %s: %w", dir, err)
	}
	return tw.Close()
}

// writeFile writes a regular file's entry and data; the file is opened
// without following a symlink swapped in for it.
func writeFile(tw *tar.Writer, hdr *tar.Header, p string, size int64) error {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr.Typeflag, hdr.Size = tar.TypeReg, size
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	// Exactly size bytes: a file that changed size is an error, not a
	// corrupt entry.
	if _, err := io.CopyN(tw, f, size); err != nil {
		return err
	}
	return nil
}

// isOpaque reports whether the directory p hides its lower layers' one.
func isOpaque(p string) (bool, error) {
	var buf [1]byte
	n, err := unix.Lgetxattr(p, "trusted.overlay.opaque", buf[:])
	switch {
	case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ERANGE):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("%s: %w", p, err)
	}
	return n == 1 && buf[0] == 'y', nil
}
