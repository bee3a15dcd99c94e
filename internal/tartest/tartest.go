// Package tartest supports the tests of paddock's four tar extractors (OCI
// layers in internal/image, uploads in the agent, `paddock cp` out of a
// sandbox in the CLI, a Pod's changes in internal/runtime/layer): hostile
// archives to seed fuzzers with, and checks of
// what an extraction left on disk. It is test support, like imagetest: no
// production code imports it.
package tartest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// Entry is one archive member: a header and, for a regular file, its body
// (Hdr.Size is set from Body when it is zero).
type Entry struct {
	Hdr  tar.Header
	Body string
}

// Archive writes entries as one tar stream.
func Archive(tb testing.TB, entries ...Entry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := e.Hdr
		if h.Size == 0 && (h.Typeflag == tar.TypeReg || h.Typeflag == 0) {
			h.Size = int64(len(e.Body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatalf("tar header %q: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.Body); err != nil {
			tb.Fatalf("tar body %q: %v", h.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Gzip compresses data.
func Gzip(tb testing.TB, data []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Reg, Dir, Symlink and Hardlink are entry shorthands.
func Reg(name, body string, mode int64) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode}, Body: body}
}

func Dir(name string, mode int64) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeDir, Mode: mode}}
}

func Symlink(name, target string) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeSymlink, Linkname: target, Mode: 0o777}}
}

func Hardlink(name, target string) Entry {
	return Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeLink, Linkname: target, Mode: 0o644}}
}

// Seed is a named fuzzer seed.
type Seed struct {
	Name string
	Data []byte
}

// Seeds are archives every extractor must handle safely: ordinary ones
// (so the fuzzer starts from inputs that get deep) and the known ways out
// of a target directory. outside is an absolute path the test watches (a
// sibling of the target dir); archives aim absolute links and names at it.
// Binary seeds no Go code writes (GNU sparse files from GNU tar) live in
// each fuzzer's testdata/fuzz corpus.
func Seeds(tb testing.TB, outside string) []Seed {
	tb.Helper()
	a := func(entries ...Entry) []byte { return Archive(tb, entries...) }
	big := strings.Repeat("x", 20<<10) // past the fuzzers' size caps, small enough to mutate
	seeds := []Seed{
		{"empty", nil},
		{"end of archive only", a()},
		{"one file", a(Reg("hello.txt", "hello\n", 0o644))},
		{"tree", a(Dir("d/", 0o755), Dir("d/e/", 0o700), Reg("d/e/f", "data", 0o600), Symlink("d/l", "e/f"), Hardlink("d/h", "d/e/f"))},
		{"dot entries", a(Dir("./", 0o755), Reg("./a", "1", 0o644), Dir("./b/", 0o755), Reg("./b/c", "2", 0o644))},
		{"modes", a(Reg("suid", "x", 0o4755), Reg("sgid", "x", 0o2755), Dir("sticky/", 0o1777), Dir("ro/", 0o500), Reg("ro/f", "x", 0o400))},
		{"dir twice", a(Dir("d/", 0o755), Reg("d/f", "x", 0o644), Dir("d/", 0o700))},
		{"replace file with dir", a(Reg("x", "1", 0o644), Dir("x/", 0o755), Reg("x/y", "2", 0o644))},
		{"replace dir with file", a(Dir("x/", 0o755), Reg("x/y", "1", 0o644), Reg("x", "2", 0o644))},
		{"replace file with symlink", a(Reg("x", "1", 0o644), Symlink("x", "y"), Reg("x", "3", 0o644))},
		{"long name", a(Reg(strings.Repeat("n", 200)+"/"+strings.Repeat("m", 200), "x", 0o644))},
		{"large file", a(Reg("big", big, 0o644))},
		{"gzip", Gzip(tb, a(Reg("z", "zipped", 0o644)))},
		{"global header", a(Entry{Hdr: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "g", PAXRecords: map[string]string{"comment": "x"}}}, Reg("a", "1", 0o644))},

		{"dotdot", a(Reg("../escaped", "pwned", 0o644))},
		{"nested dotdot", a(Reg("a/../../escaped", "pwned", 0o644))},
		{"absolute name", a(Reg(outside+"/abs", "pwned", 0o644))},
		{"absolute symlink then write through it", a(Symlink("link", outside), Reg("link/pwned", "pwned", 0o644))},
		{"relative symlink out then write through it", a(Symlink("link", ".."), Reg("link/pwned", "pwned", 0o644))},
		{"symlink to a symlink out", a(Symlink("a", ".."), Symlink("b", "a"), Reg("b/pwned", "pwned", 0o644))},
		{"symlink chain climbing after a name", a(Symlink("b", "."), Symlink("l", "b/.."))},
		{"symlink chain climbing twice", a(Dir("d/", 0o755), Symlink("d/b", ".."), Symlink("l", "d/b/.."))},
		{"dir replaced by symlink", a(Dir("d/", 0o755), Symlink("d", ".."), Reg("d/pwned", "pwned", 0o644))},
		{"symlink then dir entry through it", a(Symlink("d", ".."), Dir("d/sub/", 0o755))},
		{"escaping relative symlink", a(Symlink("a/up", "../../.."))},
		{"hardlink out", a(Hardlink("h", outside+"/passwd"))},
		{"hardlink dotdot", a(Hardlink("h", "../outside/passwd"))},
		{"hardlink through symlink", a(Symlink("l", outside), Hardlink("h", "l/passwd"))},
		{"hardlink to a later file", a(Hardlink("h", "later"), Reg("later", "x", 0o644))},
		{"hardlink to itself", a(Hardlink("h", "h"))},
		{"hardlink then write through it", a(Reg("f", "1", 0o644), Hardlink("h", "f"), Reg("h", "2", 0o644))},
		{"char device", a(Entry{Hdr: tar.Header{Name: "null", Typeflag: tar.TypeChar, Devmajor: 1, Devminor: 3, Mode: 0o666}})},
		{"block device", a(Entry{Hdr: tar.Header{Name: "sda", Typeflag: tar.TypeBlock, Devmajor: 8, Mode: 0o660}})},
		{"fifo", a(Entry{Hdr: tar.Header{Name: "p", Typeflag: tar.TypeFifo, Mode: 0o644}})},
		{"whiteout", a(Reg("f", "x", 0o644), Reg(".wh.f", "", 0o644), Reg("d/.wh..wh..opq", "", 0o644))},
		{"whiteout through symlink", a(Symlink("l", outside), Reg("l/.wh.passwd", "", 0o644))},
		{"NUL in name", a(Entry{Hdr: tar.Header{Name: "a", Typeflag: tar.TypeReg, PAXRecords: map[string]string{"path": "a\x00b"}}})},
		{"negative owner", a(Entry{Hdr: tar.Header{Name: "o", Typeflag: tar.TypeReg, Uid: -1, Gid: -1, Mode: 0o644}})},
		{"unknown type", a(Entry{Hdr: tar.Header{Name: "u", Typeflag: 'Z', Mode: 0o644}})},
		{"pax long link", a(Symlink("l", strings.Repeat("../", 200)+"etc"))},
		{"pax sparse", PAXSparse(tb, "sparse", 1<<20)},
	}
	// Byte-level damage the tar writer would not produce.
	one := a(Reg("f", "content", 0o644))
	truncated := slices.Clone(one[:600])
	badSum := slices.Clone(one)
	badSum[148] ^= 1
	hugeSize := slices.Clone(one)
	copy(hugeSize[124:136], "77777777777\x00")
	fixChecksum(hugeSize[:512])
	seeds = append(seeds,
		Seed{"truncated", truncated},
		Seed{"bad checksum", badSum},
		Seed{"huge declared size", hugeSize},
		Seed{"garbage", []byte("not a tar at all")},
	)
	return seeds
}

// fixChecksum recomputes a ustar header block's checksum.
func fixChecksum(blk []byte) {
	copy(blk[148:156], "        ")
	var sum int64
	for _, b := range blk {
		sum += int64(b)
	}
	copy(blk[148:156], fmt.Sprintf("%06o\x00 ", sum))
}

// Node is what Tree records of one file.
type Node struct {
	Type   fs.FileMode // fs.ModeDir, fs.ModeSymlink, 0 for regular, ...
	Perm   fs.FileMode // permission and special bits
	Size   int64
	Blocks int64 // 512-byte blocks allocated
	Nlink  uint64
	UID    uint32
	GID    uint32
	Rdev   uint64
	Ino    uint64
	Mtime  int64  // ns
	Ctime  int64  // ns: a chmod or chown undone still shows here
	Target string // a symlink's target
	Sum    string // a regular file's sha256
}

func (n Node) String() string {
	return fmt.Sprintf("%v %o size=%d nlink=%d owner=%d:%d rdev=%d target=%q sum=%.12s", n.Type, n.Perm, n.Size, n.Nlink, n.UID, n.GID, n.Rdev, n.Target, n.Sum)
}

// Tree records every file below dir without following symlinks, keyed by
// its slash path relative to dir ("." is dir itself). Names in skip
// (relative, slash) are left out with everything below them.
func Tree(tb testing.TB, dir string, skip ...string) map[string]Node {
	tb.Helper()
	out := map[string]Node{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if slices.Contains(skip, rel) {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		n := Node{Type: fi.Mode().Type(), Perm: fi.Mode() &^ fs.ModeType, Size: fi.Size(), Blocks: st.Blocks,
			Nlink: uint64(st.Nlink), UID: st.Uid, GID: st.Gid, Rdev: uint64(st.Rdev), Ino: st.Ino,
			Mtime: mtime(st), Ctime: ctime(st)}
		switch {
		case fi.Mode().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s := sha256.Sum256(data)
			n.Sum = hex.EncodeToString(s[:])
		case fi.Mode()&fs.ModeSymlink != 0:
			if n.Target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		if n.Type == fs.ModeDir {
			n.Size = 0 // grows with entries, and entries are compared anyway
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		tb.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// Diff lists what differs between two trees, for error messages.
func Diff(before, after map[string]Node) []string {
	var out []string
	for p, b := range before {
		a, ok := after[p]
		switch {
		case !ok:
			out = append(out, "removed "+p)
		case a != b:
			out = append(out, fmt.Sprintf("changed %s: %v -> %v", p, b, a))
		}
	}
	for p, a := range after {
		if _, ok := before[p]; !ok {
			out = append(out, fmt.Sprintf("added %s: %v", p, a))
		}
	}
	slices.Sort(out)
	return out
}

// Usage sums a tree's regular files: apparent bytes and allocated bytes.
func Usage(tree map[string]Node) (apparent, allocated int64) {
	for _, n := range tree {
		if n.Type == 0 {
			apparent += n.Size
			allocated += n.Blocks * 512
		}
	}
	return apparent, allocated
}

// ExternalLinks lists the regular files of tree (taken of dir) that share
// their inode with a file outside it: hard links out of the extraction.
func ExternalLinks(tree map[string]Node) []string {
	seen := map[uint64]uint64{}
	for _, n := range tree {
		if n.Type == 0 {
			seen[n.Ino]++
		}
	}
	var out []string
	for p, n := range tree {
		if n.Type == 0 && n.Nlink != seen[n.Ino] {
			out = append(out, fmt.Sprintf("%s has %d links, %d of them in the tree", p, n.Nlink, seen[n.Ino]))
		}
	}
	slices.Sort(out)
	return out
}

// EscapingLinks lists the symlinks below dir that lead out of it when the
// kernel follows them (absolute targets count as leaving: on the host they
// resolve against the host's root). A component that does not exist yet is
// taken as a plain directory, so a link that would escape once a later
// write creates it is listed too.
func EscapingLinks(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		hops := 0
		if leaves(dir, nil, filepath.ToSlash(rel), &hops) {
			target, _ := os.Readlink(p)
			out = append(out, fmt.Sprintf("%s -> %s", rel, target))
		}
		return nil
	})
	if err != nil {
		tb.Fatalf("walk %s: %v", dir, err)
	}
	return out
}

// leaves resolves the relative path p from the directory cur (components
// below dir, none of them a symlink) and reports whether the resolution
// ever climbs above dir or meets an absolute symlink.
func leaves(dir string, cur []string, p string, hops *int) bool {
	if path.IsAbs(p) {
		return true
	}
	parts := strings.Split(p, "/")
	missing := false
	for i, c := range parts {
		switch c {
		case "", ".":
			continue
		case "..":
			if len(cur) == 0 {
				return true
			}
			cur = cur[:len(cur)-1]
			continue
		}
		next := append(slices.Clone(cur), c)
		if missing {
			cur = next
			continue
		}
		fi, err := os.Lstat(filepath.Join(append([]string{dir}, next...)...))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = true
		case err != nil:
			return false // the kernel stops here too (ENOTDIR, EACCES...)
		case fi.Mode()&fs.ModeSymlink != 0:
			if *hops++; *hops > 40 {
				return false // ELOOP
			}
			target, err := os.Readlink(filepath.Join(append([]string{dir}, next...)...))
			if err != nil {
				return false
			}
			return leaves(dir, cur, target+"/"+strings.Join(parts[i+1:], "/"), hops)
		case !fi.IsDir() && i < len(parts)-1:
			return false // ENOTDIR
		}
		cur = next
	}
	return false
}

// MakeRemovable gives every directory below dir owner rwx, so that a
// cleanup without root can remove an extraction of read-only directories.
func MakeRemovable(dir string) {
	_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o700)
		}
		return nil
	})
}

// Watched fills dir, a directory next to an extraction's target, with a
// file (passwd), a directory (sub) and a symlink (link) that no extraction
// may change.
func Watched(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "passwd"), []byte("root:x:0:0::/root:/bin/sh\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	if err := os.Symlink("passwd", filepath.Join(dir, "link")); err != nil {
		tb.Fatal(err)
	}
}

// Final is what an archive leaves at one name once all of it is applied:
// the last entry that named it.
type Final struct {
	Hdr  tar.Header
	Body []byte // a regular file's content; a hard link's is its target's at the time
}

// Finals reads a plain tar stream and returns the last entry for every
// name (cleaned, relative; the root "." and global headers left out), for
// comparing with what an extraction that succeeded left on disk. Bodies
// longer than max are an error.
func Finals(data []byte, max int64) (map[string]Final, error) {
	out := map[string]Final{}
	tr := tar.NewReader(bytes.NewReader(data))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		name := path.Clean(hdr.Name)
		if hdr.Typeflag == tar.TypeXGlobalHeader || name == "." {
			continue
		}
		f := Final{Hdr: *hdr}
		switch hdr.Typeflag {
		case tar.TypeReg:
			if f.Body, err = io.ReadAll(io.LimitReader(tr, max+1)); err != nil {
				return nil, err
			}
			if int64(len(f.Body)) > max {
				return nil, fmt.Errorf("%s: larger than %d bytes", name, max)
			}
		case tar.TypeLink:
			// The link is its target's file: content and mode.
			target := out[path.Clean(hdr.Linkname)]
			f.Body, f.Hdr.Mode = target.Body, target.Hdr.Mode
		}
		out[name] = f
	}
}

// Parents returns every proper ancestor directory of the names, slash
// separated and relative (never ".").
func Parents[V any](names map[string]V) map[string]bool {
	out := map[string]bool{}
	for n := range names {
		for d := path.Dir(n); d != "." && d != "/"; d = path.Dir(d) {
			out[d] = true
		}
	}
	return out
}

// PAXSparse is an archive of one GNU sparse file (PAX format 1.0) named
// name whose size bytes are all a hole: a few blocks on the wire that
// archive/tar reads back as size zero bytes. archive/tar's writer drops
// GNU.sparse records, so the extended header is made by hand.
func PAXSparse(tb testing.TB, name string, size int64) []byte {
	tb.Helper()
	var recs strings.Builder
	for _, kv := range [][2]string{{"GNU.sparse.major", "1"}, {"GNU.sparse.minor", "0"}, {"GNU.sparse.name", name}, {"GNU.sparse.realsize", fmt.Sprint(size)}} {
		// "<length> key=value\n", the length counting its own digits.
		rec := " " + kv[0] + "=" + kv[1] + "\n"
		n := len(rec) + 1
		for len(strconv.Itoa(n))+len(rec) != n {
			n = len(strconv.Itoa(n)) + len(rec)
		}
		fmt.Fprintf(&recs, "%d%s", n, rec)
	}
	sparseMap := "0\n" // no data extents: all hole
	data := Archive(tb,
		Entry{Hdr: tar.Header{Name: "PaxHeaders/" + name, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatUSTAR}, Body: recs.String()},
		Entry{Hdr: tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Format: tar.FormatUSTAR}, Body: sparseMap + strings.Repeat("\x00", 512-len(sparseMap))},
	)
	data[156] = tar.TypeXHeader
	fixChecksum(data[:512])
	return data
}
