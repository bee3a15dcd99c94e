//go:build linux

package agent

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/paddock-dev/paddock/internal/sandbox"
	"github.com/paddock-dev/paddock/internal/tartest"
)

// fuzzMaxWrite is the agent's write cap while fuzzing: small, so the
// fuzzer reaches it.
const fuzzMaxWrite = 16 << 10

// FuzzWriteTar unpacks hostile uploads with the agent's writeTar into a
// directory of a fake sandbox root and checks: nothing outside the target
// dir changes (in the root or beside it on the host), no symlink left
// there leads out of it, no hard link reaches a file outside it, only
// files, directories and symlinks appear, all owned by the writer (the
// sandbox user, or root with sudo) and without setuid or setgid unless
// sudo, no more bytes land than the write cap, every error carries a kind
// the API maps below 500, a write that succeeds leaves exactly what the
// archive says, and what it left reads back through the agent's archiver
// and writes again to the same tree.
func FuzzWriteTar(f *testing.F) {
	if os.Geteuid() != 0 {
		f.Skip("needs root: the agent chowns what it writes to the sandbox user")
	}
	base := f.TempDir()
	root := filepath.Join(base, "root")
	outside := filepath.Join(base, "outside")
	tartest.Watched(f, outside)
	tartest.Watched(f, filepath.Join(root, "etc"))
	if err := os.MkdirAll(filepath.Join(root, "dst"), 0o755); err != nil {
		f.Fatal(err)
	}
	srv, err := NewServer(ServerConfig{
		StateDir: filepath.Join(base, "state"), Root: root, CgroupRoot: filepath.Join(base, "nocgroup"),
		UserHome: "/tmp", MaxWriteBytes: fuzzMaxWrite, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { srv.Close() })
	for _, s := range tartest.Seeds(f, outside) {
		f.Add(s.Data, false)
	}
	for _, s := range tartest.Seeds(f, "/etc") {
		f.Add(s.Data, true)
	}
	target, again := filepath.Join(root, "dst", "t"), filepath.Join(root, "dst", "u")
	f.Fuzz(func(t *testing.T, data []byte, sudo bool) {
		uid, gid := srv.ownerFor(sudo)
		// An existing directory of the writer's, as an upload usually finds.
		if err := os.Mkdir(target, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(target, uid, gid); err != nil {
			t.Fatal(err)
		}
		defer func() {
			for _, d := range []string{target, again} {
				if err := os.RemoveAll(d); err != nil {
					t.Fatal(err)
				}
			}
		}()
		before := tartest.Tree(t, base, "root/dst/t")
		res, err := srv.writeTar(bytes.NewReader(data), "dst/t", sudo)
		if d := tartest.Diff(before, tartest.Tree(t, base, "root/dst/t")); len(d) > 0 {
			t.Fatalf("outside the target dir changed: %v", d)
		}
		if l := tartest.EscapingLinks(t, target); len(l) > 0 {
			t.Fatalf("symlinks lead out of the target dir: %v", l)
		}
		tree := tartest.Tree(t, target)
		if l := tartest.ExternalLinks(tree); len(l) > 0 {
			t.Fatalf("hard links out of the target dir: %v", l)
		}
		for p, n := range tree {
			switch {
			case n.Type != 0 && n.Type != fs.ModeDir && n.Type != fs.ModeSymlink:
				t.Fatalf("%s: wrote a %v", p, n.Type)
			case n.UID != uint32(uid) || n.GID != uint32(gid):
				t.Fatalf("%s: owned by %d:%d, want %d:%d (sudo %v)", p, n.UID, n.GID, uid, gid, sudo)
			case !sudo && n.Perm&(fs.ModeSetuid|fs.ModeSetgid) != 0:
				t.Fatalf("%s: mode %v from a write without sudo", p, n.Perm)
			}
		}
		if apparent, _ := tartest.Usage(tree); apparent > fuzzMaxWrite || res.Bytes > fuzzMaxWrite {
			t.Fatalf("%d bytes on disk (%d reported) past the %d-byte cap", apparent, res.Bytes, fuzzMaxWrite)
		}
		if err != nil {
			var se *sandbox.Error
			if !errors.As(err, &se) || se.Code == "" || StatusForKind(err) >= 500 {
				t.Fatalf("writeTar: %v (%T, code %q): not a client error", err, err, sandbox.CodeOf(err))
			}
			return
		}
		checkWritten(t, plainTar(t, data), tree, sudo, res)

		// What the archiver reads back writes again to the same tree.
		var buf bytes.Buffer
		d, err := srv.openInRoot("dst/t")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		a := &archiver{s: srv, tw: tar.NewWriter(&buf), top: "/dst/t", done: make(chan struct{})}
		if err := a.dir(d, "", 0); err != nil {
			t.Fatalf("archive what was written: %v", err)
		}
		if err := a.tw.Close(); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(again, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(again, uid, gid); err != nil {
			t.Fatal(err)
		}
		if _, err := srv.writeTar(&buf, "dst/u", sudo); err != nil {
			if errors.Is(err, sandbox.ErrTooLarge) {
				return // the archive (headers, hard links copied) can outgrow the cap
			}
			t.Fatalf("write the archive of what was written: %v", err)
		}
		if d := tartest.Diff(contents(tree), contents(tartest.Tree(t, again))); len(d) > 0 {
			t.Fatalf("archive and write again: %v", d)
		}
	})
}

// plainTar undoes the gzip the agent detects.
func plainTar(t *testing.T, data []byte) []byte {
	t.Helper()
	if len(data) < 2 || data[0] != 0x1f || data[1] != 0x8b {
		return data
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("writeTar took a gzip stream that does not open: %v", err)
	}
	plain, err := io.ReadAll(io.LimitReader(zr, fuzzMaxWrite+1))
	if err != nil {
		// The agent stops at the tar's end; trailing gzip damage is not its concern.
		if len(plain) == 0 {
			t.Fatalf("writeTar took a gzip stream that does not read: %v", err)
		}
	}
	return plain
}

// checkWritten compares a successful write with the archive: each name
// holds its last entry (modes as unixMode makes them), the directories
// above them are the writer's 0755 ones, and the counts add up.
func checkWritten(t *testing.T, data []byte, tree map[string]tartest.Node, sudo bool, res WriteResult) {
	t.Helper()
	finals, err := tartest.Finals(data, fuzzMaxWrite)
	if err != nil {
		t.Fatalf("writeTar succeeded on an archive that does not read: %v", err)
	}
	parents := tartest.Parents(finals)
	for p, n := range tree {
		if p == "." {
			continue
		}
		fin, ok := finals[p]
		if !ok {
			if !parents[p] || n.Type != fs.ModeDir || n.Perm != 0o755 {
				t.Fatalf("%s (%v) is in no archive entry", p, n)
			}
			continue
		}
		mode := unixMode(uint32(fin.Hdr.Mode), sudo)
		switch fin.Hdr.Typeflag {
		case tar.TypeReg, tar.TypeLink:
			sum := sha256.Sum256(fin.Body)
			if n.Type != 0 || n.Sum != hex.EncodeToString(sum[:]) || n.Perm != mode {
				t.Fatalf("%s: %v, want a %v file of %d bytes", p, n, mode, len(fin.Body))
			}
		case tar.TypeDir:
			if n.Type != fs.ModeDir || n.Perm != mode {
				t.Fatalf("%s: %v, want a %v directory", p, n, mode)
			}
		case tar.TypeSymlink:
			if n.Type != fs.ModeSymlink || n.Target != fin.Hdr.Linkname {
				t.Fatalf("%s: %v, want a symlink to %q", p, n, fin.Hdr.Linkname)
			}
		default:
			t.Fatalf("%s: written from an entry of type %q", p, fin.Hdr.Typeflag)
		}
	}
	for p := range finals {
		if _, ok := tree[p]; !ok {
			t.Fatalf("%s: in the archive, not on disk", p)
		}
	}
	var files int
	var total int64
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err != nil {
			break
		}
		if hdr.Typeflag != tar.TypeDir && hdr.Typeflag != tar.TypeXGlobalHeader {
			files++
		}
		if hdr.Typeflag == tar.TypeReg {
			total += hdr.Size
		}
	}
	if res.Files != files || res.Bytes != total {
		t.Fatalf("result %+v, want %d files and %d bytes", res, files, total)
	}
}

// contents keeps what a round trip must preserve: type, mode, owner,
// content and link target (not inode numbers, link counts or times).
func contents(tree map[string]tartest.Node) map[string]tartest.Node {
	out := make(map[string]tartest.Node, len(tree))
	for p, n := range tree {
		out[p] = tartest.Node{Type: n.Type, Perm: n.Perm, Size: n.Size, UID: n.UID, GID: n.GID, Sum: n.Sum, Target: n.Target}
	}
	return out
}
