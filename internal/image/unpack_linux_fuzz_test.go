//go:build linux

package image

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// fuzzMaxLayer is the layer cap while fuzzing: small, so the fuzzer
// reaches it.
const fuzzMaxLayer = 16 << 10

// FuzzUnpackLayer unpacks hostile layers and checks: nothing beside the
// layer dir changes, no hard link reaches a file outside it, only files,
// directories, symlinks and overlay whiteouts (0/0 character devices)
// appear, the only extended attribute is the opaque mark on a directory,
// the files hold no more than the cap, an error is ErrInvalid or
// ErrTooLarge, and a layer that unpacks reports its stream's size.
// (Symlinks are kept verbatim: they resolve inside the sandbox.)
func FuzzUnpackLayer(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("unpacking image layers keeps owners and makes whiteout devices: needs root")
	}
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	tartest.Watched(f, outside)
	for _, s := range tartest.Seeds(f, outside) {
		f.Add(s.Data)
	}
	a := func(entries ...tartest.Entry) []byte { return tartest.Archive(f, entries...) }
	reg, dir, link := tartest.Reg, tartest.Dir, tartest.Symlink
	for _, data := range [][]byte{
		a(dir("d/", 0o755), reg("d/f", "x", 0o644), reg("d/.wh..wh..opq", "", 0)),
		a(dir("d/", 0o755), reg("d/f", "x", 0o644), reg(".wh.d", "", 0)),
		a(reg(".wh.", "", 0), reg(".wh..", "", 0), reg(".wh..wh.plnk.1", "", 0), reg("a/.wh..wh..opq", "", 0)),
		a(dir("d/", 0o755), reg("d/f", "x", 0o644), reg("d", "now a file", 0o644)),
		a(dir("d/", 0o755), reg("d/f", "x", 0o644), tartest.Hardlink("h", "d/f"), reg(".wh.d", "", 0)),
		a(link("l", outside), reg("l/.wh..wh..opq", "", 0)),
		a(dir("./", 0o700), dir("/", 0o755), reg("/abs", "x", 0o644)),
		a(reg(strings.Repeat("d/", 300)+"f", "deep", 0o644), reg(strings.Repeat("d/", 299)+"g", "deep", 0o644)),
		a(tartest.Entry{Hdr: tar.Header{Name: "x", Typeflag: tar.TypeReg, Mode: 0o644, PAXRecords: map[string]string{
			"SCHILY.xattr.trusted.overlay.opaque": "y", "SCHILY.xattr.security.capability": "\x01"}}}),
	} {
		f.Add(data)
	}
	layer := filepath.Join(base, "layer")
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Mkdir(layer, 0o700); err != nil {
			t.Fatal(err)
		}
		defer func() {
			if err := os.RemoveAll(layer); err != nil {
				t.Fatal(err)
			}
		}()
		before := tartest.Tree(t, base, "layer")
		n, err := unpackLayer(context.Background(), layer, bytes.NewReader(data), fuzzMaxLayer, log)
		if d := tartest.Diff(before, tartest.Tree(t, base, "layer")); len(d) > 0 {
			t.Fatalf("outside the layer dir changed: %v", d)
		}
		tree := tartest.Tree(t, layer)
		if l := tartest.ExternalLinks(tree); len(l) > 0 {
			t.Fatalf("hard links out of the layer dir: %v", l)
		}
		for p, node := range tree {
			switch node.Type {
			case 0, fs.ModeDir, fs.ModeSymlink:
			case fs.ModeDevice | fs.ModeCharDevice:
				if node.Rdev != 0 {
					t.Fatalf("%s: a character device %#x, not a whiteout", p, node.Rdev)
				}
			default:
				t.Fatalf("%s: unpacked a %v", p, node.Type)
			}
			checkXattrs(t, filepath.Join(layer, p), node)
		}
		if apparent, _ := tartest.Usage(tree); apparent > fuzzMaxLayer {
			t.Fatalf("%d bytes on disk past the %d-byte cap", apparent, fuzzMaxLayer)
		}
		if err != nil {
			if !errors.Is(err, sandbox.ErrInvalid) && !errors.Is(err, sandbox.ErrTooLarge) {
				t.Fatalf("unpackLayer: %v (%T): neither invalid nor too large", err, err)
			}
			if n != 0 {
				t.Fatalf("unpackLayer failed but reported %d bytes", n)
			}
			return
		}
		if n != int64(len(data)) {
			t.Fatalf("unpackLayer reported %d bytes of a %d-byte stream", n, len(data))
		}
	})
}

// checkXattrs allows one extended attribute: trusted.overlay.opaque=y on
// a directory.
func checkXattrs(t *testing.T, p string, node tartest.Node) {
	t.Helper()
	buf := make([]byte, 4096)
	sz, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("list xattrs of %s: %v", p, err)
	}
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name == "" {
			continue
		}
		val := make([]byte, 256)
		vn, _ := unix.Lgetxattr(p, name, val)
		if name != "trusted.overlay.opaque" || node.Type != fs.ModeDir || string(val[:max(vn, 0)]) != "y" {
			t.Fatalf("%s (%v) has xattr %s=%q", p, node.Type, name, val[:max(vn, 0)])
		}
	}
}
