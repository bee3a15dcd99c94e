package layer

import (
	"archive/tar"
	"bytes"
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/paddock-dev/paddock/internal/agent"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// fuzzMaxChanges is the byte cap while fuzzing: small, so the fuzzer
// reaches it.
const fuzzMaxChanges = 16 << 10

// FuzzFromChanges writes hostile changes streams (a sandbox's agent is
// the sandbox's) and checks: nothing beside dst changes, no hard link
// reaches a file outside it, only files (without set-id bits),
// directories, symlinks, fifos and whiteouts (0/0 character devices)
// appear, and the files hold no more than the cap.
func FuzzFromChanges(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("writing a layer keeps owners and makes whiteout devices: needs root")
	}
	base := f.TempDir()
	outside := filepath.Join(base, "outside")
	tartest.Watched(f, outside)
	lower := filepath.Join(base, "lower")
	for _, d := range []string{"etc", "d/sub"} {
		if err := os.MkdirAll(filepath.Join(lower, d), 0o755); err != nil {
			f.Fatal(err)
		}
	}
	for _, s := range tartest.Seeds(f, outside) {
		f.Add(s.Data)
	}
	a := func(entries ...tartest.Entry) []byte { return tartest.Archive(f, entries...) }
	reg, dir, link := tartest.Reg, tartest.Dir, tartest.Symlink
	names := func(d, list string) tartest.Entry {
		return tartest.Entry{Hdr: tar.Header{Name: d, Typeflag: agent.TypeDirNames, Mode: 0o600, Size: int64(len(list))}, Body: list}
	}
	for _, data := range [][]byte{
		a(dir("etc/", 0o755), reg("etc/f", "x", 0o4755), names("etc", "f\x00"), names(".", "etc\x00")),
		a(dir("d/", 0o755), names("d", ""), names("d", "sub\x00")),
		a(link("l", outside), reg("l/x", "escaped", 0o644)),
		a(dir("d/", 0o755), tartest.Hardlink("d/h", "../outside/passwd")),
		a(names(".", "../x\x00"), names("etc", "x\x00")),
		a(tartest.Entry{Hdr: tar.Header{Name: "c", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3}}),
		a(tartest.Entry{Hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o4644}}),
	} {
		f.Add(data)
	}
	dst := filepath.Join(base, "dst")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.Mkdir(dst, 0o700); err != nil {
			t.Fatal(err)
		}
		defer func() {
			tartest.MakeRemovable(dst)
			if err := os.RemoveAll(dst); err != nil {
				t.Fatal(err)
			}
		}()
		before := tartest.Tree(t, base, "dst")
		_, _ = FromChanges(context.Background(), bytes.NewReader(data), dst, []string{lower}, fuzzMaxChanges)
		if d := tartest.Diff(before, tartest.Tree(t, base, "dst")); len(d) > 0 {
			t.Fatalf("outside the layer dir changed: %v", d)
		}
		tree := tartest.Tree(t, dst)
		if l := tartest.ExternalLinks(tree); len(l) > 0 {
			t.Fatalf("hard links out of the layer dir: %v", l)
		}
		for p, node := range tree {
			switch node.Type {
			case 0:
				var st unix.Stat_t
				if err := unix.Lstat(filepath.Join(dst, p), &st); err == nil && st.Mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
					t.Fatalf("%s: a set-id file (%o)", p, st.Mode)
				}
			case fs.ModeDir, fs.ModeSymlink, fs.ModeNamedPipe:
			case fs.ModeDevice | fs.ModeCharDevice:
				if node.Rdev != 0 {
					t.Fatalf("%s: a character device %#x, not a whiteout", p, node.Rdev)
				}
			default:
				t.Fatalf("%s: wrote a %v", p, node.Type)
			}
		}
		if apparent, _ := tartest.Usage(tree); apparent > fuzzMaxChanges {
			t.Fatalf("%d bytes on disk past the %d-byte cap", apparent, fuzzMaxChanges)
		}
	})
}
