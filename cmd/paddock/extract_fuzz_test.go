package main

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// FuzzExtractTar extracts hostile archives (the CLI's `cp` out of a
// sandbox) and checks: nothing outside the target dir changes, no symlink
// left there leads out of it, no hard link, device, fifo or special mode
// bit appears, the files hold no more bytes than the archive carried, an
// error is an unsafe_entry, a tar format error or a filesystem refusal, and
// an extraction that succeeds leaves exactly what the archive says.
func FuzzExtractTar(f *testing.F) {
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	tartest.Watched(f, outside)
	for _, s := range tartest.Seeds(f, outside) {
		f.Add(s.Data)
	}
	dst := filepath.Join(base, "target")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Mkdir(dst, 0o755); err != nil {
			t.Fatal(err)
		}
		defer func() {
			tartest.MakeRemovable(dst)
			if err := os.RemoveAll(dst); err != nil {
				t.Fatal(err)
			}
		}()
		before := tartest.Tree(t, base, "target")
		res, err := extractTar(bytes.NewReader(data), dst)
		if d := tartest.Diff(before, tartest.Tree(t, base, "target")); len(d) > 0 {
			t.Fatalf("outside the target dir changed: %v", d)
		}
		if l := tartest.EscapingLinks(t, dst); len(l) > 0 {
			t.Fatalf("symlinks lead out of the target dir: %v", l)
		}
		tree := tartest.Tree(t, dst)
		for p, n := range tree {
			switch {
			case n.Type != 0 && n.Type != fs.ModeDir && n.Type != fs.ModeSymlink:
				t.Fatalf("%s: extracted a %v", p, n.Type)
			case n.Type == 0 && n.Nlink != 1:
				t.Fatalf("%s: a hard link (%d links)", p, n.Nlink)
			case n.Type != fs.ModeSymlink && n.Perm&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky) != 0:
				t.Fatalf("%s: mode %v keeps a special bit", p, n.Perm)
			}
		}
		if apparent, _ := tartest.Usage(tree); apparent > int64(len(data)) || res.bytes > int64(len(data)) {
			t.Fatalf("%d bytes on disk (%d reported) from an archive of %d", apparent, res.bytes, len(data))
		}
		if err != nil {
			if !expectedExtractError(err) {
				t.Fatalf("extractTar: unexpected error %T: %v", err, err)
			}
			return
		}
		checkExtracted(t, data, tree)
	})
}

// expectedExtractError reports whether err is one of the ways extractTar
// may refuse an archive.
func expectedExtractError(err error) bool {
	var pe *fs.PathError
	var le *os.LinkError
	var errno syscall.Errno
	switch {
	case sandbox.CodeOf(err) == "unsafe_entry" && errors.Is(err, sandbox.ErrInvalid):
		return true
	case strings.HasPrefix(err.Error(), "read archive: "):
		return errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, io.ErrUnexpectedEOF) ||
			errors.Is(err, tar.ErrInsecurePath)
	case errors.As(err, &pe), errors.As(err, &le), errors.As(err, &errno):
		return true
	case strings.HasPrefix(err.Error(), "write "):
		// The body ended early: a tar format error while copying.
		return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, tar.ErrHeader)
	}
	return false
}

// checkExtracted compares a successful extraction with the archive: each
// name holds its last entry (permission bits only), and nothing else is
// there but the directories above them.
func checkExtracted(t *testing.T, data []byte, tree map[string]tartest.Node) {
	t.Helper()
	finals, err := tartest.Finals(data, int64(len(data)))
	if err != nil {
		t.Fatalf("extractTar succeeded on an archive that does not read: %v", err)
	}
	parents := tartest.Parents(finals)
	for p, n := range tree {
		if p == "." {
			continue
		}
		fin, ok := finals[p]
		if !ok {
			if !parents[p] || n.Type != fs.ModeDir {
				t.Fatalf("%s (%v) is in no archive entry", p, n)
			}
			continue
		}
		perm := fs.FileMode(fin.Hdr.Mode).Perm()
		switch fin.Hdr.Typeflag {
		case tar.TypeReg:
			sum := sha256.Sum256(fin.Body)
			if n.Type != 0 || n.Sum != hex.EncodeToString(sum[:]) || n.Perm != perm {
				t.Fatalf("%s: %v, want a %o file of %d bytes", p, n, perm, len(fin.Body))
			}
		case tar.TypeDir:
			if n.Type != fs.ModeDir || n.Perm != perm {
				t.Fatalf("%s: %v, want a %o directory", p, n, perm)
			}
		case tar.TypeSymlink:
			if n.Type != fs.ModeSymlink || n.Target != fin.Hdr.Linkname {
				t.Fatalf("%s: %v, want a symlink to %q", p, n, fin.Hdr.Linkname)
			}
		default:
			t.Fatalf("%s: extracted from an entry of type %q", p, fin.Hdr.Typeflag)
		}
	}
	for p := range finals {
		if _, ok := tree[p]; !ok {
			t.Fatalf("%s: in the archive, not on disk", p)
		}
	}
}
